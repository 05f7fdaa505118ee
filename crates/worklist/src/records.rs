//! What the worklist records of each image: a stored instance and a finding, as
//! validated records, decoded and checked once from their messages
//! (`InstanceStored`, `Finding`). A message refused here can never succeed; its
//! consumer dead-letters it with the [`Refused`] kind and reason.

use fxtriage_core::{BoundingBox, Detection, DicomUid, SiteId, Urgency, UrgencySource};
use fxtriage_proto::Message as _;
use fxtriage_proto::v1 as proto;
use time::OffsetDateTime;

/// Dead-letter kinds (the `fxtriage-dlq-kind` header) of refused messages.
pub mod dead_letter_kind {
    /// The payload is not the protobuf message its topic carries.
    pub const MALFORMED_MESSAGE: &str = "malformed-message";
    /// The payload decodes but breaks the contract (missing identity, bad UID,
    /// probability out of range, ...), or the database refuses its values.
    pub const INVALID_MESSAGE: &str = "invalid-message";
    /// The site is not in the site registry.
    pub const UNKNOWN_SITE: &str = "unknown-site";
    /// A message on a topic the prioritizer does not consume.
    pub const UNEXPECTED_TOPIC: &str = "unexpected-topic";
}

/// Why a message was refused at decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// One of [`dead_letter_kind`].
    pub kind: &'static str,
    pub reason: String,
}

impl Refused {
    pub fn malformed(reason: String) -> Self {
        Self {
            kind: dead_letter_kind::MALFORMED_MESSAGE,
            reason,
        }
    }

    pub fn invalid(reason: String) -> Self {
        Self {
            kind: dead_letter_kind::INVALID_MESSAGE,
            reason,
        }
    }
}

/// Which image: the identity every message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdentity {
    pub site_id: SiteId,
    pub study_instance_uid: DicomUid,
    pub series_instance_uid: DicomUid,
    pub sop_instance_uid: DicomUid,
}

/// A stored instance, from `InstanceStored`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    pub image: ImageIdentity,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub modality: String,
    pub body_part: String,
    pub view_position: String,
    pub laterality: String,
    pub accession_number: String,
    pub urgency: Urgency,
    pub urgency_source: UrgencySource,
    pub object_key: String,
    pub byte_size: i64,
    pub sha256: String,
    /// Truncated to microseconds, the precision PostgreSQL keeps, so that a value
    /// read back equals the value computed.
    pub received_at: OffsetDateTime,
    pub received_via: String,
    pub eligible: bool,
    pub not_eligible_reason: String,
    /// When the image was acquired, as ingest read it from the dataset; an
    /// invalid time is dropped, not refused (it is for the analytics only).
    pub acquired_at: Option<OffsetDateTime>,
    /// The monitoring subgroups: M, F, O or empty; whole years; the equipment.
    pub patient_sex: String,
    pub patient_age_years: Option<i32>,
    pub manufacturer: String,
    pub manufacturer_model: String,
}

/// Which model produced a finding; `sha256` identifies it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FindingOutcome {
    Analysed {
        probability: f32,
        detections: Vec<Detection>,
    },
    Failed {
        kind: String,
        reason: String,
    },
}

/// The model's verdict on one image, from `Finding`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFinding {
    pub image: ImageIdentity,
    pub model: ModelRef,
    pub outcome: FindingOutcome,
    pub image_rows: Option<i32>,
    pub image_columns: Option<i32>,
    /// Truncated to microseconds; absent when inference did not say.
    pub analysed_at: Option<OffsetDateTime>,
    pub timings: Option<serde_json::Value>,
}

pub fn decode_instance(payload: &[u8]) -> Result<StoredInstance, Refused> {
    let event = proto::InstanceStored::decode(payload).map_err(|error| {
        Refused::malformed(format!("malformed protobuf InstanceStored: {error}"))
    })?;
    StoredInstance::from_proto(&event)
}

pub fn decode_finding(payload: &[u8]) -> Result<ImageFinding, Refused> {
    let event = proto::Finding::decode(payload)
        .map_err(|error| Refused::malformed(format!("malformed protobuf Finding: {error}")))?;
    ImageFinding::from_proto(&event)
}

impl ImageIdentity {
    fn from_proto(instance: Option<&proto::InstanceRef>, message: &str) -> Result<Self, Refused> {
        let instance = instance
            .ok_or_else(|| Refused::invalid(format!("{message} without an instance reference")))?;
        let site_id = SiteId::parse(instance.site_id.clone())
            .map_err(|error| Refused::invalid(format!("{message}: {error}")))?;
        let uid = |value: &str, what: &str| {
            DicomUid::parse(value)
                .map_err(|error| Refused::invalid(format!("{message}: {what}: {error}")))
        };
        Ok(Self {
            study_instance_uid: uid(&instance.study_instance_uid, "StudyInstanceUID")?,
            series_instance_uid: uid(&instance.series_instance_uid, "SeriesInstanceUID")?,
            sop_instance_uid: uid(&instance.sop_instance_uid, "SOPInstanceUID")?,
            site_id,
        })
    }
}

impl StoredInstance {
    pub fn from_proto(event: &proto::InstanceStored) -> Result<Self, Refused> {
        let image = ImageIdentity::from_proto(event.instance.as_ref(), "InstanceStored")?;
        let context = |what: &str| {
            format!(
                "InstanceStored {} of site {}: {what}",
                image.sop_instance_uid, image.site_id
            )
        };
        let received_at = event
            .received_at
            .as_ref()
            .ok_or_else(|| Refused::invalid(context("received_at is missing")))
            .and_then(|at| {
                to_microseconds(at)
                    .ok_or_else(|| Refused::invalid(context("received_at is not a valid time")))
            })?;
        let urgency = Urgency::from(
            proto::Urgency::try_from(event.urgency).unwrap_or(proto::Urgency::Unspecified),
        );
        let urgency_source = UrgencySource::from(
            proto::UrgencySource::try_from(event.urgency_source)
                .unwrap_or(proto::UrgencySource::Unspecified),
        );
        let byte_size = i64::try_from(event.byte_size)
            .map_err(|_| Refused::invalid(context("byte_size is out of range")))?;
        Ok(Self {
            sop_class_uid: event.sop_class_uid.clone(),
            transfer_syntax_uid: event.transfer_syntax_uid.clone(),
            modality: event.modality.clone(),
            body_part: event.body_part.trim().to_ascii_uppercase(),
            view_position: event.view_position.clone(),
            laterality: event.laterality.clone(),
            accession_number: event.accession_number.clone(),
            urgency,
            urgency_source,
            object_key: event.object_key.clone(),
            byte_size,
            sha256: event.sha256.clone(),
            received_at,
            received_via: event.received_via.clone(),
            eligible: event.eligible,
            not_eligible_reason: event.not_eligible_reason.clone(),
            acquired_at: event.acquired_at.as_ref().and_then(to_microseconds),
            patient_sex: match event.patient_sex.as_str() {
                sex @ ("M" | "F" | "O") => sex.to_owned(),
                _ => String::new(),
            },
            patient_age_years: event
                .patient_age_years
                .filter(|age| *age <= 150)
                .map(|age| age as i32),
            manufacturer: event.manufacturer.chars().take(64).collect(),
            manufacturer_model: event.manufacturer_model.chars().take(64).collect(),
            image,
        })
    }
}

impl ImageFinding {
    pub fn from_proto(event: &proto::Finding) -> Result<Self, Refused> {
        let image = ImageIdentity::from_proto(event.instance.as_ref(), "Finding")?;
        let context = |what: &str| {
            format!(
                "Finding for {} of site {}: {what}",
                image.sop_instance_uid, image.site_id
            )
        };
        let model = event
            .model
            .as_ref()
            .filter(|model| !model.sha256.trim().is_empty())
            .map(|model| ModelRef {
                name: model.name.clone(),
                version: model.version.clone(),
                sha256: model.sha256.trim().to_ascii_lowercase(),
            })
            .ok_or_else(|| Refused::invalid(context("the model's sha256 is missing")))?;
        let status = proto::FindingStatus::try_from(event.status)
            .unwrap_or(proto::FindingStatus::Unspecified);
        let outcome = match status {
            proto::FindingStatus::Analysed => {
                let probability = event.probability;
                if !(0.0..=1.0).contains(&probability) {
                    return Err(Refused::invalid(context(&format!(
                        "probability {probability} is outside 0..1"
                    ))));
                }
                let detections = event
                    .detections
                    .iter()
                    .map(|detection| detection_from_proto(detection, &context))
                    .collect::<Result<Vec<_>, _>>()?;
                FindingOutcome::Analysed {
                    probability,
                    detections,
                }
            }
            proto::FindingStatus::Failed => FindingOutcome::Failed {
                kind: event.failure_kind.clone(),
                reason: event.failure_reason.clone(),
            },
            proto::FindingStatus::Unspecified => {
                return Err(Refused::invalid(context("the status is unspecified")));
            }
        };
        let analysed_at = match &event.analysed_at {
            None => None,
            Some(at) => Some(
                to_microseconds(at)
                    .ok_or_else(|| Refused::invalid(context("analysed_at is not a valid time")))?,
            ),
        };
        let dimension = |value: u32| (value > 0).then(|| i32::try_from(value).ok()).flatten();
        let timings = event.timings.as_ref().map(|timings| {
            serde_json::json!({
                "fetch_us": timings.fetch_us,
                "decode_us": timings.decode_us,
                "preprocess_us": timings.preprocess_us,
                "queue_us": timings.queue_us,
                "decode_wait_us": timings.decode_wait_us,
                "inference_us": timings.inference_us,
                "postprocess_us": timings.postprocess_us,
                "batch_size": timings.batch_size,
            })
        });
        Ok(Self {
            model,
            outcome,
            image_rows: dimension(event.image_rows),
            image_columns: dimension(event.image_columns),
            analysed_at,
            timings,
            image,
        })
    }
}

fn detection_from_proto(
    detection: &proto::Detection,
    context: &dyn Fn(&str) -> String,
) -> Result<Detection, Refused> {
    let bounding_box = detection
        .r#box
        .as_ref()
        .ok_or_else(|| Refused::invalid(context("a detection has no box")))?;
    let values = [
        detection.score,
        bounding_box.x_min,
        bounding_box.y_min,
        bounding_box.x_max,
        bounding_box.y_max,
    ];
    if values.iter().any(|value| !value.is_finite()) {
        return Err(Refused::invalid(context(
            "a detection has a non-finite score or coordinate",
        )));
    }
    Ok(Detection {
        class_name: detection.class_name.clone(),
        score: detection.score,
        bounding_box: BoundingBox {
            x_min: bounding_box.x_min,
            y_min: bounding_box.y_min,
            x_max: bounding_box.x_max,
            y_max: bounding_box.y_max,
        },
    })
}

/// A protobuf timestamp as a time, truncated to whole microseconds.
fn to_microseconds(timestamp: &fxtriage_proto::Timestamp) -> Option<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return None;
    }
    let micros = i128::from(timestamp.seconds) * 1_000_000 + i128::from(timestamp.nanos / 1_000);
    OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).ok()
}

/// A time as a protobuf timestamp.
pub fn to_timestamp(at: OffsetDateTime) -> fxtriage_proto::Timestamp {
    fxtriage_proto::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance_ref() -> proto::InstanceRef {
        proto::InstanceRef {
            site_id: "demo".into(),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2.3.1".into(),
            sop_instance_uid: "1.2.3.1.1".into(),
        }
    }

    #[test]
    fn garbage_is_malformed_and_says_why() {
        let refused = decode_instance(&[0xff, 0xff, 0xff]).expect_err("garbage");
        assert_eq!(refused.kind, dead_letter_kind::MALFORMED_MESSAGE);
        assert!(refused.reason.contains("InstanceStored"), "{refused}");
    }

    #[test]
    fn a_finding_without_identity_or_model_is_invalid() {
        let finding = proto::Finding {
            status: proto::FindingStatus::Analysed as i32,
            ..Default::default()
        };
        let refused = ImageFinding::from_proto(&finding).expect_err("no instance");
        assert_eq!(refused.kind, dead_letter_kind::INVALID_MESSAGE);

        let finding = proto::Finding {
            instance: Some(instance_ref()),
            status: proto::FindingStatus::Analysed as i32,
            ..Default::default()
        };
        let refused = ImageFinding::from_proto(&finding).expect_err("no model");
        assert!(refused.reason.contains("sha256"), "{refused}");
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_invalid() {
        for probability in [-0.1, 1.5, f32::NAN] {
            let finding = proto::Finding {
                instance: Some(instance_ref()),
                status: proto::FindingStatus::Analysed as i32,
                probability,
                model: Some(proto::ModelIdentity {
                    name: "m".into(),
                    version: "1".into(),
                    sha256: "ab".into(),
                }),
                ..Default::default()
            };
            let refused = ImageFinding::from_proto(&finding).expect_err("out of range");
            assert_eq!(
                refused.kind,
                dead_letter_kind::INVALID_MESSAGE,
                "{probability}"
            );
        }
    }

    #[test]
    fn times_are_kept_to_the_microsecond() {
        let at = to_microseconds(&fxtriage_proto::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        })
        .expect("valid");
        assert_eq!(at.nanosecond(), 123_456_000);
        assert_eq!(to_timestamp(at).nanos, 123_456_000);
    }

    #[test]
    fn an_unspecified_urgency_is_outpatient_from_the_default() {
        let event = proto::InstanceStored {
            instance: Some(instance_ref()),
            received_at: Some(fxtriage_proto::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let instance = StoredInstance::from_proto(&event).expect("valid");
        assert_eq!(instance.urgency, Urgency::Outpatient);
        assert_eq!(instance.urgency_source, UrgencySource::Default);
    }
}
