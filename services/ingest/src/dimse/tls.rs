//! DICOM TLS (the secure transport connection profile, PS3.15 B.1) for the
//! C-STORE SCP, with rustls through dicom-ul: the server's certificate chain
//! and key from PEM files, and optionally the CA that signs the senders'
//! client certificates. A sender without a certificate may still connect over
//! TLS (encrypted, anonymous) unless the site it calls names the certificates
//! it accepts (`[site.dicom_tls] client_names`); a certificate that does not
//! chain to the client CA fails the handshake.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where the SCP's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    /// The server's certificate chain (PEM), its own certificate first.
    pub certificate_chain: &'a Path,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: &'a Path,
    /// The CA certificates (PEM) that sign the senders' client certificates;
    /// `None`: client certificates are not asked for.
    pub client_ca: Option<&'a Path>,
}

/// The rustls server configuration of `files`, with the aws-lc-rs provider
/// and its safe default protocol versions (TLS 1.2 and 1.3).
pub fn server_config(files: &TlsFiles<'_>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(files.certificate_chain)
        .with_context(|| format!("cannot read {}", files.certificate_chain.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "{} is not a PEM certificate chain",
                files.certificate_chain.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.certificate_chain.display()
    );
    let key = PrivateKeyDer::from_pem_file(files.private_key).with_context(|| {
        format!(
            "cannot read a PEM private key from {}",
            files.private_key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no safe protocol version")?;
    let builder = match files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read {}", path.display()))?
            {
                let certificate = certificate
                    .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
                roots
                    .add(certificate)
                    .with_context(|| format!("a certificate of {} is not a CA", path.display()))?;
            }
            anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            // Anonymous TLS stays possible for sites that name no client;
            // a certificate that is presented must chain to the CA.
            .allow_unauthenticated()
            .build()
            .context("cannot build the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .context("the certificate and the private key do not go together")?;
    Ok(Arc::new(config))
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
