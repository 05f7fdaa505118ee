//! Sends what the outbox holds: takes due deliveries, sends each to its
//! destination as the site registry describes it now, and records the outcome.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_sites::SiteRegistry;
use fxtriage_sites::destinations::Destination;
use fxtriage_telemetry::metrics::names;
use tokio_util::sync::CancellationToken;

use crate::dicom_out;
use crate::outbox::{self, Due, RetryPolicy};

/// How many deliveries one round sends at once.
pub const BATCH: i64 = 16;
/// How long a taken delivery is reserved for its sender: longer than any one
/// attempt can take ([`dicom_out::STORE_TIMEOUT`]).
pub const LEASE: Duration = Duration::from_secs(120);

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub failed: usize,
}

/// Sends the deliveries due now, at most [`BATCH`], concurrently.
pub async fn send_due(
    pool: &Pool,
    registry: &SiteRegistry,
    policy: &RetryPolicy,
) -> Result<Round, outbox::Error> {
    let due = outbox::take_due(pool, BATCH, LEASE).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for delivery in due {
        let pool = pool.clone();
        let registry = registry.clone();
        let policy = *policy;
        tasks.spawn(async move {
            let outcome = send(&registry, &delivery).await;
            record(&pool, &delivery, outcome, &policy).await
        });
    }
    let mut round = Round::default();
    while let Some(finished) = tasks.join_next().await {
        match finished {
            Ok(Ok(true)) => round.sent += 1,
            Ok(Ok(false)) => round.failed += 1,
            Ok(Err(error)) => {
                // The outcome could not be written: the lease ends and the
                // delivery is sent again, which the receiver absorbs.
                tracing::warn!(error = %crate::chain(error.as_ref()), "cannot record a delivery's outcome");
                round.failed += 1;
            }
            Err(error) => {
                tracing::error!(%error, "a delivery task panicked");
                round.failed += 1;
            }
        }
    }
    Ok(round)
}

/// Sends one delivery.
async fn send(registry: &SiteRegistry, delivery: &Due) -> Result<(), dicom_out::StoreError> {
    let snapshot = registry.current();
    let Some(site) = snapshot.site(&delivery.site_id) else {
        return Err(dicom_out::StoreError::Refused(format!(
            "site {} is not in the site registry",
            delivery.site_id
        )));
    };
    match (
        site.destinations.named(&delivery.destination),
        delivery.kind.as_str(),
    ) {
        (Some(Destination::Dicom(peer)), "dicom-sr" | "dicom-sc") => {
            let dataset =
                dicom_object::from_reader(delivery.payload.as_slice()).map_err(|error| {
                    dicom_out::StoreError::Refused(format!(
                        "the stored object cannot be read: {error}"
                    ))
                })?;
            let stored = dicom_out::store(peer, &dataset).await?;
            if stored.status != 0 {
                tracing::warn!(
                    site = %delivery.site_id, destination = %delivery.destination,
                    status = format!("0x{:04X}", stored.status),
                    comment = stored.comment.as_deref().unwrap_or(""),
                    "stored with a warning"
                );
            }
            Ok(())
        }
        (Some(Destination::Hl7(peer)), "hl7-oru" | "hl7-priority") => {
            crate::hl7_out::send(peer, &delivery.payload).await
        }
        (Some(Destination::Fhir(endpoint)), "fhir-diagnostic-report") => {
            crate::fhir_out::send(endpoint, &delivery.payload).await
        }
        (None, _) => Err(dicom_out::StoreError::Refused(format!(
            "site {} has no destination {} any more",
            delivery.site_id, delivery.destination
        ))),
        (Some(_), kind) => Err(dicom_out::StoreError::Refused(format!(
            "destination {} of site {} does not take {kind}",
            delivery.destination, delivery.site_id
        ))),
    }
}

/// Writes the outcome and counts it; whether the delivery was sent.
async fn record(
    pool: &Pool,
    delivery: &Due,
    outcome: Result<(), dicom_out::StoreError>,
    policy: &RetryPolicy,
) -> Result<bool, outbox::Error> {
    let labels = [
        ("site", delivery.site_id.clone()),
        ("destination", delivery.destination.clone()),
        ("kind", delivery.kind.clone()),
    ];
    match outcome {
        Ok(()) => {
            outbox::mark_sent(pool, delivery.delivery_id).await?;
            metrics::counter!(names::DELIVERIES_SENT, &labels).increment(1);
            tracing::info!(
                delivery = delivery.delivery_id, site = %delivery.site_id,
                destination = %delivery.destination, kind = %delivery.kind, "delivered"
            );
            Ok(true)
        }
        Err(error) => {
            let state = outbox::mark_failed(
                pool,
                delivery,
                &error.to_string(),
                error.is_retryable(),
                policy,
            )
            .await?;
            let outcome = if state == "dead" { "dead" } else { "retry" };
            let mut labels = labels.to_vec();
            labels.push(("outcome", outcome.to_owned()));
            metrics::counter!(names::DELIVERIES_FAILED, &labels).increment(1);
            tracing::warn!(
                delivery = delivery.delivery_id, site = %delivery.site_id,
                destination = %delivery.destination, kind = %delivery.kind,
                attempt = delivery.attempts + 1, outcome, %error, "delivery failed"
            );
            Ok(false)
        }
    }
}

/// Sends due deliveries until `shutdown`, looking again every `poll`, and
/// keeps the pending gauges current.
pub async fn run(
    pool: Pool,
    registry: SiteRegistry,
    policy: RetryPolicy,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let gauges = Arc::new(tokio::sync::Mutex::new(Vec::<(String, String)>::new()));
    while !shutdown.is_cancelled() {
        let busy = match send_due(&pool, &registry, &policy).await {
            Ok(round) => round.sent + round.failed > 0,
            Err(error) => {
                tracing::warn!(error = %crate::chain(error.as_ref()), "cannot take due deliveries; trying again");
                false
            }
        };
        update_gauges(&pool, &gauges).await;
        if !busy {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

async fn update_gauges(pool: &Pool, shown: &tokio::sync::Mutex<Vec<(String, String)>>) {
    let Ok(pending) = outbox::pending_by_destination(pool).await else {
        return;
    };
    let mut shown = shown.lock().await;
    // A destination whose queue emptied reads 0, not its last value.
    for (site, destination) in shown.iter() {
        if !pending
            .iter()
            .any(|(s, d, _, _)| s == site && d == destination)
        {
            let labels = [("site", site.clone()), ("destination", destination.clone())];
            metrics::gauge!(names::DELIVERIES_PENDING, &labels).set(0.0);
            metrics::gauge!(names::DELIVERIES_OLDEST_PENDING_SECONDS, &labels).set(0.0);
        }
    }
    shown.clear();
    for (site, destination, count, oldest) in pending {
        let labels = [("site", site.clone()), ("destination", destination.clone())];
        metrics::gauge!(names::DELIVERIES_PENDING, &labels).set(count as f64);
        metrics::gauge!(names::DELIVERIES_OLDEST_PENDING_SECONDS, &labels).set(oldest);
        shown.push((site, destination));
    }
}
