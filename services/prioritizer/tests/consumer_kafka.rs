//! The prioritizer over the real Kafka-protocol broker of the local stack
//! (FXTRIAGE_KAFKA_BROKERS) and the real PostgreSQL: a stream with a poison
//! message, then a full replay, leaves each worklist revision published once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fxtriage_bus::{Bus, KafkaBus, KafkaConfig, Record};
use fxtriage_core::Urgency;
use fxtriage_prioritizer::sites::add_site;
use fxtriage_prioritizer::study::StudyAiResult;
use fxtriage_prioritizer::{ConsumerOptions, PolicyBook, Prioritizer, run_consumer};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_telemetry::health::Readiness;
use support::*;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(90);
const QUIET: Duration = Duration::from_secs(3);

fn kafka_bus() -> Option<Arc<dyn Bus>> {
    let Ok(brokers) = std::env::var("FXTRIAGE_KAFKA_BROKERS") else {
        let required = std::env::var_os("FXTRIAGE_REQUIRE_STACK").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "FXTRIAGE_KAFKA_BROKERS is not set but the real stack is required"
        );
        eprintln!("skipped: FXTRIAGE_KAFKA_BROKERS is not set (run under `infra/local/stack env`)");
        return None;
    };
    let bus = KafkaBus::connect(KafkaConfig::new(brokers, "fxtriage-prioritizer-test"))
        .expect("Kafka client");
    Some(Arc::new(bus))
}

#[tokio::test]
async fn over_kafka_each_worklist_revision_is_published_once_despite_poison_and_replays() {
    let Some(bus) = kafka_bus() else {
        return;
    };
    let Some(db) = fresh_database().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    // A site of its own, so that history on the shared topics does not matter.
    let site_id = format!("kafka-{}", &run[..12]);
    add_site(&db.pool, &site(&site_id), "Kafka test")
        .await
        .expect("site");
    for topic in [topics::INSTANCES, topics::FINDINGS, topics::WORKLIST] {
        bus.ensure_topic(topic, 2).await.expect("topic");
    }
    let study = |index: usize| {
        format!(
            "4.{}.{index}",
            u64::from_str_radix(&run[..8], 16).expect("hex")
        )
    };
    let images: Vec<_> = (0..6)
        .map(|index| {
            let urgency = if index == 5 {
                Urgency::Emergency
            } else {
                Urgency::Outpatient
            };
            instance_at(
                &site_id,
                &study(index),
                &format!("{}.1.1", study(index)),
                urgency,
                T0 + minutes(index as i64),
            )
        })
        .collect();
    let findings: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(index, image)| analysed(image, if index == 5 { 0.95 } else { 0.05 }))
        .collect();
    let produce_all = |bus: Arc<dyn Bus>, images: Vec<_>, findings: Vec<_>| async move {
        for image in &images {
            let event: &fxtriage_proto::v1::InstanceStored = image;
            let key = event
                .instance
                .as_ref()
                .expect("ref")
                .study_instance_uid
                .clone();
            bus.produce(topics::INSTANCES, Record::new(key, event.encode_to_vec()))
                .await
                .expect("produce");
        }
        for finding in &findings {
            let event: &fxtriage_proto::v1::Finding = finding;
            let key = event
                .instance
                .as_ref()
                .expect("ref")
                .study_instance_uid
                .clone();
            bus.produce(topics::FINDINGS, Record::new(key, event.encode_to_vec()))
                .await
                .expect("produce");
        }
    };

    let poison_key = study(99);
    bus.produce(
        topics::INSTANCES,
        Record::new(
            poison_key.clone(),
            b"\xff\xff not an InstanceStored".to_vec(),
        ),
    )
    .await
    .expect("produce poison");
    produce_all(Arc::clone(&bus), images.clone(), findings.clone()).await;

    let options = ConsumerOptions {
        group: format!("fxtriage-prioritizer-test-{run}"),
        max_in_flight: 4,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
    };
    let shutdown = CancellationToken::new();
    let prioritizer = Prioritizer::new(
        Arc::clone(&bus),
        db.pool.clone(),
        Arc::new(PolicyBook::default()),
    );
    let consumer = tokio::spawn(run_consumer(
        prioritizer,
        options.clone(),
        Readiness::new(),
        shutdown.clone(),
    ));
    let pool = db.pool.clone();
    let all_analysed = |pool: deadpool_postgres::Pool, expected: i64| async move {
        let client = pool.get().await.expect("connection");
        let analysed: i64 = client
            .query_one(
                "SELECT count(*) FROM studies WHERE ai_result IN ('suspected', 'no-finding')",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        analysed == expected
    };
    eventually(PATIENCE, "every study is analysed", || {
        all_analysed(pool.clone(), 6)
    })
    .await;

    // The same stream again, then a sentinel study: once the sentinel is done, the
    // replay has been consumed.
    produce_all(Arc::clone(&bus), images.clone(), findings.clone()).await;
    let sentinel = instance_at(
        &site_id,
        &study(50),
        &format!("{}.1.1", study(50)),
        Urgency::Inpatient,
        T0,
    );
    let sentinel_finding = analysed(&sentinel, 0.01);
    produce_all(Arc::clone(&bus), vec![sentinel], vec![sentinel_finding]).await;
    eventually(PATIENCE, "the sentinel is analysed", || {
        all_analysed(pool.clone(), 7)
    })
    .await;
    eventually(PATIENCE, "every change is published", || async {
        fxtriage_prioritizer::outbox::pending_count(&pool)
            .await
            .expect("count")
            == 0
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, consumer)
        .await
        .expect("stops")
        .expect("join")
        .expect("stops cleanly");

    let changes = decode_changes(
        &read_topic_patiently(&bus, topics::WORKLIST, PATIENCE, QUIET).await,
        &site_id,
    );
    for index in (0..6).chain([50]) {
        let uid = study(index);
        let mut revisions: Vec<u64> = changes
            .iter()
            .filter(|change| change.study_instance_uid == uid)
            .map(|change| change.revision)
            .collect();
        revisions.sort_unstable();
        let row = {
            let client = db.pool.get().await.expect("connection");
            fxtriage_prioritizer::worklist_store::study(&client, &site(&site_id), &uid)
                .await
                .expect("read")
                .expect("study")
        };
        assert_eq!(
            revisions,
            (1..=row.revision as u64).collect::<Vec<_>>(),
            "each revision of {uid} once, none from the replay"
        );
    }
    let first = &open_worklist(&db.pool, &site_id).await[0];
    assert_eq!(first.study_instance_uid, study(5));
    assert_eq!(first.ai_result, StudyAiResult::Suspected);

    let dead = read_topic_patiently(
        &bus,
        &topics::dead_letter_topic(topics::INSTANCES),
        PATIENCE,
        QUIET,
    )
    .await;
    let poison: Vec<_> = dead
        .iter()
        .filter(|message| message.key_text() == poison_key)
        .collect();
    assert_eq!(poison.len(), 1);
    assert_eq!(
        poison[0].headers.get_str("fxtriage-dlq-kind"),
        Some("malformed-message")
    );
    db.finish().await;
}
