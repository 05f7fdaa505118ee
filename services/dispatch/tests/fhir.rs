//! The AI result as FHIR R4: every resource of the transaction Bundle is valid
//! for @medplum/core's validateResource (npm, installed by the local stack);
//! its ids follow what it says, so a resend PUTs the same resources; the
//! transport carries the bearer token from its reference and tells a busy
//! server (retry) from a refusal (dead, with the server's reason).
//!
//! No FHIR server can be installed here: the receiving end of the transport
//! test is a small HTTP server that records what it gets and answers by path.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use fxtriage_core::policy::AiResult;
use fxtriage_dicom::sr::{Algorithm, ImageResult, StudyContext, StudyReport};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_dispatch::DeliveryError;
use fxtriage_dispatch::fhir_out::{bundle, object_id, send};
use fxtriage_sites::destinations::{FhirEndpoint, FhirResource, SecretRef};
use fxtriage_testkit::ChildGuard;

fn report() -> StudyReport {
    let source = SyntheticInstance::wrist();
    StudyReport {
        context: StudyContext::from_dataset(&source.dataset()),
        algorithm: Algorithm {
            name: "fxtriage-heatmap".into(),
            version: "0.3.0".into(),
            sha256: "ab".repeat(32),
        },
        result: AiResult::Suspected,
        not_analysed_reason: None,
        probability: Some(0.91),
        images: vec![ImageResult {
            series_instance_uid: source.series_instance_uid.clone(),
            sop_class_uid: source.sop_class_uid.clone(),
            sop_instance_uid: source.sop_instance_uid.clone(),
            frame: 1,
            probability: Some(0.91),
            detections: Vec::new(),
        }],
        supersedes: None,
        content_date: "20261130".into(),
        content_time: "101500".into(),
    }
}

#[test]
fn every_resource_is_valid_r4_and_ids_follow_the_content() {
    let Some(medplum) = fxtriage_testkit::stack::setting("FXTRIAGE_MEDPLUM_DIR") else {
        return;
    };
    if !fxtriage_testkit::stack::tool("node", "nodejs") {
        return;
    }
    let first = report();
    let mut not_analysed = first.clone();
    not_analysed.result = AiResult::NotAnalysed;
    not_analysed.probability = None;
    not_analysed.not_analysed_reason = Some("unsupported transfer syntax".into());
    let directory = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (name, document) in [
        ("final", bundle(&first, false)),
        ("corrected", bundle(&first, true)),
        ("not-analysed", bundle(&not_analysed, false)),
    ] {
        let path = directory.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&document).expect("json")).expect("write");
        paths.push(path);
    }
    let output = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/fhir_validate.mjs"
        ))
        .args(&paths)
        .env("NODE_PATH", format!("{medplum}/node_modules"))
        .output()
        .expect("node");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(printed.trim(), "valid", "{printed}");

    // The validator refuses what is not R4: it would catch a broken bundle.
    let mut broken = bundle(&first, false);
    broken["entry"][0]["resource"]["bogus"] = serde_json::json!(1);
    let path = directory.path().join("broken.json");
    std::fs::write(&path, serde_json::to_vec(&broken).expect("json")).expect("write");
    let output = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/fhir_validate.mjs"
        ))
        .arg(&path)
        .env("NODE_PATH", format!("{medplum}/node_modules"))
        .output()
        .expect("node");
    assert!(!output.status.success(), "the validator bites");

    // Content and ids: PUTs under ids derived from the result.
    let document = bundle(&first, false);
    assert_eq!(document["type"], "transaction");
    let urls: Vec<&str> = document["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["request"]["url"].as_str().expect("url"))
        .collect();
    assert!(
        urls.contains(&format!("DiagnosticReport/{}", object_id(&first)).as_str()),
        "{urls:?}"
    );
    assert_eq!(
        bundle(&first, false),
        document,
        "the same result, the same resources"
    );
    let mut changed = first.clone();
    changed.probability = Some(0.5);
    assert_ne!(object_id(&changed), object_id(&first));
    let report = &document["entry"][3]["resource"];
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(
        report["imagingStudy"][0]["identifier"]["value"],
        format!("urn:oid:{}", first.context.study_instance_uid)
    );
    assert!(
        report["conclusion"]
            .as_str()
            .expect("text")
            .contains("Not a diagnosis")
    );
    assert_eq!(
        bundle(&first, true)["entry"][3]["resource"]["status"],
        "corrected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_carries_the_token_and_tells_busy_from_refused() {
    if !fxtriage_testkit::stack::tool("python3", "python3") {
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let received = directory.path().join("received");
    std::fs::create_dir(&received).expect("dir");
    let token_file = directory.path().join("token");
    std::fs::write(&token_file, "secret-fhir-token\n").expect("token");
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/fhir_receiver.py"
        ))
        .arg(&received)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = ChildGuard::spawn("fhir receiver", &mut command).expect("start");
    let mut line = String::new();
    std::io::BufReader::new(server.take_stdout().expect("stdout"))
        .read_line(&mut line)
        .expect("its port");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the receiver printed {line:?}"));
    let endpoint = |path: &str| FhirEndpoint {
        name: "fhir".into(),
        base_url: format!("http://127.0.0.1:{port}/{path}"),
        token: Some(SecretRef::File(token_file.clone())),
        resources: vec![FhirResource::DiagnosticReport],
    };
    let body = serde_json::to_vec(&bundle(&report(), false)).expect("json");

    send(&endpoint("ok"), &body).await.expect("delivered");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(received.join("0000.json")).expect("recorded"))
            .expect("json");
    assert_eq!(kept["authorization"], "Bearer secret-fhir-token");
    assert_eq!(kept["content_type"], "application/fhir+json");
    assert_eq!(kept["body"]["resourceType"], "Bundle");

    let busy = send(&endpoint("busy"), &body).await.expect_err("busy");
    assert!(busy.is_retryable(), "{busy}");
    assert!(busy.to_string().contains("server busy"), "{busy}");
    let refused = send(&endpoint("invalid"), &body)
        .await
        .expect_err("refused");
    assert!(matches!(refused, DeliveryError::Refused(_)), "{refused}");
    assert!(refused.to_string().contains("422"), "{refused}");
    assert!(
        refused.to_string().contains("is not allowed here"),
        "{refused}"
    );

    // The token is read at each delivery: a missing one is retried, not leaked.
    std::fs::remove_file(&token_file).expect("remove");
    let missing = send(&endpoint("ok"), &body).await.expect_err("no token");
    assert!(missing.is_retryable(), "{missing}");
    assert!(!missing.to_string().contains("secret"), "{missing}");
    server.kill();
    let away = send(&endpoint("ok"), &body).await.expect_err("away");
    assert!(away.is_retryable(), "{away}");
}
