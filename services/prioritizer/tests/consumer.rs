//! The prioritizer consuming from the in-process bus into the real PostgreSQL:
//! changes published once, replays harmless, poison messages dead-lettered while
//! the partition moves on, transient failures retried, clean shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fxtriage_bus::{Bus, InProcessBus, InProcessConfig, Record};
use fxtriage_core::Urgency;
use fxtriage_prioritizer::study::StudyAiResult;
use fxtriage_prioritizer::{ConsumerOptions, Prioritizer, outbox, run_consumer};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::{self as proto, ChangeKind};
use fxtriage_telemetry::health::Readiness;
use support::*;
use tokio_util::sync::CancellationToken;

/// Dead-letter header names (crates/bus/src/dead_letter.rs, not exported).
mod header {
    pub const REASON: &str = "fxtriage-dlq-reason";
    pub const KIND: &str = "fxtriage-dlq-kind";
    pub const SOURCE_TOPIC: &str = "fxtriage-dlq-source-topic";
    pub const SOURCE_OFFSET: &str = "fxtriage-dlq-source-offset";
}

const QUIET: Duration = Duration::from_millis(400);
const PATIENCE: Duration = Duration::from_secs(20);

fn in_process_bus(partitions: u32) -> Arc<dyn Bus> {
    Arc::new(InProcessBus::new(InProcessConfig {
        default_partitions: partitions,
        capacity: 4096,
    }))
}

fn quick_retries(max_in_flight: usize) -> ConsumerOptions {
    ConsumerOptions {
        max_in_flight,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..ConsumerOptions::default()
    }
}

/// A running consumer, stopped by [`Running::stop`].
struct Running {
    shutdown: CancellationToken,
    readiness: Readiness,
    task: tokio::task::JoinHandle<Result<(), fxtriage_bus::BusError>>,
}

impl Running {
    fn start(bus: &Arc<dyn Bus>, pool: &deadpool_postgres::Pool, options: ConsumerOptions) -> Self {
        // The defaults of every site: a registry that stays empty is enough.
        let sites = fxtriage_sites::SiteRegistry::fixed(fxtriage_sites::Snapshot::default());
        let prioritizer = Prioritizer::new(
            Arc::clone(bus),
            pool.clone(),
            sites,
            fxtriage_proto::Namespace::none(),
        );
        let shutdown = CancellationToken::new();
        let readiness = Readiness::new();
        let task = tokio::spawn(run_consumer(
            prioritizer,
            options,
            readiness.clone(),
            shutdown.clone(),
        ));
        Self {
            shutdown,
            readiness,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the consumer stops promptly")
            .expect("join")
            .expect("the consumer stops cleanly");
    }
}

async fn produce_instance(bus: &Arc<dyn Bus>, event: &proto::InstanceStored) {
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

async fn produce_finding(bus: &Arc<dyn Bus>, event: &proto::Finding) {
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

/// Waits until the study exists with `ai_result`.
async fn until_study_is(pool: &deadpool_postgres::Pool, study: &str, ai_result: StudyAiResult) {
    eventually(
        PATIENCE,
        &format!("study {study} is {ai_result}"),
        || async {
            study_row(pool, study)
                .await
                .is_some_and(|row| row.ai_result == ai_result)
        },
    )
    .await;
}

#[tokio::test]
async fn a_stream_builds_the_worklist_and_publishes_every_change_once() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(4);
    let running = Running::start(&bus, &db.pool, quick_retries(8));

    let studies = 20_i64;
    let images: Vec<_> = (0..studies)
        .map(|index| {
            let urgency = if index % 5 == 0 {
                Urgency::Emergency
            } else {
                Urgency::Outpatient
            };
            instance(
                &format!("2.1.{index}"),
                &format!("2.1.{index}.1.1"),
                urgency,
                T0 + minutes(index),
            )
        })
        .collect();
    for image in &images {
        produce_instance(&bus, image).await;
    }
    for (index, image) in images.iter().enumerate() {
        produce_finding(
            &bus,
            &analysed(image, if index % 4 == 0 { 0.9 } else { 0.1 }),
        )
        .await;
    }
    eventually(PATIENCE, "every study is analysed", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM studies WHERE ai_result IN ('suspected', 'no-finding')",
        )
        .await
            == studies
    })
    .await;
    assert!(running.readiness.is_ready());
    running.stop().await;

    let changes = worklist_changes(&bus, SITE, QUIET).await;
    // One change when the study appears, one when its finding moves it — except
    // where the finding overtook the instance, which leaves one change.
    for index in 0..studies {
        let uid = format!("2.1.{index}");
        let of_study: Vec<_> = changes
            .iter()
            .filter(|change| change.study_instance_uid == uid)
            .collect();
        let revisions: Vec<u64> = of_study.iter().map(|change| change.revision).collect();
        let row = study_row(&db.pool, &uid).await.expect("study");
        let expected: Vec<u64> = (1..=row.revision as u64).collect();
        let mut sorted = revisions.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "every revision of {uid} exactly once");
        let last = of_study
            .iter()
            .max_by_key(|change| change.revision)
            .expect("a change");
        assert_eq!(last.ai_result, row.ai_result.to_proto() as i32);
        assert_eq!(
            last.deadline,
            Some(fxtriage_prioritizer::incoming::to_timestamp(row.deadline))
        );
    }
    assert_eq!(outbox::pending_count(&db.pool).await.expect("count"), 0);
    let first = &open_worklist(&db.pool, SITE).await[0];
    assert_eq!(first.ai_result, StudyAiResult::Suspected);
    assert_eq!(first.urgency, Urgency::Emergency);
    db.finish().await;
}

/// Redelivered messages (a restart, a rebalance, a re-sent image) change no row
/// and produce no further worklist change.
#[tokio::test]
async fn replayed_messages_change_nothing_and_produce_no_further_change() {
    let Some(db) = fresh_database().await else {
        return;
    };
    // One partition per topic and one message at a time: a later message is
    // handled only after every earlier one of its topic.
    let bus = in_process_bus(1);
    let running = Running::start(&bus, &db.pool, quick_retries(1));
    let images = [
        instance("2.2.1", "2.2.1.1.1", Urgency::Inpatient, T0),
        instance("2.2.1", "2.2.1.1.2", Urgency::Inpatient, T0 + minutes(1)),
        instance("2.2.2", "2.2.2.1.1", Urgency::Emergency, T0 + minutes(2)),
    ];
    let findings = [
        analysed(&images[0], 0.45),
        analysed(&images[1], 0.2),
        failed(&images[2], "decode-failed", "truncated"),
    ];
    for image in &images {
        produce_instance(&bus, image).await;
    }
    for finding in &findings {
        produce_finding(&bus, finding).await;
    }
    until_study_is(&db.pool, "2.2.1", StudyAiResult::Possible).await;
    until_study_is(&db.pool, "2.2.2", StudyAiResult::NotAnalysed).await;
    eventually(PATIENCE, "every change is published", || async {
        outbox::pending_count(&db.pool).await.expect("count") == 0
    })
    .await;
    let rows = snapshot(&db.pool).await;
    let changes = worklist_changes(&bus, SITE, QUIET).await;

    for _ in 0..2 {
        for image in &images {
            produce_instance(&bus, image).await;
        }
        for finding in &findings {
            produce_finding(&bus, finding).await;
        }
    }
    // Sentinels after the replays, on both topics.
    let sentinel = instance("2.2.9", "2.2.9.1.1", Urgency::Outpatient, T0);
    produce_instance(&bus, &sentinel).await;
    produce_finding(&bus, &analysed(&sentinel, 0.99)).await;
    until_study_is(&db.pool, "2.2.9", StudyAiResult::Suspected).await;
    running.stop().await;

    let mut after = snapshot(&db.pool).await;
    after.retain(|row| !row.to_string().contains("2.2.9"));
    assert_eq!(after, rows, "replays changed no row");
    let changes_after: Vec<_> = worklist_changes(&bus, SITE, QUIET)
        .await
        .into_iter()
        .filter(|change| change.study_instance_uid != "2.2.9")
        .collect();
    assert_eq!(
        changes_after, changes,
        "replays produced no worklist change"
    );
    db.finish().await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_and_the_partition_moves_on() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(1);
    let running = Running::start(&bus, &db.pool, quick_retries(4));
    bus.produce(
        topics::INSTANCES,
        Record::new("2.3.1", vec![0x0a, 0xff, 0xff, 0xff, 0x01]),
    )
    .await
    .expect("produce");
    bus.produce(
        topics::FINDINGS,
        Record::new("2.3.1", b"not protobuf at all".to_vec()),
    )
    .await
    .expect("produce");
    let mut no_model = analysed(
        &instance("2.3.1", "2.3.1.1.1", Urgency::Outpatient, T0),
        0.5,
    );
    no_model.model = None;
    produce_finding(&bus, &no_model).await;
    // Behind the poison on the same partitions:
    let image = instance("2.3.2", "2.3.2.1.1", Urgency::Emergency, T0);
    produce_instance(&bus, &image).await;
    produce_finding(&bus, &analysed(&image, 0.8)).await;
    until_study_is(&db.pool, "2.3.2", StudyAiResult::Suspected).await;
    running.stop().await;

    let instance_dlq = read_topic(&bus, &topics::dead_letter_topic(topics::INSTANCES), QUIET).await;
    assert_eq!(instance_dlq.len(), 1);
    let dead = &instance_dlq[0];
    assert_eq!(
        dead.headers.get_str(header::KIND),
        Some("malformed-message")
    );
    let reason = dead.headers.get_str(header::REASON).expect("reason");
    assert!(
        reason.contains("malformed protobuf InstanceStored"),
        "{reason}"
    );
    assert_eq!(
        dead.headers.get_str(header::SOURCE_TOPIC),
        Some(topics::INSTANCES)
    );
    assert_eq!(dead.headers.get_str(header::SOURCE_OFFSET), Some("0"));
    assert_eq!(
        dead.payload,
        vec![0x0a, 0xff, 0xff, 0xff, 0x01],
        "unchanged"
    );

    let finding_dlq = read_topic(&bus, &topics::dead_letter_topic(topics::FINDINGS), QUIET).await;
    let kinds: Vec<_> = finding_dlq
        .iter()
        .map(|message| {
            message
                .headers
                .get_str(header::KIND)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["malformed-message", "invalid-message"]);
    assert!(
        finding_dlq[1]
            .headers
            .get_str(header::REASON)
            .is_some_and(|reason| reason.contains("sha256")),
        "the reason names what is missing"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM studies").await, 1);
    db.finish().await;
}

#[tokio::test]
async fn events_for_unknown_sites_are_dead_lettered_with_the_reason() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(1);
    let running = Running::start(&bus, &db.pool, quick_retries(4));
    let stranger = instance_at("unregistered", "2.4.1", "2.4.1.1.1", Urgency::Emergency, T0);
    produce_instance(&bus, &stranger).await;
    produce_finding(&bus, &analysed(&stranger, 0.9)).await;
    let known = instance("2.4.2", "2.4.2.1.1", Urgency::Outpatient, T0);
    produce_instance(&bus, &known).await;
    until_study_is(&db.pool, "2.4.2", StudyAiResult::AwaitingAnalysis).await;
    running.stop().await;

    for topic in [topics::INSTANCES, topics::FINDINGS] {
        let dead = read_topic(&bus, &topics::dead_letter_topic(topic), QUIET).await;
        assert_eq!(dead.len(), 1, "{topic}");
        assert_eq!(dead[0].headers.get_str(header::KIND), Some("unknown-site"));
        let reason = dead[0].headers.get_str(header::REASON).expect("reason");
        assert!(reason.contains("unregistered"), "{reason}");
    }
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM studies WHERE site_id = 'unregistered'"
        )
        .await,
        0
    );
    db.finish().await;
}

/// A crash after the commit but before the produce leaves the change in the
/// outbox; it is published when the work is seen again, and only once.
#[tokio::test]
async fn a_change_committed_but_not_published_before_a_crash_is_published_after_restart() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(1);
    let image = instance("2.5.1", "2.5.1.1.1", Urgency::Inpatient, T0);
    // The "crashed" prioritizer: committed, never produced, never acknowledged.
    store_instance(&db.pool, &image).await;
    produce_instance(&bus, &image).await;
    assert_eq!(outbox::pending_count(&db.pool).await.expect("count"), 1);

    let running = Running::start(&bus, &db.pool, quick_retries(1));
    eventually(PATIENCE, "the left-over change is published", || async {
        outbox::pending_count(&db.pool).await.expect("count") == 0
    })
    .await;
    running.stop().await;
    let changes = worklist_changes(&bus, SITE, QUIET).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Added as i32);
    assert_eq!(changes[0].revision, 1);
    db.finish().await;
}

/// With PostgreSQL unavailable, the message is retried, not lost and not
/// acknowledged; once the database is back it is applied.
#[tokio::test]
async fn a_message_is_retried_until_the_database_is_back() {
    let Some(server) = database_server() else {
        return;
    };
    // A database that does not exist yet stands for one that is down.
    let missing = format!("fxt_prio_later_{}", uuid::Uuid::new_v4().simple());
    let later = server.with_database(&missing);
    let pool = later.pool().expect("pool");
    let bus = in_process_bus(1);
    let running = Running::start(&bus, &pool, quick_retries(2));
    produce_instance(
        &bus,
        &instance("2.6.1", "2.6.1.1.1", Urgency::Emergency, T0),
    )
    .await;
    eventually(
        PATIENCE,
        "the failure makes the consumer not ready",
        || async { !running.readiness.is_ready() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The database comes back as a whole: prepared elsewhere, then renamed.
    let admin = server.connect().await.expect("connect");
    let staging = format!("{missing}_staging");
    admin
        .execute(&format!("CREATE DATABASE {staging}"), &[])
        .await
        .expect("create");
    let staged = server.with_database(&staging);
    fxtriage_db::migrate(&staged).await.expect("migrate");
    let staging_pool = staged.pool().expect("pool");
    add_site(&staging_pool, SITE, "Demo").await;
    staging_pool.close();
    eventually(PATIENCE, "the staged database is renamed", || async {
        admin
            .execute(
                &format!("ALTER DATABASE {staging} RENAME TO {missing}"),
                &[],
            )
            .await
            .is_ok()
    })
    .await;
    until_study_is(&pool, "2.6.1", StudyAiResult::AwaitingAnalysis).await;
    eventually(PATIENCE, "ready again", || async {
        running.readiness.is_ready()
    })
    .await;
    running.stop().await;
    // Acknowledged: a new member of the group gets nothing more.
    let consumer = bus
        .subscribe(
            &fxtriage_proto::Namespace::none()
                .consumer_group(fxtriage_proto::ConsumerGroup::Prioritizer),
            &[topics::INSTANCES],
        )
        .await
        .expect("subscribe");
    assert!(
        tokio::time::timeout(QUIET, consumer.next()).await.is_err(),
        "the message was acknowledged after it was applied"
    );
    consumer.close().await.expect("close");
    pool.close();
    admin
        .execute(
            &format!("DROP DATABASE IF EXISTS {missing} WITH (FORCE)"),
            &[],
        )
        .await
        .expect("drop");
}

/// Shutdown finishes what is in flight and acknowledges it: a restarted consumer
/// gets only what was never taken.
#[tokio::test]
async fn shutdown_acknowledges_finished_work_and_leaves_the_rest_for_the_next_consumer() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(2);
    let running = Running::start(&bus, &db.pool, quick_retries(4));
    for index in 0..10 {
        produce_instance(
            &bus,
            &instance(
                &format!("2.7.{index}"),
                &format!("2.7.{index}.1.1"),
                Urgency::Outpatient,
                T0,
            ),
        )
        .await;
    }
    eventually(PATIENCE, "every study is listed", || async {
        count(&db.pool, "SELECT count(*) FROM studies").await == 10
    })
    .await;
    running.stop().await;

    let consumer = bus
        .subscribe(
            &fxtriage_proto::Namespace::none()
                .consumer_group(fxtriage_proto::ConsumerGroup::Prioritizer),
            &[topics::INSTANCES],
        )
        .await
        .expect("subscribe");
    assert!(
        tokio::time::timeout(QUIET, consumer.next()).await.is_err(),
        "everything applied was acknowledged"
    );
    consumer.close().await.expect("close");
    db.finish().await;
}

/// `run` as the binary calls it: migrates, serves health, publishes what a crash
/// left in the outbox, consumes, and stops on shutdown.
#[tokio::test]
async fn run_becomes_ready_consumes_and_stops_on_shutdown() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let bus = in_process_bus(2);
    let left_over = instance("2.8.1", "2.8.1.1.1", Urgency::Outpatient, T0);
    store_instance(&db.pool, &left_over).await;

    let health_address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address")
    };
    let mut config = fxtriage_prioritizer::Config::new(health_address);
    config.outbox_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let clients = fxtriage_clients::Clients {
        bus: Arc::clone(&bus),
        namespace: fxtriage_proto::Namespace::none(),
        store: None,
        database: Some(db.pool.clone()),
    };
    let task = tokio::spawn(fxtriage_prioritizer::run(config, clients, shutdown.clone()));
    let client = reqwest::Client::new();
    eventually(PATIENCE, "/health/ready answers 200", || async {
        client
            .get(format!("http://{health_address}/health/ready"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    let image = instance("2.8.2", "2.8.2.1.1", Urgency::Emergency, T0);
    produce_instance(&bus, &image).await;
    produce_finding(&bus, &analysed(&image, 0.97)).await;
    until_study_is(&db.pool, "2.8.2", StudyAiResult::Suspected).await;
    eventually(PATIENCE, "the outbox is empty", || async {
        outbox::pending_count(&db.pool).await.expect("count") == 0
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops promptly")
        .expect("join")
        .expect("stops cleanly");

    let changes = worklist_changes(&bus, SITE, QUIET).await;
    let left_over_changes = changes
        .iter()
        .filter(|change| change.study_instance_uid == "2.8.1")
        .count();
    assert_eq!(left_over_changes, 1, "the crash's change, once");
    let mut emergency: Vec<u64> = changes
        .iter()
        .filter(|change| change.study_instance_uid == "2.8.2")
        .map(|change| change.revision)
        .collect();
    emergency.sort_unstable();
    let revision = study_row(&db.pool, "2.8.2").await.expect("study").revision as u64;
    assert_eq!(
        emergency,
        (1..=revision).collect::<Vec<_>>(),
        "each revision once"
    );
    db.finish().await;
}
