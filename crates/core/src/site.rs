use std::fmt;

/// A tenant: one hospital or reading group. Every message and every row carries
/// it, and one site's users never see another site's data.
///
/// Site ids appear in object keys and URLs, so they are restricted to lower-case
/// ASCII letters, digits and `-`, 1 to 64 characters, starting with a letter or digit.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid site id {value:?}: {reason}")]
pub struct InvalidSiteId {
    pub value: String,
    pub reason: &'static str,
}

impl SiteId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidSiteId> {
        let value = value.into();
        let invalid = |reason| {
            Err(InvalidSiteId {
                value: value.clone(),
                reason,
            })
        };
        if value.is_empty() {
            return invalid("it is empty");
        }
        if value.len() > Self::MAX_LEN {
            return invalid("it is longer than 64 characters");
        }
        if value.starts_with('-') {
            return invalid("it starts with '-'");
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !value.chars().all(allowed) {
            return invalid("only lower-case letters, digits and '-' are allowed");
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SiteId {
    type Error = InvalidSiteId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<SiteId> for String {
    fn from(site: SiteId) -> Self {
        site.0
    }
}

/// A reading network: a group of sites read by one team. Same spelling rules as
/// a [`SiteId`] (it appears in URLs too); a group and a site may not share an id.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct GroupId(String);

impl GroupId {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidSiteId> {
        SiteId::parse(value).map(|valid| Self(valid.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for GroupId {
    type Error = InvalidSiteId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<GroupId> for String {
    fn from(group: GroupId) -> Self {
        group.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_ids() {
        for ok in ["demo", "st-marys-2", "a", &"x".repeat(64)] {
            assert_eq!(SiteId::parse(ok).expect("valid").as_str(), ok);
        }
    }

    #[test]
    fn rejects_ids_that_could_escape_a_path_or_url() {
        for bad in [
            "",
            "Demo",
            "../etc",
            "a/b",
            "-x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(SiteId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
