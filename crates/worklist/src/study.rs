//! The words of a worklist item: its AI result as readers see it and its state,
//! each with the spelling the database and the `WorklistChange` contract use.

use std::fmt;

use fxtriage_core::policy::AiResult;
use fxtriage_proto::v1 as proto;

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
