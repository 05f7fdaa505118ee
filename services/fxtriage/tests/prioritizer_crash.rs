//! A prioritizer killed with SIGKILL in the middle of a stream of 500 studies and
//! restarted: every study is on the worklist exactly once, with its final priority.
//! Runs the built binary against the local stack's Kafka broker and PostgreSQL.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use fxtriage_bus::{Bus, KafkaBus, KafkaConfig, Record};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::{
    Finding, FindingStatus, InstanceRef, InstanceStored, ModelIdentity, Urgency,
};
use support::{Service, free_loopback_port, stack_env, wait_for_status};

const STUDIES: usize = 500;

fn setting(environment: &[(String, String)], name: &str) -> String {
    environment
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .expect(name)
}

/// The class the default policy gives a probability (operating points 0.7 and 0.4).
fn expected_class(probability: f32) -> &'static str {
    if probability >= 0.7 {
        "suspected"
    } else if probability >= 0.4 {
        "possible"
    } else {
        "no-finding"
    }
}

async fn count(client: &tokio_postgres::Client, site: &str) -> i64 {
    client
        .query_one("SELECT count(*) FROM studies WHERE site_id = $1", &[&site])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prioritizer_killed_mid_stream_loses_and_duplicates_nothing() {
    let Some(environment) = stack_env() else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let site = format!("crash-{:x}", nanos & 0xffff_ffff);

    let database = fxtriage_db::DbConfig::from_url(&setting(&environment, "FXTRIAGE_DATABASE_URL"))
        .expect("url");
    fxtriage_db::migrate(&database).await.expect("migrate");
    let client = database.connect().await.expect("connect");
    client
        .execute(
            "INSERT INTO sites (site_id, display_name) VALUES ($1, 'Crash test')",
            &[&site],
        )
        .await
        .expect("site");

    let bus = KafkaBus::connect(KafkaConfig::new(
        setting(&environment, "FXTRIAGE_KAFKA_BROKERS"),
        "crash-test",
    ))
    .expect("bus");
    for topic in [topics::INSTANCES, topics::FINDINGS, topics::WORKLIST] {
        bus.ensure_topic(topic, 8).await.expect("topic");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock");
    let mut expected: BTreeMap<String, &'static str> = BTreeMap::new();
    for index in 0..STUDIES {
        let study = format!("2.25.{}{index:04}", nanos % 1_000_000_007);
        let probability = (index % 100) as f32 / 100.0;
        let instance = InstanceRef {
            site_id: site.clone(),
            study_instance_uid: study.clone(),
            series_instance_uid: format!("{study}.1"),
            sop_instance_uid: format!("{study}.1.1"),
        };
        let stored = InstanceStored {
            instance: Some(instance.clone()),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
            modality: "DX".into(),
            body_part: "WRIST".into(),
            urgency: Urgency::Outpatient as i32,
            object_key: format!("{site}/{study}/{study}.1/{study}.1.1.dcm"),
            eligible: true,
            received_at: Some(fxtriage_proto::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: 0,
            }),
            ..Default::default()
        };
        let finding = Finding {
            instance: Some(instance),
            status: FindingStatus::Analysed as i32,
            probability,
            model: Some(ModelIdentity {
                name: "test".into(),
                version: "1".into(),
                sha256: "ab".repeat(32),
            }),
            ..Default::default()
        };
        bus.produce(
            topics::INSTANCES,
            Record::new(study.as_str(), stored.encode_to_vec()),
        )
        .await
        .expect("produce");
        bus.produce(
            topics::FINDINGS,
            Record::new(study.as_str(), finding.encode_to_vec()),
        )
        .await
        .expect("produce");
        expected.insert(study, expected_class(probability));
    }

    let start = |name: &str| {
        let port = free_loopback_port();
        let arguments = vec![
            "prioritizer".to_owned(),
            "--health-address".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        (
            Service::start(name, &arguments, &environment, logs.path()),
            port,
        )
    };
    let (first, port) = start("prioritizer-1");
    wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&client, &site).await < (STUDIES / 5) as i64 {
        assert!(
            Instant::now() < deadline,
            "the first prioritizer made no progress:\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_kill = count(&client, &site).await;
    first.kill();
    assert!(
        at_kill < STUDIES as i64,
        "killed mid-stream ({at_kill} of {STUDIES} done)"
    );

    let (second, port) = start("prioritizer-2");
    wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let rows = loop {
        let rows = client
            .query(
                "SELECT study_instance_uid, ai_result FROM studies WHERE site_id = $1",
                &[&site],
            )
            .await
            .expect("query");
        let settled = rows.len() == STUDIES
            && rows.iter().all(|row| {
                expected
                    .get(&row.get::<_, String>(0))
                    .is_some_and(|class| *class == row.get::<_, String>(1))
            });
        if settled {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {STUDIES} studies settled after restart:\n{}",
            rows.len(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), STUDIES, "every study exactly once");
    let instances: i64 = client
        .query_one(
            "SELECT count(*) FROM instances WHERE site_id = $1",
            &[&site],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(instances, STUDIES as i64, "no instance recorded twice");
    second.stop().await;
}
