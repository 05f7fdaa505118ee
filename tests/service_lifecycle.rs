//! Each service subcommand of the built binary starts against the local stack,
//! reports health on loopback and stops cleanly on SIGTERM.

mod support;

use std::process::Command;

use support::{Service, Stack, free_loopback_port, repository_path, wait_for_status};

#[tokio::test]
async fn every_service_reports_health_and_stops_on_sigterm() {
    let Some(stack) = Stack::start("lifecycle").await else {
        return;
    };
    let environment = stack.environment.clone();
    let directory = tempfile::tempdir().expect("tempdir");
    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        "[[site]]\nid = \"lifecycle\"\nae_titles = [\"LIFECYCLE\"]\n",
    )
    .expect("sites file");
    let model = repository_path("models/testdata/heatmap")
        .display()
        .to_string();
    let dimse = format!("127.0.0.1:{}", free_loopback_port());
    let services: [(&str, Vec<String>); 5] = [
        (
            "ingest",
            vec![
                "--sites".into(),
                sites.display().to_string(),
                "--dimse-address".into(),
                dimse,
                "--http-address".into(),
            ],
        ),
        (
            "inference",
            vec!["--model".into(), model, "--health-address".into()],
        ),
        ("prioritizer", vec!["--health-address".into()]),
        ("api", vec!["--http-address".into()]),
        ("dispatch", vec!["serve".into(), "--health-address".into()]),
    ];
    for (name, mut arguments) in services {
        let port = free_loopback_port();
        arguments.insert(0, name.to_owned());
        arguments.push(format!("127.0.0.1:{port}"));
        let service = Service::start(name, &arguments, &environment, directory.path());
        wait_for_status(&format!("http://127.0.0.1:{port}/health/live"), 200).await;
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
        service.stop().await;
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{name} still listens after exiting"
        );
    }
    stack.finish().await;
}

#[test]
fn help_lists_every_subcommand() {
    let output = Command::new(fxtriage_testkit::fxtriage_bin())
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
        "dispatch",
        "standalone",
        "migrate",
        "import",
        "analyze",
    ] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}:\n{help}"
        );
    }
}

#[test]
fn services_bind_loopback_by_default() {
    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["ingest", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("127.0.0.1:8081"), "{help}");
    assert!(help.contains("127.0.0.1:11112"), "{help}");
    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["dispatch", "serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("127.0.0.1:8085"), "{help}");
}
