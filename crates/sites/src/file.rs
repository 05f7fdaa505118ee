//! The declarative sites file that `fxtriage sites apply` (and the admin API)
//! take, and that `fxtriage sites show --format toml` writes back:
//!
//! ```toml
//! [[site]]
//! id = "st-marys"                      # lower-case letters, digits, '-'
//! name = "St Mary's Hospital"
//! time_zone = "Europe/London"           # optional: for acquisition times without an offset
//! called_ae_titles = ["STMARYS_FX"]    # each AE title belongs to one site
//! calling_ae_titles = ["CR_ED1"]       # optional allow-list of senders
//! [site.routing]                       # what the model analyses (defaults: CR/DX,
//! modalities = ["CR", "DX"]            #   appendicular skeleton and pelvis)
//! [site.limits]
//! max_instance_bytes = 268435456
//! [site.intake]                        # optional: what the site may hold at once
//! max_associations = 8                 #   C-STORE associations
//! max_stow_requests = 4                #   STOW-RS requests
//! [site.dicom_tls]                     # optional: C-STORE over DICOM TLS only
//! required = true
//! client_names = ["cr-ed1.st-marys.example"]  # and from these client certificates
//! [site.urgency.ae_titles]
//! ED_DR1 = "emergency"
//! [site.urgency.departments]
//! WARD = "inpatient"
//! [site.policy]
//! aging_cap_minutes = 2880
//! target_mode = "classes"              # or "continuous": targets follow the probability
//! [site.policy.operating_points]
//! suspected = 0.7
//! possible = 0.4
//! [site.policy.targets.emergency]      # and inpatient, outpatient: all three or none
//! suspected_minutes = 30
//! possible_minutes = 45
//! no_finding_minutes = 60
//! not_analysed_minutes = 60
//! [site.second_look]                   # reports of no fracture listed for a second look:
//! include_possible = true              #   also where the AI said possible (default: suspected only)
//! [[site.destinations.dicom]]          # where results go: see crate::destinations
//! name = "pacs"
//! ae_title = "STMARYS_PACS"
//! host = "pacs.st-marys.example"
//! port = 104
//! objects = ["sr"]
//!
//! [[group]]
//! id = "north-network"
//! name = "North imaging network"
//! sites = ["st-marys", "kings"]
//! ```
//!
//! A file is checked as a whole and refused as a whole: every error is reported
//! with its line, and nothing is applied. Earlier releases' ingest sites files
//! are accepted: `ae_titles` and `rules` are read as `called_ae_titles` and
//! `routing`, and `stow_token_sha256` becomes STOW-RS sender tokens of the site
//! (only digests were ever stored, so nothing secret is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use fxtriage_core::{GroupId, SiteId};
use serde::Deserialize as _;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::config::{GroupConfig, SiteConfig};

/// A parsed, valid sites file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryFile {
    pub sites: Vec<SiteConfig>,
    pub groups: Vec<GroupConfig>,
    /// SHA-256 digests (hex) of STOW-RS tokens from an earlier release's file.
    pub legacy_stow_digests: BTreeMap<SiteId, Vec<String>>,
}

/// One problem of a file, at a line (1-based; 0 when no place applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

/// Why a file was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidFile {
    pub errors: Vec<FileError>,
}

impl fmt::Display for InvalidFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the sites file is refused as a whole ({} errors; nothing was changed):",
            self.errors.len()
        )?;
        for error in &self.errors {
            if error.line > 0 {
                write!(f, "\n  line {}: {}", error.line, error.message)?;
            } else {
                write!(f, "\n  {}", error.message)?;
            }
        }
        Ok(())
    }
}

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0[..end].matches('\n').count() + 1
    }
}

/// What the registry holds already, against which a file is checked: a group may
/// name a site of the registry, and an AE title may not belong to a site the file
/// leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Sites in service.
    pub sites: BTreeSet<SiteId>,
    pub called_ae_titles: BTreeMap<String, SiteId>,
}

impl Existing {
    pub fn of(registry: &crate::store::Registry) -> Self {
        let mut existing = Self::default();
        for site in registry.active_sites() {
            existing.sites.insert(site.id.clone());
            for ae_title in &site.called_ae_titles {
                existing
                    .called_ae_titles
                    .insert(ae_title.clone(), site.id.clone());
            }
        }
        existing
    }
}

/// The largest sites file accepted: room for thousands of sites (a national
/// network's thousand sites with their destinations take about 2 MiB), while
/// what is parsed, and held by whoever reads it, stays bounded.
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// Parses and checks `text` against what `existing` holds (with `prune`, the
/// sites the file does not name are going away); every error, with its line,
/// or the file.
pub fn parse(text: &str, existing: &Existing, prune: bool) -> Result<RegistryFile, InvalidFile> {
    if text.len() > MAX_FILE_BYTES {
        return Err(InvalidFile {
            errors: vec![FileError {
                line: 0,
                message: format!(
                    "the sites file has {} bytes, more than the limit of {} MiB",
                    text.len(),
                    MAX_FILE_BYTES >> 20
                ),
            }],
        });
    }
    let lines = Lines(text);
    let mut errors: Vec<FileError> = Vec::new();
    let error_at = |errors: &mut Vec<FileError>, span: Option<Range<usize>>, message: String| {
        errors.push(FileError {
            line: span.map_or(0, |span| lines.of(&span)),
            message,
        });
    };
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            error_at(&mut errors, error.span(), error.message().trim().to_owned());
            return Err(InvalidFile { errors });
        }
    };
    let mut file = RegistryFile::default();
    let mut site_spans: Vec<(Range<usize>, Spanned<DeValue<'_>>)> = Vec::new();
    let mut group_values: Vec<Spanned<DeValue<'_>>> = Vec::new();
    for (key, value) in document.get_ref().iter() {
        let name: &str = key.get_ref().as_ref();
        match (name, value.get_ref()) {
            ("site", DeValue::Array(array)) => {
                for element in array.iter() {
                    site_spans.push((element.span(), element.clone()));
                }
            }
            ("group", DeValue::Array(array)) => group_values.extend(array.iter().cloned()),
            ("site" | "group", _) => error_at(
                &mut errors,
                Some(value.span()),
                format!("`{name}` must be an array of tables: write [[{name}]]"),
            ),
            _ => error_at(
                &mut errors,
                Some(key.span()),
                format!(
                    "unknown key `{name}`: a sites file has [[site]] and [[group]] tables only"
                ),
            ),
        }
    }

    // Each site on its own: its shape, then its values.
    let mut site_lines: BTreeMap<SiteId, usize> = BTreeMap::new();
    let mut ae_title_owner: BTreeMap<String, (SiteId, usize)> = BTreeMap::new();
    let mut facility_owner: BTreeMap<String, (SiteId, usize)> = BTreeMap::new();
    for (span, mut value) in site_spans {
        let line = lines.of(&span);
        let mut legacy_digests = Vec::new();
        if let DeValue::Table(table) = value.get_mut()
            && let Some(digests) = table.remove("stow_token_sha256")
        {
            match digests.get_ref() {
                DeValue::Array(array) => {
                    for digest in array.iter() {
                        match digest.get_ref().as_str() {
                            Some(text) if is_sha256_hex(text) => {
                                legacy_digests.push(text.to_ascii_lowercase());
                            }
                            _ => error_at(
                                &mut errors,
                                Some(digest.span()),
                                "stow_token_sha256 holds SHA-256 digests: 64 hexadecimal digits"
                                    .into(),
                            ),
                        }
                    }
                }
                _ => error_at(
                    &mut errors,
                    Some(digests.span()),
                    "stow_token_sha256 must be an array of digests".into(),
                ),
            }
        }
        let spans = AeTitleSpans::of(&value);
        let site = match SiteConfig::deserialize(ValueDeserializer::from(value)) {
            Ok(site) => site,
            Err(error) => {
                error_at(
                    &mut errors,
                    error.span().or(Some(span.clone())),
                    error.message().trim().to_owned(),
                );
                continue;
            }
        };
        if let Some(earlier) = site_lines.insert(site.id.clone(), line) {
            error_at(
                &mut errors,
                Some(span.clone()),
                format!(
                    "site {} is defined twice (first on line {earlier})",
                    site.id
                ),
            );
        }
        for (field, message) in site.problems() {
            let at = match field {
                "called_ae_titles" | "calling_ae_titles" | "destinations" => spans.field(field),
                _ => None,
            };
            errors.push(FileError {
                line: at.map_or(line, |at| lines.of(&at)),
                message: format!("site {}: {message}", site.id),
            });
        }
        for (index, ae_title) in site.called_ae_titles.iter().enumerate() {
            let at = spans.called.get(index).map_or(line, |span| lines.of(span));
            match ae_title_owner.get(ae_title) {
                Some((owner, owner_line)) if owner != &site.id => errors.push(FileError {
                    line: at,
                    message: format!(
                        "called AE title {ae_title} of site {} belongs to site {owner} too (line {owner_line}); each AE title maps to exactly one site",
                        site.id
                    ),
                }),
                Some(_) => {}
                None => {
                    ae_title_owner.insert(ae_title.clone(), (site.id.clone(), at));
                }
            }
        }
        for facility in &site.hl7_sending_facilities {
            match facility_owner.get(facility) {
                Some((owner, owner_line)) if owner != &site.id => errors.push(FileError {
                    line,
                    message: format!(
                        "HL7 sending facility {facility} of site {} belongs to site {owner} too (line {owner_line}); each facility maps to exactly one site",
                        site.id
                    ),
                }),
                Some(_) => {}
                None => {
                    facility_owner.insert(facility.clone(), (site.id.clone(), line));
                }
            }
        }
        if !legacy_digests.is_empty() {
            file.legacy_stow_digests
                .insert(site.id.clone(), legacy_digests);
        }
        file.sites.push(site);
    }

    let site_ids: BTreeSet<&SiteId> = file.sites.iter().map(|site| &site.id).collect();
    // An AE title of a site that stays as it is (not in the file, not pruned)
    // cannot be taken by a site of the file.
    if !prune {
        for site in &file.sites {
            for ae_title in &site.called_ae_titles {
                if let Some(owner) = existing.called_ae_titles.get(ae_title)
                    && owner != &site.id
                    && !site_ids.contains(owner)
                {
                    let at = ae_title_owner.get(ae_title).map_or(0, |(_, line)| *line);
                    errors.push(FileError {
                        line: at,
                        message: format!(
                            "called AE title {ae_title} of site {} belongs to site {owner} in the registry; remove it there in the same file, or apply with --prune",
                            site.id
                        ),
                    });
                }
            }
        }
    }
    let known =
        |site: &SiteId| site_ids.contains(site) || (!prune && existing.sites.contains(site));
    let mut group_lines: BTreeMap<GroupId, usize> = BTreeMap::new();
    for value in group_values {
        let span = value.span();
        let line = lines.of(&span);
        let member_spans: Vec<Range<usize>> = match value.get_ref() {
            DeValue::Table(table) => match table.get("sites").map(Spanned::get_ref) {
                Some(DeValue::Array(array)) => array.iter().map(Spanned::span).collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let group = match GroupConfig::deserialize(ValueDeserializer::from(value)) {
            Ok(group) => group,
            Err(error) => {
                error_at(
                    &mut errors,
                    error.span().or(Some(span)),
                    error.message().trim().to_owned(),
                );
                continue;
            }
        };
        if let Some(earlier) = group_lines.insert(group.id.clone(), line) {
            error_at(
                &mut errors,
                Some(span.clone()),
                format!(
                    "group {} is defined twice (first on line {earlier})",
                    group.id
                ),
            );
        }
        if site_ids
            .iter()
            .any(|site| site.as_str() == group.id.as_str())
            || existing
                .sites
                .iter()
                .any(|site| site.as_str() == group.id.as_str())
        {
            error_at(
                &mut errors,
                Some(span.clone()),
                format!(
                    "group {} has the id of a site; ids are shared by sites and groups",
                    group.id
                ),
            );
        }
        if group.sites.is_empty() {
            error_at(
                &mut errors,
                Some(span.clone()),
                format!("group {} has no sites", group.id),
            );
        }
        for (index, member) in group.sites.iter().enumerate() {
            if !known(member) {
                errors.push(FileError {
                    line: member_spans.get(index).map_or(line, |at| lines.of(at)),
                    message: format!(
                        "group {} names site {member}, which is neither in this file nor in the registry",
                        group.id
                    ),
                });
            }
        }
        file.groups.push(group);
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        errors.sort_by_key(|error| error.line);
        Err(InvalidFile { errors })
    }
}

/// Where the AE titles of one site table are, for errors about them.
#[derive(Debug, Default)]
struct AeTitleSpans {
    called: Vec<Range<usize>>,
    called_field: Option<Range<usize>>,
    calling_field: Option<Range<usize>>,
    destinations_field: Option<Range<usize>>,
}

impl AeTitleSpans {
    fn of(value: &Spanned<DeValue<'_>>) -> Self {
        let mut spans = Self::default();
        let DeValue::Table(table) = value.get_ref() else {
            return spans;
        };
        for (key, field) in table.iter() {
            let name: &str = key.get_ref().as_ref();
            match name {
                "called_ae_titles" | "ae_titles" => {
                    spans.called_field = Some(field.span());
                    if let DeValue::Array(array) = field.get_ref() {
                        spans.called = array.iter().map(Spanned::span).collect();
                    }
                }
                "calling_ae_titles" => spans.calling_field = Some(field.span()),
                "destinations" => spans.destinations_field = Some(field.span()),
                _ => {}
            }
        }
        spans
    }

    fn field(&self, field: &str) -> Option<Range<usize>> {
        match field {
            "called_ae_titles" => self.called_field.clone(),
            "calling_ae_titles" => self.calling_field.clone(),
            "destinations" => self.destinations_field.clone(),
            _ => None,
        }
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The sites file that describes `sites` and `groups`, as [`parse`] reads it:
/// applying it again changes nothing.
pub fn to_toml(sites: &[SiteConfig], groups: &[GroupConfig]) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        site: &'a [SiteConfig],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        group: &'a [GroupConfig],
    }
    toml::to_string_pretty(&File {
        site: sites,
        group: groups,
    })
    .unwrap_or_else(|error| format!("# cannot write the sites file: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &str = r#"
[[site]]
id = "north"
name = "North hospital"
called_ae_titles = ["NORTH_FX"]
calling_ae_titles = ["CR_ED1"]
[site.urgency.ae_titles]
CR_ED1 = "emergency"
[site.policy]
aging_cap_minutes = 1440

[[site]]
id = "south"
name = "South hospital"
called_ae_titles = ["SOUTH_FX", "SOUTH_FX2"]

[[group]]
id = "network"
name = "The network"
sites = ["north", "south"]
"#;

    fn refused(text: &str) -> Vec<(usize, String)> {
        parse(text, &Existing::default(), false)
            .expect_err("refused")
            .errors
            .into_iter()
            .map(|error| (error.line, error.message))
            .collect()
    }

    #[test]
    fn a_valid_file_reads_into_sites_and_groups_and_writes_back_the_same() {
        let file = parse(NETWORK, &Existing::default(), false).expect("valid");
        assert_eq!(file.sites.len(), 2);
        assert_eq!(file.sites[0].called_ae_titles, ["NORTH_FX"]);
        assert_eq!(file.sites[0].policy.aging_cap_minutes, Some(1440));
        assert_eq!(file.groups[0].sites.len(), 2);
        let written = to_toml(&file.sites, &file.groups);
        let again = parse(&written, &Existing::default(), false).expect("written file is valid");
        assert_eq!(again, file, "{written}");
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"
[[site]]
id = "a"
called_ae_titles = ["SAME"]

[[site]]
id = "b"
called_ae_titles = ["SAME"]

[[site]]
id = "Bad Id"

[[site]]
id = "c"
colour = "blue"

[[group]]
id = "g"
sites = ["a", "missing"]
"#;
        let errors = refused(text);
        let lines: Vec<usize> = errors.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [8, 11, 15, 19], "{errors:?}");
        assert!(
            errors[0].1.contains("SAME") && errors[0].1.contains("belongs to site a"),
            "{errors:?}"
        );
        assert!(errors[1].1.contains("Bad Id"), "{errors:?}");
        assert!(errors[2].1.contains("colour"), "{errors:?}");
        assert!(errors[3].1.contains("missing"), "{errors:?}");
    }

    #[test]
    fn destinations_are_read_written_back_and_checked() {
        let text = r#"
[[site]]
id = "north"
called_ae_titles = ["NORTH_FX"]

[[site.destinations.dicom]]
name = "pacs"
ae_title = "NORTH_PACS"
host = "127.0.0.1"
port = 11113
objects = ["sr", "sc"]

[[site.destinations.hl7]]
name = "ris"
host = "127.0.0.1"
port = 2575
messages = ["oru"]

[[site.destinations.fhir]]
name = "fhir"
base_url = "https://fhir.north.example/r4"
token = "env:NORTH_FHIR_TOKEN"
resources = ["diagnostic-report"]
"#;
        let file = parse(text, &Existing::default(), false).expect("valid");
        let destinations = &file.sites[0].destinations;
        assert_eq!(destinations.dicom[0].calling_ae_title, "FXTRIAGE");
        assert_eq!(destinations.hl7[0].port, 2575);
        let written = to_toml(&file.sites, &file.groups);
        assert!(written.contains("env:NORTH_FHIR_TOKEN"), "{written}");
        let again = parse(&written, &Existing::default(), false).expect("written file is valid");
        assert_eq!(again, file, "{written}");

        // A literal token, or a message type no one knows, is refused at its line.
        let errors = refused(&text.replace("env:NORTH_FHIR_TOKEN", "s3cr3t-token"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].0, 22, "{errors:#?}");
        assert!(
            errors[0].1.contains("never written in the sites file"),
            "{errors:#?}"
        );
        let errors =
            refused(&text.replace(r#"messages = ["oru"]"#, r#"messages = ["oru", "adt"]"#));
        assert!(errors[0].1.contains("adt"), "{errors:#?}");
        assert_eq!(errors[0].0, 17, "{errors:#?}");
        // An HL7 sending facility belongs to one site.
        let errors = refused(&format!(
            "{}\n[[site]]\nid = \"south\"\nhl7_sending_facilities = [\"NORTH_RIS\"]\n",
            text.replace(
                "called_ae_titles = [\"NORTH_FX\"]",
                "called_ae_titles = [\"NORTH_FX\"]\nhl7_sending_facilities = [\"NORTH_RIS\"]"
            )
        ));
        assert!(
            errors
                .iter()
                .any(|(_, message)| message.contains("belongs to site")),
            "{errors:#?}"
        );
        // Values are checked once the shape is right.
        let errors = refused(&text.replace("port = 11113", "port = 0"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .1
                .contains("site north: DICOM destination pacs: port 0"),
            "{errors:#?}"
        );
        assert!(
            errors[0].0 >= 2 && errors[0].0 <= 12,
            "a line of the site: {errors:#?}"
        );
    }

    #[test]
    fn intake_limits_and_dicom_tls_are_read_written_back_and_checked() {
        let text = r#"
[[site]]
id = "north"
called_ae_titles = ["NORTH_FX"]
[site.intake]
max_associations = 8
max_stow_requests = 2
[site.dicom_tls]
client_names = ["cr-ed1.north.example"]
"#;
        let file = parse(text, &Existing::default(), false).expect("valid");
        assert!(file.sites[0].dicom_tls.tls_only(), "client names imply TLS");
        assert_eq!(file.sites[0].intake.max_associations, Some(8));
        assert_eq!(file.sites[0].intake.max_stow_requests, Some(2));
        let written = to_toml(&file.sites, &file.groups);
        assert_eq!(
            parse(&written, &Existing::default(), false).expect("valid"),
            file
        );
        // Unset, nothing is written for it.
        let plain = parse("[[site]]\nid = \"a\"\n", &Existing::default(), false).expect("valid");
        assert!(!to_toml(&plain.sites, &plain.groups).contains("intake"));

        let errors = refused(&text.replace("max_stow_requests = 2", "max_stow_requests = 0"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].1.contains("intake.max_stow_requests = 0"),
            "{errors:?}"
        );
        let zoned = text.replace(
            "[site.intake]",
            "time_zone = \"Europe/London\"\n[site.intake]",
        );
        let file = parse(&zoned, &Existing::default(), false).expect("valid");
        assert_eq!(file.sites[0].time_zone.as_deref(), Some("Europe/London"));
        assert_eq!(
            parse(
                &to_toml(&file.sites, &file.groups),
                &Existing::default(),
                false
            )
            .expect("valid"),
            file
        );
        let errors = refused(&zoned.replace("Europe/London", "Europe/Atlantis"));
        assert!(
            errors
                .iter()
                .any(|(_, message)| message.contains("not a time zone")),
            "{errors:?}"
        );
        let errors = refused(&text.replace("cr-ed1.north.example", "not a name"));
        assert!(
            errors
                .iter()
                .any(|(_, message)| message.contains("is not a DNS name")),
            "{errors:?}"
        );
        let errors = refused(&text.replace("max_associations = 8", "max_sessions = 8"));
        assert!(
            errors
                .iter()
                .any(|(_, message)| message.contains("max_sessions")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_syntax_error_is_refused_with_its_line() {
        let errors = refused("[[site]]\nid = \"a\"\ncalled_ae_titles = [\"X\"\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].0 >= 3, "{errors:?}");
    }

    #[test]
    fn unknown_top_level_keys_and_duplicate_ids_are_refused() {
        let errors = refused("sites = 1\n[[site]]\nid = \"a\"\n[[site]]\nid = \"a\"\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 1);
        assert!(errors[1].1.contains("defined twice"), "{errors:?}");
    }

    #[test]
    fn ae_titles_and_groups_are_checked_against_the_registry() {
        let existing = Existing {
            sites: BTreeSet::from([SiteId::parse("east").expect("id")]),
            called_ae_titles: BTreeMap::from([(
                "EAST_FX".to_owned(),
                SiteId::parse("east").expect("id"),
            )]),
        };
        let text = "[[site]]\nid = \"a\"\ncalled_ae_titles = [\"EAST_FX\"]\n\n[[group]]\nid = \"g\"\nsites = [\"a\", \"east\"]\n";
        let error = parse(text, &existing, false).expect_err("EAST_FX is east's");
        assert_eq!(error.errors.len(), 1, "{error}");
        assert_eq!(error.errors[0].line, 3);
        // With --prune, east goes away: its AE title is free, but it cannot be a member.
        let error = parse(text, &existing, true).expect_err("east is being removed");
        assert_eq!(error.errors.len(), 1, "{error}");
        assert!(error.errors[0].message.contains("east"), "{error}");
        assert_eq!(error.errors[0].line, 7);
    }

    #[test]
    fn an_earlier_releases_ingest_file_is_read() {
        let text = r#"
[[site]]
id = "st-marys"
ae_titles = ["FXTRIAGE"]
stow_token_sha256 = ["9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"]
[site.rules]
analyse_unknown_body_part = true
"#;
        let file = parse(text, &Existing::default(), false).expect("valid");
        assert_eq!(file.sites[0].called_ae_titles, ["FXTRIAGE"]);
        assert!(file.sites[0].routing.analyse_unknown_body_part);
        assert_eq!(
            file.legacy_stow_digests[&file.sites[0].id],
            ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        );
    }
}
