//! What an association may carry, decided per site: the site is found by the
//! called AE title, its accepted SOP classes become the abstract syntaxes, and the
//! transfer syntaxes are the common ones, all stored as received.
//!
//! dicom-ul fixes the abstract syntaxes in `ServerAssociationOptions` before it
//! parses the A-ASSOCIATE-RQ, so the called AE title is read first by peeking at
//! the request on the socket (nothing is consumed); the options of that site then
//! negotiate, and their access control checks the parsed called AE title again,
//! and the calling AE title against the site's allow-list when it has one. The
//! options are rebuilt whenever the site registry changes.

use std::collections::HashMap;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use crate::sites::Sites;

/// Transfer syntaxes accepted for every storage SOP class. The dataset is stored
/// in the syntax it arrives in; nothing is transcoded.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    // Explicit VR Big Endian: retired, but older modalities still send it.
    "1.2.840.10008.1.2.2",
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::RLE_LOSSLESS,
];

/// The options of one association acceptor, with the AE titles it answers to.
pub(crate) type AcceptorOptions =
    ServerAssociationOptions<'static, CalledAeTitles, DefaultNegotiation>;

/// Accepts an association only if it calls one of these AE titles, from one of
/// the allowed calling AE titles of that AE title's site when it has a list.
#[derive(Debug, Clone)]
pub(crate) struct CalledAeTitles {
    /// Called AE title to its site's allowed calling AE titles (`None`: any).
    ae_titles: HashMap<String, Option<Vec<String>>>,
}

impl AccessControl for CalledAeTitles {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let Some(allowed) = self.ae_titles.get(called_ae_title.trim()) else {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        };
        let admitted = allowed.as_ref().is_none_or(|allowed| {
            allowed
                .iter()
                .any(|allowed| allowed == calling_ae_title.trim())
        });
        if admitted {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
    }
}

/// Association options for every site, by called AE title, and the options that
/// reject a call to any other AE title; built for one revision of the registry.
/// A DICOM TLS listener cannot read the called AE title before the handshake,
/// so it negotiates with `any_site`: every site's AE titles (each with its
/// site's calling AE titles) and the SOP classes of all of them; each
/// instance is still checked against its own site's SOP classes when it is
/// validated.
#[derive(Debug)]
pub(crate) struct Acceptors {
    pub(crate) revision: i64,
    by_called_ae_title: HashMap<String, AcceptorOptions>,
    unknown_called_ae_title: AcceptorOptions,
    any_site: AcceptorOptions,
}

impl Acceptors {
    /// `tls`: the acceptors of a DICOM TLS listener, with its configuration.
    pub(crate) fn new(
        sites: &Sites,
        max_pdu_length: u32,
        timeout: Duration,
        tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
    ) -> Self {
        let base = |ae_titles: HashMap<String, Option<Vec<String>>>| {
            let mut options = ServerAssociationOptions::new()
                .ae_access_control(CalledAeTitles { ae_titles })
                .max_pdu_length(max_pdu_length)
                .read_timeout(timeout)
                .write_timeout(timeout)
                .with_abstract_syntax(uids::VERIFICATION);
            for transfer_syntax in TRANSFER_SYNTAXES {
                options = options.with_transfer_syntax(*transfer_syntax);
            }
            if let Some(tls) = tls {
                options = options.tls_config(std::sync::Arc::clone(tls));
            }
            options
        };
        let titles_of = |site: &crate::SiteConfig| -> HashMap<String, Option<Vec<String>>> {
            site.called_ae_titles
                .iter()
                .map(|title| (title.clone(), site.calling_ae_titles.clone()))
                .collect()
        };
        let mut by_called_ae_title = HashMap::new();
        let mut every_title = HashMap::new();
        let mut every_sop_class = std::collections::BTreeSet::new();
        for site in sites.sites() {
            let mut options = base(titles_of(site));
            for sop_class in site.routing.accepted_sop_classes() {
                options = options.with_abstract_syntax(sop_class.clone());
                every_sop_class.insert(sop_class);
            }
            for ae_title in &site.called_ae_titles {
                by_called_ae_title.insert(ae_title.clone(), options.clone());
            }
            every_title.extend(titles_of(site));
        }
        let mut any_site = base(every_title);
        for sop_class in every_sop_class {
            any_site = any_site.with_abstract_syntax(sop_class);
        }
        Self {
            revision: sites.revision,
            by_called_ae_title,
            unknown_called_ae_title: base(HashMap::new()),
            any_site,
        }
    }

    /// The options of a DICOM TLS listener: any site's AE titles.
    pub(crate) fn any_site(&self) -> &AcceptorOptions {
        &self.any_site
    }

    /// The options for a request that calls `called_ae_title` (if it could be read).
    pub(crate) fn for_called_ae_title(&self, called_ae_title: Option<&str>) -> &AcceptorOptions {
        called_ae_title
            .and_then(|called| self.by_called_ae_title.get(called))
            .unwrap_or(&self.unknown_called_ae_title)
    }
}

/// Bytes of an A-ASSOCIATE-RQ up to and including the calling AE title.
const ASSOCIATE_RQ_PREFIX: usize = 42;
const ASSOCIATE_RQ_PDU_TYPE: u8 = 0x01;

/// Reads the called AE title of the A-ASSOCIATE-RQ waiting on `socket` without
/// consuming it. `None` if the first PDU is not an association request, or the
/// peer closes or stalls before sending its first 42 bytes.
pub(crate) async fn peek_called_ae_title(
    socket: &tokio::net::TcpStream,
    timeout: Duration,
) -> Option<String> {
    let mut prefix = [0_u8; ASSOCIATE_RQ_PREFIX];
    let peeked = tokio::time::timeout(timeout, async {
        loop {
            let available = socket.peek(&mut prefix).await.ok()?;
            if available == 0 {
                return None;
            }
            if prefix[0] != ASSOCIATE_RQ_PDU_TYPE || available >= ASSOCIATE_RQ_PREFIX {
                return Some(available);
            }
            // Part of the request has arrived; peek returns at once while any byte
            // is queued, so wait a little for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()
    .flatten()?;
    if prefix[0] != ASSOCIATE_RQ_PDU_TYPE || peeked < ASSOCIATE_RQ_PREFIX {
        return None;
    }
    called_ae_title_of(&prefix)
}

/// Called-AE-title: bytes 11 to 26 of the A-ASSOCIATE-RQ, space padded (PS3.8 9.3.2).
fn called_ae_title_of(prefix: &[u8; ASSOCIATE_RQ_PREFIX]) -> Option<String> {
    let field = &prefix[10..26];
    let text = std::str::from_utf8(field).ok()?;
    let trimmed = text.trim_matches(|c: char| c == ' ' || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_syntax_is_known_to_the_registry_so_dicom_ul_negotiates_it() {
        for uid in TRANSFER_SYNTAXES {
            assert!(
                dicom_ul::association::server::is_supported(uid),
                "{uid} would be refused at negotiation (a registry feature is missing?)"
            );
        }
    }

    #[test]
    fn the_called_ae_title_is_read_from_the_request_prefix() {
        let mut prefix = [b' '; ASSOCIATE_RQ_PREFIX];
        prefix[..10].copy_from_slice(&[1, 0, 0, 0, 0, 200, 0, 1, 0, 0]);
        prefix[10..18].copy_from_slice(b"FXTRIAGE");
        prefix[26..30].copy_from_slice(b"CR01");
        assert_eq!(called_ae_title_of(&prefix).as_deref(), Some("FXTRIAGE"));
        prefix[10..26].copy_from_slice(&[b' '; 16]);
        assert_eq!(called_ae_title_of(&prefix), None);
    }

    #[test]
    fn access_is_granted_under_the_sites_own_ae_titles_only() {
        let titles = |pairs: &[(&str, Option<&[&str]>)]| CalledAeTitles {
            ae_titles: pairs
                .iter()
                .map(|(called, calling)| {
                    (
                        (*called).to_owned(),
                        calling.map(|list| list.iter().map(|title| (*title).to_owned()).collect()),
                    )
                })
                .collect(),
        };
        let site_a = titles(&[("SITE_A", None)]);
        assert!(site_a.check_access("", "CR01", "SITE_A", None).is_ok());
        assert!(matches!(
            site_a.check_access("", "CR01", "SITE_B", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        ));
        let nobody = titles(&[]);
        assert!(nobody.check_access("", "CR01", "SITE_A", None).is_err());
        let listed = titles(&[("SITE_A", Some(&["CR01"]))]);
        assert!(listed.check_access("", "CR01", "SITE_A", None).is_ok());
        assert!(matches!(
            listed.check_access("", "CR02", "SITE_A", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        ));
        // Every site at once (a TLS listener): each AE title keeps its own site's list.
        let both = titles(&[("SITE_A", Some(&["CR01"])), ("SITE_B", None)]);
        assert!(both.check_access("", "CR02", "SITE_B", None).is_ok());
        assert!(both.check_access("", "CR02", "SITE_A", None).is_err());

        let mut site =
            fxtriage_sites::SiteConfig::new(fxtriage_core::SiteId::parse("a").expect("id"), "A");
        site.called_ae_titles = vec!["SITE_A".into(), "SITE_A2".into()];
        let sites = Sites::of_sites([site]);
        let acceptors = Acceptors::new(&sites, 16_384, Duration::from_secs(1), None);
        assert!(acceptors.by_called_ae_title.contains_key("SITE_A"));
        assert!(acceptors.by_called_ae_title.contains_key("SITE_A2"));
        assert!(!acceptors.by_called_ae_title.contains_key("OTHER"));
    }
}
