//! What a site is: one record that every service reads. Ingest reads how images
//! reach it (called AE titles, allowed calling AE titles), what it analyses
//! (routing rules, limits) and how clinical urgency is mapped; the prioritizer
//! reads its priority policy; dispatch reads its result destinations.

use std::collections::BTreeMap;

use fxtriage_core::policy::Policy;
use fxtriage_core::{GroupId, SiteId, Urgency};
use fxtriage_dicom::{ImageLimits, RoutingRules};

use crate::destinations::Destinations;

/// One site (a hospital, or a department sending under its own AE titles).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: SiteId,
    /// Display name, for people.
    #[serde(default)]
    pub name: String,
    /// Called AE titles that deliver to this site; each belongs to one site only.
    #[serde(default, alias = "ae_titles")]
    pub called_ae_titles: Vec<String>,
    /// When set, only these calling AE titles (modalities, PACS) may associate
    /// with this site's called AE titles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae_titles: Option<Vec<String>>,
    /// Which images the model analyses.
    #[serde(default, alias = "rules")]
    pub routing: RoutingRules,
    /// Images refused outright.
    #[serde(default)]
    pub limits: ImageLimits,
    /// Urgency for images whose dataset states no priority.
    #[serde(default)]
    pub urgency: UrgencyMapping,
    /// Deadlines by urgency and AI result, operating points, aging cap.
    #[serde(default)]
    pub policy: Policy,
    /// Where results go (the site's PACS, RIS, FHIR endpoint).
    #[serde(default, skip_serializing_if = "Destinations::is_empty")]
    pub destinations: Destinations,
    /// The sending facilities (MSH-4) of the HL7 messages that concern this
    /// site (its RIS's orders and reports); each belongs to one site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hl7_sending_facilities: Vec<String>,
    /// The day (YYYY-MM-DD, UTC) the AI's triage began at this site: the
    /// analytics put the studies received before it beside those received
    /// from it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_enabled_from: Option<String>,
    /// The safety net for missed fractures: which reports of no fracture are
    /// listed for a second look.
    #[serde(default, skip_serializing_if = "SecondLook::is_default")]
    pub second_look: SecondLook,
    /// How much of ingest this site may hold at once.
    #[serde(default, skip_serializing_if = "IntakeLimits::is_default")]
    pub intake: IntakeLimits,
    /// Whether C-STORE to this site must come over DICOM TLS, and from whom.
    #[serde(default, skip_serializing_if = "DicomTls::is_default")]
    pub dicom_tls: DicomTls,
    /// The site's time zone (an IANA name, e.g. "Europe/London"): an image
    /// whose acquisition time states no offset from UTC is placed in it, so
    /// that its turnaround starts at its acquisition rather than at receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// C-STORE over DICOM TLS (the secure transport connection profile, PS3.15
/// B.1) for one site. Ingest serves TLS on a listener of its own
/// (`--dimse-tls-address`, with its certificate and, for client
/// certificates, the CA that signs the senders').
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomTls {
    /// Plain C-STORE to the site's AE titles is rejected at association:
    /// its images come over TLS only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// When not empty, an association must present a client certificate,
    /// signed by the configured client CA, whose subject alternative names
    /// include one of these DNS names (implies `required`): the sender is
    /// then known by its certificate, not only by the AE title it claims.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_names: Vec<String>,
}

impl DicomTls {
    fn is_default(&self) -> bool {
        *self == DicomTls::default()
    }

    /// Whether plain (unencrypted) C-STORE to the site is refused.
    pub fn tls_only(&self) -> bool {
        self.required || !self.client_names.is_empty()
    }
}

/// How much of ingest one site may hold at once, so that one hospital's burst
/// (a PACS migration, a misconfigured router opening association after
/// association) cannot take every association or request slot from the others.
/// Unset: only the service-wide limits apply (`--max-associations`, 32 by
/// default, for C-STORE). Over the limit a C-STORE association is rejected as
/// transient (local limit exceeded) and a STOW-RS request gets 429 with
/// `Retry-After`, so senders retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeLimits {
    /// C-STORE associations open at once to the site's called AE titles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_associations: Option<u32>,
    /// STOW-RS requests in progress at once for the site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stow_requests: Option<u32>,
}

impl IntakeLimits {
    fn is_default(&self) -> bool {
        *self == IntakeLimits::default()
    }
}

/// Which studies the discrepancy list holds: reported as no fracture where the
/// AI suspected one, and also where it called one possible when the site asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondLook {
    #[serde(default)]
    pub include_possible: bool,
}

impl SecondLook {
    fn is_default(&self) -> bool {
        *self == SecondLook::default()
    }
}

/// Site-specific urgency for images whose dataset does not state a priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgencyMapping {
    /// Calling AE title (the sender) to urgency.
    #[serde(default)]
    pub ae_titles: BTreeMap<String, Urgency>,
    /// InstitutionalDepartmentName (upper case) to urgency.
    #[serde(default)]
    pub departments: BTreeMap<String, Urgency>,
}

/// A reading network: sites read together by one team, from one worklist.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: GroupId,
    #[serde(default)]
    pub name: String,
    pub sites: Vec<SiteId>,
}

impl SiteConfig {
    /// The site's time zone (`time_zone`), else UTC: where its local days
    /// and hours fall.
    pub fn zone(&self) -> jiff::tz::TimeZone {
        self.time_zone
            .as_deref()
            .and_then(|zone| jiff::tz::TimeZone::get(zone).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// A site with every default: no AE titles, the default rules, limits and policy.
    pub fn new(id: SiteId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            called_ae_titles: Vec::new(),
            calling_ae_titles: None,
            routing: RoutingRules::default(),
            limits: ImageLimits::default(),
            urgency: UrgencyMapping::default(),
            policy: Policy::default(),
            destinations: Destinations::default(),
            hl7_sending_facilities: Vec::new(),
            ai_enabled_from: None,
            second_look: SecondLook::default(),
            intake: IntakeLimits::default(),
            dicom_tls: DicomTls::default(),
            time_zone: None,
        }
    }

    /// Whether `calling_ae_title` may associate with this site.
    pub fn admits_calling_ae_title(&self, calling_ae_title: &str) -> bool {
        self.calling_ae_titles.as_ref().is_none_or(|allowed| {
            allowed
                .iter()
                .any(|allowed| allowed == calling_ae_title.trim())
        })
    }

    /// Every problem of this site on its own (not counting clashes with other
    /// sites), as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for ae_title in &self.called_ae_titles {
            if let Err(reason) = check_ae_title(ae_title) {
                problems.push((
                    "called_ae_titles",
                    format!("called AE title {ae_title:?}: {reason}"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for ae_title in &self.called_ae_titles {
            if !seen.insert(ae_title) {
                problems.push((
                    "called_ae_titles",
                    format!("called AE title {ae_title} is listed twice"),
                ));
            }
        }
        for ae_title in self.calling_ae_titles.iter().flatten() {
            if let Err(reason) = check_ae_title(ae_title) {
                problems.push((
                    "calling_ae_titles",
                    format!("calling AE title {ae_title:?}: {reason}"),
                ));
            }
        }
        if self.calling_ae_titles.as_ref().is_some_and(Vec::is_empty) {
            problems.push((
                "calling_ae_titles",
                "an empty allow-list would refuse every sender; leave calling_ae_titles out to admit any".into(),
            ));
        }
        if let Err(error) = self.policy.validate() {
            problems.push(("policy", error.to_string()));
        }
        if let Some(zone) = &self.time_zone
            && jiff::tz::TimeZone::get(zone).is_err()
        {
            problems.push((
                "time_zone",
                format!("time_zone {zone:?} is not a time zone of the IANA database (e.g. \"Europe/London\")"),
            ));
        }
        for name in &self.dicom_tls.client_names {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                problems.push((
                    "dicom_tls",
                    format!("dicom_tls.client_names: {name:?} is not a DNS name"),
                ));
            }
        }
        for (name, limit) in [
            ("max_associations", self.intake.max_associations),
            ("max_stow_requests", self.intake.max_stow_requests),
        ] {
            if limit == Some(0) {
                problems.push((
                    "intake",
                    format!("intake.{name} = 0 would refuse every sender; leave it out for no per-site limit"),
                ));
            }
        }
        for problem in self.destinations.problems() {
            problems.push(("destinations", problem));
        }
        let mut facilities = std::collections::BTreeSet::new();
        for facility in &self.hl7_sending_facilities {
            let valid = !facility.trim().is_empty()
                && facility.len() <= 64
                && facility == facility.trim()
                && !facility
                    .chars()
                    .any(|c| c.is_control() || "|^~\\&".contains(c));
            if !valid {
                problems.push((
                    "hl7_sending_facilities",
                    format!(
                        "HL7 sending facility {facility:?} must be 1 to 64 characters without HL7 delimiters or surrounding spaces"
                    ),
                ));
            } else if !facilities.insert(facility) {
                problems.push((
                    "hl7_sending_facilities",
                    format!("HL7 sending facility {facility} is listed twice"),
                ));
            }
        }
        if let Some(date) = &self.ai_enabled_from {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            if time::Date::parse(date, &format).is_err() {
                problems.push((
                    "ai_enabled_from",
                    format!("{date:?} is not a date (YYYY-MM-DD)"),
                ));
            }
        }
        if self.limits.min_dimension > self.limits.max_dimension {
            problems.push((
                "limits",
                "min_dimension is larger than max_dimension".into(),
            ));
        }
        problems
    }
}

/// An AE title: 1 to 16 characters of the default character repertoire, no
/// backslash or control characters, not only spaces (PS3.5 6.2, VR AE).
pub fn check_ae_title(ae_title: &str) -> Result<(), &'static str> {
    if ae_title.trim().is_empty() {
        return Err("it is empty");
    }
    if ae_title.len() > 16 {
        return Err("it is longer than 16 characters");
    }
    if ae_title != ae_title.trim() {
        return Err("it has leading or trailing spaces");
    }
    if !ae_title
        .chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
    {
        return Err("only printable ASCII without '\\' is allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_follow_the_dicom_rules() {
        assert!(check_ae_title("FXTRIAGE").is_ok());
        assert!(check_ae_title("ED DR 1").is_ok());
        for bad in [
            "",
            "   ",
            "ABCDEFGHIJKLMNOPQ",
            " LEAD",
            "BACK\\SLASH",
            "TAB\t",
        ] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_calling_allow_list_admits_only_its_senders() {
        let mut site = SiteConfig::new(SiteId::parse("a").expect("id"), "A");
        assert!(site.admits_calling_ae_title("ANYONE"));
        site.calling_ae_titles = Some(vec!["CR_ED1".into()]);
        assert!(site.admits_calling_ae_title("CR_ED1 "));
        assert!(!site.admits_calling_ae_title("OTHER"));
    }

    #[test]
    fn the_day_ai_began_is_a_date() {
        let mut site = SiteConfig::new(SiteId::parse("a").expect("id"), "A");
        site.ai_enabled_from = Some("2026-02-01".into());
        assert!(site.problems().is_empty(), "{:?}", site.problems());
        site.ai_enabled_from = Some("1 Feb 2026".into());
        let problems = site.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "ai_enabled_from");
        assert!(problems[0].1.contains("YYYY-MM-DD"), "{problems:?}");
    }

    #[test]
    fn a_site_lists_each_of_its_problems() {
        let mut site = SiteConfig::new(SiteId::parse("a").expect("id"), "A");
        site.called_ae_titles = vec!["OK".into(), "OK".into(), "WAY_TOO_LONG_AE_TITLE".into()];
        site.calling_ae_titles = Some(Vec::new());
        site.policy.operating_points.possible = 0.9;
        let problems = site.problems();
        let fields: Vec<&str> = problems.iter().map(|(field, _)| *field).collect();
        assert_eq!(
            fields,
            [
                "called_ae_titles",
                "called_ae_titles",
                "calling_ae_titles",
                "policy"
            ],
            "{problems:?}"
        );
    }
}
