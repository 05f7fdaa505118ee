//! Conversions between the wire types and the domain types of `fxtriage-core`,
//! written once here rather than in each service.

use fxtriage_core::{BoundingBox, Detection, Urgency, UrgencySource};

use crate::v1;

impl From<Urgency> for v1::Urgency {
    fn from(urgency: Urgency) -> Self {
        match urgency {
            Urgency::Emergency => v1::Urgency::Emergency,
            Urgency::Inpatient => v1::Urgency::Inpatient,
            Urgency::Outpatient => v1::Urgency::Outpatient,
        }
    }
}

/// An unspecified urgency is the default, outpatient (as ingest applies it).
impl From<v1::Urgency> for Urgency {
    fn from(urgency: v1::Urgency) -> Self {
        match urgency {
            v1::Urgency::Emergency => Urgency::Emergency,
            v1::Urgency::Inpatient => Urgency::Inpatient,
            v1::Urgency::Outpatient | v1::Urgency::Unspecified => Urgency::Outpatient,
        }
    }
}

impl From<UrgencySource> for v1::UrgencySource {
    fn from(source: UrgencySource) -> Self {
        match source {
            UrgencySource::Dataset => v1::UrgencySource::Dataset,
            UrgencySource::AeTitle => v1::UrgencySource::AeTitle,
            UrgencySource::Department => v1::UrgencySource::Department,
            UrgencySource::Default => v1::UrgencySource::Default,
            UrgencySource::Order => v1::UrgencySource::Order,
        }
    }
}

impl From<v1::UrgencySource> for UrgencySource {
    fn from(source: v1::UrgencySource) -> Self {
        match source {
            v1::UrgencySource::Dataset => UrgencySource::Dataset,
            v1::UrgencySource::AeTitle => UrgencySource::AeTitle,
            v1::UrgencySource::Department => UrgencySource::Department,
            v1::UrgencySource::Order => UrgencySource::Order,
            v1::UrgencySource::Default | v1::UrgencySource::Unspecified => UrgencySource::Default,
        }
    }
}

impl From<&Detection> for v1::Detection {
    fn from(detection: &Detection) -> Self {
        let found = detection.bounding_box;
        v1::Detection {
            r#box: Some(v1::BoundingBox {
                x_min: found.x_min,
                y_min: found.y_min,
                x_max: found.x_max,
                y_max: found.y_max,
            }),
            class_name: detection.class_name.clone(),
            score: detection.score,
        }
    }
}

impl From<&v1::BoundingBox> for BoundingBox {
    fn from(found: &v1::BoundingBox) -> Self {
        BoundingBox {
            x_min: found.x_min,
            y_min: found.y_min,
            x_max: found.x_max,
            y_max: found.y_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_values_survive_the_wire() {
        for urgency in Urgency::ALL {
            assert_eq!(Urgency::from(v1::Urgency::from(urgency)), urgency);
        }
        for source in UrgencySource::ALL {
            assert_eq!(UrgencySource::from(v1::UrgencySource::from(source)), source);
        }
        assert_eq!(Urgency::from(v1::Urgency::Unspecified), Urgency::Outpatient);
        let detection = Detection {
            class_name: "fracture".into(),
            score: 0.9,
            bounding_box: BoundingBox {
                x_min: 1.0,
                y_min: 2.0,
                x_max: 3.0,
                y_max: 4.0,
            },
        };
        let wire = v1::Detection::from(&detection);
        assert_eq!(
            BoundingBox::from(wire.r#box.as_ref().expect("box")),
            detection.bounding_box
        );
    }
}
