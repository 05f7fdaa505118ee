//! The prioritizer over the real Kafka-protocol broker of the local stack
//! (FXTRIAGE_KAFKA_BROKERS) and the real PostgreSQL: a stream with a poison
//! message, then a full replay, leaves each worklist revision published once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fxtriage_bus::{Bus, KafkaBus, KafkaConfig, Record};
use fxtriage_core::Urgency;
use fxtriage_prioritizer::study::StudyAiResult;
use fxtriage_prioritizer::{ConsumerOptions, Prioritizer, run_consumer};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_telemetry::health::Readiness;
use support::*;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(90);
const QUIET: Duration = Duration::from_secs(3);

fn kafka_bus() -> Option<Arc<dyn Bus>> {
    let brokers = fxtriage_testkit::stack::setting("FXTRIAGE_KAFKA_BROKERS")?;
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
    // Topics and groups of its own: no other run's history, no other test's consumers.
    let namespace = fxtriage_testkit::unique_namespace("prioritizer-kafka");
    let site_id = "kafka".to_owned();
    add_site(&db.pool, &site_id, "Kafka test").await;
    for topic in namespace.topics() {
        bus.ensure_topic(&topic, 2).await.expect("topic");
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
    let instances_topic = namespace.instances_topic();
    let findings_topic = namespace.findings_topic();
    let produce_all = |bus: Arc<dyn Bus>, images: Vec<_>, findings: Vec<_>| {
        let (instances_topic, findings_topic) = (instances_topic.clone(), findings_topic.clone());
        async move {
            for image in &images {
                let event: &fxtriage_proto::v1::InstanceStored = image;
                let key = event
                    .instance
                    .as_ref()
                    .expect("ref")
                    .study_instance_uid
                    .clone();
                bus.produce(&instances_topic, Record::new(key, event.encode_to_vec()))
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
                bus.produce(&findings_topic, Record::new(key, event.encode_to_vec()))
                    .await
                    .expect("produce");
            }
        }
    };

    let poison_key = study(99);
    bus.produce(
        &namespace.instances_topic(),
        Record::new(
            poison_key.clone(),
            b"\xff\xff not an InstanceStored".to_vec(),
        ),
    )
    .await
    .expect("produce poison");
    produce_all(Arc::clone(&bus), images.clone(), findings.clone()).await;

    let options = ConsumerOptions {
        group: None,
        max_in_flight: 4,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
    };
    let shutdown = CancellationToken::new();
    let prioritizer = Prioritizer::new(
        Arc::clone(&bus),
        db.pool.clone(),
        registry(&db.pool).await,
        namespace.clone(),
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
        &read_topic_patiently(&bus, &namespace.worklist_topic(), PATIENCE, QUIET).await,
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
        &topics::dead_letter_topic(&namespace.instances_topic()),
        PATIENCE,
        QUIET,
    )
    .await;
    // Nothing but the poison: no history of other runs, no other test's messages.
    assert_eq!(dead.len(), 1, "{dead:?}");
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
