//! Certificates for the TLS tests, generated afresh by each test (rcgen) and
//! written as PEM files to a temporary directory: a CA; the server's
//! certificate, for `localhost` and 127.0.0.1; a client's, naming
//! [`CLIENT_NAME`]; another client's, naming another host; and one naming
//! [`CLIENT_NAME`] but signed by a CA nobody trusts.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The DNS name of [`TestPki::client`]'s certificate.
pub const CLIENT_NAME: &str = "cr-ed1.secure.test";

/// A certificate and its key, as PEM files.
#[derive(Debug)]
pub struct Identity {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A test's public key infrastructure; the files go with it.
#[derive(Debug)]
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM) that signed every identity but `forged_client`.
    pub ca: PathBuf,
    /// The CA certificate as PEM text.
    pub ca_pem: String,
    /// For `localhost` and 127.0.0.1, server authentication.
    pub server: Identity,
    /// Naming [`CLIENT_NAME`], client authentication.
    pub client: Identity,
    /// Signed by the CA, naming another host.
    pub other_client: Identity,
    /// Naming [`CLIENT_NAME`], signed by a CA that is not [`TestPki::ca`].
    pub forged_client: Identity,
}

impl TestPki {
    /// Generates every certificate and writes them out.
    pub fn generate() -> Self {
        let temporary = tempfile::tempdir().expect("PKI directory");
        let dir = temporary.path().to_owned();
        let (ca_params, ca_key, ca_pem) = ca("fxtriage test CA");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).expect("write the CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server = issue(
            &dir,
            "server",
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let client = issue(
            &dir,
            "client",
            CLIENT_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let other_client = issue(
            &dir,
            "other-client",
            "cr-ed2.elsewhere.test",
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let (rogue_params, rogue_key, _) = ca("another CA");
        let rogue = Issuer::new(rogue_params, rogue_key);
        let forged_client = issue(
            &dir,
            "forged-client",
            CLIENT_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
            &rogue,
        );
        Self {
            _dir: temporary,
            ca: ca_path,
            ca_pem,
            server,
            client,
            other_client,
            forged_client,
        }
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (params, key, pem)
}

fn issue(
    dir: &Path,
    name: &str,
    dns: &str,
    purpose: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Identity {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("parameters");
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    params.distinguished_name.push(DnType::CommonName, dns);
    params.extended_key_usages = vec![purpose];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let certificate = params.signed_by(&key, issuer).expect("certificate");
    let identity = Identity {
        certificate: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&identity.certificate, certificate.pem()).expect("write a certificate");
    std::fs::write(&identity.key, key.serialize_pem()).expect("write a key");
    identity
}
