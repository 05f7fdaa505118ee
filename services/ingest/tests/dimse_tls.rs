//! C-STORE over DICOM TLS, sent by dcmtk's TLS-enabled storescu, with
//! certificates generated here (a CA, the SCP's, a sender's, one of a sender
//! the site does not name, one of another CA): stored over TLS, with or
//! without a client certificate for a site that names none; a site that names
//! its senders' certificates takes only those, and nothing in plain TCP.

mod dimse_harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dimse_harness::*;
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::dimse::{self, DimseOptions, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
struct Identity {
    certificate: PathBuf,
    key: PathBuf,
}

/// The test's public key infrastructure, written to a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: Identity,
    /// Signed by the CA, naming the secure site's sender.
    sender: Identity,
    /// Signed by the CA, naming another host.
    other_sender: Identity,
    /// Naming the secure site's sender, but signed by a CA the SCP does not trust.
    forged_sender: Identity,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
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
    let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("params");
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
    std::fs::write(&identity.certificate, certificate.pem()).expect("write");
    std::fs::write(&identity.key, key.serialize_pem()).expect("write");
    identity
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_params, ca_key, ca_pem) = ca("fxtriage test CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).expect("write");
    let issuer = Issuer::new(ca_params, ca_key);
    let server = issue(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    let sender = issue(
        dir.path(),
        "sender",
        SECURE_CLIENT_NAME,
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    );
    let other_sender = issue(
        dir.path(),
        "other-sender",
        "cr-ed2.elsewhere.test",
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    );
    let (rogue_params, rogue_key, _) = ca("another CA");
    let rogue = Issuer::new(rogue_params, rogue_key);
    let forged_sender = issue(
        dir.path(),
        "forged-sender",
        SECURE_CLIENT_NAME,
        ExtendedKeyUsagePurpose::ClientAuth,
        &rogue,
    );
    Pki {
        _dir: dir,
        ca: ca_path,
        server,
        sender,
        other_sender,
        forged_sender,
    }
}

/// storescu arguments: fail fast, calling `called` on `port`, with `tls`
/// options, sending `file`.
fn storescu(called: &str, port: &str, tls: &[String], file: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-to", "20", "-ta", "20", "-td", "60", "-aet", "CR01", "-aec",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(called.to_owned());
    args.extend(tls.iter().cloned());
    args.extend(["127.0.0.1".to_owned(), port.to_owned()]);
    args.push(file.display().to_string());
    args
}

fn with_certificate(pki: &Pki, identity: &Identity) -> Vec<String> {
    vec![
        "+tls".to_owned(),
        identity.key.display().to_string(),
        identity.certificate.display().to_string(),
        "+cf".to_owned(),
        pki.ca.display().to_string(),
    ]
}

fn anonymous(pki: &Pki) -> Vec<String> {
    vec![
        "+tla".to_owned(),
        "+cf".to_owned(),
        pki.ca.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_store_over_dicom_tls_is_stored_and_a_site_naming_its_senders_takes_only_them() {
    if !tools_available("dicom tls", &["storescu"]) {
        return;
    }
    let pki = pki();
    let tls = dimse::server_config(&TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.server.key,
        client_ca: Some(&pki.ca),
    })
    .expect("the TLS configuration");
    let scp = Scp::start_with(DimseOptions {
        tls: Some(tls),
        ..DimseOptions::default()
    })
    .await;
    let plain = Scp::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| write_instance(files.path(), name, &SyntheticInstance::wrist());

    // Encrypted, without a client certificate, to a site that names none.
    let sent = run_tool(
        "storescu",
        storescu(
            AE_TITLE,
            &scp.port(),
            &anonymous(&pki),
            &file("anonymous.dcm"),
        ),
    )
    .await;
    assert!(
        sent.success,
        "anonymous TLS to {AE_TITLE}:\n{}",
        sent.output
    );
    // The secure site's named sender.
    let sent = run_tool(
        "storescu",
        storescu(
            SECURE_AE_TITLE,
            &scp.port(),
            &with_certificate(&pki, &pki.sender),
            &file("named.dcm"),
        ),
    )
    .await;
    assert!(sent.success, "the named sender:\n{}", sent.output);
    let events = scp.events(2, Duration::from_secs(30)).await;
    let mut sites: Vec<&str> = events
        .iter()
        .map(|event| event.instance.as_ref().expect("instance").site_id.as_str())
        .collect();
    sites.sort_unstable();
    assert_eq!(sites, ["secure", "st-marys"]);

    // Refused: a certificate of the CA naming another sender; no certificate;
    // a certificate naming the sender but signed by another CA.
    for (label, options) in [
        ("another sender", with_certificate(&pki, &pki.other_sender)),
        ("no certificate", anonymous(&pki)),
        ("another CA", with_certificate(&pki, &pki.forged_sender)),
    ] {
        let refused = run_tool(
            "storescu",
            storescu(
                SECURE_AE_TITLE,
                &scp.port(),
                &options,
                &file(&format!("{label}.dcm")),
            ),
        )
        .await;
        assert!(
            !refused.success,
            "{label} was accepted:\n{}",
            refused.output
        );
    }
    // Plain TCP to the secure site: rejected at association.
    let refused = run_tool(
        "storescu",
        storescu(SECURE_AE_TITLE, &plain.port(), &[], &file("plain.dcm")),
    )
    .await;
    assert!(
        !refused.success,
        "plain TCP was accepted:\n{}",
        refused.output
    );
    assert!(
        refused.output.contains("Rejected") || refused.output.contains("rejected"),
        "{}",
        refused.output
    );
    // Nothing more was stored, here or there.
    assert!(scp.events(0, Duration::from_millis(500)).await.is_empty());
    assert!(plain.events(0, Duration::from_millis(500)).await.is_empty());
    assert_eq!(
        scp.objects_under("secure/").await,
        1,
        "one instance of the secure site"
    );
    assert!(scp.quarantined().await.is_empty());
    scp.stop().await;
    plain.stop().await;
}

#[test]
fn a_certificate_and_a_key_that_do_not_go_together_are_refused_by_name() {
    let pki = pki();
    let error = dimse::server_config(&TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.sender.key,
        client_ca: None,
    })
    .expect_err("mismatched key");
    assert!(
        format!("{error:#}").contains("do not go together"),
        "{error:#}"
    );
    let error = dimse::server_config(&TlsFiles {
        certificate_chain: &pki.server.key,
        private_key: &pki.server.key,
        client_ca: None,
    })
    .expect_err("a key is not a certificate");
    assert!(
        format!("{error:#}").contains("holds no certificate"),
        "{error:#}"
    );
}
