//! The priority policy of every site, from an optional TOML file.
//!
//! Every key is optional. A site inherits `[default]` field by field, and
//! `[default]` inherits the built-in defaults ([`Policy::default`]), so a file
//! names only what differs. Times are target turnarounds in minutes by clinical
//! urgency and AI result; operating points are probability thresholds.
//!
//! ```toml
//! # Every site not listed under [sites].
//! [default.operating_points]
//! suspected = 0.7   # at or above: "suspected fracture"
//! possible = 0.4    # at or above: "possible fracture"
//!
//! [default.targets.emergency]
//! suspected_minutes = 30
//! possible_minutes = 45
//! no_finding_minutes = 60
//! not_analysed_minutes = 60   # the clinical target: awaiting, failed, not eligible
//!
//! # inpatient: 60 / 180 / 360 / 360; outpatient: 120 / 720 / 2880 / 2880.
//!
//! [sites.st-marys.operating_points]
//! suspected = 0.8
//!
//! [sites.st-marys.targets.outpatient]
//! suspected_minutes = 90
//! ```
//!
//! Each resulting policy must pass [`Policy::validate`]: 0 <= possible <= suspected
//! <= 1; per urgency suspected <= possible <= no finding <= not analysed, at least
//! one minute; clinical targets emergency <= inpatient <= outpatient.

use std::collections::BTreeMap;
use std::path::Path;

use fxtriage_core::SiteId;

use crate::policy::Policy;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyBook {
    default: Policy,
    sites: BTreeMap<SiteId, Policy>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyBookError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policy file: {0}")]
    Parse(String),
    #[error("invalid policy file: {section}: {message}")]
    Invalid { section: String, message: String },
}

impl PolicyBook {
    /// Every site gets `default`.
    pub fn uniform(default: Policy) -> Self {
        Self {
            default,
            sites: BTreeMap::new(),
        }
    }

    /// Gives `site` its own policy.
    pub fn with_site(mut self, site: SiteId, policy: Policy) -> Self {
        self.sites.insert(site, policy);
        self
    }

    pub fn for_site(&self, site: &SiteId) -> &Policy {
        self.sites.get(site).unwrap_or(&self.default)
    }

    pub fn default_policy(&self) -> &Policy {
        &self.default
    }

    pub fn load(path: &Path) -> Result<Self, PolicyBookError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyBookError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, PolicyBookError> {
        let mut file: toml::Table =
            toml::from_str(text).map_err(|error| PolicyBookError::Parse(error.to_string()))?;
        if let Some(unknown) = file
            .keys()
            .find(|key| !matches!(key.as_str(), "default" | "sites"))
        {
            return Err(PolicyBookError::Parse(format!(
                "unknown section [{unknown}] (expected [default] and [sites.<site id>])"
            )));
        }
        let built_in = toml::Table::try_from(Policy::default())
            .map_err(|error| PolicyBookError::Parse(error.to_string()))?;
        let default_table = merged(&built_in, file.remove("default"), "default")?;
        let default = policy_from(&default_table, "default")?;

        let mut sites = BTreeMap::new();
        let site_tables = match file.remove("sites") {
            None => toml::Table::new(),
            Some(toml::Value::Table(table)) => table,
            Some(_) => {
                return Err(PolicyBookError::Parse(
                    "sites must be a table of [sites.<site id>] sections".into(),
                ));
            }
        };
        for (name, overrides) in site_tables {
            let section = format!("sites.{name}");
            let site = SiteId::parse(name).map_err(|error| PolicyBookError::Invalid {
                section: section.clone(),
                message: error.to_string(),
            })?;
            let table = merged(&default_table, Some(overrides), &section)?;
            sites.insert(site, policy_from(&table, &section)?);
        }
        Ok(Self { default, sites })
    }
}

/// `base` with every key of `overrides` replacing its counterpart, recursively.
fn merged(
    base: &toml::Table,
    overrides: Option<toml::Value>,
    section: &str,
) -> Result<toml::Table, PolicyBookError> {
    let mut result = base.clone();
    let overrides = match overrides {
        None => return Ok(result),
        Some(toml::Value::Table(table)) => table,
        Some(_) => {
            return Err(PolicyBookError::Invalid {
                section: section.to_owned(),
                message: "must be a table".into(),
            });
        }
    };
    for (key, value) in overrides {
        let combined = match (result.get(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => {
                toml::Value::Table(merged(
                    inner,
                    Some(toml::Value::Table(more)),
                    &format!("{section}.{key}"),
                )?)
            }
            (_, value) => value,
        };
        result.insert(key, combined);
    }
    Ok(result)
}

fn policy_from(table: &toml::Table, section: &str) -> Result<Policy, PolicyBookError> {
    let invalid = |message: String| PolicyBookError::Invalid {
        section: section.to_owned(),
        message,
    };
    let policy: Policy = table
        .clone()
        .try_into()
        .map_err(|error: toml::de::Error| invalid(error.message().to_owned()))?;
    policy
        .validate()
        .map_err(|error| invalid(error.to_string()))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use fxtriage_core::Urgency;

    use super::*;
    use crate::policy::AiResult;

    fn site(id: &str) -> SiteId {
        SiteId::parse(id).expect("site id")
    }

    #[test]
    fn an_empty_file_is_the_built_in_policy_for_everyone() {
        let book = PolicyBook::from_toml("").expect("empty file");
        assert_eq!(book, PolicyBook::default());
        assert_eq!(book.for_site(&site("anywhere")), &Policy::default());
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            [default.operating_points]
            suspected = 0.7
            possible = 0.4

            [default.targets.emergency]
            suspected_minutes = 30
            possible_minutes = 45
            no_finding_minutes = 60
            not_analysed_minutes = 60

            [sites.st-marys.operating_points]
            suspected = 0.8

            [sites.st-marys.targets.outpatient]
            suspected_minutes = 90
        "#;
        let book = PolicyBook::from_toml(text).expect("example");
        let st_marys = book.for_site(&site("st-marys"));
        assert_eq!(st_marys.operating_points.suspected, 0.8);
        assert_eq!(
            st_marys.operating_points.possible, 0.4,
            "inherited from [default]"
        );
        assert_eq!(
            st_marys.target(Urgency::Outpatient, AiResult::Suspected),
            std::time::Duration::from_secs(90 * 60)
        );
        assert_eq!(
            st_marys.target(Urgency::Outpatient, AiResult::NoFinding),
            Policy::default().target(Urgency::Outpatient, AiResult::NoFinding),
            "inherited from the built-in defaults"
        );
        assert_eq!(book.for_site(&site("elsewhere")), book.default_policy());
    }

    #[test]
    fn sites_inherit_the_file_default() {
        let text = r#"
            [default.operating_points]
            possible = 0.3
            [sites.a.targets.emergency]
            suspected_minutes = 15
        "#;
        let book = PolicyBook::from_toml(text).expect("valid");
        assert_eq!(book.for_site(&site("a")).operating_points.possible, 0.3);
        assert_eq!(book.default_policy().operating_points.possible, 0.3);
    }

    #[test]
    fn mistakes_are_refused_with_the_section_named() {
        let unordered = "[sites.a.targets.outpatient]\nsuspected_minutes = 100000\n";
        let error = PolicyBook::from_toml(unordered).expect_err("unordered targets");
        assert!(error.to_string().contains("sites.a"), "{error}");

        let typo = "[default.operating_points]\nsuspectd = 0.9\n";
        let error = PolicyBook::from_toml(typo).expect_err("unknown field");
        assert!(error.to_string().contains("suspectd"), "{error}");

        let bad_site = "[sites.Bad_Site.operating_points]\nsuspected = 0.9\n";
        assert!(PolicyBook::from_toml(bad_site).is_err());

        let unknown_section = "[defaults]\n";
        assert!(PolicyBook::from_toml(unknown_section).is_err());
    }
}
