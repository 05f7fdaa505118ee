//! The operator commands of the built binary: `quarantine list` prints what ingest
//! refused; `import` prints a summary and fails when files remain to be imported;
//! `--version` names the version and the revision built.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use bytes::Bytes;
use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::{Ingestor, InstanceSource, Sender, Sites};
use fxtriage_objstore::{LocalDirStore, ObjectStore};

/// The binary with `args`, configured by its flags only: the object store and
/// broker of the environment (a local stack, CI) are ignored.
fn fxtriage(args: &[&str]) -> Output {
    let mut command = Command::new(fxtriage_testkit::fxtriage_bin());
    for (name, _) in std::env::vars() {
        if name.starts_with("FXTRIAGE_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("FXTRIAGE_LOG", "warn")
        .output()
        .expect("run fxtriage")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const SITES: &str = r#"
    [[site]]
    id = "st-marys"
"#;

/// Quarantines a truncated wrist and a CT of st-marys in the store at `root`.
async fn quarantine_two(root: &Path) {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(root.to_path_buf()));
    let ingestor = Ingestor::new(
        store,
        Arc::new(InProcessBus::default()) as Arc<dyn Bus>,
        &fxtriage_proto::Namespace::none(),
    );
    let sites = Sites::from_toml(SITES).expect("sites");
    let site = sites.site("st-marys").expect("site");
    let site: &fxtriage_ingest::SiteConfig = site;
    let wrist = SyntheticInstance::wrist().to_part10();
    let ct = SyntheticInstance {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        ..SyntheticInstance::wrist()
    };
    for (name, bytes) in [
        ("corrupt.dcm", wrist[..wrist.len() / 2].to_vec()),
        ("ct.dcm", ct.to_part10()),
    ] {
        let sender = Sender::Import {
            source: format!("/archive/{name}"),
        };
        ingestor
            .accept(site, InstanceSource::Memory(Bytes::from(bytes)), &sender)
            .await
            .expect_err("refused");
    }
}

#[tokio::test]
async fn quarantine_list_prints_one_line_per_refused_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("objects");
    quarantine_two(&store_dir).await;
    let store_dir = store_dir.to_str().expect("utf-8 path");

    let output = fxtriage(&["quarantine", "list", "--store-dir", store_dir]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let mut kinds: Vec<&str> = lines.iter().map(|columns| columns[2]).collect();
    kinds.sort();
    assert_eq!(kinds, ["sop-class-not-accepted", "unreadable"], "{text}");
    for columns in &lines {
        assert_eq!(
            columns.len(),
            6,
            "time, site, kind, reason, sender, key: {text}"
        );
        assert_eq!(columns[1], "st-marys");
        assert!(columns[4].starts_with("import of /archive/"), "{text}");
        assert!(columns[5].starts_with("quarantine/st-marys/"), "{text}");
    }

    let json = fxtriage(&["quarantine", "list", "--json", "--store-dir", store_dir]);
    assert!(json.status.success(), "{json:?}");
    let records: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|record| record["sender"]["via"] == "import")
    );

    let other_site = fxtriage(&[
        "quarantine",
        "list",
        "--site",
        "kings",
        "--store-dir",
        store_dir,
    ]);
    assert!(other_site.status.success());
    assert_eq!(stdout(&other_site), "");
}

#[tokio::test]
async fn import_of_a_site_missing_from_the_registry_fails_before_connecting() {
    let Some(database) = fxtriage_testkit::FreshDatabase::create("fxt_import").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sites = dir.path().join("sites.toml");
    std::fs::write(&sites, SITES).expect("sites file");
    let output = fxtriage(&[
        "import",
        dir.path().to_str().expect("utf-8"),
        "--site",
        "kings",
        "--sites",
        sites.to_str().expect("utf-8"),
        "--database-url",
        &database.url,
        "--kafka-brokers",
        "127.0.0.1:1",
        "--store-dir",
        dir.path().join("objects").to_str().expect("utf-8"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("kings") && stderr.contains("site registry"),
        "{stderr}"
    );
    database.drop_database().await;
}

/// Imports with the broker of the local stack (`FXTRIAGE_KAFKA_BROKERS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_prints_a_summary_and_a_second_run_skips_what_is_stored() {
    let Some(brokers) = fxtriage_testkit::stack::setting("FXTRIAGE_KAFKA_BROKERS") else {
        return;
    };
    let Some(database) = fxtriage_testkit::FreshDatabase::create("fxt_import").await else {
        return;
    };
    // Topics of its own: the imported instances reach no other test's consumers.
    let namespace = fxtriage_testkit::unique_namespace("import");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).expect("mkdir");
    let wrist = SyntheticInstance::wrist().to_part10();
    std::fs::write(archive.join("wrist.dcm"), &wrist).expect("write");
    std::fs::write(archive.join("corrupt.dcm"), &wrist[..wrist.len() / 2]).expect("write");
    std::fs::write(archive.join("notes.txt"), b"not DICOM").expect("write");
    let sites = dir.path().join("sites.toml");
    std::fs::write(&sites, SITES).expect("sites file");
    let store_dir = dir.path().join("objects");
    let import = || {
        fxtriage(&[
            "import",
            archive.to_str().expect("utf-8"),
            "--site",
            "st-marys",
            "--sites",
            sites.to_str().expect("utf-8"),
            "--database-url",
            &database.url,
            "--kafka-brokers",
            &brokers,
            "--namespace",
            namespace.name(),
            "--store-dir",
            store_dir.to_str().expect("utf-8"),
        ])
    };

    let first = import();
    let summary = stdout(&first);
    assert!(first.status.success(), "{first:?}");
    assert!(summary.contains("stored:              1"), "{summary}");
    assert!(summary.contains("quarantined:         1"), "{summary}");
    assert!(summary.contains("unreadable: 1"), "{summary}");
    assert!(summary.contains("not DICOM: 1"), "{summary}");

    let second = import();
    let summary = stdout(&second);
    assert!(second.status.success(), "{second:?}");
    assert!(summary.contains("stored:              0"), "{summary}");
    assert!(summary.contains("duplicates skipped:  1"), "{summary}");

    // A store where the site's objects cannot be written (quarantine still can):
    // the valid file remains to be imported, so the import fails.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(&blocked).expect("mkdir");
    std::fs::write(blocked.join("st-marys"), b"").expect("file in the way");
    let failed = fxtriage(&[
        "import",
        archive.to_str().expect("utf-8"),
        "--site",
        "st-marys",
        "--sites",
        sites.to_str().expect("utf-8"),
        "--database-url",
        &database.url,
        "--kafka-brokers",
        &brokers,
        "--namespace",
        namespace.name(),
        "--store-dir",
        blocked.to_str().expect("utf-8"),
    ]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let summary = stdout(&failed);
    assert!(summary.contains("failed (retryable):  1"), "{summary}");
    database.drop_database().await;
}

/// `fxtriage --version` prints the crate version and the git revision the binary
/// was built from: the commit checked out here (CI builds a clone), so a support
/// request can name exactly what runs.
#[test]
fn version_names_the_revision_built() {
    let output = fxtriage(&["--version"]);
    assert!(output.status.success(), "{output:?}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run git");
    assert!(
        head.status.success(),
        "the tests run in a git checkout: {head:?}"
    );
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(head.len(), 12, "{head}");
    assert_eq!(
        stdout(&output).trim(),
        format!("fxtriage {} (revision {head})", env!("CARGO_PKG_VERSION"))
    );
}
