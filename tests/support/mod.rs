//! Helpers for tests that run the built `fxtriage` binary against the local stack.
//!
//! Every test that starts services against the shared broker gets a [`Stack`]:
//! a namespace and a database of its own, so tests run in parallel without
//! seeing each other's topics, consumer groups or worklists. Every process a test
//! starts is a [`Service`] (a [`ChildGuard`]): killed with its process group
//! when dropped, also when the test panics.

#![allow(dead_code)]

pub mod changes;
pub mod deployment;
pub mod prometheus;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fxtriage_bus::{Bus, KafkaBus, KafkaConfig, Received};
use fxtriage_objstore::{ObjectStore, S3Config, S3Credentials, S3Store};
use fxtriage_proto::{ConsumerGroup, Namespace};
use fxtriage_testkit::{ChildGuard, FreshDatabase, Progress, eventually, stack};

/// Every setting of the local stack a service process may need.
const STACK_SETTINGS: [&str; 8] = [
    "FXTRIAGE_KAFKA_BROKERS",
    "FXTRIAGE_DATABASE_URL",
    "FXTRIAGE_S3_ENDPOINT",
    "FXTRIAGE_S3_BUCKET",
    "FXTRIAGE_S3_REGION",
    "FXTRIAGE_S3_ACCESS_KEY_ID",
    "FXTRIAGE_S3_SECRET_ACCESS_KEY",
    "ORT_DYLIB_PATH",
];

/// The local stack's settings, or `None` after the test was skipped (a failure
/// when the stack is required).
pub fn stack_env() -> Option<Vec<(String, String)>> {
    stack::settings(&STACK_SETTINGS)
}

/// A test's own part of the local stack: a namespace on the broker, a database on
/// the PostgreSQL server (migrated), and the settings for its service processes.
pub struct Stack {
    /// What the test's processes get: the stack's settings with this test's
    /// database URL and namespace.
    pub environment: Vec<(String, String)>,
    /// What the test named it after.
    pub prefix: String,
    pub namespace: Namespace,
    pub database: FreshDatabase,
    /// The database's connection settings.
    pub database_config: fxtriage_db::DbConfig,
}

impl Stack {
    /// A namespace and a database named after `prefix`, or `None` (skipped).
    pub async fn start(prefix: &str) -> Option<Self> {
        Some(Self::start_on(prefix, stack_env()?).await)
    }

    /// A namespace and a database named after `prefix` on the servers that
    /// `environment` names (the settings of [`STACK_SETTINGS`]).
    pub async fn start_on(prefix: &str, mut environment: Vec<(String, String)>) -> Self {
        let namespace = fxtriage_testkit::unique_namespace(prefix);
        let server = value(&environment, "FXTRIAGE_DATABASE_URL");
        let database =
            FreshDatabase::create_on(&server, &format!("fxt_{}", prefix.replace('-', "_"))).await;
        let database_config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
        fxtriage_db::migrate(&database_config)
            .await
            .expect("migrate the test database");
        environment.retain(|(key, _)| key != "FXTRIAGE_DATABASE_URL");
        environment.push(("FXTRIAGE_DATABASE_URL".into(), database.url.clone()));
        environment.push(("FXTRIAGE_NAMESPACE".into(), namespace.name().to_owned()));
        Self {
            environment,
            prefix: prefix.to_owned(),
            namespace,
            database,
            database_config,
        }
    }

    pub fn setting(&self, name: &str) -> String {
        value(&self.environment, name)
    }

    /// A connection to this test's database.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.database.connect().await
    }

    /// A Kafka client of the stack's broker, with this test's topics created.
    pub async fn kafka(&self) -> KafkaBus {
        let bus = KafkaBus::connect(KafkaConfig::new(
            self.setting("FXTRIAGE_KAFKA_BROKERS"),
            "fxtriage-test",
        ))
        .expect("Kafka client");
        for topic in self.namespace.topics() {
            bus.ensure_topic(&topic, 8).await.expect("create topic");
        }
        bus
    }

    /// The stack's S3 bucket.
    pub async fn s3(&self) -> S3Store {
        S3Store::connect(S3Config {
            endpoint: Some(self.setting("FXTRIAGE_S3_ENDPOINT")),
            bucket: self.setting("FXTRIAGE_S3_BUCKET"),
            region: self.setting("FXTRIAGE_S3_REGION"),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key_id: self.setting("FXTRIAGE_S3_ACCESS_KEY_ID"),
                secret_access_key: self.setting("FXTRIAGE_S3_SECRET_ACCESS_KEY"),
            },
        })
        .await
        .expect("S3 store")
    }

    /// Registers `site` in this test's database.
    pub async fn add_site(&self, site: &str) {
        self.client()
            .await
            .execute(
                "INSERT INTO sites (site_id, display_name) VALUES ($1, $2)",
                &[&site, &format!("Test site {site}")],
            )
            .await
            .expect("register the site");
    }

    /// Drops the test's database.
    pub async fn finish(self) {
        self.database.drop_database().await;
    }
}

/// The value of `name` among `environment` (from [`stack_env`]).
pub fn setting(environment: &[(String, String)], name: &str) -> String {
    value(environment, name)
}

fn value(environment: &[(String, String)], name: &str) -> String {
    environment
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("{name} is not among the test's settings"))
}

/// What a command printed on standard output, after asserting that it
/// succeeded (its output and errors in the failure message).
pub fn succeeded(output: &std::process::Output) -> String {
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

pub fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A running `fxtriage` process, killed with its process group when dropped
/// (also when a test fails).
pub struct Service {
    pub name: String,
    pub child: ChildGuard,
    pub log: PathBuf,
    /// The podman container it runs in, removed when the service is dropped.
    pub container: Option<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(container) = &self.container {
            let _ = podman()
                .args(["rm", "--force", "--time", "0", container])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// podman with the settings it needs on these machines (scripts/build-image
/// writes them): runc, and the ulimits the VM allows.
pub fn podman() -> Command {
    let tools = std::env::var_os("FXTRIAGE_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|cache| PathBuf::from(cache).join("fxtriage/tools"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/fxtriage/tools"))
        })
        .expect("HOME is set");
    let mut command = Command::new("podman");
    command.env("CONTAINERS_CONF", tools.join("containers.conf"));
    command
}

/// `NAME.log` in `log_dir`, opened to append a service's standard error.
fn log_file(log_dir: &Path, name: &str) -> (PathBuf, std::fs::File) {
    let log = log_dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    (log, file)
}

impl Service {
    pub fn start(
        name: &str,
        arguments: &[String],
        environment: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let (log, log_file) = log_file(log_dir, name);
        let mut command = Command::new(fxtriage_testkit::fxtriage_bin());
        // Only the settings given: nothing inherited from the test's own environment.
        for (key, _) in std::env::vars()
            .filter(|(key, _)| key.starts_with("FXTRIAGE_") || key == "ORT_DYLIB_PATH")
        {
            command.env_remove(key);
        }
        // For diagnosis, the log filter and extra Kafka properties of the test's
        // own environment reach its services (e.g. FXTRIAGE_LOG=info,librdkafka=debug
        // with FXTRIAGE_KAFKA_PROPERTIES=debug=cgrp).
        for name in ["FXTRIAGE_LOG", "FXTRIAGE_KAFKA_PROPERTIES"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command
            .args(arguments)
            .envs(environment.iter().cloned())
            .env("FXTRIAGE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = ChildGuard::spawn(name, &mut command).expect("spawn fxtriage");
        Self {
            name: name.to_owned(),
            child,
            log,
            container: None,
        }
    }

    /// The service run from `image` with podman: the host's network (it binds
    /// 127.0.0.1 as on the host), `mounts` read-only at the same paths, and only
    /// the settings given (the image's own ONNX Runtime library).
    pub fn start_in_image(
        image: &str,
        name: &str,
        arguments: &[String],
        environment: &[(String, String)],
        mounts: &[&Path],
        log_dir: &Path,
    ) -> Self {
        let (log, log_file) = log_file(log_dir, name);
        let container = format!("fxtriage-test-{name}-{}", std::process::id());
        let mut command = podman();
        command.args(["run", "--rm", "--network", "host", "--name", &container]);
        for mount in mounts {
            command
                .arg("--volume")
                .arg(format!("{}:{}:ro", mount.display(), mount.display()));
        }
        for (key, value) in environment {
            if key != "ORT_DYLIB_PATH" {
                command.arg("--env").arg(format!("{key}={value}"));
            }
        }
        command
            .arg(image)
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = ChildGuard::spawn(name, &mut command).expect("spawn podman");
        Self {
            name: name.to_owned(),
            child,
            log,
            container: Some(container),
        }
    }

    pub fn signal(&self, signal: &str) {
        self.child.signal(signal.trim_start_matches('-'));
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait_for(Duration::from_secs(60)).await;
        let Some(status) = status else {
            panic!(
                "{} did not stop within 60 s of SIGTERM; log: {}",
                self.name,
                self.log.display()
            );
        };
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        self.child.kill();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Waits until `url` answers `expected` (a service starting up, on a busy machine).
pub async fn wait_for_status(url: &str, expected: u16) {
    let client = reqwest::Client::new();
    eventually(
        &format!("{url} to answer {expected}"),
        Duration::from_secs(120),
        || async {
            match client.get(url).send().await {
                Ok(response) if response.status().as_u16() == expected => Progress::Done(()),
                Ok(response) => Progress::NotYet(format!("status {}", response.status())),
                Err(error) => Progress::NotYet(error.to_string()),
            }
        },
    )
    .await;
}

/// The dead letters a service counted, from its `/metrics` at `address`:
/// (source topic, kind) -> count.
pub async fn dead_letters_counted(address: &str) -> BTreeMap<(String, String), f64> {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text");
    let mut counted = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("fxtriage_dead_letters_total{") else {
            continue;
        };
        let (labels, count) = rest.split_once("} ").expect("a sample line");
        let mut topic = String::new();
        let mut kind = String::new();
        for label in labels.split(',') {
            let (name, quoted) = label.split_once('=').expect("name=\"value\"");
            let unquoted = quoted.trim_matches('"').to_owned();
            match name {
                "topic" => topic = unquoted,
                "kind" => kind = unquoted,
                _ => {}
            }
        }
        counted.insert((topic, kind), count.trim().parse().expect("a number"));
    }
    counted
}

/// Every message of `topics` (this test's namespace) from the beginning, read
/// in a new group of the namespace until nothing more arrives for `quiet`.
pub async fn read_topics(
    bus: &KafkaBus,
    namespace: &Namespace,
    topics: &[String],
    quiet: Duration,
) -> Vec<Received> {
    let reader = uuid_like();
    let group = namespace.consumer_group(ConsumerGroup::Named(&format!("test-reader-{reader}")));
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let consumer = bus.subscribe(&group, &names).await.expect("subscribe");
    let mut messages = Vec::new();
    // The first message may take a group join; after that, silence means the end.
    let mut wait = Duration::from_secs(20).max(quiet);
    while let Ok(next) = tokio::time::timeout(wait, consumer.next()).await {
        let message = next.expect("read");
        consumer.ack(&message).expect("ack");
        messages.push(message);
        wait = quiet;
    }
    consumer.close().await.expect("close");
    messages
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

/// A short description of each dead letter: "topic key kind: reason".
pub fn describe_dead_letters(messages: &[Received]) -> Vec<String> {
    messages
        .iter()
        .map(|message| {
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
                    .unwrap_or_default()
            };
            format!(
                "{} key {} {}: {}",
                message.topic,
                message.key_text(),
                header("fxtriage-dlq-kind"),
                header("fxtriage-dlq-reason")
            )
        })
        .collect()
}

/// Objects under `prefix` of the stack's bucket.
pub async fn object_keys(store: &S3Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.key.as_str().to_owned())
        .collect()
}

/// A DICOM sender process (dcmtk's dcmsend) of `directory` to `ae_title` on `port`.
pub fn dcmsend(ae_title: &str, port: u16, directory: &Path) -> ChildGuard {
    let mut command = Command::new("dcmsend");
    command
        .args([
            "-aec",
            ae_title,
            "-aet",
            "E2ESENDER",
            "127.0.0.1",
            &port.to_string(),
            "+sd",
        ])
        .arg(directory)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn("dcmsend", &mut command)
        .expect("dcmsend (Debian package dcmtk) is installed by scripts/bootstrap")
}

/// Sends `directory` and waits for the sender to succeed.
pub async fn dcmsend_all(ae_title: &str, port: u16, directory: &Path) {
    let mut sender = dcmsend(ae_title, port, directory);
    let status = sender
        .wait_for(Duration::from_secs(300))
        .await
        .expect("dcmsend finished within 300 s");
    assert!(
        status.success(),
        "dcmsend of {} failed: {status}",
        directory.display()
    );
}

/// `fxtriage standalone` on free loopback ports with the test model, its data
/// in `data`, ready, with what it wrote to `standalone.json`.
pub struct Standalone {
    pub service: Service,
    pub http: u16,
    pub dimse: u16,
    pub stow: u16,
    pub data: PathBuf,
    pub description: serde_json::Value,
}

impl Standalone {
    /// Starts it with `environment` only (and `extra` arguments), logging to
    /// `log_dir` as `name`, and waits until it is ready.
    pub async fn start(
        name: &str,
        data: &Path,
        environment: &[(String, String)],
        extra: &[&str],
        log_dir: &Path,
    ) -> Self {
        let (http, dimse, stow) = (
            free_loopback_port(),
            free_loopback_port(),
            free_loopback_port(),
        );
        let mut arguments: Vec<String> = [
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
        arguments.extend(extra.iter().map(|argument| (*argument).to_owned()));
        let service = Service::start(name, &arguments, environment, log_dir);
        wait_for_status(&format!("http://127.0.0.1:{http}/health/ready"), 200).await;
        let description: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("standalone.json")).expect("standalone.json"),
        )
        .expect("standalone.json is JSON");
        Self {
            service,
            http,
            dimse,
            stow,
            data: data.to_owned(),
            description,
        }
    }

    /// A string of `standalone.json`.
    pub fn described(&self, key: &str) -> String {
        self.description[key]
            .as_str()
            .unwrap_or_else(|| panic!("standalone.json has no {key}"))
            .to_owned()
    }
}

/// The text of `/metrics` at `address`.
pub async fn scrape(address: &str) -> String {
    reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The sum of the samples of `name` (exactly: not `name_bucket`) in the text
/// `exposition` whose labels include every one of `labels`.
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            match rest.split_once("} ") {
                Some(split) => split,
                None => continue,
            }
        } else if let Some(value) = rest.strip_prefix(' ') {
            ("", value)
        } else {
            continue; // another metric whose name starts with `name`
        };
        let matches = labels
            .iter()
            .all(|(label, wanted)| label_text.contains(&format!("{label}=\"{wanted}\"")));
        if matches {
            let value: f64 = value.trim().parse().expect("a sample value");
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// `promtool check metrics` of `exposition` (the Prometheus project's own
/// linter: names, units, types, help texts); panics with what it says.
pub fn promtool_check_metrics(service: &str, exposition: &str) {
    use std::io::Write as _;
    if !stack::tool("promtool", "prometheus") {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics refuses {service}'s metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A STOW-RS request of one instance to `url` (`.../dicomweb/sites/{site}/studies`);
/// returns the status and Retry-After.
pub async fn stow(url: &str, token: &str, instance: &[u8]) -> (u16, Option<String>) {
    let boundary = "fxtriage-test-boundary";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(instance);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("STOW-RS request");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), retry_after)
}

/// `fxtriage tokens create ARGUMENTS` against the database at `database_url`:
/// the token it prints.
pub fn create_token(database_url: &str, arguments: &[&str]) -> String {
    let created = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["tokens", "create"])
        .args(arguments)
        .env("FXTRIAGE_DATABASE_URL", database_url)
        .output()
        .expect("tokens create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    String::from_utf8(created.stdout)
        .expect("utf-8")
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .expect("a token on stdout")
        .trim()
        .to_owned()
}
