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

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
