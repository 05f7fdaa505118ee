//! The AI result reaches a RIS as HL7 v2.5.1 ORU^R01 over MLLP: the receiver
//! is hl7apy's MLLP server (PyPI, installed by the local stack), which parses
//! each message in STRICT 2.5.1 validation and answers AA only when it is
//! valid. A resend is the same message (the same control id); a rejection
//! (AR) is refused for good; a receiver that is away is worth retrying.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

use fxtriage_core::policy::AiResult;
use fxtriage_core::{BoundingBox, Detection};
use fxtriage_dicom::sr::{Algorithm, ImageResult, StudyContext, StudyReport};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_dispatch::DeliveryError;
use fxtriage_dispatch::hl7_out::{control_id, oru_r01, send};
use fxtriage_sites::destinations::{Hl7Message, Hl7Peer};
use fxtriage_testkit::ChildGuard;

/// The receiver, on a free loopback port, keeping what it accepts in `directory`.
fn start_receiver(hl7apy: &str, directory: &Path, reject: bool) -> (ChildGuard, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/hl7_receiver.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(directory)
        .args(reject.then_some("--reject"))
        .env("PYTHONPATH", hl7apy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn("hl7 receiver", &mut command).expect("start the receiver");
    let stdout = guard.take_stdout().expect("the receiver's output");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the receiver says where it listens");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the receiver printed {line:?}"));
    (guard, port)
}

fn peer(port: u16) -> Hl7Peer {
    Hl7Peer {
        name: "ris".into(),
        host: "127.0.0.1".into(),
        port,
        receiving_application: "RIS".into(),
        receiving_facility: "NORTH".into(),
        messages: vec![Hl7Message::Oru],
    }
}

fn report() -> StudyReport {
    let source = SyntheticInstance::wrist();
    let mut context = StudyContext::from_dataset(&source.dataset());
    // What a real patient module holds, with an HL7 delimiter to escape.
    context.patient_name = "O'BRIEN^MARY&ANN".into();
    context.patient_birth_date = "19700101".into();
    context.patient_sex = "F".into();
    StudyReport {
        context,
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
            detections: vec![Detection {
                class_name: "fracture".into(),
                score: 0.91,
                bounding_box: BoundingBox {
                    x_min: 1.0,
                    y_min: 2.0,
                    x_max: 30.0,
                    y_max: 40.0,
                },
            }],
        }],
        supersedes: None,
        content_date: "20261130".into(),
        content_time: "101500".into(),
    }
}

fn kept(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("the receiver's directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".hl7"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_reaches_a_strict_hl7_receiver() {
    let Some(hl7apy) = fxtriage_testkit::stack::setting("FXTRIAGE_HL7APY_DIR") else {
        return;
    };
    if !fxtriage_testkit::stack::tool("python3", "python3") {
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut receiver, port) = start_receiver(&hl7apy, directory.path(), false);
    let report = report();
    let message = oru_r01(&report, &peer(port), false);

    send(&peer(port), message.as_bytes())
        .await
        .unwrap_or_else(|error| {
            let errors =
                std::fs::read_to_string(directory.path().join("errors.txt")).unwrap_or_default();
            panic!("{error}\nthe receiver's validation: {errors}\n{message}")
        });
    // Sent again (after a crash between sending and recording, say): the same
    // message, which the receiver can tell by its control id.
    send(&peer(port), message.as_bytes()).await.expect("resent");
    let id = control_id(&report);
    assert_eq!(
        kept(directory.path()),
        [format!("{id}.0.hl7"), format!("{id}.1.hl7")]
    );
    let received =
        std::fs::read_to_string(directory.path().join(format!("{id}.0.hl7"))).expect("kept");
    let parsed = fxtriage_hl7::parse(&received).expect("parse");
    assert_eq!(
        parsed.ids(),
        ["MSH", "PID", "OBR", "OBX", "OBX", "OBX", "OBX", "OBX"]
    );
    assert_eq!(parsed.get("MSH", 9, 1), "ORU");
    assert_eq!(parsed.get("OBR", 25, 1), "F");
    assert_eq!(parsed.get("OBX", 5, 1), "suspected");
    assert_eq!(parsed.get("PID", 5, 2), "MARY&ANN", "escaped and read back");
    assert!(received.contains("0.9100"), "{received}");
    assert!(received.contains(&format!("sha256:{}", "ab".repeat(32))));
    assert!(received.contains(&report.context.study_instance_uid));

    // A corrected result, and one that was not analysed, are valid too.
    let mut corrected = report.clone();
    corrected.result = AiResult::NotAnalysed;
    corrected.probability = None;
    corrected.not_analysed_reason = Some("unsupported transfer syntax".into());
    let message = oru_r01(&corrected, &peer(port), true);
    send(&peer(port), message.as_bytes())
        .await
        .expect("corrected result");
    let received = std::fs::read_to_string(
        directory
            .path()
            .join(format!("{}.0.hl7", control_id(&corrected))),
    )
    .expect("kept");
    assert_eq!(
        fxtriage_hl7::parse(&received)
            .expect("parse")
            .get("OBR", 25, 1),
        "C"
    );

    // The order's priority raised for a suspected fracture: an OMI^O23 change
    // order, valid in strict 2.5.1 too.
    let raised = fxtriage_dispatch::hl7_out::raised_priority(report.result).expect("raised");
    assert_eq!(raised.0, "S");
    let update = fxtriage_dispatch::hl7_out::priority_update(&report, &peer(port), raised)
        .expect("the study has an accession number");
    send(&peer(port), update.as_bytes())
        .await
        .unwrap_or_else(|error| {
            let errors =
                std::fs::read_to_string(directory.path().join("errors.txt")).unwrap_or_default();
            panic!("{error}\n{errors}\n{update}")
        });
    let parsed = fxtriage_hl7::parse(&update).expect("parse");
    assert_eq!(parsed.get("ORC", 1, 1), "XO");
    assert_eq!(parsed.get("ORC", 3, 1), report.context.accession_number);
    assert_eq!(parsed.get("TQ1", 9, 1), "S");
    assert_eq!(parsed.get("IPC", 3, 1), report.context.study_instance_uid);
    assert!(fxtriage_dispatch::hl7_out::raised_priority(AiResult::NoFinding).is_none());

    // A message the receiver finds invalid is answered AE: retried, with why.
    let broken = message.replace("|2.5.1|", "|9.9|");
    let error = send(&peer(port), broken.as_bytes())
        .await
        .expect_err("invalid");
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("answered AE"), "{error}");

    receiver.kill();
    let away = send(&peer(port), message.as_bytes())
        .await
        .expect_err("away");
    assert!(away.is_retryable(), "{away}");

    let rejecting = tempfile::tempdir().expect("tempdir");
    let (_rejecting, port) = start_receiver(&hl7apy, rejecting.path(), true);
    let refused = send(&peer(port), message.as_bytes())
        .await
        .expect_err("rejected");
    assert!(matches!(refused, DeliveryError::Refused(_)), "{refused}");
    assert!(
        refused.to_string().contains("rejected the message (AR)"),
        "{refused}"
    );
}
