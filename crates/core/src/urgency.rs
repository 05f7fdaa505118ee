use std::fmt;
use std::str::FromStr;

/// Clinical urgency of the order, as the hospital stated it. AI may raise a
/// study's priority but never lower it below this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Emergency,
    Inpatient,
    Outpatient,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown urgency {0:?} (expected emergency, inpatient or outpatient)")]
pub struct UnknownUrgency(pub String);

impl Urgency {
    pub const ALL: [Urgency; 3] = [Urgency::Emergency, Urgency::Inpatient, Urgency::Outpatient];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Emergency => "emergency",
            Urgency::Inpatient => "inpatient",
            Urgency::Outpatient => "outpatient",
        }
    }
}

impl Urgency {
    /// Lower is more urgent: a study takes the most urgent of its images.
    pub fn rank(self) -> u8 {
        match self {
            Urgency::Emergency => 0,
            Urgency::Inpatient => 1,
            Urgency::Outpatient => 2,
        }
    }
}

/// Where an image's clinical urgency came from, so that a reader can judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UrgencySource {
    /// RequestedProcedurePriority in the dataset (or the order).
    Dataset,
    /// The site's mapping of the calling AE title.
    AeTitle,
    /// The site's mapping of the institutional department.
    Department,
    /// Nothing said: outpatient.
    Default,
    /// The hospital's order from its RIS (its priority), on worklist items.
    Order,
}

impl UrgencySource {
    pub const ALL: [UrgencySource; 5] = [
        UrgencySource::Dataset,
        UrgencySource::AeTitle,
        UrgencySource::Department,
        UrgencySource::Default,
        UrgencySource::Order,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UrgencySource::Dataset => "dataset",
            UrgencySource::AeTitle => "ae-title",
            UrgencySource::Department => "department",
            UrgencySource::Default => "default",
            UrgencySource::Order => "order",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str() == value)
    }
}

impl fmt::Display for UrgencySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Urgency {
    type Err = UnknownUrgency;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "emergency" => Ok(Urgency::Emergency),
            "inpatient" => Ok(Urgency::Inpatient),
            "outpatient" => Ok(Urgency::Outpatient),
            _ => Err(UnknownUrgency(value.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_names_case_insensitively() {
        for urgency in Urgency::ALL {
            assert_eq!(
                urgency.as_str().to_uppercase().parse::<Urgency>(),
                Ok(urgency)
            );
        }
        assert!("stat".parse::<Urgency>().is_err());
    }
}
