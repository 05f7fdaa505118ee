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
    let deadline = Instant::now() + Duration::from_secs(20);
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

#[tokio::test]
async fn every_service_reports_health_and_stops_on_sigterm() {
    // Ingest needs its broker and store; its lifecycle is tested with the local stack.
    for service in ["inference", "prioritizer", "api"] {
        let port = free_loopback_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fxtriage"))
            .args([service, "--health-address", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fxtriage");
        wait_for_status(&format!("http://127.0.0.1:{port}/health/live"), 200).await;
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;

        sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{service} did not stop within 10 s of SIGTERM"
            );
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
