//! Bulk import of a directory tree or a bucket prefix: every DICOM file goes
//! through the ingest pipeline once; files already stored are skipped without an
//! event; everything else is counted in the summary with examples.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_core::SiteId;
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::import::{
    self, FileOutcome, ImportOptions, ImportProgress, ImportSource, ImportSummary, NoProgress,
};
use fxtriage_ingest::{Ingestor, Sender, Sites, quarantine};
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore, S3Config, S3Credentials, S3Store};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::InstanceStored;
use tokio_util::sync::CancellationToken;

const SITES: &str = r#"
    [[site]]
    id = "st-marys"
"#;

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    bus: Arc<InProcessBus>,
    ingestor: Ingestor,
    sites: Sites,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().join("objects")));
    harness_with_store(dir, store)
}

fn harness_with_store(dir: tempfile::TempDir, store: Arc<dyn ObjectStore>) -> Harness {
    let bus = Arc::new(InProcessBus::default());
    let ingestor = Ingestor::new(
        Arc::clone(&store),
        bus.clone() as Arc<dyn Bus>,
        &fxtriage_proto::Namespace::none(),
    );
    Harness {
        dir,
        store,
        bus,
        ingestor,
        sites: Sites::from_toml(SITES).expect("sites"),
    }
}

impl Harness {
    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.archive().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    async fn import_from(
        &self,
        source: &ImportSource,
        progress: &dyn ImportProgress,
    ) -> ImportSummary {
        let site = self.sites.site("st-marys").expect("site");
        import::import(
            &self.ingestor,
            site,
            source,
            &ImportOptions::default(),
            progress,
            CancellationToken::new(),
        )
        .await
        .expect("import")
    }

    async fn import_archive(&self) -> ImportSummary {
        self.import_from(&ImportSource::Directory(self.archive()), &NoProgress)
            .await
    }

    /// Every `InstanceStored` published so far.
    async fn published(&self) -> Vec<InstanceStored> {
        let group = format!("test-{}", uuid::Uuid::new_v4());
        let consumer = self
            .bus
            .subscribe(&group, &[topics::INSTANCES])
            .await
            .expect("subscribe");
        let mut events = Vec::new();
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
        {
            consumer.ack(&message).expect("ack");
            events.push(InstanceStored::decode(message.payload.as_slice()).expect("event"));
        }
        events
    }
}

fn truncated(instance: &SyntheticInstance) -> Vec<u8> {
    let bytes = instance.to_part10();
    bytes[..bytes.len() / 2].to_vec()
}

fn ct() -> SyntheticInstance {
    SyntheticInstance {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        ..SyntheticInstance::wrist()
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Records what an import reports as it goes.
#[derive(Debug, Default)]
struct RecordedProgress {
    found: Mutex<Option<(u64, u64)>>,
    done: Mutex<Vec<(String, FileOutcome)>>,
}

impl ImportProgress for RecordedProgress {
    fn found(&self, files: u64, bytes: u64) {
        *self.found.lock().expect("lock") = Some((files, bytes));
    }
    fn done(&self, source: &str, _bytes: u64, outcome: &FileOutcome) {
        self.done
            .lock()
            .expect("lock")
            .push((source.to_owned(), outcome.clone()));
    }
}

#[tokio::test]
async fn a_directory_import_stores_skips_and_quarantines_each_file_then_skips_duplicates() {
    let h = harness();
    let first = SyntheticInstance::wrist();
    let second = SyntheticInstance::wrist();
    let first_path = h.write("study-1/a.dcm", &first.to_part10());
    // No extension: recognised by its "DICM" magic.
    h.write("study-1/IM0002", &second.to_part10());
    let notes = h.write("notes.txt", b"scanned from the archive in 2019");
    h.write("DICOMDIR", &first.to_part10());
    let corrupt = h.write(
        "broken/corrupt.dcm",
        &truncated(&SyntheticInstance::wrist()),
    );
    h.write("broken/ct.dcm", &ct().to_part10());
    // Named as DICOM but not DICOM: quarantined, not passed over.
    h.write("broken/fake.dcm", b"not really DICOM");

    let progress = RecordedProgress::default();
    let summary = h
        .import_from(&ImportSource::Directory(h.archive()), &progress)
        .await;
    assert_eq!(summary.files, 7, "{summary}");
    assert_eq!(summary.stored, 2, "{summary}");
    assert_eq!(summary.duplicates, 0, "{summary}");
    assert_eq!(summary.skipped["not DICOM"].count, 1, "{summary}");
    assert_eq!(summary.skipped["not DICOM"].examples, [display(&notes)]);
    assert_eq!(summary.skipped_count(), 2, "the DICOMDIR too: {summary}");
    assert_eq!(summary.quarantined["unreadable"].count, 1, "{summary}");
    assert!(
        summary.quarantined["unreadable"].examples[0].starts_with(&display(&corrupt)),
        "{summary}"
    );
    assert_eq!(
        summary.quarantined["sop-class-not-accepted"].count, 1,
        "{summary}"
    );
    assert_eq!(summary.quarantined["not-dicom"].count, 1, "{summary}");
    assert_eq!(summary.failed.count, 0, "{summary}");
    assert!(summary.is_complete());
    assert_eq!(
        *progress.found.lock().expect("lock"),
        Some((7, summary.bytes))
    );
    assert_eq!(progress.done.lock().expect("lock").len(), 7);

    let events = h.published().await;
    assert_eq!(events.len(), 2);
    let event = events
        .iter()
        .find(|event| {
            event.instance.as_ref().expect("instance").sop_instance_uid == first.sop_instance_uid
        })
        .expect("the first file is announced");
    assert_eq!(event.received_via, "import");
    assert_eq!(event.sender, format!("import of {}", display(&first_path)));

    let again = h.import_archive().await;
    assert_eq!(again.stored, 0, "{again}");
    assert_eq!(again.duplicates, 2, "{again}");
    assert_eq!(
        again.quarantined_count(),
        3,
        "refused files are refused again"
    );
    assert_eq!(
        h.published().await.len(),
        2,
        "skipped duplicates publish nothing"
    );
}

#[tokio::test]
async fn a_file_changed_since_its_import_is_stored_again() {
    let h = harness();
    let original = SyntheticInstance::wrist();
    h.write("a.dcm", &original.to_part10());
    assert_eq!(h.import_archive().await.stored, 1);

    let corrected = SyntheticInstance {
        accession_number: "ACC0002".into(),
        ..original.clone()
    };
    h.write("a.dcm", &corrected.to_part10());
    let summary = h.import_archive().await;
    assert_eq!(
        summary.stored, 1,
        "same SOP Instance UID, other content: {summary}"
    );
    assert_eq!(summary.duplicates, 0);
    let key = ObjectKey::parse(&format!(
        "st-marys/{}/{}/{}.dcm",
        original.study_instance_uid, original.series_instance_uid, original.sop_instance_uid
    ))
    .expect("key");
    assert_eq!(
        h.store.get(&key).await.expect("stored"),
        Bytes::from(corrected.to_part10())
    );
    assert_eq!(h.published().await.len(), 2);
}

#[tokio::test]
async fn quarantine_list_shows_the_files_an_import_refused() {
    let h = harness();
    let corrupt = h.write("corrupt.dcm", &truncated(&SyntheticInstance::wrist()));
    let ct_path = h.write("ct.dcm", &ct().to_part10());
    h.write("ok.dcm", &SyntheticInstance::wrist().to_part10());
    h.import_archive().await;

    let site = SiteId::parse("st-marys").expect("site id");
    let records = quarantine::list(h.store.as_ref(), Some(&site))
        .await
        .expect("list");
    let mut refused: Vec<(String, String)> = records
        .iter()
        .map(|record| {
            let Sender::Import { source } = &record.sender else {
                panic!("quarantined by {:?}", record.sender);
            };
            (source.clone(), record.kind.clone())
        })
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            (display(&corrupt), "unreadable".to_owned()),
            (display(&ct_path), "sop-class-not-accepted".to_owned()),
        ]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn symbolic_links_are_not_followed() {
    let h = harness();
    let outside = h.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(
        outside.join("x.dcm"),
        SyntheticInstance::wrist().to_part10(),
    )
    .expect("write");
    std::fs::create_dir_all(h.archive()).expect("mkdir");
    std::os::unix::fs::symlink(outside.join("x.dcm"), h.archive().join("link.dcm")).expect("link");
    std::os::unix::fs::symlink(&outside, h.archive().join("linked-dir")).expect("link");

    let summary = h.import_archive().await;
    assert_eq!(summary.stored, 0, "{summary}");
    assert_eq!(
        summary.skipped["symbolic link (not followed)"].count, 2,
        "{summary}"
    );
}

#[tokio::test]
async fn a_bucket_prefix_is_imported_object_by_object() {
    let h = harness();
    let bucket_dir = tempfile::tempdir().expect("bucket");
    let bucket: Arc<dyn ObjectStore> =
        Arc::new(LocalDirStore::new(bucket_dir.path().to_path_buf()));
    let wanted = SyntheticInstance::wrist();
    let elsewhere = SyntheticInstance::wrist();
    let put = |key: &str, bytes: Vec<u8>| {
        let bucket = Arc::clone(&bucket);
        let key = ObjectKey::parse(key).expect("key");
        async move { bucket.put(&key, Bytes::from(bytes)).await.expect("put") }
    };
    put("batch-1/a/IM1", wanted.to_part10()).await;
    put("batch-1/readme.txt", b"hello".to_vec()).await;
    put("batch-10/IM1", elsewhere.to_part10()).await;

    let source = ImportSource::Bucket {
        store: bucket,
        name: "s3://archive".into(),
        prefix: "batch-1/".into(),
    };
    let summary = h.import_from(&source, &NoProgress).await;
    assert_eq!(summary.source, "s3://archive/batch-1/");
    assert_eq!(summary.files, 2, "{summary}");
    assert_eq!(summary.stored, 1, "{summary}");
    assert_eq!(
        summary.skipped["not DICOM"].examples,
        ["s3://archive/batch-1/readme.txt"]
    );
    let events = h.published().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sender, "import of s3://archive/batch-1/a/IM1");

    let again = h.import_from(&source, &NoProgress).await;
    assert_eq!((again.stored, again.duplicates), (0, 1), "{again}");
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[tokio::test]
async fn an_s3_prefix_of_the_real_stack_is_imported() {
    let Some(endpoint) = fxtriage_testkit::stack::setting("FXTRIAGE_S3_ENDPOINT") else {
        return;
    };
    let bucket = env_value("FXTRIAGE_S3_BUCKET").unwrap_or_else(|| "fxtriage".to_owned());
    let credentials = match (
        env_value("FXTRIAGE_S3_ACCESS_KEY_ID"),
        env_value("FXTRIAGE_S3_SECRET_ACCESS_KEY"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => S3Credentials::Static {
            access_key_id,
            secret_access_key,
        },
        _ => S3Credentials::Default,
    };
    let s3: Arc<dyn ObjectStore> = Arc::new(
        S3Store::connect(S3Config {
            endpoint: Some(endpoint),
            bucket: bucket.clone(),
            region: env_value("FXTRIAGE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            path_style: true,
            credentials,
        })
        .await
        .expect("S3 client"),
    );
    let prefix = format!("import-test-{}/", uuid::Uuid::new_v4());
    let valid = SyntheticInstance::wrist();
    let keys = [
        (format!("{prefix}valid.dcm"), valid.to_part10()),
        (
            format!("{prefix}corrupt.dcm"),
            truncated(&SyntheticInstance::wrist()),
        ),
    ];
    for (key, bytes) in &keys {
        s3.put(
            &ObjectKey::parse(key).expect("key"),
            Bytes::from(bytes.clone()),
        )
        .await
        .expect("upload to S3");
    }

    let h = harness();
    let source = ImportSource::Bucket {
        store: Arc::clone(&s3),
        name: format!("s3://{bucket}"),
        prefix: prefix.clone(),
    };
    let summary = h.import_from(&source, &NoProgress).await;
    let again = h.import_from(&source, &NoProgress).await;
    for (key, _) in &keys {
        s3.delete(&ObjectKey::parse(key).expect("key"))
            .await
            .expect("clean up");
    }
    assert_eq!(summary.files, 2, "{summary}");
    assert_eq!(summary.stored, 1, "{summary}");
    assert_eq!(summary.quarantined["unreadable"].count, 1, "{summary}");
    assert!(
        summary.quarantined["unreadable"].examples[0]
            .starts_with(&format!("s3://{bucket}/{prefix}corrupt.dcm")),
        "{summary}"
    );
    assert_eq!(again.duplicates, 1, "{again}");
    assert_eq!(h.published().await.len(), 1);
}

#[tokio::test]
async fn files_that_cannot_be_stored_fail_and_leave_the_import_incomplete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, b"").expect("file");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(blocked));
    let h = harness_with_store(dir, store);
    h.write("a.dcm", &SyntheticInstance::wrist().to_part10());
    h.write("b.dcm", &SyntheticInstance::wrist().to_part10());

    let summary = h.import_archive().await;
    assert_eq!(summary.failed.count, 2, "{summary}");
    assert_eq!(summary.stored, 0);
    assert!(!summary.is_complete());
    assert!(
        summary.to_string().contains("failed (retryable):  2"),
        "{summary}"
    );
    assert!(h.published().await.is_empty());
}

#[tokio::test]
async fn a_shutdown_stops_the_import_and_marks_it_interrupted() {
    let h = harness();
    h.write("a.dcm", &SyntheticInstance::wrist().to_part10());
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let site = h.sites.site("st-marys").expect("site");
    let summary = import::import(
        &h.ingestor,
        site,
        &ImportSource::Directory(h.archive()),
        &ImportOptions::default(),
        &NoProgress,
        shutdown,
    )
    .await
    .expect("import");
    assert!(summary.interrupted);
    assert!(!summary.is_complete());
    assert_eq!(summary.stored, 0);
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let error = import::import(
        &h.ingestor,
        site,
        &ImportSource::Directory(h.dir.path().join("no-such-archive")),
        &ImportOptions::default(),
        &NoProgress,
        CancellationToken::new(),
    )
    .await
    .expect_err("nothing to import");
    assert!(error.to_string().contains("no-such-archive"), "{error}");
}
