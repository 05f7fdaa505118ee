//! `fxtriage standalone`: every service in one process (in-process bus, local
//! directory store, the stack's PostgreSQL). 200 sample studies sent by C-STORE reach
//! the demo site's worklist once each; it writes standalone.json and stops
//! cleanly on SIGTERM.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use fxtriage_testkit::FreshDatabase;
use support::{Service, free_loopback_port, repository_path, stack_env, wait_for_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_studies_reach_the_worklist_of_the_embedded_default() {
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let database = FreshDatabase::create_on(
        &support::setting(&environment, "FXTRIAGE_DATABASE_URL"),
        "fxtriage_standalone",
    )
    .await;
    let mut environment = environment;
    environment.retain(|(key, _)| {
        !key.starts_with("FXTRIAGE_KAFKA")
            && !key.starts_with("FXTRIAGE_S3")
            && key != "FXTRIAGE_DATABASE_URL"
    });
    environment.push(("FXTRIAGE_DATABASE_URL".into(), database.url.clone()));

    let (http, dimse, stow) = (
        free_loopback_port(),
        free_loopback_port(),
        free_loopback_port(),
    );
    let data = directory.path().join("data");
    let arguments: Vec<String> = [
        "standalone",
        "--data-dir",
        &data.display().to_string(),
        "--model",
        &repository_path("models/testdata/heatmap")
            .display()
            .to_string(),
        "--http-address",
        &format!("127.0.0.1:{http}"),
        "--dimse-address",
        &format!("127.0.0.1:{dimse}"),
        "--stow-address",
        &format!("127.0.0.1:{stow}"),
    ]
    .map(str::to_owned)
    .to_vec();
    let standalone = Service::start("standalone", &arguments, &environment, directory.path());
    wait_for_status(&format!("http://127.0.0.1:{http}/health/ready"), 200).await;
    let description: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("standalone.json")).expect("standalone.json"),
    )
    .expect("json");
    assert_eq!(description["dimse"], format!("127.0.0.1:{dimse}"));
    assert_eq!(description["ae_title"], "FXTRIAGE");
    assert_eq!(description["site"], "demo");

    let samples = directory.path().join("samples");
    let written = Command::new(fxtriage_testkit::fxtriage_bin())
        .args([
            "samples",
            "--studies",
            "200",
            "--out",
            &samples.display().to_string(),
        ])
        .output()
        .expect("samples");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let sent = Command::new("dcmsend")
        .args([
            "-aec",
            "FXTRIAGE",
            "127.0.0.1",
            &dimse.to_string(),
            "+sd",
            "+sp",
            "*.dcm",
            &samples.display().to_string(),
        ])
        .output()
        .expect("dcmsend (dcmtk)");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let client = database.connect().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows = client
            .query("SELECT ai_result FROM studies WHERE site_id = 'demo'", &[])
            .await
            .expect("query");
        if rows.len() == 200
            && rows
                .iter()
                .all(|row| row.get::<_, String>(0) != "awaiting-analysis")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 200 studies settled:\n{}",
            rows.len(),
            standalone.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let printed = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["worklist", "--site", "demo"])
        .envs(environment.iter().cloned())
        .output()
        .expect("worklist");
    let table = String::from_utf8_lossy(&printed.stdout);
    assert!(
        table.contains("50 open studies shown"),
        "the first page of 50: {table}"
    );
    assert!(
        table
            .lines()
            .nth(2)
            .is_some_and(|first| first.contains("emergency")),
        "an emergency study comes first:\n{table}"
    );
    standalone.stop().await;
    drop(client);
    database.drop_database().await;
}

/// Without a database URL, standalone initialises a private PostgreSQL cluster
/// in its data directory and stops it on exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_url_a_private_cluster_is_started_and_stopped() {
    let Some(environment) = stack_env() else {
        return;
    };
    let environment: Vec<(String, String)> = environment
        .into_iter()
        .filter(|(key, _)| key == "ORT_DYLIB_PATH")
        .collect();
    let directory = tempfile::Builder::new()
        .prefix("fxtriage-private-pg")
        .tempdir_in("/tmp")
        .expect("tempdir");
    // As root the cluster runs as the postgres user, which must reach the directory.
    std::fs::set_permissions(
        directory.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let data = directory.path().join("data");
    let http = free_loopback_port();
    let arguments: Vec<String> = [
        "standalone",
        "--data-dir",
        &data.display().to_string(),
        "--model",
        &repository_path("models/testdata/heatmap")
            .display()
            .to_string(),
        "--http-address",
        &format!("127.0.0.1:{http}"),
        "--dimse-address",
        &format!("127.0.0.1:{}", free_loopback_port()),
        "--stow-address",
        &format!("127.0.0.1:{}", free_loopback_port()),
    ]
    .map(str::to_owned)
    .to_vec();
    // pg_ctl detaches the postmaster into a session of its own: if this test
    // fails before standalone stops it, this guard does.
    let _postmaster = PostmasterGuard(data.join("postgres/cluster/postmaster.pid"));
    let standalone = Service::start(
        "standalone-private",
        &arguments,
        &environment,
        directory.path(),
    );
    wait_for_status(&format!("http://127.0.0.1:{http}/health/ready"), 200).await;
    // Written before the API answers, and readable by its owner only: it holds a token.
    let description_path = data.join("standalone.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&description_path)
            .expect("standalone.json exists once the API is ready")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "standalone.json is private to its owner"
    );
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&description_path).expect("standalone.json"))
            .expect("json");
    assert_eq!(description["database"], "private");
    let postmaster = data.join("postgres/cluster/postmaster.pid");
    assert!(
        postmaster.is_file(),
        "the cluster runs from the data directory"
    );
    standalone.stop().await;
    assert!(!postmaster.exists(), "the cluster is stopped on exit");
}

/// Kills the postmaster whose pid file is here, if it still runs, when dropped.
struct PostmasterGuard(std::path::PathBuf);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.0) else {
            return;
        };
        if let Some(pid) = text.lines().next() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}
