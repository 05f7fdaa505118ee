//! A Prometheus server (Debian's `prometheus`) scraping the test's services on
//! loopback every second, and the chart's Grafana dashboards evaluated against
//! it: each query as Grafana would send it, its intervals 1m and `$site` every
//! site.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fxtriage_testkit::{ChildGuard, Progress, eventually, stack};
use serde_json::Value;

use super::{free_loopback_port, repository_path};

pub struct Prometheus {
    _child: ChildGuard,
    url: String,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (job name, `host:port` of `/metrics`) every second;
    /// `None` when Prometheus is not installed (skipped with the reason,
    /// unless the real stack is required).
    pub fn start(targets: &[(&str, String)]) -> Option<Self> {
        if !stack::tool("prometheus", "prometheus") {
            return None;
        }
        let data = tempfile::tempdir().expect("tempdir");
        let jobs: String = targets
            .iter()
            .map(|(job, address)| {
                format!(
                    "  - job_name: {job}\n    static_configs:\n      - targets: [\"{address}\"]\n"
                )
            })
            .collect();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
            ),
        )
        .expect("prometheus.yml");
        let port = free_loopback_port();
        let log = std::fs::File::create(data.path().join("prometheus.log")).expect("log");
        let child = ChildGuard::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    data.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log),
        )
        .expect("start prometheus");
        Some(Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        })
    }

    /// The result vector of an instant query; panics when Prometheus refuses it.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The result vector of an instant query, or why there is none.
    async fn try_query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let response: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|error| format!("Prometheus does not answer: {error}"))?
            .json()
            .await
            .map_err(|error| format!("Prometheus does not answer JSON: {error}"))?;
        if response["status"] != "success" {
            return Err(format!("{promql}: {response}"));
        }
        Ok(response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until every job of `jobs` is up with `samples` scrapes in the
    /// last minute (enough for a rate over 1m).
    pub async fn wait_for_scrapes(&self, jobs: &[&str], samples: usize) {
        eventually(
            "Prometheus to scrape every service",
            Duration::from_secs(60),
            || async {
                let mut missing = Vec::new();
                for job in jobs {
                    let found = match self
                        .try_query(&format!("count_over_time(up{{job=\"{job}\"}}[1m]) and on() up{{job=\"{job}\"}} == 1"))
                        .await
                    {
                        Ok(found) => found,
                        Err(error) => return Progress::NotYet(error),
                    };
                    let scrapes = found
                        .first()
                        .and_then(|series| series["value"][1].as_str())
                        .and_then(|value| value.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    if scrapes < samples as f64 {
                        missing.push(format!("{job}: {scrapes} scrapes"));
                    }
                }
                if missing.is_empty() {
                    Progress::Done(())
                } else {
                    Progress::NotYet(missing.join(", "))
                }
            },
        )
        .await;
    }
}

/// Each query of the chart's dashboards (file, panel title, PromQL), as
/// Grafana would send it here: `$__rate_interval` (and the like) 1m, `$site`
/// every site.
pub fn dashboard_queries() -> Vec<(String, String, String)> {
    let directory = repository_path("helm/fxtriage/monitoring/dashboards");
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("the dashboards")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    for path in files {
        let board: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("dashboard JSON");
        let file = file_name(&path);
        for panel in board["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push((
                        file.clone(),
                        panel["title"].as_str().unwrap_or("").to_owned(),
                        as_sent(expr),
                    ));
                }
            }
        }
    }
    queries
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A Grafana query as Prometheus gets it here.
fn as_sent(expr: &str) -> String {
    let mut sent = expr.to_owned();
    for interval in [
        "${__rate_interval}",
        "$__rate_interval",
        "${__interval}",
        "$__interval",
        "${__range}",
        "$__range",
    ] {
        sent = sent.replace(interval, "1m");
    }
    sent.replace("${site}", ".+").replace("$site", ".+")
}

/// The vector selectors of a query (`name{matchers}` or a bare `name` of the
/// product's metrics, and `up{...}`), to tell a query that has no data because
/// nothing of it happened from one that asks for what does not exist.
pub fn selectors(promql: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = promql.as_bytes();
    let mut index = 0;
    while index < promql.len() {
        let rest = &promql[index..];
        let starts_name = rest.starts_with("fxtriage_") || rest.starts_with("up{");
        let after_identifier =
            index > 0 && (bytes[index - 1].is_ascii_alphanumeric() || bytes[index - 1] == b'_');
        if !starts_name || after_identifier {
            index += 1;
            continue;
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let mut end = name_end;
        if rest[name_end..].starts_with('{') {
            end = name_end + rest[name_end..].find('}').map_or(0, |close| close + 1);
        }
        found.push(rest[..end].to_owned());
        index += end.max(1);
    }
    found.sort();
    found.dedup();
    found
}
