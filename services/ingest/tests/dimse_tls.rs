//! C-STORE over DICOM TLS, sent by dcmtk's TLS-enabled storescu, with
//! certificates generated here (a CA, the SCP's, a sender's, one of a sender
//! the site does not name, one of another CA): stored over TLS, with or
//! without a client certificate for a site that names none; a site that names
//! its senders' certificates takes only those, and nothing in plain TCP.

mod dimse_harness;

use std::path::Path;
use std::time::Duration;

use dimse_harness::*;
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::dimse::{self, DimseLimits, DimseOptions, TlsFiles};
use fxtriage_testkit::pki::{Identity, TestPki};

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

fn with_certificate(pki: &TestPki, identity: &Identity) -> Vec<String> {
    vec![
        "+tls".to_owned(),
        identity.key.display().to_string(),
        identity.certificate.display().to_string(),
        "+cf".to_owned(),
        pki.ca.display().to_string(),
    ]
}

/// The SCP's TLS configuration, verifying client certificates against the CA.
fn verifying_clients(pki: &TestPki) -> std::sync::Arc<rustls::ServerConfig> {
    dimse::server_config(&TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.server.key,
        client_ca: Some(&pki.ca),
    })
    .expect("the TLS configuration")
}

fn anonymous(pki: &TestPki) -> Vec<String> {
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
    let pki = TestPki::generate();
    let tls = verifying_clients(&pki);
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
            &with_certificate(&pki, &pki.client),
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
        ("another sender", with_certificate(&pki, &pki.other_client)),
        ("no certificate", anonymous(&pki)),
        ("another CA", with_certificate(&pki, &pki.forged_client)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_association_limit_holds_across_the_plain_and_the_tls_listener() {
    if !tools_available("dicom tls limit", &["storescu"]) {
        return;
    }
    let pki = TestPki::generate();
    let tls = verifying_clients(&pki);
    let options = DimseOptions::default();
    let limits = DimseLimits::new(&options);
    let plain = Scp::start_sharing(options.clone(), limits.clone()).await;
    let secure = Scp::start_sharing(
        DimseOptions {
            tls: Some(tls),
            ..options
        },
        limits,
    )
    .await;
    let files = tempfile::tempdir().expect("tempdir");
    let file = write_instance(files.path(), "single.dcm", &SyntheticInstance::wrist());
    // The site's one association, held on the plain listener.
    let holder = scu::associate(
        &plain,
        SINGLE_AE_TITLE,
        dicom_dictionary_std::uids::VERIFICATION,
    )
    .await
    .expect("the site's one association");
    let refused = run_tool(
        "storescu",
        storescu(SINGLE_AE_TITLE, &secure.port(), &anonymous(&pki), &file),
    )
    .await;
    assert!(
        !refused.success,
        "a second association of the site over TLS was accepted:\n{}",
        refused.output
    );
    holder.release().await.expect("release");
    // Once the plain one has ended, the TLS one is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent = run_tool(
            "storescu",
            storescu(SINGLE_AE_TITLE, &secure.port(), &anonymous(&pki), &file),
        )
        .await;
        if sent.success {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the site's slot was never given back:\n{}",
            sent.output
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(secure.events(1, Duration::from_secs(30)).await.len(), 1);
    plain.stop().await;
    secure.stop().await;
}

#[test]
fn a_certificate_and_a_key_that_do_not_go_together_are_refused_by_name() {
    let pki = TestPki::generate();
    let error = dimse::server_config(&TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.client.key,
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
