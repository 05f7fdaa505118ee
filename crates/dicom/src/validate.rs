//! The one place that decides whether an instance is accepted (and if not, why)
//! and whether it is analysed.

use std::fmt;

use fxtriage_core::DicomUid;

use crate::{ImageLimits, InstanceInfo, RoutingRules};

/// Why an instance was refused. It goes to quarantine with this reason and never
/// enters the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectionKind {
    NotDicom,
    Unreadable,
    UnsupportedTransferSyntax,
    MissingAttribute,
    MalformedUid,
    SopClassNotAccepted,
    NoPixelData,
    ImageTooLarge,
    ImageTooSmall,
    UnsupportedBitDepth,
    InstanceTooLarge,
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::NotDicom => "not-dicom",
            RejectionKind::Unreadable => "unreadable",
            RejectionKind::UnsupportedTransferSyntax => "unsupported-transfer-syntax",
            RejectionKind::MissingAttribute => "missing-attribute",
            RejectionKind::MalformedUid => "malformed-uid",
            RejectionKind::SopClassNotAccepted => "sop-class-not-accepted",
            RejectionKind::NoPixelData => "no-pixel-data",
            RejectionKind::ImageTooLarge => "image-too-large",
            RejectionKind::ImageTooSmall => "image-too-small",
            RejectionKind::UnsupportedBitDepth => "unsupported-bit-depth",
            RejectionKind::InstanceTooLarge => "instance-too-large",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{}: {message}", kind.as_str())]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: RejectionKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Whether an accepted instance goes to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    NotEligible { reason: String },
}

impl fmt::Display for Eligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Eligibility::Eligible => f.write_str("eligible"),
            Eligibility::NotEligible { reason } => write!(f, "not eligible: {reason}"),
        }
    }
}

/// The UIDs of an accepted instance, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUids {
    pub sop_class: DicomUid,
    pub sop_instance: DicomUid,
    pub study_instance: DicomUid,
    pub series_instance: DicomUid,
}

fn required_uid(value: &Option<String>, attribute: &str) -> Result<DicomUid, Rejection> {
    let Some(value) = value else {
        return Err(Rejection::new(
            RejectionKind::MissingAttribute,
            format!("{attribute} is missing"),
        ));
    };
    DicomUid::parse(value).map_err(|error| {
        Rejection::new(RejectionKind::MalformedUid, format!("{attribute}: {error}"))
    })
}

/// Checks `info` against the site's `rules` and `limits`; `byte_size` is the size
/// of the instance as received.
pub fn validate(
    info: &InstanceInfo,
    byte_size: u64,
    rules: &RoutingRules,
    limits: &ImageLimits,
) -> Result<(ValidatedUids, Eligibility), Rejection> {
    if byte_size > limits.max_instance_bytes {
        return Err(Rejection::new(
            RejectionKind::InstanceTooLarge,
            format!(
                "instance is {byte_size} bytes, the limit is {}",
                limits.max_instance_bytes
            ),
        ));
    }
    let uids = ValidatedUids {
        sop_class: required_uid(&info.sop_class_uid, "SOPClassUID (0008,0016)")?,
        sop_instance: required_uid(&info.sop_instance_uid, "SOPInstanceUID (0008,0018)")?,
        study_instance: required_uid(&info.study_instance_uid, "StudyInstanceUID (0020,000D)")?,
        series_instance: required_uid(&info.series_instance_uid, "SeriesInstanceUID (0020,000E)")?,
    };
    if !rules.accepts_sop_class(uids.sop_class.as_str()) {
        return Err(Rejection::new(
            RejectionKind::SopClassNotAccepted,
            format!("SOP class {} is not accepted by this site", uids.sop_class),
        ));
    }
    if !info.has_pixel_data {
        return Err(Rejection::new(
            RejectionKind::NoPixelData,
            "the instance has no PixelData (7FE0,0010)",
        ));
    }
    let (Some(rows), Some(columns)) = (info.rows, info.columns) else {
        return Err(Rejection::new(
            RejectionKind::MissingAttribute,
            "Rows (0028,0010) or Columns (0028,0011) is missing",
        ));
    };
    if rows > limits.max_dimension || columns > limits.max_dimension {
        return Err(Rejection::new(
            RejectionKind::ImageTooLarge,
            format!(
                "image is {columns}x{rows}, the limit is {0}x{0}",
                limits.max_dimension
            ),
        ));
    }
    if rows < limits.min_dimension || columns < limits.min_dimension {
        return Err(Rejection::new(
            RejectionKind::ImageTooSmall,
            format!(
                "image is {columns}x{rows}, the minimum is {0}x{0}",
                limits.min_dimension
            ),
        ));
    }
    let bits_allocated = info.bits_allocated.unwrap_or(0);
    let bits_stored = info.bits_stored.unwrap_or(bits_allocated);
    if !matches!(bits_allocated, 8 | 16)
        || bits_stored == 0
        || bits_stored > bits_allocated
        || bits_stored > limits.max_bits_stored
    {
        return Err(Rejection::new(
            RejectionKind::UnsupportedBitDepth,
            format!(
                "BitsAllocated {bits_allocated} / BitsStored {bits_stored} is not a supported greyscale depth (8 or 16 allocated, up to {} stored)",
                limits.max_bits_stored
            ),
        ));
    }
    Ok((uids, eligibility(info, rules)))
}

fn eligibility(info: &InstanceInfo, rules: &RoutingRules) -> Eligibility {
    let not_eligible = |reason: String| Eligibility::NotEligible { reason };
    if !rules.modalities.contains(&info.modality) {
        return not_eligible(format!("modality {:?} is not analysed", info.modality));
    }
    if info.samples_per_pixel.unwrap_or(1) != 1
        || !matches!(
            info.photometric_interpretation.as_str(),
            "MONOCHROME1" | "MONOCHROME2" | ""
        )
    {
        return not_eligible(format!(
            "photometric interpretation {:?} is not greyscale",
            info.photometric_interpretation
        ));
    }
    if info.body_part.is_empty() {
        return if rules.analyse_unknown_body_part {
            Eligibility::Eligible
        } else {
            not_eligible("BodyPartExamined is not stated".to_owned())
        };
    }
    if !rules.body_parts.contains(&info.body_part) {
        return not_eligible(format!("body part {:?} is not analysed", info.body_part));
    }
    Eligibility::Eligible
}
