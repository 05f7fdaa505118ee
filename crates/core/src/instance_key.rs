//! Where a stored instance lives in the object store:
//! `{site}/{study}/{series}/{sop}.dcm`. Every part is validated, so the key is
//! always a valid object key, and a resend of the same instance lands on the same
//! key (an idempotent overwrite).

use std::fmt;

use crate::{DicomUid, SiteId};

/// The identity of one stored instance, and so its object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceKey {
    pub site: SiteId,
    pub study: DicomUid,
    pub series: DicomUid,
    pub sop: DicomUid,
}

impl InstanceKey {
    /// `{site}/{study}/{series}/{sop}.dcm`.
    pub fn object_key(&self) -> String {
        format!(
            "{}/{}/{}/{}.dcm",
            self.site, self.study, self.series, self.sop
        )
    }

    /// The key of [`InstanceKey::object_key`] read back; `None` for anything else.
    pub fn from_object_key(key: &str) -> Option<Self> {
        let mut parts = key.strip_suffix(".dcm")?.split('/');
        let key = Self {
            site: SiteId::parse(parts.next()?).ok()?,
            study: DicomUid::parse(parts.next()?).ok()?,
            series: DicomUid::parse(parts.next()?).ok()?,
            sop: DicomUid::parse(parts.next()?).ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_key_reads_back_and_nothing_else_does() {
        let key = InstanceKey {
            site: SiteId::parse("st-marys").expect("site"),
            study: DicomUid::parse("1.2.3").expect("uid"),
            series: DicomUid::parse("1.2.3.4").expect("uid"),
            sop: DicomUid::parse("1.2.3.4.5").expect("uid"),
        };
        assert_eq!(key.object_key(), "st-marys/1.2.3/1.2.3.4/1.2.3.4.5.dcm");
        assert_eq!(InstanceKey::from_object_key(&key.object_key()), Some(key));
        for other in [
            "st-marys/1.2.3/1.2.3.4/1.2.3.4.5",
            "st-marys/1.2.3/1.2.3.4.5.dcm",
            "quarantine/st-marys/2026/x.dcm",
            "st-marys/1.2.3/1.2.3.4/1.2.3.4.5/6.dcm",
        ] {
            assert_eq!(InstanceKey::from_object_key(other), None, "{other}");
        }
    }
}
