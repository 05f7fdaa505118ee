//! A site's routing rules and image limits, with the defaults a fracture triage
//! service needs: radiographs (CR, DX) of the appendicular skeleton and pelvis.

use crate::sop_class;

/// Which instances are analysed by the model. Instances outside the rules are
/// still stored and still reach the worklist, at their clinical urgency, marked
/// not eligible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingRules {
    /// Modalities analysed (upper case).
    pub modalities: Vec<String>,
    /// BodyPartExamined values analysed (upper case).
    pub body_parts: Vec<String>,
    /// Whether an image without BodyPartExamined is analysed.
    pub analyse_unknown_body_part: bool,
    /// SOP classes accepted besides CR and DX (stored, not analysed).
    pub extra_sop_classes: Vec<String>,
}

/// BodyPartExamined defined terms (PS3.16 CID 4031 and common variants) of the
/// limbs, their girdles and the pelvis.
pub const APPENDICULAR_AND_PELVIS: &[&str] = &[
    "SHOULDER",
    "CLAVICLE",
    "SCAPULA",
    "ACJOINT",
    "ARM",
    "UPRLIMB",
    "UPPER LIMB",
    "UPPER EXTREMITY",
    "HUMERUS",
    "ELBOW",
    "FOREARM",
    "RADIUS",
    "ULNA",
    "WRIST",
    "HAND",
    "FINGER",
    "THUMB",
    "EXTREMITY",
    "PELVIS",
    "HIP",
    "SIJOINT",
    "SACROILIAC",
    "FEMUR",
    "THIGH",
    "LEG",
    "LOWER LIMB",
    "LOWERLIMB",
    "LOWER EXTREMITY",
    "LOWER LEG",
    "KNEE",
    "PATELLA",
    "TIBIA",
    "FIBULA",
    "ANKLE",
    "FOOT",
    "HEEL",
    "CALCANEUS",
    "TOE",
];

impl Default for RoutingRules {
    fn default() -> Self {
        Self {
            modalities: vec!["CR".into(), "DX".into()],
            body_parts: APPENDICULAR_AND_PELVIS
                .iter()
                .map(|part| (*part).to_owned())
                .collect(),
            analyse_unknown_body_part: false,
            extra_sop_classes: Vec::new(),
        }
    }
}

impl RoutingRules {
    /// Whether instances of `sop_class_uid` are accepted at all.
    pub fn accepts_sop_class(&self, sop_class_uid: &str) -> bool {
        sop_class::RADIOGRAPHY.contains(&sop_class_uid)
            || self
                .extra_sop_classes
                .iter()
                .any(|extra| extra == sop_class_uid)
    }

    /// Every SOP class accepted, for association negotiation.
    pub fn accepted_sop_classes(&self) -> Vec<String> {
        let mut classes: Vec<String> = sop_class::RADIOGRAPHY
            .iter()
            .map(|uid| (*uid).to_owned())
            .collect();
        classes.extend(self.extra_sop_classes.iter().cloned());
        classes
    }
}

/// Limits that protect the services from images they cannot or should not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Largest instance accepted, in bytes.
    pub max_instance_bytes: u64,
    /// Largest rows or columns accepted.
    pub max_dimension: u32,
    /// Smallest rows or columns accepted.
    pub min_dimension: u32,
    /// Highest BitsStored accepted.
    pub max_bits_stored: u16,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_instance_bytes: 256 * 1024 * 1024,
            max_dimension: 8192,
            min_dimension: 64,
            max_bits_stored: 16,
        }
    }
}
