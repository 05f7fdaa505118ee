//! TLS for fxtriage's listeners, with rustls and its aws-lc-rs provider: a
//! server configuration from PEM files (a certificate chain, its private key
//! and, optionally, the CA that signs clients' certificates), used by DICOM
//! TLS on the C-STORE SCP and by HTTPS on the API and STOW-RS.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a listener's TLS material is.
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
/// and its safe default protocol versions (TLS 1.2 and 1.3). A client
/// without a certificate is admitted even with a client CA (the caller
/// decides what an anonymous client may do); one that presents a
/// certificate not signed by the CA fails the handshake.
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

/// [`server_config`] for HTTPS: HTTP/1.1 announced by ALPN (the services
/// speak HTTP/1.1).
pub fn https_config(files: &TlsFiles<'_>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = Arc::unwrap_or_clone(server_config(files)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
