//! A prioritizer killed with SIGKILL in the middle of a stream of 500 studies and
//! restarted: every study is on the worklist exactly once, with its final
//! priority, and a consumer of the worklist topic sees each study's changes in
//! order, none lost, no effect twice. Runs the built binary against the local
//! stack's Kafka broker and PostgreSQL, in a namespace and database of its own.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use fxtriage_bus::{Bus, Record};
use fxtriage_proto::Message as _;
use fxtriage_proto::v1::{
    Finding, FindingStatus, InstanceRef, InstanceStored, ModelIdentity, Urgency,
};
use fxtriage_testkit::{Progress, eventually};
use support::{Service, Stack, free_loopback_port, read_topics, wait_for_status};

const STUDIES: usize = 500;

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
    let Some(stack) = Stack::start("crash").await else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let site = stack.namespace.name().to_owned();
    stack.add_site(&site).await;
    let client = stack.client().await;
    let bus = stack.kafka().await;
    let namespace = stack.namespace.clone();
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
            &namespace.instances_topic(),
            Record::new(study.as_str(), stored.encode_to_vec()),
        )
        .await
        .expect("produce");
        bus.produce(
            &namespace.findings_topic(),
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
            Service::start(name, &arguments, &stack.environment, logs.path()),
            port,
        )
    };
    let (first, port) = start("prioritizer-1");
    wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    // Killed once it has applied part of the stream: work is in flight.
    let at_kill = eventually(
        "the first prioritizer to apply a fifth of the stream",
        Duration::from_secs(300),
        || async {
            let listed = count(&client, &site).await;
            if listed >= (STUDIES / 5) as i64 {
                Progress::Done(listed)
            } else {
                Progress::NotYet(format!("{listed} studies listed"))
            }
        },
    )
    .await;
    first.kill();
    assert!(
        at_kill < STUDIES as i64,
        "killed mid-stream ({at_kill} of {STUDIES} done)"
    );
    let (second, port) = start("prioritizer-2");
    wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    let rows = eventually(
        "every study settled with its final class after the restart",
        Duration::from_secs(420),
        || async {
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
                Progress::Done(rows)
            } else {
                Progress::NotYet(format!(
                    "{} of {STUDIES} studies listed; log:\n{}",
                    rows.len(),
                    second.log_tail()
                ))
            }
        },
    )
    .await;
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

    let final_studies: BTreeMap<String, support::changes::FinalStudy> =
        support::changes::final_studies(&client, &site).await;
    let changes = read_topics(
        &bus,
        &namespace,
        &[namespace.worklist_topic()],
        Duration::from_secs(5),
    )
    .await;
    if let Err(problems) = support::changes::check(&changes, &site, &final_studies) {
        panic!(
            "the worklist topic is wrong for a consumer:\n{}",
            problems.join("\n")
        );
    }
    let dead_letters = read_topics(
        &bus,
        &namespace,
        &namespace.dead_letter_topics(),
        Duration::from_secs(3),
    )
    .await;
    assert!(
        dead_letters.is_empty(),
        "nothing is dead-lettered: {:?}",
        support::describe_dead_letters(&dead_letters)
    );
    second.stop().await;
    stack.finish().await;
}
