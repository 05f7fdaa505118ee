//! Ingest's temporary directory on a full filesystem (a small tmpfs this test
//! mounts, so it runs as root only): C-STORE answers "out of resources"
//! (0xA7xx) and STOW-RS 503 with Retry-After, nothing is stored or announced,
//! and both work again once space returns, without a restart.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_dispatch::dicom_out::{self, Stored};
use fxtriage_objstore::ObjectStore as _;
use fxtriage_sites::destinations::DicomPeer;
use support::{
    Service, Stack, create_token, free_loopback_port, object_keys, read_topics, stow,
    wait_for_status,
};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// A tmpfs of `size_mib` MiB mounted at a fresh directory; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size_mib: u32) -> Self {
        let path = tempfile::Builder::new()
            .prefix("fxtriage-full-tmp-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=1777"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs at {}", path.display());
        Self { path }
    }

    /// Fills the filesystem with one file until it is full; returns the file.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(error) = file.write_all(&block) {
                assert_eq!(
                    error.raw_os_error(),
                    Some(28),
                    "the filesystem is full (ENOSPC): {error}"
                );
                break;
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn instance(study: &str, side: u16) -> SyntheticInstance {
    SyntheticInstance {
        study_instance_uid: study.to_owned(),
        series_instance_uid: format!("{study}.1"),
        sop_instance_uid: format!("{study}.1.1"),
        rows: side,
        columns: side,
        ..SyntheticInstance::wrist()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_temporary_disk_is_refused_with_a_retryable_status_and_recovers() {
    if !is_root() {
        fxtriage_testkit::stack::not_applicable("mounting a small tmpfs needs root");
        return;
    }
    let Some(stack) = Stack::start("fulldisk").await else {
        return;
    };
    let site = stack.namespace.name().to_owned();
    let ae_title = format!("FULL{}", &site[site.len() - 6..]).to_uppercase();
    stack.add_site(&site).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let sites_file = directory.path().join("sites.toml");
    std::fs::write(
        &sites_file,
        format!("[[site]]\nid = \"{site}\"\nae_titles = [\"{ae_title}\"]\n"),
    )
    .expect("sites file");
    let token = create_token(
        &stack.setting("FXTRIAGE_DATABASE_URL"),
        &["--site", &site, "--role", "sender"],
    );

    let tmpfs = Tmpfs::mount(16);
    let (dimse_port, http_port) = (free_loopback_port(), free_loopback_port());
    let mut environment = stack.environment.clone();
    environment.push(("TMPDIR".into(), tmpfs.path.display().to_string()));
    // Every C-STORE instance through a buffer file, none held in memory.
    environment.push(("FXTRIAGE_DIMSE_MEMORY_BUDGET_MB".into(), "0".into()));
    let mut ingest = Service::start(
        "ingest",
        &[
            "ingest".into(),
            "--sites".into(),
            sites_file.display().to_string(),
            "--dimse-address".into(),
            format!("127.0.0.1:{dimse_port}"),
            "--http-address".into(),
            format!("127.0.0.1:{http_port}"),
        ],
        &environment,
        directory.path(),
    );
    wait_for_status(&format!("http://127.0.0.1:{http_port}/health/ready"), 200).await;
    let peer = DicomPeer {
        name: "full-disk-test".into(),
        ae_title: ae_title.clone(),
        host: "127.0.0.1".into(),
        port: dimse_port,
        calling_ae_title: "FULLDISKTEST".into(),
        objects: Vec::new(),
    };
    let stow_url = format!("http://127.0.0.1:{http_port}/dicomweb/sites/{site}/studies");
    let by_c_store = new_uid();
    let by_stow = new_uid();
    // Above STOW-RS's 8 MiB in memory, so the part is spooled to a file.
    let large = instance(&by_stow, 2_200).to_part10();
    assert!(large.len() > 9 * 1024 * 1024, "{} bytes", large.len());

    let filler = tmpfs.fill();
    let refused = dicom_out::store_all(
        &peer,
        &[instance(&by_c_store, 256).dataset()],
        |_, _: Stored| {},
    )
    .await
    .expect_err("a full disk cannot buffer the instance");
    assert!(refused.is_retryable(), "{refused}");
    assert!(
        refused.to_string().contains("0xA7"),
        "out of resources: {refused}"
    );
    let (status, retry_after) = stow(&stow_url, &token, &large).await;
    assert_eq!(status, 503, "STOW-RS on a full disk");
    assert!(retry_after.is_some(), "503 with Retry-After");

    // Nothing stored, nothing announced.
    let store = stack.s3().await;
    assert!(object_keys(&store, &format!("{site}/")).await.is_empty());
    let bus = stack.kafka().await;
    let announced = read_topics(
        &bus,
        &stack.namespace,
        &[stack.namespace.instances_topic()],
        Duration::from_secs(3),
    )
    .await;
    assert!(announced.is_empty(), "{} announced", announced.len());

    // Space again: the same ingest takes both.
    std::fs::remove_file(&filler).expect("remove the filler");
    dicom_out::store_all(
        &peer,
        &[instance(&by_c_store, 256).dataset()],
        |_, _: Stored| {},
    )
    .await
    .expect("stored once there is space");
    let (status, _) = stow(&stow_url, &token, &large).await;
    assert_eq!(status, 200, "STOW-RS once there is space");
    assert!(ingest.child.try_wait().is_none(), "ingest kept running");
    let stored = object_keys(&store, &format!("{site}/")).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let announced = read_topics(
        &bus,
        &stack.namespace,
        &[stack.namespace.instances_topic()],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(announced.len(), 2, "each instance announced once");
    ingest.stop().await;
    drop(tmpfs);
    for key in stored {
        let _ = store
            .delete(&fxtriage_objstore::ObjectKey::parse(&key).expect("key"))
            .await;
    }
    stack.finish().await;
}
