//! DICOM TLS (the secure transport connection profile, PS3.15 B.1) for the
//! C-STORE SCP, with rustls through dicom-ul: the server's certificate chain
//! and key from PEM files, and optionally the CA that signs the senders'
//! client certificates. A sender without a certificate may still connect over
//! TLS (encrypted, anonymous) unless the site it calls names the certificates
//! it accepts (`[site.dicom_tls] client_names`); a certificate that does not
//! chain to the client CA fails the handshake.

use rustls::pki_types::{CertificateDer, ServerName};

pub use fxtriage_telemetry::tls::{TlsFiles, server_config};

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
