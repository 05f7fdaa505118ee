//! Where a site's results go: its PACS (DICOM peers), its RIS (HL7 v2 peers)
//! and its FHIR endpoints. The dispatch service reads them; `sites apply`
//! refuses a file whose destinations are wrong, with every reason.
//!
//! ```toml
//! [[site.destinations.dicom]]
//! name = "pacs"                  # unique within the site, across every kind
//! ae_title = "STMARYS_PACS"      # the peer's (called) AE title
//! host = "pacs.st-marys.example"
//! port = 104
//! calling_ae_title = "FXTRIAGE"  # ours, as the peer knows us (default FXTRIAGE)
//! objects = ["sr", "sc"]         # structured report, secondary capture
//!
//! [[site.destinations.hl7]]
//! name = "ris"
//! host = "ris.st-marys.example"
//! port = 2575
//! receiving_application = "RIS"  # MSH-5 (default: empty)
//! receiving_facility = "STMARYS" # MSH-6 (default: empty)
//! messages = ["oru"]             # "oru" (ORU^R01 result), "priority-update" (OMI^O23 change order)
//!
//! [[site.destinations.fhir]]
//! name = "fhir"
//! base_url = "https://fhir.st-marys.example/r4"
//! token = "env:STMARYS_FHIR_TOKEN" # bearer token by reference: env:NAME or file:/path
//! resources = ["diagnostic-report"]
//! ```
//!
//! A token is never written in the sites file (which `sites show` prints and
//! the registry stores): only where the dispatch service finds it.

use std::collections::BTreeSet;

/// The AE title fxtriage calls with when a DICOM destination names none.
pub const DEFAULT_CALLING_AE_TITLE: &str = "FXTRIAGE";

/// Every destination of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destinations {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dicom: Vec<DicomPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hl7: Vec<Hl7Peer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fhir: Vec<FhirEndpoint>,
}

/// A DICOM storage SCP (the site's PACS or a router) that takes results by C-STORE.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomPeer {
    pub name: String,
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    #[serde(default = "default_calling_ae_title")]
    pub calling_ae_title: String,
    pub objects: Vec<DicomObject>,
}

fn default_calling_ae_title() -> String {
    DEFAULT_CALLING_AE_TITLE.to_owned()
}

/// What a DICOM peer receives.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DicomObject {
    /// The structured report (TID 1500): algorithm, study result, regions.
    Sr,
    /// A secondary capture per analysed image, with the regions drawn.
    Sc,
}

/// An HL7 v2 receiver (the RIS, or an integration engine) over MLLP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Peer {
    pub name: String,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiving_application: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiving_facility: String,
    pub messages: Vec<Hl7Message>,
}

/// What an HL7 peer receives.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Hl7Message {
    /// ORU^R01 with the AI result.
    Oru,
    /// An OMI^O23 change order raising the order's priority (stat when the AI
    /// suspects a fracture, ASAP when it is possible; never lowered).
    PriorityUpdate,
}

/// A FHIR R4 server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirEndpoint {
    pub name: String,
    pub base_url: String,
    /// Where the bearer token is: `env:NAME` or `file:/absolute/path`; none
    /// when the server needs no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    pub resources: Vec<FhirResource>,
}

/// What a FHIR endpoint receives.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FhirResource {
    /// A DiagnosticReport with its Observations.
    DiagnosticReport,
}

/// Where a secret is found, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// An environment variable of the dispatch service.
    Env(String),
    /// A file (a mounted Kubernetes Secret, for one); surrounding whitespace is trimmed.
    File(std::path::PathBuf),
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if let Some(name) = text.strip_prefix("env:") {
            let valid = name
                .chars()
                .next()
                .is_some_and(|first| first.is_ascii_uppercase() || first == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            return if valid {
                Ok(Self::Env(name.to_owned()))
            } else {
                Err(format!(
                    "{text:?}: an environment variable name is upper-case letters, digits and '_'"
                ))
            };
        }
        if let Some(path) = text.strip_prefix("file:") {
            return if path.starts_with('/') {
                Ok(Self::File(path.into()))
            } else {
                Err(format!(
                    "{text:?}: the path of a token file must be absolute"
                ))
            };
        }
        Err(
            "a token is named by reference, env:NAME or file:/path, never written in the sites file"
                .into(),
        )
    }
}

impl From<SecretRef> for String {
    fn from(reference: SecretRef) -> Self {
        match reference {
            SecretRef::Env(name) => format!("env:{name}"),
            SecretRef::File(path) => format!("file:{}", path.display()),
        }
    }
}

impl SecretRef {
    /// The secret, read now (so that a rotated secret is used at the next delivery).
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Self::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?,
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{} is empty", String::from(self.clone())));
        }
        Ok(value.to_owned())
    }
}

/// A destination of any kind, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    Dicom(&'a DicomPeer),
    Hl7(&'a Hl7Peer),
    Fhir(&'a FhirEndpoint),
}

impl Destinations {
    pub fn is_empty(&self) -> bool {
        self.dicom.is_empty() && self.hl7.is_empty() && self.fhir.is_empty()
    }

    /// The destination called `name`.
    pub fn named(&self, name: &str) -> Option<Destination<'_>> {
        self.dicom
            .iter()
            .find(|peer| peer.name == name)
            .map(Destination::Dicom)
            .or_else(|| {
                self.hl7
                    .iter()
                    .find(|peer| peer.name == name)
                    .map(Destination::Hl7)
            })
            .or_else(|| {
                self.fhir
                    .iter()
                    .find(|endpoint| endpoint.name == name)
                    .map(Destination::Fhir)
            })
    }

    /// Every problem, each a sentence naming the destination.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let names_in_order = self
            .dicom
            .iter()
            .map(|peer| ("DICOM", peer.name.as_str()))
            .chain(self.hl7.iter().map(|peer| ("HL7", peer.name.as_str())))
            .chain(
                self.fhir
                    .iter()
                    .map(|endpoint| ("FHIR", endpoint.name.as_str())),
            );
        for (kind, name) in names_in_order {
            if let Err(reason) = check_name(name) {
                problems.push(format!("{kind} destination {name:?}: its name {reason}"));
            } else if !names.insert(name) {
                problems.push(format!(
                    "destination name {name} is used twice; each destination of a site has a name of its own"
                ));
            }
        }
        for peer in &self.dicom {
            let at = format!("DICOM destination {}", peer.name);
            if let Err(reason) = crate::config::check_ae_title(&peer.ae_title) {
                problems.push(format!("{at}: ae_title {:?}: {reason}", peer.ae_title));
            }
            if let Err(reason) = crate::config::check_ae_title(&peer.calling_ae_title) {
                problems.push(format!(
                    "{at}: calling_ae_title {:?}: {reason}",
                    peer.calling_ae_title
                ));
            }
            check_endpoint(&at, &peer.host, peer.port, &mut problems);
            check_list(&at, "objects", &peer.objects, &mut problems);
        }
        for peer in &self.hl7 {
            let at = format!("HL7 destination {}", peer.name);
            check_endpoint(&at, &peer.host, peer.port, &mut problems);
            for (field, value) in [
                ("receiving_application", &peer.receiving_application),
                ("receiving_facility", &peer.receiving_facility),
            ] {
                if value.chars().any(|c| "|^~\\&\r\n".contains(c)) {
                    problems.push(format!(
                        "{at}: {field} {value:?} holds an HL7 delimiter (| ^ ~ \\ &) or a line break"
                    ));
                }
            }
            check_list(&at, "messages", &peer.messages, &mut problems);
        }
        for endpoint in &self.fhir {
            let at = format!("FHIR destination {}", endpoint.name);
            if let Err(reason) = check_base_url(&endpoint.base_url) {
                problems.push(format!("{at}: base_url {:?}: {reason}", endpoint.base_url));
            }
            check_list(&at, "resources", &endpoint.resources, &mut problems);
        }
        problems
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err("must be 1 to 64 lower-case letters, digits and '-', starting with a letter or digit")
    }
}

fn check_endpoint(at: &str, host: &str, port: u16, problems: &mut Vec<String>) {
    let host_is_valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_is_valid {
        problems.push(format!(
            "{at}: host {host:?} is not a host name or an IP address"
        ));
    }
    if port == 0 {
        problems.push(format!("{at}: port 0 is not a port to connect to"));
    }
}

fn check_list<T: Ord + std::fmt::Debug>(
    at: &str,
    field: &str,
    values: &[T],
    problems: &mut Vec<String>,
) {
    if values.is_empty() {
        problems.push(format!(
            "{at}: {field} is empty; a destination that receives nothing should be removed"
        ));
    }
    let mut seen = BTreeSet::new();
    for value in values {
        if !seen.insert(value) {
            problems.push(format!("{at}: {field} lists {value:?} twice"));
        }
    }
}

/// An http(s) URL with a host and no query, fragment or credentials. Plain
/// http is allowed to loopback only: elsewhere a bearer token would travel
/// in clear.
fn check_base_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|error| error.to_string())?;
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => return Err("it has no host".into()),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("plain http is allowed to loopback only; use https".into()),
        scheme => return Err(format!("scheme {scheme} is not http or https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use token".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dicom(name: &str) -> DicomPeer {
        DicomPeer {
            name: name.into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            calling_ae_title: DEFAULT_CALLING_AE_TITLE.into(),
            objects: vec![DicomObject::Sr, DicomObject::Sc],
        }
    }

    fn fhir(base_url: &str) -> FhirEndpoint {
        FhirEndpoint {
            name: "fhir".into(),
            base_url: base_url.into(),
            token: Some(SecretRef::Env("FHIR_TOKEN".into())),
            resources: vec![FhirResource::DiagnosticReport],
        }
    }

    #[test]
    fn valid_destinations_have_no_problems() {
        let destinations = Destinations {
            dicom: vec![dicom("pacs")],
            hl7: vec![Hl7Peer {
                name: "ris".into(),
                host: "ris.example".into(),
                port: 2575,
                receiving_application: "RIS".into(),
                receiving_facility: "NORTH".into(),
                messages: vec![Hl7Message::Oru, Hl7Message::PriorityUpdate],
            }],
            fhir: vec![
                fhir("https://fhir.example/r4"),
                FhirEndpoint {
                    name: "local".into(),
                    ..fhir("http://127.0.0.1:8090/fhir")
                },
            ],
        };
        assert_eq!(destinations.problems(), Vec::<String>::new());
        assert!(matches!(
            destinations.named("ris"),
            Some(Destination::Hl7(_))
        ));
        assert!(destinations.named("nothing").is_none());
    }

    #[test]
    fn each_problem_is_named() {
        let mut bad_peer = dicom("pacs");
        bad_peer.ae_title = "WAY_TOO_LONG_AE_TITLE".into();
        bad_peer.host = "pacs example".into();
        bad_peer.port = 0;
        bad_peer.objects = vec![DicomObject::Sr, DicomObject::Sr];
        let destinations = Destinations {
            dicom: vec![bad_peer, dicom("pacs"), dicom("Bad_Name")],
            hl7: vec![Hl7Peer {
                name: "ris".into(),
                host: "ris".into(),
                port: 2575,
                receiving_application: "R|S".into(),
                receiving_facility: String::new(),
                messages: Vec::new(),
            }],
            fhir: vec![
                fhir("http://fhir.example/r4"),
                FhirEndpoint {
                    name: "f2".into(),
                    ..fhir("https://user:secret@fhir.example/?a=b")
                },
            ],
        };
        let problems = destinations.problems();
        let expected = [
            "its name must be",
            "destination name pacs is used twice",
            "ae_title \"WAY_TOO_LONG_AE_TITLE\": it is longer than 16",
            "host \"pacs example\" is not a host name",
            "port 0",
            "objects lists Sr twice",
            "receiving_application \"R|S\" holds an HL7 delimiter",
            "messages is empty",
            "plain http is allowed to loopback only",
            "credentials do not belong in the URL",
        ];
        for phrase in expected {
            assert!(
                problems.iter().any(|problem| problem.contains(phrase)),
                "no problem says {phrase:?}: {problems:#?}"
            );
        }
    }

    #[test]
    fn a_token_is_a_reference_never_the_token() {
        for good in ["env:FHIR_TOKEN", "file:/run/secrets/fhir"] {
            let reference = SecretRef::try_from(good.to_owned()).expect(good);
            assert_eq!(String::from(reference), good);
        }
        for bad in [
            "eyJhbGciOi.secret",
            "env:lower",
            "env:",
            "file:relative/path",
        ] {
            assert!(SecretRef::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("token");
        std::fs::write(&path, "  the-token\n").expect("write");
        assert_eq!(
            SecretRef::File(path.clone()).read().expect("read"),
            "the-token"
        );
        std::fs::write(&path, "\n").expect("write");
        assert!(
            SecretRef::File(path).read().is_err(),
            "an empty token is refused"
        );
        assert!(
            SecretRef::Env("FXTRIAGE_SURELY_UNSET_VARIABLE".into())
                .read()
                .is_err()
        );
    }
}
