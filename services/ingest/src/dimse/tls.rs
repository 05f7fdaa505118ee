//! DICOM TLS (the secure transport connection profile, PS3.15 B.1) for the
//! C-STORE SCP, with rustls through dicom-ul: the server's certificate chain
//! and key from PEM files, and optionally the CA that signs the senders'
//! client certificates. A sender without a certificate may still connect over
//! TLS (encrypted, anonymous) unless the site it calls names the certificates
//! it accepts (`[site.dicom_tls] client_names`); a certificate that does not
//! chain to the client CA fails the handshake.

use rustls::pki_types::{CertificateDer, ServerName};

pub use fxtriage_telemetry::tls::{TlsFiles, server_config};

/// The DICOM TLS listener of ingest: where, with what, and whether it verifies
/// client certificates (a client CA was given).
#[derive(Clone)]
pub struct DimseTls {
    pub address: std::net::SocketAddr,
    pub config: std::sync::Arc<rustls::ServerConfig>,
    pub verifies_clients: bool,
}

impl std::fmt::Debug for DimseTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimseTls")
            .field("address", &self.address)
            .field("verifies_clients", &self.verifies_clients)
            .finish_non_exhaustive()
    }
}

/// What the sites ask of DICOM TLS that this ingest cannot give, given its
/// TLS listener (`None`: none; else whether it verifies client certificates): `Err` with the sites that name client
/// certificates while the listener has no client CA (every sender of theirs
/// is refused: a configuration mistake, logged as an error at start); `Ok` with a
/// warning per site that takes C-STORE over TLS only when there is no TLS
/// listener (its senders are refused here; another ingest may serve it).
pub fn unmet_tls_settings<'a>(
    sites: impl IntoIterator<Item = &'a fxtriage_sites::SiteConfig>,
    listener: Option<bool>,
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for site in sites {
        let tls = &site.dicom_tls;
        match listener {
            None if tls.tls_only() => warnings.push(format!(
                "site {} takes C-STORE over DICOM TLS only ([site.dicom_tls]) and this ingest has no TLS listener (--dimse-tls-address): its senders are refused here",
                site.id
            )),
            Some(false) if !tls.client_names.is_empty() => {
                errors.push(format!(
                    "site {} accepts only named client certificates (dicom_tls.client_names) and the DICOM TLS listener verifies none: set --dimse-tls-client-ca to the CA that signs them",
                    site.id
                ));
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors.join("; "))
    }
}

/// Checks the sites' DICOM TLS settings against this ingest's TLS listener
/// (`listener`, as for [`unmet_tls_settings`]) at start and again whenever the
/// registry's revision moves (a site added or changed while ingest runs),
/// until `shutdown`: logs a warning for each setting met elsewhere, an error
/// for one no sender can meet here (naming the sites), and publishes each
/// outcome on the returned channel. Never stops ingest: one site's setting
/// must not keep every other site's images out.
pub fn watch_tls_settings(
    sites: fxtriage_sites::SiteRegistry,
    listener: Option<bool>,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::sync::watch::Receiver<Result<Vec<String>, String>> {
    let check = move |snapshot: &fxtriage_sites::Snapshot| {
        let outcome = unmet_tls_settings(snapshot.sites().map(AsRef::as_ref), listener);
        match &outcome {
            Ok(warnings) => {
                for warning in warnings {
                    tracing::warn!(revision = snapshot.revision, "{warning}");
                }
            }
            Err(errors) => tracing::error!(
                revision = snapshot.revision,
                "the sites' DICOM TLS settings cannot be met: {errors}"
            ),
        }
        outcome
    };
    let first = sites.current();
    let (sender, receiver) = tokio::sync::watch::channel(check(&first));
    tokio::spawn(async move {
        let mut revision = first.revision;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(fxtriage_sites::registry::REFRESH_INTERVAL) => {}
            }
            let snapshot = sites.current();
            if snapshot.revision != revision {
                revision = snapshot.revision;
                let _ = sender.send(check(&snapshot));
            }
        }
    });
    receiver
}

/// Whether the client certificate of a TLS session (already verified against
/// the client CA in the handshake) names one of `names` among its subject
/// alternative names (DNS). No certificate, or one naming none: false.
pub(crate) fn client_named(certificates: Option<&[CertificateDer<'_>]>, names: &[String]) -> bool {
    let Some(end_entity) = certificates.and_then(<[CertificateDer<'_>]>::first) else {
        return false;
    };
    let Ok(certificate) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    names.iter().any(|name| {
        ServerName::try_from(name.as_str()).is_ok_and(|server_name| {
            certificate
                .verify_is_valid_for_subject_name(&server_name)
                .is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use fxtriage_core::SiteId;
    use fxtriage_sites::SiteConfig;

    use super::*;

    fn site(id: &str, required: bool, client_names: &[&str]) -> SiteConfig {
        let mut site = SiteConfig::new(SiteId::parse(id).expect("id"), id);
        site.dicom_tls.required = required;
        site.dicom_tls.client_names = client_names.iter().map(|name| (*name).to_owned()).collect();
        site
    }

    #[test]
    fn named_client_certificates_without_a_client_ca_are_an_error() {
        let sites = [
            site("plain", false, &[]),
            site("named", false, &["cr1.north.example"]),
        ];
        let refused = unmet_tls_settings(&sites, Some(false)).expect_err("refused");
        assert!(refused.contains("site named"), "{refused}");
        assert!(refused.contains("--dimse-tls-client-ca"), "{refused}");
        assert!(!refused.contains("site plain"), "{refused}");
        // With a client CA, nothing to say.
        assert_eq!(unmet_tls_settings(&sites, Some(true)), Ok(Vec::new()));
    }

    #[test]
    fn a_site_taking_tls_only_warns_an_ingest_without_a_tls_listener() {
        let sites = [
            site("plain", false, &[]),
            site("required", true, &[]),
            site("named", false, &["cr1.north.example"]),
        ];
        let warnings = unmet_tls_settings(&sites, None).expect("only warnings");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("site required"), "{warnings:?}");
        assert!(warnings[1].contains("site named"), "{warnings:?}");
        // A TLS listener without a client CA serves a site that only requires TLS.
        assert_eq!(unmet_tls_settings(&sites[..2], Some(false)), Ok(Vec::new()));
    }
}
