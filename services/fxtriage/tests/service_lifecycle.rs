//! Each service subcommand of the built binary starts, reports health on loopback
//! and stops cleanly on SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

async fn wait_for_status(url: &str, expected: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status().as_u16() == expected
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local stack's settings, or `None` (skip) outside it.
fn stack_env() -> Option<Vec<(String, String)>> {
    let names = [
        "FXTRIAGE_KAFKA_BROKERS",
        "FXTRIAGE_DATABASE_URL",
        "FXTRIAGE_S3_ENDPOINT",
        "FXTRIAGE_S3_BUCKET",
        "FXTRIAGE_S3_REGION",
        "FXTRIAGE_S3_ACCESS_KEY_ID",
        "FXTRIAGE_S3_SECRET_ACCESS_KEY",
        "ORT_DYLIB_PATH",
    ];
    let values: Option<Vec<(String, String)>> =
        names.iter().map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value))).collect();
    if values.is_none() {
        let required = std::env::var_os("FXTRIAGE_REQUIRE_STACK").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "the local stack's variables are not set but the real stack is required");
        eprintln!("skipped: the local stack's variables are not set (run under `infra/local/stack env`)");
    }
    values
}

fn repository_path(relative: &str) -> String {
    format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn every_service_reports_health_and_stops_on_sigterm() {
    let Some(environment) = stack_env() else { return };
    let directory = tempfile::tempdir().expect("tempdir");
    let sites = directory.path().join("sites.toml");
    std::fs::write(&sites, "[[site]]\nid = \"lifecycle\"\nae_titles = [\"LIFECYCLE\"]\n").expect("sites file");
    let dimse_port = free_loopback_port().to_string();
    let model = repository_path("models/testdata/heatmap");
    let services: [(&str, Vec<String>); 4] = [
        ("ingest", vec!["--sites".into(), sites.display().to_string(), "--dimse-address".into(), format!("127.0.0.1:{dimse_port}"), "--http-address".into()]),
        ("inference", vec!["--model".into(), model, "--health-address".into()]),
        ("prioritizer", vec!["--health-address".into()]),
        ("api", vec!["--health-address".into()]),
    ];
    for (service, mut arguments) in services {
        let port = free_loopback_port();
        arguments.push(format!("127.0.0.1:{port}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fxtriage"))
            .arg(service)
            .args(&arguments)
            .envs(environment.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fxtriage");
        wait_for_status(&format!("http://127.0.0.1:{port}/health/live"), 200).await;
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;

        sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{service} did not stop within 30 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{service} exited with {status}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{service} still listens after exiting"
        );
    }
}

#[test]
fn help_lists_every_subcommand() {
    let output = Command::new(env!("CARGO_BIN_EXE_fxtriage"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for subcommand in [
        "ingest",
        "inference",
        "prioritizer",
        "api",
        "standalone",
        "migrate",
    ] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}:\n{help}"
        );
    }
}

#[test]
fn services_bind_loopback_by_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_fxtriage"))
        .args(["ingest", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("127.0.0.1:8081"), "{help}");
}
