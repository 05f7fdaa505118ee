//! The words of a worklist item: its AI result as readers see it, its state, and
//! the clinical urgency's source, each with the spelling the database and the
//! `WorklistChange` contract use.

use std::fmt;

use fxtriage_core::Urgency;
use fxtriage_proto::v1 as proto;

use crate::policy::AiResult;

/// The AI result of a study as shown on the worklist. It refines the policy's
/// [`AiResult`]: "awaiting analysis" and "not analysed" both keep the clinical
/// priority, but only the first will change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StudyAiResult {
    /// Eligible images are still waiting for the model, and none analysed so far
    /// is above the "possible" operating point.
    AwaitingAnalysis,
    Suspected,
    Possible,
    /// Every eligible image is settled and none is above "possible".
    NoFinding,
    /// Nothing was analysed and nothing will be: no eligible image, or all failed.
    NotAnalysed,
}

impl StudyAiResult {
    pub const ALL: [StudyAiResult; 5] = [
        StudyAiResult::AwaitingAnalysis,
        StudyAiResult::Suspected,
        StudyAiResult::Possible,
        StudyAiResult::NoFinding,
        StudyAiResult::NotAnalysed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StudyAiResult::AwaitingAnalysis => "awaiting-analysis",
            StudyAiResult::Suspected => "suspected",
            StudyAiResult::Possible => "possible",
            StudyAiResult::NoFinding => "no-finding",
            StudyAiResult::NotAnalysed => "not-analysed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|result| result.as_str() == value)
    }

    /// The policy class that sets the deadline.
    pub fn policy_class(self) -> AiResult {
        match self {
            StudyAiResult::Suspected => AiResult::Suspected,
            StudyAiResult::Possible => AiResult::Possible,
            StudyAiResult::NoFinding => AiResult::NoFinding,
            StudyAiResult::AwaitingAnalysis | StudyAiResult::NotAnalysed => AiResult::NotAnalysed,
        }
    }

    pub fn to_proto(self) -> proto::AiResult {
        match self {
            StudyAiResult::AwaitingAnalysis => proto::AiResult::AwaitingAnalysis,
            StudyAiResult::Suspected => proto::AiResult::Suspected,
            StudyAiResult::Possible => proto::AiResult::Possible,
            StudyAiResult::NoFinding => proto::AiResult::NoFinding,
            StudyAiResult::NotAnalysed => proto::AiResult::NotAnalysed,
        }
    }
}

impl fmt::Display for StudyAiResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a worklist item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorklistState {
    Open,
    Claimed,
    Reported,
}

impl WorklistState {
    pub const ALL: [WorklistState; 3] = [
        WorklistState::Open,
        WorklistState::Claimed,
        WorklistState::Reported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorklistState::Open => "open",
            WorklistState::Claimed => "claimed",
            WorklistState::Reported => "reported",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == value)
    }

    pub fn to_proto(self) -> proto::WorklistState {
        match self {
            WorklistState::Open => proto::WorklistState::Open,
            WorklistState::Claimed => proto::WorklistState::Claimed,
            WorklistState::Reported => proto::WorklistState::Reported,
        }
    }
}

impl fmt::Display for WorklistState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a study's clinical urgency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrgencySource {
    Dataset,
    AeTitle,
    Department,
    Default,
}

impl UrgencySource {
    pub const ALL: [UrgencySource; 4] = [
        UrgencySource::Dataset,
        UrgencySource::AeTitle,
        UrgencySource::Department,
        UrgencySource::Default,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UrgencySource::Dataset => "dataset",
            UrgencySource::AeTitle => "ae-title",
            UrgencySource::Department => "department",
            UrgencySource::Default => "default",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str() == value)
    }

    pub fn from_proto(source: proto::UrgencySource) -> Self {
        match source {
            proto::UrgencySource::Dataset => UrgencySource::Dataset,
            proto::UrgencySource::AeTitle => UrgencySource::AeTitle,
            proto::UrgencySource::Department => UrgencySource::Department,
            proto::UrgencySource::Default | proto::UrgencySource::Unspecified => {
                UrgencySource::Default
            }
        }
    }
}

/// Clinical urgency from the wire; an unspecified urgency is the site default,
/// outpatient (as ingest applies it).
pub fn urgency_from_proto(urgency: proto::Urgency) -> Urgency {
    match urgency {
        proto::Urgency::Emergency => Urgency::Emergency,
        proto::Urgency::Inpatient => Urgency::Inpatient,
        proto::Urgency::Outpatient | proto::Urgency::Unspecified => Urgency::Outpatient,
    }
}

pub fn urgency_to_proto(urgency: Urgency) -> proto::Urgency {
    match urgency {
        Urgency::Emergency => proto::Urgency::Emergency,
        Urgency::Inpatient => proto::Urgency::Inpatient,
        Urgency::Outpatient => proto::Urgency::Outpatient,
    }
}

/// Lower is more urgent: the order in which a study takes the highest urgency of its images.
pub fn urgency_rank(urgency: Urgency) -> u8 {
    match urgency {
        Urgency::Emergency => 0,
        Urgency::Inpatient => 1,
        Urgency::Outpatient => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back() {
        for result in StudyAiResult::ALL {
            assert_eq!(StudyAiResult::parse(result.as_str()), Some(result));
        }
        for state in WorklistState::ALL {
            assert_eq!(WorklistState::parse(state.as_str()), Some(state));
        }
        for source in UrgencySource::ALL {
            assert_eq!(UrgencySource::parse(source.as_str()), Some(source));
        }
        assert_eq!(StudyAiResult::parse("maybe"), None);
    }

    #[test]
    fn awaiting_and_not_analysed_keep_the_clinical_class() {
        assert_eq!(
            StudyAiResult::AwaitingAnalysis.policy_class(),
            AiResult::NotAnalysed
        );
        assert_eq!(
            StudyAiResult::NotAnalysed.policy_class(),
            AiResult::NotAnalysed
        );
    }
}
