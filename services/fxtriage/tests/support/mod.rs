//! Helpers for tests that run the built `fxtriage` binary against the local stack.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local stack's settings, or `None` (skip) outside it; fails when the stack is required.
pub fn stack_env() -> Option<Vec<(String, String)>> {
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
    let values: Option<Vec<(String, String)>> = names
        .iter()
        .map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| (name.to_string(), value))
        })
        .collect();
    if values.is_none() {
        let required = std::env::var_os("FXTRIAGE_REQUIRE_STACK").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "the local stack's variables are not set but the real stack is required"
        );
        eprintln!(
            "skipped: the local stack's variables are not set (run under `infra/local/stack env`)"
        );
    }
    values
}

pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// A running `fxtriage` process, killed when dropped (also when a test fails).
pub struct Service {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Service {
    pub fn start(
        name: &str,
        arguments: &[String],
        environment: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_fxtriage"));
        // Only the settings given: nothing inherited from the test's own environment.
        for (key, _) in std::env::vars()
            .filter(|(key, _)| key.starts_with("FXTRIAGE_") || key == "ORT_DYLIB_PATH")
        {
            command.env_remove(key);
        }
        let child = command
            .args(arguments)
            .envs(environment.iter().cloned())
            .env("FXTRIAGE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn fxtriage");
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{} exited with {status}; log: {}",
                    self.name,
                    self.log.display()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 30 s of SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

pub async fn wait_for_status(url: &str, expected: u16) {
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

/// An empty database of its own on the local stack's PostgreSQL server, named
/// `{prefix}_{process id}` (a copy left by an earlier run is dropped first).
pub struct FreshDatabase {
    /// Its URL, for `FXTRIAGE_DATABASE_URL`.
    pub url: String,
    /// Its connection settings.
    pub config: fxtriage_db::DbConfig,
    name: String,
    admin: tokio_postgres::Client,
}

impl FreshDatabase {
    /// `environment` is [`stack_env`]'s.
    pub async fn create(environment: &[(String, String)], prefix: &str) -> Self {
        let server_url = &environment
            .iter()
            .find(|(key, _)| key == "FXTRIAGE_DATABASE_URL")
            .expect("FXTRIAGE_DATABASE_URL")
            .1;
        let server = fxtriage_db::DbConfig::from_url(server_url).expect("url");
        let name = format!("{prefix}_{}", std::process::id());
        let admin = server.connect().await.expect("connect");
        admin
            .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
            .await
            .expect("drop");
        admin
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .expect("create");
        let url = format!(
            "{}/{name}",
            server_url
                .rsplit_once('/')
                .expect("a database in the URL")
                .0
        );
        Self {
            url,
            config: server.with_database(&name),
            name,
            admin,
        }
    }

    /// Drops it, closing what is still connected to it.
    pub async fn drop_database(self) {
        self.admin
            .execute(
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                &[],
            )
            .await
            .expect("drop");
    }
}
