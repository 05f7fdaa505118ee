//! The durable outbox of result deliveries (table `deliveries`, migration V4):
//! what is to be sent where, what was sent, what failed and why. The dispatch
//! service writes and sends it; operators read and retry it (`fxtriage
//! dispatch list|retry`, the API, the web page).
//!
//! A delivery is written once per content: its `object_id` (the SR's SOP
//! Instance UID, for one) is derived from what it says, and the table is
//! unique on (site, destination, object_id), so planning twice writes one row.
//! A sender takes a due delivery by leasing it (moving its next attempt past
//! the lease), so a killed sender's deliveries become due again and are sent
//! again: the receiver gets the same object, which it replaces rather than adds.

use std::time::Duration;

use deadpool_postgres::Pool;

/// A delivery that is due, as a sender takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub delivery_id: i64,
    pub site_id: String,
    pub destination: String,
    pub kind: String,
    pub object_id: String,
    pub payload: Vec<u8>,
    /// Attempts before this one.
    pub attempts: i32,
}

/// A new delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub site_id: String,
    pub destination: String,
    pub kind: &'static str,
    pub study_instance_uid: String,
    pub object_id: String,
    pub supersedes: Option<String>,
    pub payload: Vec<u8>,
}

/// One row, as `fxtriage dispatch list` shows it (no payload).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub delivery_id: i64,
    pub site_id: String,
    pub destination: String,
    pub kind: String,
    pub study_instance_uid: String,
    pub object_id: String,
    pub supersedes: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_error: String,
    pub created_at: String,
    pub next_attempt_at: String,
    pub sent_at: Option<String>,
}

/// How retries are spaced and when they stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; doubled after each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// After this many failed attempts a delivery is dead until retried by hand.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 5 s, 10 s, ... capped at 10 min: 12 attempts span about an hour.
        Self {
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// The wait after `failed_attempts` failures (1 or more).
    pub fn backoff(&self, failed_attempts: i32) -> Duration {
        let doublings = u32::try_from(failed_attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(0);
        self.first_backoff
            .saturating_mul(2_u32.saturating_pow(doublings))
            .min(self.max_backoff)
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Writes `delivery` unless the same object is already there for its
/// destination; whether it was new.
pub async fn enqueue(pool: &Pool, delivery: &NewDelivery) -> Result<bool, Error> {
    let client = pool.get().await?;
    Ok(insert(&client, delivery, "DO NOTHING").await? == 1)
}

/// Inserts `delivery`; `on_conflict` says what to do when its object is
/// already there for its destination. How many rows were written.
async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    delivery: &NewDelivery,
    on_conflict: &str,
) -> Result<u64, Error> {
    Ok(client
        .execute(
            &format!(
                "INSERT INTO deliveries
                     (site_id, destination, kind, study_instance_uid, object_id, supersedes, payload)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (site_id, destination, object_id) {on_conflict}"
            ),
            &[
                &delivery.site_id,
                &delivery.destination,
                &delivery.kind,
                &delivery.study_instance_uid,
                &delivery.object_id,
                &delivery.supersedes,
                &delivery.payload,
            ],
        )
        .await?)
}

/// Writes `delivery` as the newest revision of the study's result of its kind
/// (an SR, an ORU, a FHIR DiagnosticReport) for its destination, in one
/// transaction: the earlier revisions not sent yet (waiting, or given up) are
/// superseded and never sent, since the receiver needs only the newest; a
/// superseded revision planned again (the result went back to what it said)
/// is due again. Whether the delivery was written or made due.
pub async fn enqueue_revision(pool: &Pool, delivery: &NewDelivery) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let written = insert(
        &transaction,
        delivery,
        "DO UPDATE SET state = 'pending', attempts = 0, last_error = '', next_attempt_at = now()
             WHERE deliveries.state = 'superseded'",
    )
    .await?;
    transaction
        .execute(
            "UPDATE deliveries SET state = 'superseded'
             WHERE site_id = $1 AND destination = $2 AND kind = $3
               AND study_instance_uid = $4 AND object_id <> $5
               AND state IN ('pending', 'dead')",
            &[
                &delivery.site_id,
                &delivery.destination,
                &delivery.kind,
                &delivery.study_instance_uid,
                &delivery.object_id,
            ],
        )
        .await?;
    transaction.commit().await?;
    Ok(written == 1)
}

/// The object_id of the latest revision of `kind` for the study to the
/// destination, sent or to be sent (not superseded): planning the same
/// content again writes nothing.
pub async fn latest_object(
    pool: &Pool,
    site_id: &str,
    destination: &str,
    kind: &str,
    study_instance_uid: &str,
) -> Result<Option<String>, Error> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT object_id FROM deliveries
             WHERE site_id = $1 AND destination = $2 AND kind = $3 AND study_instance_uid = $4
               AND state <> 'superseded'
             ORDER BY delivery_id DESC LIMIT 1",
            &[&site_id, &destination, &kind, &study_instance_uid],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// The object_id of the latest revision of `kind` for the study that reached
/// the destination: the one a new revision replaces there (its predecessor,
/// or the result an HL7 or FHIR correction corrects).
pub async fn latest_sent_object(
    pool: &Pool,
    site_id: &str,
    destination: &str,
    kind: &str,
    study_instance_uid: &str,
) -> Result<Option<String>, Error> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT object_id FROM deliveries
             WHERE site_id = $1 AND destination = $2 AND kind = $3 AND study_instance_uid = $4
               AND state = 'sent'
             ORDER BY sent_at DESC, delivery_id DESC LIMIT 1",
            &[&site_id, &destination, &kind, &study_instance_uid],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Whether the destination has (or will have) this object already.
pub async fn exists(
    pool: &Pool,
    site_id: &str,
    destination: &str,
    object_id: &str,
) -> Result<bool, Error> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT 1 FROM deliveries WHERE site_id = $1 AND destination = $2 AND object_id = $3",
            &[&site_id, &destination, &object_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Takes up to `limit` due deliveries, leased for `lease`: another sender
/// (or this one after a crash) takes them again only when the lease is over.
pub async fn take_due(pool: &Pool, limit: i64, lease: Duration) -> Result<Vec<Due>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2)
             WHERE delivery_id IN (
                 SELECT delivery_id FROM deliveries
                 WHERE state = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at, delivery_id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING delivery_id, site_id, destination, kind, object_id, payload, attempts",
            &[&limit, &lease.as_secs_f64()],
        )
        .await?;
    let mut due: Vec<Due> = rows
        .into_iter()
        .map(|row| Due {
            delivery_id: row.get(0),
            site_id: row.get(1),
            destination: row.get(2),
            kind: row.get(3),
            object_id: row.get(4),
            payload: row.get(5),
            attempts: row.get(6),
        })
        .collect();
    due.sort_by_key(|delivery| delivery.delivery_id);
    Ok(due)
}

/// Records that the delivery reached its destination, also when a newer
/// revision superseded it while it was on its way: the receiver has it.
pub async fn mark_sent(pool: &Pool, delivery_id: i64) -> Result<(), Error> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE deliveries SET state = 'sent', sent_at = now(), attempts = attempts + 1,
                 last_error = ''
             WHERE delivery_id = $1 AND state IN ('pending', 'superseded')",
            &[&delivery_id],
        )
        .await?;
    Ok(())
}

/// Records a failed attempt: due again after the backoff while retrying is
/// worth it and attempts remain, dead otherwise. A destination that is away
/// holds its own queue: its other due deliveries wait as long, so that one
/// peer's timeouts do not delay the rest.
pub async fn mark_failed(
    pool: &Pool,
    due: &Due,
    error: &str,
    retryable: bool,
    policy: &RetryPolicy,
) -> Result<&'static str, Error> {
    let attempts = due.attempts + 1;
    let dead = !retryable || attempts >= policy.max_attempts;
    let backoff = policy.backoff(attempts).as_secs_f64();
    let client = pool.get().await?;
    let state = if dead { "dead" } else { "pending" };
    client
        .execute(
            "UPDATE deliveries SET state = $2, attempts = $3, last_error = $4,
                 next_attempt_at = now() + make_interval(secs => $5)
             WHERE delivery_id = $1 AND state = 'pending'",
            &[&due.delivery_id, &state, &attempts, &error, &backoff],
        )
        .await?;
    if retryable {
        client
            .execute(
                "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $3)
                 WHERE site_id = $1 AND destination = $2 AND state = 'pending'
                   AND next_attempt_at < now() + make_interval(secs => $3)
                   AND delivery_id <> $4",
                &[&due.site_id, &due.destination, &backoff, &due.delivery_id],
            )
            .await?;
    }
    Ok(state)
}

/// Makes a dead (or waiting) delivery due now with a fresh count of attempts;
/// whether there was such a delivery. A sent one stays sent.
pub async fn retry(pool: &Pool, delivery_id: i64) -> Result<bool, Error> {
    let client = pool.get().await?;
    let changed = client
        .execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = now()
             WHERE delivery_id = $1 AND state IN ('pending', 'dead')",
            &[&delivery_id],
        )
        .await?;
    Ok(changed == 1)
}

/// Sends a delivery that was sent once more (the receiver lost it, say): it is
/// the same object, which the receiver replaces; whether there was one. A
/// superseded revision is not sent: the newer one is.
pub async fn resend(pool: &Pool, delivery_id: i64) -> Result<bool, Error> {
    let client = pool.get().await?;
    let changed = client
        .execute(
            "UPDATE deliveries SET state = 'pending', sent_at = NULL, attempts = 0,
                 last_error = '', next_attempt_at = now()
             WHERE delivery_id = $1 AND state <> 'superseded'",
            &[&delivery_id],
        )
        .await?;
    Ok(changed == 1)
}

/// Deliveries, newest first: of one site or all, only those not sent well
/// (dead, or pending after a failure) or all.
pub async fn list(
    pool: &Pool,
    site_id: Option<&str>,
    failed_only: bool,
    limit: i64,
) -> Result<Vec<Listed>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT delivery_id, site_id, destination, kind, study_instance_uid, object_id,
                    supersedes, state, attempts, last_error,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM deliveries
             WHERE ($1::text IS NULL OR site_id = $1)
               AND (NOT $2 OR state = 'dead' OR (state = 'pending' AND last_error <> ''))
             ORDER BY delivery_id DESC
             LIMIT $3",
            &[&site_id, &failed_only, &limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Listed {
            delivery_id: row.get(0),
            site_id: row.get(1),
            destination: row.get(2),
            kind: row.get(3),
            study_instance_uid: row.get(4),
            object_id: row.get(5),
            supersedes: row.get(6),
            state: row.get(7),
            attempts: row.get(8),
            last_error: row.get(9),
            created_at: row.get(10),
            next_attempt_at: row.get(11),
            sent_at: row.get(12),
        })
        .collect())
}

/// Per destination: pending deliveries and the age of the oldest, for metrics.
pub async fn pending_by_destination(pool: &Pool) -> Result<Vec<(String, String, i64, f64)>, Error> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT site_id, destination, count(*),
                    COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM deliveries WHERE state = 'pending'
             GROUP BY site_id, destination",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_secs(5));
        assert_eq!(policy.backoff(2), Duration::from_secs(10));
        assert_eq!(policy.backoff(4), Duration::from_secs(40));
        assert_eq!(policy.backoff(8), Duration::from_secs(600));
        assert_eq!(policy.backoff(1000), Duration::from_secs(600));
    }
}
