use std::fmt;

/// A DICOM unique identifier (study, series, SOP instance, SOP class, transfer
/// syntax): up to 64 characters of digits and dots, components without leading
/// zeros (PS3.5 section 9.1). UIDs become object keys, so they are validated
/// before use.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct DicomUid(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DICOM UID {value:?}: {reason}")]
pub struct InvalidDicomUid {
    pub value: String,
    pub reason: &'static str,
}

impl DicomUid {
    pub const MAX_LEN: usize = 64;

    /// Parses a UID, ignoring the trailing NUL or space padding DICOM adds to odd-length values.
    pub fn parse(value: &str) -> Result<Self, InvalidDicomUid> {
        let trimmed = value.trim_end_matches(['\0', ' ']);
        let invalid = |reason| {
            Err(InvalidDicomUid {
                value: trimmed.to_owned(),
                reason,
            })
        };
        if trimmed.is_empty() {
            return invalid("it is empty");
        }
        if trimmed.len() > Self::MAX_LEN {
            return invalid("it is longer than 64 characters");
        }
        for component in trimmed.split('.') {
            if component.is_empty() {
                return invalid("it has an empty component");
            }
            if !component.bytes().all(|b| b.is_ascii_digit()) {
                return invalid("only digits and '.' are allowed");
            }
            if component.len() > 1 && component.starts_with('0') {
                return invalid("a component has a leading zero");
            }
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DicomUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DicomUid {
    type Error = InvalidDicomUid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DicomUid> for String {
    fn from(uid: DicomUid) -> Self {
        uid.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_uids_and_strips_padding() {
        let uid = DicomUid::parse("1.2.840.10008.5.1.4.1.1.1.1\0").expect("valid");
        assert_eq!(uid.as_str(), "1.2.840.10008.5.1.4.1.1.1.1");
        assert!(DicomUid::parse("0.1.0").is_ok());
    }

    #[test]
    fn rejects_malformed_uids_with_a_reason() {
        let cases = [
            ("", "it is empty"),
            ("1..2", "it has an empty component"),
            ("1.2.a", "only digits and '.' are allowed"),
            ("1.02", "a component has a leading zero"),
            ("../../x", "it has an empty component"),
        ];
        for (value, reason) in cases {
            let error = DicomUid::parse(value).expect_err(value);
            assert_eq!(error.reason, reason, "{value:?}");
        }
        assert!(DicomUid::parse(&"1".repeat(65)).is_err());
    }
}
