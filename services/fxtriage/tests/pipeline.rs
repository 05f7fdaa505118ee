//! The distributed mode end to end: ingest, inference and the prioritizer as
//! separate processes of the built binary, over the real broker, object store and
//! database of the local stack. Studies sent by C-STORE (dcmtk's dcmsend) reach
//! the site's worklist exactly once each, analysed, in policy order; invalid ones
//! end in quarantine.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_objstore::{ObjectStore, S3Config, S3Credentials, S3Store};
use support::{Service, free_loopback_port, repository_path, stack_env, wait_for_status};

struct Study {
    uid: String,
    eligible: bool,
    emergency: bool,
}

/// Writes `count` studies of one or two images each, of several body parts and
/// urgencies, plus two invalid instances (a malformed study UID).
fn write_studies(directory: &Path, count: usize) -> Vec<Study> {
    let body_parts = ["WRIST", "ANKLE", "HAND", "CHEST", "HIP"];
    let priorities = ["STAT", "ROUTINE", "", "HIGH"];
    let mut studies = Vec::new();
    for index in 0..count {
        let study = new_uid();
        let body_part = body_parts[index % body_parts.len()];
        let priority = priorities[index % priorities.len()];
        for image in 0..(1 + index % 2) {
            let instance = SyntheticInstance {
                study_instance_uid: study.clone(),
                series_instance_uid: format!("{study}.1"),
                sop_instance_uid: format!("{study}.1.{}", image + 1),
                body_part: body_part.into(),
                requested_priority: priority.into(),
                accession_number: format!("E2E{index:04}"),
                ..SyntheticInstance::wrist()
            };
            std::fs::write(
                directory.join(format!("{index:03}-{image}.dcm")),
                instance.to_part10(),
            )
            .expect("write");
        }
        studies.push(Study {
            uid: study,
            eligible: body_part != "CHEST",
            emergency: priority == "STAT",
        });
    }
    for invalid in 0..2 {
        let instance = SyntheticInstance {
            study_instance_uid: format!("1.2.0{invalid}.bad"),
            ..SyntheticInstance::wrist()
        };
        std::fs::write(
            directory.join(format!("invalid-{invalid}.dcm")),
            instance.to_part10(),
        )
        .expect("write");
    }
    studies
}

fn dcmsend(ae_title: &str, port: u16, directory: &Path) {
    let output = Command::new("dcmsend")
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
        .output()
        .expect("dcmsend (Debian package dcmtk) is installed by scripts/bootstrap");
    assert!(
        output.status.success(),
        "dcmsend failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn s3_store(environment: &[(String, String)]) -> S3Store {
    let value = |name: &str| {
        environment
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .expect(name)
    };
    S3Store::connect(S3Config {
        endpoint: Some(value("FXTRIAGE_S3_ENDPOINT")),
        bucket: value("FXTRIAGE_S3_BUCKET"),
        region: value("FXTRIAGE_S3_REGION"),
        path_style: true,
        credentials: S3Credentials::Static {
            access_key_id: value("FXTRIAGE_S3_ACCESS_KEY_ID"),
            secret_access_key: value("FXTRIAGE_S3_SECRET_ACCESS_KEY"),
        },
    })
    .await
    .expect("S3 store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studies_sent_by_c_store_reach_the_worklist_once_each_in_policy_order() {
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let suffix = format!("{:08x}", rand_suffix());
    let site = format!("e2e-{suffix}");
    let ae_title = format!("E2E{}", suffix.to_uppercase());

    let database_url = &environment
        .iter()
        .find(|(key, _)| key == "FXTRIAGE_DATABASE_URL")
        .expect("url")
        .1;
    let database = fxtriage_db::DbConfig::from_url(database_url).expect("url");
    fxtriage_db::migrate(&database).await.expect("migrate");
    let client = database.connect().await.expect("connect");
    client
        .execute(
            "INSERT INTO sites (site_id, display_name) VALUES ($1, 'End-to-end test')",
            &[&site],
        )
        .await
        .expect("register the site");

    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        format!("[[site]]\nid = \"{site}\"\nae_titles = [\"{ae_title}\"]\n"),
    )
    .expect("sites file");
    let dimse_port = free_loopback_port();
    let ports: Vec<u16> = (0..3).map(|_| free_loopback_port()).collect();
    let model = repository_path("models/testdata/heatmap")
        .display()
        .to_string();
    let logs = directory.path();
    let prioritizer = Service::start(
        "prioritizer",
        &[
            "prioritizer".into(),
            "--health-address".into(),
            format!("127.0.0.1:{}", ports[0]),
        ],
        &environment,
        logs,
    );
    let inference = Service::start(
        "inference",
        &[
            "inference".into(),
            "--model".into(),
            model,
            "--health-address".into(),
            format!("127.0.0.1:{}", ports[1]),
        ],
        &environment,
        logs,
    );
    let ingest = Service::start(
        "ingest",
        &[
            "ingest".into(),
            "--sites".into(),
            sites.display().to_string(),
            "--dimse-address".into(),
            format!("127.0.0.1:{dimse_port}"),
            "--http-address".into(),
            format!("127.0.0.1:{}", ports[2]),
        ],
        &environment,
        logs,
    );
    for port in &ports {
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    }

    let inputs = directory.path().join("studies");
    std::fs::create_dir_all(&inputs).expect("mkdir");
    let studies = write_studies(&inputs, 20);
    dcmsend(&ae_title, dimse_port, &inputs);

    // Wait until every study is on the worklist and no eligible image awaits analysis.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = client
            .query(
                "SELECT study_instance_uid, urgency, ai_result FROM studies WHERE site_id = $1 \
                 ORDER BY deadline, arrived_at, study_instance_uid",
                &[&site],
            )
            .await
            .expect("query");
        let settled = rows.len() == studies.len()
            && rows
                .iter()
                .all(|row| row.get::<_, String>(2) != "awaiting-analysis");
        if settled {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} studies on the worklist after 120 s\ningest:\n{}\ninference:\n{}\nprioritizer:\n{}",
            rows.len(),
            studies.len(),
            ingest.log_tail(),
            inference.log_tail(),
            prioritizer.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let on_worklist: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    let unique: BTreeSet<&String> = on_worklist.iter().collect();
    assert_eq!(
        unique.len(),
        on_worklist.len(),
        "each study is on the worklist once"
    );
    let expected: BTreeSet<&String> = studies.iter().map(|study| &study.uid).collect();
    assert_eq!(unique, expected, "every accepted study, and nothing else");
    for study in &studies {
        let row = rows
            .iter()
            .find(|row| row.get::<_, String>(0) == study.uid)
            .expect("row");
        let (urgency, ai_result): (String, String) = (row.get(1), row.get(2));
        if study.emergency {
            assert_eq!(urgency, "emergency", "STAT orders are emergencies");
        }
        if study.eligible {
            assert!(
                ["suspected", "possible", "no-finding"].contains(&ai_result.as_str()),
                "{}: {ai_result}",
                study.uid
            );
        } else {
            assert_eq!(
                ai_result, "not-analysed",
                "a chest radiograph is not analysed"
            );
        }
    }
    let first = rows.first().expect("a first study");
    assert_eq!(
        first.get::<_, String>(1),
        "emergency",
        "an emergency study is read first"
    );

    let store = s3_store(&environment).await;
    let quarantined = store
        .list(&format!("quarantine/{site}/"))
        .await
        .expect("list quarantine");
    let records = quarantined
        .iter()
        .filter(|meta| meta.key.as_str().ends_with(".json"))
        .count();
    assert_eq!(
        records, 2,
        "both invalid instances are quarantined: {quarantined:?}"
    );

    ingest.stop().await;
    inference.stop().await;
    prioritizer.stop().await;
}

/// The three services of the distributed mode, each restartable.
struct Cluster {
    environment: Vec<(String, String)>,
    logs: std::path::PathBuf,
    sites: std::path::PathBuf,
    dimse_port: u16,
    services: std::collections::BTreeMap<&'static str, (Service, u16)>,
    starts: usize,
}

impl Cluster {
    fn arguments(&self, name: &str, port: u16) -> Vec<String> {
        let health = format!("127.0.0.1:{port}");
        match name {
            "prioritizer" => vec!["prioritizer".into(), "--health-address".into(), health],
            "inference" => vec![
                "inference".into(),
                "--model".into(),
                repository_path("models/testdata/heatmap")
                    .display()
                    .to_string(),
                "--health-address".into(),
                health,
            ],
            _ => vec![
                "ingest".into(),
                "--sites".into(),
                self.sites.display().to_string(),
                "--dimse-address".into(),
                format!("127.0.0.1:{}", self.dimse_port),
                "--http-address".into(),
                health,
            ],
        }
    }

    async fn start(&mut self, name: &'static str) {
        let port = free_loopback_port();
        self.starts += 1;
        let log_name = format!("{name}-{}", self.starts);
        let service = Service::start(
            &log_name,
            &self.arguments(name, port),
            &self.environment,
            &self.logs,
        );
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
        self.services.insert(name, (service, port));
    }

    /// SIGKILL, then start again.
    async fn crash_and_restart(&mut self, name: &'static str) {
        if let Some((service, _)) = self.services.remove(name) {
            service.kill();
        }
        self.start(name).await;
    }

    fn logs(&self) -> String {
        self.services
            .values()
            .map(|(service, _)| format!("{}:\n{}\n", service.name, service.log_tail()))
            .collect()
    }
}

fn dcmsend_background(ae_title: &str, port: u16, directory: &Path) -> std::process::Child {
    Command::new("dcmsend")
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dcmsend")
}

/// 200 studies (and two invalid instances) while each service is SIGKILLed once
/// and restarted; the sender resends what ingest could not confirm. Every study
/// and image ends on the worklist exactly once, in policy order, and the invalid
/// instances in quarantine. (A killed group member's partitions move after the
/// rebalance timeout, max.poll.interval.ms, which the Kafka bus sets to 30 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_duplicated_when_each_service_is_killed_mid_run() {
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let suffix = format!("{:08x}", rand_suffix());
    let site = format!("e2e-kill-{suffix}");
    let ae_title = format!("KILL{}", suffix.to_uppercase());
    let url = environment
        .iter()
        .find(|(key, _)| key == "FXTRIAGE_DATABASE_URL")
        .expect("url")
        .1
        .clone();
    let database = fxtriage_db::DbConfig::from_url(&url).expect("url");
    fxtriage_db::migrate(&database).await.expect("migrate");
    let client = database.connect().await.expect("connect");
    client
        .execute(
            "INSERT INTO sites (site_id, display_name) VALUES ($1, 'Kill test')",
            &[&site],
        )
        .await
        .expect("site");
    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        format!("[[site]]\nid = \"{site}\"\nae_titles = [\"{ae_title}\"]\n"),
    )
    .expect("sites file");

    let mut cluster = Cluster {
        environment,
        logs: directory.path().to_path_buf(),
        sites,
        dimse_port: free_loopback_port(),
        services: std::collections::BTreeMap::new(),
        starts: 0,
    };
    for name in ["prioritizer", "inference", "ingest"] {
        cluster.start(name).await;
    }

    // 200 studies in four batches of 50; each batch is sent while one service dies.
    let mut studies = Vec::new();
    let batches: Vec<std::path::PathBuf> = (0..4)
        .map(|batch| directory.path().join(format!("batch-{batch}")))
        .collect();
    for batch in &batches {
        std::fs::create_dir_all(batch).expect("mkdir");
        studies.extend(write_studies(batch, 50));
        // Only the first batch keeps its invalid files: later batches are resent.
        if batch != &batches[0] {
            for invalid in 0..2 {
                std::fs::remove_file(batch.join(format!("invalid-{invalid}.dcm"))).expect("remove");
            }
        }
    }
    let port = cluster.dimse_port;
    dcmsend(&ae_title, port, &batches[0]);
    cluster.crash_and_restart("prioritizer").await;

    let mut sender = dcmsend_background(&ae_title, port, &batches[1]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.crash_and_restart("inference").await;
    sender.wait().expect("dcmsend");

    // Killing ingest breaks the sender's association: like a modality, it sends again.
    let mut sender = dcmsend_background(&ae_title, port, &batches[2]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.crash_and_restart("ingest").await;
    let _interrupted = sender.wait();
    dcmsend(&ae_title, port, &batches[2]);

    dcmsend(&ae_title, port, &batches[3]);

    let deadline = Instant::now() + Duration::from_secs(240);
    let rows = loop {
        let rows = client
            .query(
                "SELECT study_instance_uid, ai_result FROM studies WHERE site_id = $1",
                &[&site],
            )
            .await
            .expect("query");
        let settled = rows.len() == studies.len()
            && rows
                .iter()
                .all(|row| row.get::<_, String>(1) != "awaiting-analysis");
        if settled {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} studies settled\n{}",
            rows.len(),
            studies.len(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let on_worklist: BTreeSet<String> = rows.iter().map(|row| row.get(0)).collect();
    let expected: BTreeSet<String> = studies.iter().map(|study| study.uid.clone()).collect();
    assert_eq!(on_worklist.len(), rows.len(), "each study once");
    assert_eq!(on_worklist, expected, "every study, nothing else");
    let images: i64 = client
        .query_one(
            "SELECT count(*) FROM instances WHERE site_id = $1",
            &[&site],
        )
        .await
        .expect("count")
        .get(0);
    let expected_images: i64 = (0..50).map(|index| 1 + index % 2).sum::<i64>() * 4;
    assert_eq!(images, expected_images, "each image recorded once");
    let first: String = client
        .query_one(
            "SELECT urgency FROM studies WHERE site_id = $1 ORDER BY deadline, arrived_at, study_instance_uid LIMIT 1",
            &[&site],
        )
        .await
        .expect("first")
        .get(0);
    assert_eq!(first, "emergency", "an emergency study is read first");
    let store = s3_store(&cluster.environment).await;
    let quarantined = store
        .list(&format!("quarantine/{site}/"))
        .await
        .expect("list quarantine");
    let records = quarantined
        .iter()
        .filter(|meta| meta.key.as_str().ends_with(".json"))
        .count();
    assert_eq!(
        records, 2,
        "both invalid instances are quarantined, once: {quarantined:?}"
    );
    for (name, (service, _)) in std::mem::take(&mut cluster.services) {
        let _ = name;
        service.stop().await;
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
