//! The inference consumer over the in-process bus and a local store, with a small
//! hand-built model: an eligible image yields an analysed finding, a bad image a
//! failed finding with its reason, a not-eligible image none, a malformed message
//! a dead letter; the partition always moves on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fxtriage_bus::{Bus, Consumer, InProcessBus, Record};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_inference::{BatchConfig, ExecutionProvider, Model, RuntimeConfig};
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::{Finding, FindingStatus, InstanceRef, InstanceStored};
use tokio_util::sync::CancellationToken;

fn ort_library() -> Option<PathBuf> {
    let path = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH")?;
    Some(PathBuf::from(path))
}

struct Pipeline {
    _dir: tempfile::TempDir,
    bus: Arc<InProcessBus>,
    store: Arc<dyn ObjectStore>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    findings: Box<dyn Consumer>,
}

async fn start(library: PathBuf) -> Pipeline {
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/testdata/heatmap");
    start_with(library, &model_dir).await
}

async fn start_with(library: PathBuf, model_dir: &Path) -> Pipeline {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().to_path_buf()));
    let bus = Arc::new(InProcessBus::default());
    let findings = bus
        .subscribe("test-findings", &[topics::FINDINGS])
        .await
        .expect("subscribe");
    let runtime = RuntimeConfig {
        library,
        provider: ExecutionProvider::Cpu,
        sessions: 1,
        intra_threads: 1,
        spinning: false,
    };
    let model = Arc::new(Model::load(model_dir, &runtime).expect("model"));
    let batcher = fxtriage_inference::Batcher::start(
        Arc::clone(&model),
        BatchConfig {
            max_batch: 4,
            max_wait: Duration::from_millis(5),
            queue_capacity: 8,
            concurrent_batches: 1,
            pad_to_max_batch: false,
        },
    );
    let deps = fxtriage_inference::consumer::Deps {
        namespace: fxtriage_proto::Namespace::none(),
        bus: bus.clone() as Arc<dyn Bus>,
        store: Arc::clone(&store),
        model,
        batcher,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(fxtriage_inference::consumer::consume(
        deps,
        4,
        shutdown.clone(),
    ));
    Pipeline {
        _dir: dir,
        bus,
        store,
        shutdown,
        task,
        findings,
    }
}

fn event(key: &str, eligible: bool) -> InstanceStored {
    InstanceStored {
        instance: Some(InstanceRef {
            site_id: "demo".into(),
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2.3.1".into(),
            sop_instance_uid: key.replace('/', "."),
        }),
        object_key: key.into(),
        eligible,
        ..Default::default()
    }
}

async fn announce(pipeline: &Pipeline, instance: &InstanceStored) {
    pipeline
        .bus
        .produce(
            topics::INSTANCES,
            Record::new("1.2.3", instance.encode_to_vec()),
        )
        .await
        .expect("produce");
}

async fn next_finding(pipeline: &Pipeline) -> Finding {
    let message = tokio::time::timeout(Duration::from_secs(20), pipeline.findings.next())
        .await
        .expect("a finding")
        .expect("next");
    pipeline.findings.ack(&message).expect("ack");
    Finding::decode(message.payload.as_slice()).expect("a Finding")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_get_findings_and_bad_ones_get_reasons() {
    let Some(library) = ort_library() else { return };
    let pipeline = start(library).await;
    let image = SyntheticInstance::wrist().to_part10();
    pipeline
        .store
        .put(
            &ObjectKey::parse("demo/good.dcm").expect("key"),
            Bytes::from(image),
        )
        .await
        .expect("put");
    pipeline
        .store
        .put(
            &ObjectKey::parse("demo/garbage.dcm").expect("key"),
            Bytes::from_static(b"not dicom"),
        )
        .await
        .expect("put");

    announce(&pipeline, &event("demo/good.dcm", true)).await;
    let analysed = next_finding(&pipeline).await;
    assert_eq!(
        analysed.status(),
        FindingStatus::Analysed,
        "{}",
        analysed.failure_reason
    );
    assert_eq!((analysed.image_rows, analysed.image_columns), (256, 256));
    assert!(
        analysed.probability > 0.0,
        "the synthetic bone is bright: {}",
        analysed.probability
    );
    let model = analysed.model.expect("model identity");
    assert_eq!(model.name, "fxtriage-test-heatmap");
    assert_eq!(model.sha256.len(), 64);
    assert!(analysed.timings.expect("timings").batch_size >= 1);
    for detection in &analysed.detections {
        let found = detection.r#box.expect("box");
        assert!(
            found.x_max <= 256.0 && found.y_max <= 256.0,
            "boxes are in original pixels: {found:?}"
        );
    }

    // Not eligible: acknowledged without a finding. Garbage: a failed finding.
    announce(&pipeline, &event("demo/chest.dcm", false)).await;
    announce(&pipeline, &event("demo/garbage.dcm", true)).await;
    let failed = next_finding(&pipeline).await;
    assert_eq!(failed.status(), FindingStatus::Failed);
    assert_eq!(
        failed.instance.expect("instance").sop_instance_uid,
        "demo.garbage.dcm"
    );
    assert_eq!(
        failed.failure_kind, "unreadable",
        "{}",
        failed.failure_reason
    );

    announce(&pipeline, &event("demo/missing.dcm", true)).await;
    let missing = next_finding(&pipeline).await;
    assert_eq!(
        missing.failure_kind, "object-missing",
        "{}",
        missing.failure_reason
    );

    // A malformed message goes to the dead-letter topic and the partition moves on.
    pipeline
        .bus
        .produce(
            topics::INSTANCES,
            Record::new("1.2.3", vec![0xFF, 0xFF, 0xFF]),
        )
        .await
        .expect("produce");
    announce(&pipeline, &event("demo/good.dcm", true)).await;
    assert_eq!(
        next_finding(&pipeline).await.status(),
        FindingStatus::Analysed,
        "the partition moved on"
    );
    let dead_letters = pipeline
        .bus
        .subscribe("test-dlq", &[&format!("{}.dlq", topics::INSTANCES)])
        .await
        .expect("subscribe");
    let dead = tokio::time::timeout(Duration::from_secs(5), dead_letters.next())
        .await
        .expect("dead letter")
        .expect("next");
    assert_eq!(
        dead.headers.get_str("fxtriage-dlq-kind"),
        Some("malformed-message")
    );

    pipeline.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), pipeline.task)
        .await
        .expect("stops")
        .expect("join")
        .expect("clean exit");
}

/// A wrist radiograph of a patient of `age` (PatientAge), or of unknown age.
fn wrist_of_age(age: Option<&str>) -> Vec<u8> {
    let mut dataset = SyntheticInstance::wrist().dataset();
    if let Some(age) = age {
        dataset.put(dicom_core::DataElement::new(
            dicom_dictionary_std::tags::PATIENT_AGE,
            dicom_core::VR::AS,
            dicom_core::value::PrimitiveValue::from(age),
        ));
    }
    fxtriage_dicom::synthetic::part10(dataset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_outside_the_intended_use_are_not_scored_and_say_why() {
    let Some(library) = ort_library() else { return };
    // The test model, its manifest claiming adult wrists and hands only.
    let model_dir = tempfile::tempdir().expect("tempdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/testdata/heatmap");
    for entry in std::fs::read_dir(&source).expect("model") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), model_dir.path().join(entry.file_name())).expect("copy");
    }
    let manifest = model_dir.path().join("manifest.toml");
    let mut text = std::fs::read_to_string(&manifest).expect("manifest");
    text.push_str("\n[scope]\nbody_parts = [\"WRIST\", \"HAND\"]\nmin_age_years = 18\n");
    std::fs::write(&manifest, text).expect("manifest");
    let pipeline = start_with(library, model_dir.path()).await;
    for (key, age) in [
        ("demo/adult.dcm", Some("045Y")),
        ("demo/child.dcm", Some("010Y")),
        ("demo/unknown.dcm", None),
    ] {
        pipeline
            .store
            .put(
                &ObjectKey::parse(key).expect("key"),
                Bytes::from(wrist_of_age(age)),
            )
            .await
            .expect("put");
    }
    let of_part = |key: &str, body_part: &str| InstanceStored {
        body_part: body_part.into(),
        ..event(key, true)
    };

    announce(&pipeline, &of_part("demo/adult.dcm", "WRIST")).await;
    let adult = next_finding(&pipeline).await;
    assert_eq!(
        adult.status(),
        FindingStatus::Analysed,
        "{}",
        adult.failure_reason
    );

    announce(&pipeline, &of_part("demo/adult.dcm", "CHEST")).await;
    let chest = next_finding(&pipeline).await;
    assert_eq!(chest.status(), FindingStatus::Failed);
    assert_eq!(chest.failure_kind, "outside-intended-use");
    assert!(
        chest.failure_reason.contains("body part CHEST")
            && chest.failure_reason.contains("WRIST, HAND"),
        "{}",
        chest.failure_reason
    );
    assert_eq!(chest.probability, 0.0, "never scored");
    assert!(chest.detections.is_empty());

    announce(&pipeline, &of_part("demo/child.dcm", "WRIST")).await;
    let child = next_finding(&pipeline).await;
    assert_eq!(child.failure_kind, "outside-intended-use");
    assert!(
        child.failure_reason.contains("age is outside") && !child.failure_reason.contains("10"),
        "the range, not the patient's age: {}",
        child.failure_reason
    );

    announce(&pipeline, &of_part("demo/unknown.dcm", "HAND")).await;
    let unknown = next_finding(&pipeline).await;
    assert_eq!(unknown.failure_kind, "outside-intended-use");
    assert!(
        unknown.failure_reason.contains("age is unknown"),
        "{}",
        unknown.failure_reason
    );

    pipeline.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), pipeline.task)
        .await
        .expect("stops")
        .expect("join")
        .expect("clean exit");
}
