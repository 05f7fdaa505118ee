//! Test helpers of the prioritizer: a fresh PostgreSQL database per test (from
//! FXTRIAGE_DATABASE_URL, as the local stack sets it), event builders, and readers
//! of the worklist, the tables and the bus.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_bus::{Bus, Received};
use fxtriage_core::{SiteId, Urgency};
use fxtriage_db::DbConfig;
use fxtriage_prioritizer::apply::{Applied, apply_finding, apply_instance};
use fxtriage_prioritizer::incoming::{ImageFinding, StoredInstance, to_timestamp};
use fxtriage_prioritizer::policy::Policy;
use fxtriage_prioritizer::study::WorklistState;
use fxtriage_prioritizer::worklist_store::{StudyRow, worklist_page};
use fxtriage_proto::v1 as proto;
use time::OffsetDateTime;
use time::macros::datetime;

/// A database of its own for one test, dropped by [`TestDb::finish`].
pub struct TestDb {
    pub config: DbConfig,
    pub pool: Pool,
    database: fxtriage_testkit::FreshDatabase,
}

/// The server of the local stack, or `None` (the test is skipped) when
/// FXTRIAGE_DATABASE_URL is unset (see `fxtriage_testkit::stack`).
pub fn database_server() -> Option<DbConfig> {
    let url = fxtriage_testkit::stack::setting("FXTRIAGE_DATABASE_URL")?;
    Some(DbConfig::from_url(&url).expect("valid FXTRIAGE_DATABASE_URL"))
}

/// A migrated database with one registered site, [`SITE`].
pub async fn fresh_database() -> Option<TestDb> {
    let database = fxtriage_testkit::FreshDatabase::create("fxt_prio").await?;
    let mut config = DbConfig::from_url(&database.url).expect("URL");
    config.max_connections = 8;
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    add_site(&pool, SITE, "Demo hospital").await;
    Some(TestDb {
        config,
        pool,
        database,
    })
}

impl TestDb {
    pub async fn finish(self) {
        self.pool.close();
        self.database.drop_database().await;
    }
}

pub const SITE: &str = "demo";

pub fn site(id: &str) -> SiteId {
    SiteId::parse(id).expect("site id")
}

/// A fixed clock, so that deadlines are exact.
pub const T0: OffsetDateTime = datetime!(2026-01-05 08:00:00 UTC);

pub fn minutes(count: i64) -> time::Duration {
    time::Duration::minutes(count)
}

pub fn proto_urgency(urgency: Urgency) -> i32 {
    (match urgency {
        Urgency::Emergency => proto::Urgency::Emergency,
        Urgency::Inpatient => proto::Urgency::Inpatient,
        Urgency::Outpatient => proto::Urgency::Outpatient,
    }) as i32
}

/// An eligible wrist image of `study` at `site`, stored at `received_at`.
pub fn instance_at(
    site: &str,
    study: &str,
    sop: &str,
    urgency: Urgency,
    received_at: OffsetDateTime,
) -> proto::InstanceStored {
    proto::InstanceStored {
        instance: Some(proto::InstanceRef {
            site_id: site.into(),
            study_instance_uid: study.into(),
            series_instance_uid: format!("{study}.1"),
            sop_instance_uid: sop.into(),
        }),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        modality: "DX".into(),
        body_part: "WRIST".into(),
        view_position: "PA".into(),
        laterality: "L".into(),
        accession_number: format!("ACC{}", study.replace('.', "")),
        urgency: proto_urgency(urgency),
        urgency_source: proto::UrgencySource::Dataset as i32,
        object_key: format!("{site}/{study}/{study}.1/{sop}.dcm"),
        byte_size: 1234,
        sha256: "00".repeat(32),
        received_at: Some(to_timestamp(received_at)),
        eligible: true,
        not_eligible_reason: String::new(),
        received_via: "dimse".into(),
        sender: "TEST_SCU".into(),
        expected_instances: 0,
        acquired_at: None,
        ..Default::default()
    }
}

/// [`instance_at`] for the default site.
pub fn instance(
    study: &str,
    sop: &str,
    urgency: Urgency,
    received_at: OffsetDateTime,
) -> proto::InstanceStored {
    instance_at(SITE, study, sop, urgency, received_at)
}

pub const MODEL_SHA256: &str = "5e0d8f2cbd1fa3c6d0f0a8a1b3c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5";

/// The model's verdict on `image`: analysed with `probability` and one detection.
pub fn analysed(image: &proto::InstanceStored, probability: f32) -> proto::Finding {
    proto::Finding {
        instance: image.instance.clone(),
        status: proto::FindingStatus::Analysed as i32,
        failure_reason: String::new(),
        failure_kind: String::new(),
        probability,
        detections: vec![proto::Detection {
            r#box: Some(proto::BoundingBox {
                x_min: 100.0,
                y_min: 120.5,
                x_max: 340.0,
                y_max: 400.25,
            }),
            class_name: "fracture".into(),
            score: probability,
        }],
        model: Some(proto::ModelIdentity {
            name: "fxtriage-demo".into(),
            version: "1.0.0".into(),
            sha256: MODEL_SHA256.into(),
        }),
        timings: Some(proto::StageTimings {
            fetch_us: 10,
            decode_us: 20,
            preprocess_us: 30,
            queue_us: 40,
            decode_wait_us: 5,
            inference_us: 50,
            postprocess_us: 60,
            batch_size: 4,
        }),
        analysed_at: image.received_at.map(|at| fxtriage_proto::Timestamp {
            seconds: at.seconds + 30,
            nanos: 0,
        }),
        image_rows: 2048,
        image_columns: 1536,
    }
}

/// The model could not analyse `image`.
pub fn failed(image: &proto::InstanceStored, kind: &str, reason: &str) -> proto::Finding {
    proto::Finding {
        status: proto::FindingStatus::Failed as i32,
        failure_kind: kind.into(),
        failure_reason: reason.into(),
        probability: 0.0,
        detections: Vec::new(),
        ..analysed(image, 0.0)
    }
}

pub async fn store_instance(pool: &Pool, event: &proto::InstanceStored) -> Applied {
    let instance = StoredInstance::from_proto(event).expect("a valid instance");
    apply_instance(pool, &Policy::default(), &instance)
        .await
        .expect("instance applied")
}

pub async fn store_finding(pool: &Pool, event: &proto::Finding) -> Applied {
    let finding = ImageFinding::from_proto(event).expect("a valid finding");
    apply_finding(pool, &Policy::default(), &finding)
        .await
        .expect("finding applied")
}

/// The open worklist of `site_id` in reading order.
pub async fn open_worklist(pool: &Pool, site_id: &str) -> Vec<StudyRow> {
    let client = pool.get().await.expect("connection");
    worklist_page(&client, &site(site_id), WorklistState::Open, None, 1000)
        .await
        .expect("worklist read")
}

pub async fn study_row(pool: &Pool, study: &str) -> Option<StudyRow> {
    let client = pool.get().await.expect("connection");
    fxtriage_prioritizer::worklist_store::study(&client, &site(SITE), study)
        .await
        .expect("study read")
}

/// Every row of the worklist tables, as JSON, in a stable order.
pub async fn snapshot(pool: &Pool) -> Vec<serde_json::Value> {
    let client = pool.get().await.expect("connection");
    let mut rows = Vec::new();
    for table in [
        "sites",
        "studies",
        "instances",
        "findings",
        "worklist_outbox",
    ] {
        let query = format!("SELECT to_jsonb(t) FROM {table} t ORDER BY to_jsonb(t)::text");
        for row in client.query(&query, &[]).await.expect("snapshot") {
            rows.push(
                serde_json::json!({ "table": table, "row": row.get::<_, serde_json::Value>(0) }),
            );
        }
    }
    rows
}

pub async fn count(pool: &Pool, query: &str) -> i64 {
    let client = pool.get().await.expect("connection");
    client.query_one(query, &[]).await.expect("count").get(0)
}

/// Waiting on a yes-or-no condition (crates/testkit).
#[allow(unused_imports)]
pub use fxtriage_testkit::until as eventually;

/// Every message of `topic`, read by a new consumer group until the topic stays
/// quiet for `quiet`.
pub async fn read_topic(bus: &Arc<dyn Bus>, topic: &str, quiet: Duration) -> Vec<Received> {
    read_topic_patiently(bus, topic, quiet, quiet).await
}

/// [`read_topic`], waiting up to `first` for the first message (joining a Kafka
/// group takes a while).
pub async fn read_topic_patiently(
    bus: &Arc<dyn Bus>,
    topic: &str,
    first: Duration,
    quiet: Duration,
) -> Vec<Received> {
    let group = format!("test-reader-{}", uuid::Uuid::new_v4().simple());
    let consumer = bus.subscribe(&group, &[topic]).await.expect("subscribe");
    let mut messages = Vec::new();
    let mut wait = first;
    while let Ok(next) = tokio::time::timeout(wait, consumer.next()).await {
        let message = next.expect("consume");
        consumer.ack(&message).expect("ack");
        messages.push(message);
        wait = quiet;
    }
    consumer.close().await.expect("close");
    messages
}

/// The worklist changes on the bus for `site_id`, decoded, in the order read.
pub async fn worklist_changes(
    bus: &Arc<dyn Bus>,
    site_id: &str,
    quiet: Duration,
) -> Vec<proto::WorklistChange> {
    decode_changes(
        &read_topic(bus, fxtriage_proto::topics::WORKLIST, quiet).await,
        site_id,
    )
}

pub fn decode_changes(messages: &[Received], site_id: &str) -> Vec<proto::WorklistChange> {
    use fxtriage_proto::Message as _;
    messages
        .iter()
        .map(|message| {
            proto::WorklistChange::decode(message.payload.as_slice()).expect("a WorklistChange")
        })
        .filter(|change| change.site_id == site_id)
        .collect()
}

/// Puts `site` in the site registry with the default configuration.
pub async fn add_site(pool: &Pool, site_id: &str, name: &str) {
    fxtriage_sites::store::put_sites(
        pool,
        vec![fxtriage_sites::SiteConfig::new(site(site_id), name)],
    )
    .await
    .expect("add the site");
}

/// The registry as the database holds it now.
pub async fn registry(pool: &Pool) -> fxtriage_sites::SiteRegistry {
    fxtriage_sites::SiteRegistry::load(pool)
        .await
        .expect("the site registry")
}
