//! The SR reaches a real PACS-side receiver, dcmtk's storescp, by C-STORE: once
//! per content however often it is sent (its UID is derived from what it says),
//! a revision as a second object; a receiver that is away or refuses is told
//! apart so that the outbox retries only what is worth retrying.
//!
//! storescp always listens on 0.0.0.0, so the test runs in a private network
//! namespace: the test binary starts itself again under
//! `unshare --net --pid --fork --kill-child`, and that copy runs storescp and
//! the sender on its own loopback. As the first process of its own PID
//! namespace, when it ends the kernel stops everything it started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fxtriage_core::policy::AiResult;
use fxtriage_core::{BoundingBox, Detection};
use fxtriage_dicom::sr::{Algorithm, ImageResult, StudyContext, StudyReport};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_dispatch::dicom_out::{StoreError, store, store_all};
use fxtriage_sites::destinations::{DicomObject, DicomPeer};

const THIS_TEST: &str = "the_report_is_stored_once_per_content_on_storescp";

#[test]
fn the_report_is_stored_once_per_content_on_storescp() {
    if fxtriage_testkit::private_network::inside() {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(store_on_storescp());
    } else {
        run_in_private_network();
    }
}

fn run_in_private_network() {
    for (program, package) in [
        ("storescp", "dcmtk"),
        ("dcmdump", "dcmtk"),
        ("dsrdump", "dcmtk"),
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if !fxtriage_testkit::stack::tool(program, package) {
            return;
        }
    }
    fxtriage_testkit::private_network::rerun(THIS_TEST, &[]);
}

/// Stops storescp when dropped, also when the test fails.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_storescp(port: u16, directory: &Path, extra: &[&str]) -> Receiver {
    let child = Command::new("storescp")
        .args(["--aetitle", "PACS", "--output-directory"])
        .arg(directory)
        .args(extra)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start storescp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp listens within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Receiver(child)
}

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
        probability: Some(0.88),
        images: vec![ImageResult {
            series_instance_uid: source.series_instance_uid.clone(),
            sop_class_uid: source.sop_class_uid.clone(),
            sop_instance_uid: source.sop_instance_uid.clone(),
            frame: 1,
            probability: Some(0.88),
            detections: vec![Detection {
                class_name: "fracture".into(),
                score: 0.88,
                bounding_box: BoundingBox {
                    x_min: 10.0,
                    y_min: 20.0,
                    x_max: 90.0,
                    y_max: 110.0,
                },
            }],
        }],
        supersedes: None,
        content_date: "20261130".into(),
        content_time: "120000".into(),
    }
}

fn received(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("read the receiver's directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

async fn store_on_storescp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let peer = DicomPeer {
        name: "pacs".into(),
        ae_title: "PACS".into(),
        host: "127.0.0.1".into(),
        port,
        calling_ae_title: "FXTRIAGE".into(),
        objects: vec![DicomObject::Sr],
    };
    let first = report();
    let dataset = first.dataset();

    // Nobody listens yet: worth retrying.
    let away = store(&peer, &dataset).await.expect_err("no receiver");
    assert!(away.is_retryable(), "{away}");
    assert!(away.to_string().contains("PACS@127.0.0.1"), "{away}");

    // A receiver that refuses every association: refused for good.
    let directory = tempfile::tempdir().expect("tempdir");
    {
        let _refusing = start_storescp(port, directory.path(), &["--refuse"]);
        let refused = store(&peer, &dataset).await.expect_err("refused");
        assert!(matches!(refused, StoreError::Refused(_)), "{refused}");
        assert!(refused.to_string().contains("rejected"), "{refused}");
    }

    let _receiver = start_storescp(port, directory.path(), &[]);
    let stored = store(&peer, &dataset).await.expect("stored");
    assert_eq!(stored.status, 0);
    // A resend (after a crash between sending and recording, say) is the same
    // object: the receiver has it once.
    store(&peer, &first.dataset()).await.expect("stored again");
    let names = received(directory.path());
    assert_eq!(names.len(), 1, "one object after a resend: {names:?}");
    assert!(
        names[0].contains(&first.sop_instance_uid()),
        "stored under its own UID: {names:?}"
    );
    let path = directory.path().join(&names[0]);
    let dump = Command::new("dsrdump")
        .arg("+Pl")
        .arg(&path)
        .output()
        .expect("dsrdump");
    assert!(dump.status.success(), "the received SR is valid");
    assert!(String::from_utf8_lossy(&dump.stdout).contains("Fracture suspected"));

    // A changed finding is a revision: a second object naming the first.
    let mut revision = first.clone();
    revision.images[0].detections[0].bounding_box.x_max = 95.0;
    revision.supersedes = Some(first.sop_instance_uid());
    store(&peer, &revision.dataset())
        .await
        .expect("revision stored");
    let names = received(directory.path());
    assert_eq!(names.len(), 2, "{names:?}");
    let revised = names
        .iter()
        .find(|name| name.contains(&revision.sop_instance_uid()))
        .expect("the revision is stored under its own UID");
    let dump = Command::new("dcmdump")
        .arg(directory.path().join(revised))
        .output()
        .expect("dcmdump");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("PredecessorDocumentsSequence"), "{dump}");
    assert!(dump.contains(&first.sop_instance_uid()), "{dump}");

    // Several objects of two SOP classes over one association, each heard of
    // in order as its response arrives.
    let image = SyntheticInstance {
        rows: 64,
        columns: 64,
        ..SyntheticInstance::wrist()
    };
    let mut revision_two = revision.clone();
    revision_two.images[0].detections[0].bounding_box.x_max = 80.0;
    revision_two.supersedes = Some(revision.sop_instance_uid());
    let mut heard = Vec::new();
    store_all(
        &peer,
        &[image.dataset(), revision_two.dataset()],
        |index, stored| heard.push((index, stored.status)),
    )
    .await
    .expect("both stored over one association");
    assert_eq!(heard, [(0, 0), (1, 0)]);
    let names = received(directory.path());
    assert_eq!(names.len(), 4, "{names:?}");
    for uid in [&image.sop_instance_uid, &revision_two.sop_instance_uid()] {
        assert!(
            names.iter().any(|name| name.contains(uid.as_str())),
            "{uid}: {names:?}"
        );
    }
}
