//! Worklist changes, delivered at least once through a transactional outbox.
//!
//! The transaction that changes a study also writes its `WorklistChange` to
//! `worklist_outbox`. After the commit the change is produced to
//! `fxtriage.worklist.v1` (keyed by StudyInstanceUID) and its row deleted. A crash
//! between commit and produce leaves the row, and the next [`publish_pending`]
//! (at start-up, every few seconds, and when a replayed message finds its work
//! already done) produces it: a change is never lost. A crash between produce and
//! delete produces it twice; consumers keep the highest `revision` they have seen,
//! so a repeated or late change is harmless. A replay of a message whose change
//! was published produces nothing.
//!
//! Rows are taken with `FOR UPDATE SKIP LOCKED`, so several prioritizers (or the
//! API, which writes claim and report changes here too) never publish one row twice
//! while they are alive.

use fxtriage_bus::{Bus, BusError, Record};
use fxtriage_core::SiteId;
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1 as proto;
use tokio_postgres::Transaction;

use crate::error::{Doing as _, StoreError};
use crate::incoming::to_timestamp;
use crate::study::urgency_to_proto;
use crate::worklist_store::StudyRow;

/// The change message of a study row.
pub fn worklist_change(study: &StudyRow, kind: proto::ChangeKind) -> proto::WorklistChange {
    proto::WorklistChange {
        site_id: study.site_id.clone(),
        study_instance_uid: study.study_instance_uid.clone(),
        kind: kind as i32,
        state: study.state.to_proto() as i32,
        urgency: urgency_to_proto(study.urgency) as i32,
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

/// How many outbox rows one transaction takes at most.
const BATCH: i64 = 256;

/// Publishes the pending changes of one study, oldest first. Returns how many
/// were published.
pub async fn publish_study(
    pool: &deadpool_postgres::Pool,
    bus: &dyn Bus,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<usize, PublishError> {
    publish(pool, bus, Some((site, study_instance_uid))).await
}

/// Publishes every pending change, oldest first, until none is left. Returns how
/// many were published.
pub async fn publish_pending(
    pool: &deadpool_postgres::Pool,
    bus: &dyn Bus,
) -> Result<usize, PublishError> {
    publish(pool, bus, None).await
}

async fn publish(
    pool: &deadpool_postgres::Pool,
    bus: &dyn Bus,
    study: Option<(&SiteId, &str)>,
) -> Result<usize, PublishError> {
    let mut published = 0;
    loop {
        let mut client = pool.get().await.map_err(StoreError::from)?;
        let tx = client
            .transaction()
            .await
            .doing("starting to publish worklist changes")?;
        let rows = match study {
            Some((site, study_instance_uid)) => {
                tx.query(
                    "SELECT id, study_instance_uid, change FROM worklist_outbox \
                     WHERE site_id = $1 AND study_instance_uid = $2 \
                     ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
                    &[&site.as_str(), &study_instance_uid, &BATCH],
                )
                .await
            }
            None => {
                tx.query(
                    "SELECT id, study_instance_uid, change FROM worklist_outbox \
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    &[&BATCH],
                )
                .await
            }
        }
        .doing("reading pending worklist changes")?;
        if rows.is_empty() {
            return Ok(published);
        }
        let taken = rows.len();
        let mut failure = None;
        for row in &rows {
            let id: i64 = row.get("id");
            let key: String = row.get("study_instance_uid");
            let change: Vec<u8> = row.get("change");
            if let Err(error) = bus
                .produce(topics::WORKLIST, Record::new(key, change))
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
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match publish_pending(&pool, bus.as_ref()).await {
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
