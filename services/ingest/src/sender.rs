use std::fmt;
use std::net::SocketAddr;

/// Who sent an instance. Recorded with quarantined files and in events; never
/// holds patient data or a secret (STOW tokens appear by an id, not their value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "via", rename_all = "kebab-case")]
pub enum Sender {
    Dimse {
        calling_ae_title: String,
        called_ae_title: String,
        peer: Option<SocketAddr>,
    },
    StowRs {
        token_id: String,
        peer: Option<SocketAddr>,
    },
    Import {
        source: String,
    },
}

impl Sender {
    /// "dimse", "stow-rs" or "import", as in `InstanceStored.received_via`.
    pub fn channel(&self) -> &'static str {
        match self {
            Sender::Dimse { .. } => "dimse",
            Sender::StowRs { .. } => "stow-rs",
            Sender::Import { .. } => "import",
        }
    }

    pub fn calling_ae_title(&self) -> Option<&str> {
        match self {
            Sender::Dimse {
                calling_ae_title, ..
            } => Some(calling_ae_title),
            _ => None,
        }
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Dimse {
                calling_ae_title,
                called_ae_title,
                peer,
            } => {
                write!(f, "{calling_ae_title} -> {called_ae_title}")?;
                if let Some(peer) = peer {
                    write!(f, " from {peer}")?;
                }
                Ok(())
            }
            Sender::StowRs { token_id, peer } => {
                write!(f, "token {token_id}")?;
                if let Some(peer) = peer {
                    write!(f, " from {peer}")?;
                }
                Ok(())
            }
            Sender::Import { source } => write!(f, "import of {source}"),
        }
    }
}
