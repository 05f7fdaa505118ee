//! Worklist changes, delivered at least once through a transactional outbox.
//!
//! The transaction that changes a study also writes its `WorklistChange` to
//! `worklist_outbox`. After the commit the change is produced to the worklist
//! topic (`fxtriage.worklist.v1` in the deployment's namespace, keyed by
//! StudyInstanceUID) and its row deleted. A crash
//! between commit and produce leaves the row, and the next [`publish_pending`]
//! (at start-up, every few seconds, and when a replayed message finds its work
//! already done) produces it: a change is never lost. A crash between produce and
//! delete produces it twice; consumers keep the highest `revision` they have seen,
//! so a repeated or late change is harmless. A replay of a message whose change
//! was published produces nothing.
//!
//! The publishers of one study take turns on an advisory lock, so several
//! prioritizers (or the API, which writes claim and report changes here too)
//! never publish one row twice while they are alive, and a study's changes reach
//! the topic in revision order.

use fxtriage_bus::{Bus, BusError, Record};
use fxtriage_core::SiteId;
use fxtriage_proto::Message as _;
use fxtriage_proto::v1 as proto;
use tokio_postgres::Transaction;

use crate::error::{Doing as _, StoreError};
use crate::records::to_timestamp;
use crate::store::StudyRow;

/// The change message of a study row.
pub fn worklist_change(study: &StudyRow, kind: proto::ChangeKind) -> proto::WorklistChange {
    proto::WorklistChange {
        site_id: study.site_id.clone(),
        study_instance_uid: study.study_instance_uid.clone(),
        kind: kind as i32,
        state: study.state.to_proto() as i32,
        urgency: proto::Urgency::from(study.urgency) as i32,
        ai_result: study.ai_result.to_proto() as i32,
        probability: study.probability.unwrap_or_default(),
        has_probability: study.probability.is_some(),
        arrived_at: Some(to_timestamp(study.arrived_at)),
        deadline: Some(to_timestamp(study.deadline)),
        revision: u64::try_from(study.revision).unwrap_or_default(),
        changed_at: Some(to_timestamp(study.updated_at)),
        accession_number: study.accession_number.clone(),
    }
}

/// Writes `change` to the outbox in the caller's transaction.
pub async fn enqueue(
    tx: &Transaction<'_>,
    change: &proto::WorklistChange,
) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "INSERT INTO worklist_outbox (site_id, study_instance_uid, revision, change) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[
                &change.site_id,
                &change.study_instance_uid,
                &i64::try_from(change.revision).unwrap_or(i64::MAX),
                &change.encode_to_vec(),
            ],
        )
        .await
        .doing("writing the worklist change to the outbox")?;
    Ok(row.get(0))
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("producing a worklist change failed: {0}")]
    Bus(#[from] BusError),
}

/// How many outbox rows (or studies) one query takes at most.
const BATCH: i64 = 256;

/// The first key of the advisory lock publishers of one study take turns on (the
/// second is a hash of the study); no other lock of fxtriage uses this class.
const PUBLISH_LOCK_CLASS: i32 = 0x6f75_7462; // "outb"

/// Publishes the pending changes of one study to `topic`, oldest first. Returns
/// how many were published.
///
/// Publishers of one study take turns (a transaction-scoped advisory lock on the
/// study), so its changes reach the topic in revision order even when the relay,
/// a prioritizer and the API publish at the same time.
pub async fn publish_study(
    pool: &deadpool_postgres::Pool,
    bus: &dyn Bus,
    topic: &str,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<usize, PublishError> {
    let mut published = 0;
    loop {
        let mut client = pool.get().await.map_err(StoreError::from)?;
        let tx = client
            .transaction()
            .await
            .doing("starting to publish worklist changes")?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text || '/' || $3::text))",
            &[&PUBLISH_LOCK_CLASS, &site.as_str(), &study_instance_uid],
        )
        .await
        .doing("waiting for the study's other publisher")?;
        let rows = tx
            .query(
                "SELECT id, change FROM worklist_outbox \
                 WHERE site_id = $1 AND study_instance_uid = $2 \
                 ORDER BY id LIMIT $3",
                &[&site.as_str(), &study_instance_uid, &BATCH],
            )
            .await
            .doing("reading pending worklist changes")?;
        if rows.is_empty() {
            return Ok(published);
        }
        let taken = rows.len();
        let mut failure = None;
        for row in &rows {
            let id: i64 = row.get("id");
            let change: Vec<u8> = row.get("change");
            if let Err(error) = bus
                .produce(topic, Record::new(study_instance_uid, change))
                .await
            {
                failure = Some(error);
                break;
            }
            tx.execute("DELETE FROM worklist_outbox WHERE id = $1", &[&id])
                .await
                .doing("removing a published worklist change")?;
            published += 1;
        }
        // What was produced is removed even when a later produce failed.
        tx.commit()
            .await
            .doing("committing published worklist changes")?;
        if let Some(error) = failure {
            return Err(error.into());
        }
        if taken < BATCH as usize {
            return Ok(published);
        }
    }
}

/// Publishes every pending change to `topic`, study by study, oldest first,
/// until none is left. Returns how many were published.
pub async fn publish_pending(
    pool: &deadpool_postgres::Pool,
    bus: &dyn Bus,
    topic: &str,
) -> Result<usize, PublishError> {
    let mut published = 0;
    loop {
        let studies = {
            let client = pool.get().await.map_err(StoreError::from)?;
            client
                .query(
                    "SELECT site_id, study_instance_uid FROM worklist_outbox \
                     GROUP BY site_id, study_instance_uid ORDER BY min(id) LIMIT $1",
                    &[&BATCH],
                )
                .await
                .doing("reading the studies with pending worklist changes")?
        };
        if studies.is_empty() {
            return Ok(published);
        }
        for row in &studies {
            let site: String = row.get(0);
            let study: String = row.get(1);
            let Ok(site) = SiteId::parse(&site) else {
                tracing::error!(site, "an outbox row names an invalid site; left in place");
                continue;
            };
            published += publish_study(pool, bus, topic, &site, &study).await?;
        }
        if studies.len() < BATCH as usize {
            return Ok(published);
        }
    }
}

/// Pending changes, for tests and health checks.
pub async fn pending_count(pool: &deadpool_postgres::Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one("SELECT count(*) FROM worklist_outbox", &[])
        .await
        .doing("counting pending worklist changes")?;
    Ok(row.get(0))
}

/// Publishes what is left in the outbox every `interval` until `shutdown`, and
/// once more on the way out.
pub async fn run_relay(
    pool: deadpool_postgres::Pool,
    bus: std::sync::Arc<dyn Bus>,
    topic: String,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match publish_pending(&pool, bus.as_ref(), &topic).await {
            Ok(0) => {}
            Ok(published) => {
                tracing::info!(published, "outbox relay published pending worklist changes");
            }
            Err(error) => tracing::warn!(%error, "outbox relay could not publish; will retry"),
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => {}
        }
    }
}
