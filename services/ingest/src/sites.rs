//! The sites ingest serves, from a TOML file: how each is reached (called AE
//! titles, STOW-RS tokens), what it accepts (routing rules, limits) and how its
//! clinical urgency is mapped.
//!
//! ```toml
//! [[site]]
//! id = "st-marys"
//! ae_titles = ["FXTRIAGE"]
//! # sha256 (hex) of each STOW-RS bearer token; the tokens themselves are never stored.
//! stow_token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! [site.urgency.ae_titles]
//! ED_DR1 = "emergency"
//! [site.urgency.departments]
//! "EMERGENCY DEPARTMENT" = "emergency"
//! WARD = "inpatient"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use fxtriage_core::{SiteId, Urgency};
use fxtriage_dicom::{ImageLimits, RoutingRules};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: SiteId,
    /// Called AE titles that deliver to this site.
    #[serde(default)]
    pub ae_titles: Vec<String>,
    /// SHA-256 (hex) of the bearer tokens allowed to STOW to this site.
    #[serde(default)]
    pub stow_token_sha256: Vec<String>,
    #[serde(default)]
    pub rules: RoutingRules,
    #[serde(default)]
    pub limits: ImageLimits,
    #[serde(default)]
    pub urgency: UrgencyMapping,
}

/// Site-specific urgency for images whose dataset does not state a priority.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgencyMapping {
    /// Calling AE title (the sender) to urgency.
    #[serde(default)]
    pub ae_titles: BTreeMap<String, Urgency>,
    /// InstitutionalDepartmentName (upper case) to urgency.
    #[serde(default)]
    pub departments: BTreeMap<String, Urgency>,
}

#[derive(Debug, Clone, Default)]
pub struct Sites {
    sites: Vec<SiteConfig>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SitesFile {
    #[serde(default)]
    site: Vec<SiteConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum SitesError {
    #[error("cannot read the sites file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid sites file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid sites file: {0}")]
    Invalid(String),
}

/// A token's SHA-256 in lower-case hex, as the sites file stores it.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sites {
    pub fn new(sites: Vec<SiteConfig>) -> Result<Self, SitesError> {
        let mut seen_ae_titles = BTreeMap::new();
        for site in &sites {
            for ae_title in &site.ae_titles {
                if ae_title.is_empty() || ae_title.len() > 16 {
                    return Err(SitesError::Invalid(format!(
                        "AE title {ae_title:?} of site {} must have 1 to 16 characters",
                        site.id
                    )));
                }
                if let Some(other) = seen_ae_titles.insert(ae_title.clone(), site.id.clone()) {
                    return Err(SitesError::Invalid(format!(
                        "AE title {ae_title} belongs to both {other} and {}",
                        site.id
                    )));
                }
            }
        }
        Ok(Self { sites })
    }

    pub fn from_toml(text: &str) -> Result<Self, SitesError> {
        let file: SitesFile = toml::from_str(text)?;
        Self::new(file.site)
    }

    pub fn load(path: &Path) -> Result<Self, SitesError> {
        let text = std::fs::read_to_string(path).map_err(|source| SitesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn by_called_ae_title(&self, called: &str) -> Option<&SiteConfig> {
        let called = called.trim();
        self.sites
            .iter()
            .find(|site| site.ae_titles.iter().any(|ae| ae == called))
    }

    pub fn by_id(&self, id: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|site| site.id.as_str() == id)
    }

    /// The site `id`, if `token` is one of its STOW-RS tokens. Compares digests, so
    /// the comparison takes the same time whatever the token's prefix.
    pub fn authorise_stow(&self, id: &str, token: &str) -> Option<&SiteConfig> {
        let digest = token_digest(token);
        self.by_id(id).filter(|site| {
            site.stow_token_sha256
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(&digest))
        })
    }

    pub fn all(&self) -> &[SiteConfig] {
        &self.sites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [[site]]
        id = "st-marys"
        ae_titles = ["FXTRIAGE", "FX2"]
        stow_token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        [site.urgency.ae_titles]
        ED_DR1 = "emergency"
        [site.urgency.departments]
        WARD = "inpatient"

        [[site]]
        id = "kings"
        ae_titles = ["KINGSFX"]
    "#;

    #[test]
    fn sites_are_found_by_ae_title_and_token() {
        let sites = Sites::from_toml(EXAMPLE).expect("valid");
        assert_eq!(
            sites.by_called_ae_title("FX2 ").map(|s| s.id.as_str()),
            Some("st-marys")
        );
        assert_eq!(
            sites.by_called_ae_title("KINGSFX").map(|s| s.id.as_str()),
            Some("kings")
        );
        assert!(sites.by_called_ae_title("UNKNOWN").is_none());
        // sha256("test") is the digest in the file.
        assert!(sites.authorise_stow("st-marys", "test").is_some());
        assert!(sites.authorise_stow("st-marys", "wrong").is_none());
        assert!(
            sites.authorise_stow("kings", "test").is_none(),
            "a token is valid for its own site only"
        );
        let mapping = &sites.by_id("st-marys").expect("site").urgency;
        assert_eq!(mapping.ae_titles.get("ED_DR1"), Some(&Urgency::Emergency));
    }

    #[test]
    fn an_ae_title_cannot_belong_to_two_sites() {
        let text = r#"
            [[site]]
            id = "a"
            ae_titles = ["SAME"]
            [[site]]
            id = "b"
            ae_titles = ["SAME"]
        "#;
        assert!(Sites::from_toml(text).is_err());
        assert!(
            Sites::from_toml("[[site]]\nid = \"Bad Id\"").is_err(),
            "site ids are validated"
        );
    }
}
