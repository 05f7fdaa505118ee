//! What the aggregation of a study reads and writes: its images and their
//! findings as summaries, and the study's computed values (the prioritizer's
//! `aggregate` computes them; the store reads and writes them).

use fxtriage_core::Urgency;
use time::OffsetDateTime;

use fxtriage_core::UrgencySource;

use crate::study::StudyAiResult;

/// A finding as the aggregation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingSummary {
    pub model_sha256: String,
    /// `None` for a failed finding.
    pub probability: Option<f32>,
    pub analysed_at: Option<OffsetDateTime>,
}

/// Where one image stands with the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImageAnalysis {
    NotEligible,
    Awaiting,
    Analysed { probability: f32 },
    Failed,
}

impl ImageAnalysis {
    /// Eligible images count their most recently analysed finding (ties by model
    /// SHA-256, so the choice is deterministic); failures count only when nothing
    /// succeeded.
    pub fn of(eligible: bool, findings: &[FindingSummary]) -> Self {
        if !eligible {
            return ImageAnalysis::NotEligible;
        }
        let latest_analysed = findings
            .iter()
            .filter_map(|finding| {
                finding
                    .probability
                    .map(|probability| (finding.analysed_at, &finding.model_sha256, probability))
            })
            .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        match latest_analysed {
            Some((_, _, probability)) => ImageAnalysis::Analysed { probability },
            None if findings.is_empty() => ImageAnalysis::Awaiting,
            None => ImageAnalysis::Failed,
        }
    }

    /// The spelling of `instances.analysis`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageAnalysis::NotEligible => "not-eligible",
            ImageAnalysis::Awaiting => "awaiting",
            ImageAnalysis::Analysed { .. } => "analysed",
            ImageAnalysis::Failed => "failed",
        }
    }
}

/// One image of a study as the aggregation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub sop_instance_uid: String,
    pub received_at: OffsetDateTime,
    pub urgency: Urgency,
    pub urgency_source: UrgencySource,
    pub accession_number: String,
    pub body_part: String,
    pub analysis: ImageAnalysis,
}

/// The worklist values of a study that the prioritizer owns.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyAggregate {
    pub arrived_at: OffsetDateTime,
    pub urgency: Urgency,
    pub urgency_source: UrgencySource,
    pub accession_number: String,
    pub body_parts: Vec<String>,
    pub probability: Option<f32>,
    pub ai_result: StudyAiResult,
    pub deadline: OffsetDateTime,
}
