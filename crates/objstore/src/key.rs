use std::fmt;
use std::str::FromStr;

/// The name of an object: `/`-separated segments such as
/// `site-a/1.2.840.1/1.2.840.2/1.2.840.3.dcm`.
///
/// The rules are the intersection of what S3 and a local directory can both
/// store without surprises, and they guarantee that a key mapped onto a
/// filesystem path can never leave the store's root: no leading `/`, no `\`,
/// no empty, `.` or `..` segments, no control characters, at most 1024 bytes
/// (the S3 limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct InvalidObjectKey {
    pub key: String,
    pub reason: &'static str,
}

impl ObjectKey {
    /// The S3 limit on a key's UTF-8 length.
    pub const MAX_LEN: usize = 1024;

    pub fn parse(key: &str) -> Result<Self, InvalidObjectKey> {
        let invalid = |reason| {
            Err(InvalidObjectKey {
                key: key.to_owned(),
                reason,
            })
        };
        if key.is_empty() {
            return invalid("it is empty");
        }
        if key.len() > Self::MAX_LEN {
            return invalid("it is longer than 1024 bytes");
        }
        if key.starts_with('/') {
            return invalid("it starts with '/'");
        }
        if key.contains('\\') {
            return invalid("it contains '\\'");
        }
        if key.chars().any(char::is_control) {
            return invalid("it contains a control character");
        }
        for segment in key.split('/') {
            match segment {
                "" => return invalid("it has an empty segment"),
                "." | ".." => return invalid("it has a '.' or '..' segment"),
                _ => {}
            }
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The `/`-separated parts of the key, none of them empty, `.` or `..`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectKey {
    type Err = InvalidObjectKey;
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Self::parse(key)
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = InvalidObjectKey;
    fn try_from(key: &str) -> Result<Self, Self::Error> {
        Self::parse(key)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = InvalidObjectKey;
    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::parse(&key)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> Self {
        key.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection_reason(key: &str) -> &'static str {
        ObjectKey::parse(key)
            .expect_err(&format!("{key:?} should be rejected"))
            .reason
    }

    #[test]
    fn accepts_study_paths_and_unusual_but_safe_names() {
        for key in [
            "a",
            "site-a/1.2.840.10008/1.2.3/4.5.6.dcm",
            "quarantine/site a/reason+1=%20.txt",
            "unicode/ünïcödé/файл",
            "dots/..hidden/.config/file..",
            "trailing.dot.",
        ] {
            let parsed = ObjectKey::parse(key).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(parsed.as_str(), key);
        }
    }

    #[test]
    fn rejects_keys_that_could_escape_a_directory_root() {
        assert_eq!(
            rejection_reason("../etc/passwd"),
            "it has a '.' or '..' segment"
        );
        assert_eq!(
            rejection_reason("a/../../b"),
            "it has a '.' or '..' segment"
        );
        assert_eq!(rejection_reason("a/./b"), "it has a '.' or '..' segment");
        assert_eq!(rejection_reason(".."), "it has a '.' or '..' segment");
        assert_eq!(rejection_reason("/etc/passwd"), "it starts with '/'");
        assert_eq!(rejection_reason("a\\..\\b"), "it contains '\\'");
    }

    #[test]
    fn rejects_empty_segments_and_empty_keys() {
        assert_eq!(rejection_reason(""), "it is empty");
        assert_eq!(rejection_reason("a//b"), "it has an empty segment");
        assert_eq!(rejection_reason("a/b/"), "it has an empty segment");
    }

    #[test]
    fn rejects_control_characters() {
        assert_eq!(rejection_reason("a\nb"), "it contains a control character");
        assert_eq!(rejection_reason("a\0b"), "it contains a control character");
        assert_eq!(
            rejection_reason("a\u{7f}"),
            "it contains a control character"
        );
        assert_eq!(
            rejection_reason("a\u{85}"),
            "it contains a control character"
        );
    }

    #[test]
    fn limits_length_in_bytes_not_characters() {
        let longest = "k".repeat(ObjectKey::MAX_LEN);
        assert!(ObjectKey::parse(&longest).is_ok());
        assert_eq!(
            rejection_reason(&format!("{longest}k")),
            "it is longer than 1024 bytes"
        );
        // 513 two-byte characters are 1026 bytes.
        assert_eq!(
            rejection_reason(&"é".repeat(513)),
            "it is longer than 1024 bytes"
        );
    }

    #[test]
    fn error_names_the_key() {
        let error = ObjectKey::parse("a/../b").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid object key \"a/../b\": it has a '.' or '..' segment"
        );
    }
}
