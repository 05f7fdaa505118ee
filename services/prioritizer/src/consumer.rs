//! The consumer loop: group `fxtriage-prioritizer` (in the deployment namespace)
//! on the instance and finding topics, a bounded number of messages in flight, acknowledgement only after a
//! message's effect is committed (or it is dead-lettered).
//!
//! A transient failure is retried in place with exponential backoff: the message is
//! never acknowledged before it succeeds, while the other in-flight messages (other
//! partitions included) carry on. On shutdown no new message is taken; messages in
//! flight finish their current attempt (a message waiting to retry is left
//! unacknowledged, so it is redelivered), acknowledgements are made, and the
//! consumer leaves its group.

use std::time::Duration;

use fxtriage_bus::{BusErrorKind, Consumer, Received};
use fxtriage_proto::ConsumerGroup;
use fxtriage_telemetry::health::Readiness;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::handler::{Handled, Prioritizer};

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer group; the namespace's prioritizer group when unset.
    pub group: Option<String>,
    /// Messages being applied at once. Keep it at most the database pool size.
    pub max_in_flight: usize,
    /// First wait after a transient failure; doubled on each further failure.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            group: None,
            max_in_flight: 8,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Consumes until `shutdown` is cancelled or the bus closes. `readiness` is set once
/// the group is joined, cleared while the database keeps failing and when draining.
pub async fn run_consumer(
    prioritizer: Prioritizer,
    options: ConsumerOptions,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), fxtriage_bus::BusError> {
    let namespace = prioritizer.namespace();
    let group = options
        .group
        .clone()
        .unwrap_or_else(|| namespace.consumer_group(ConsumerGroup::Prioritizer));
    let consumer = prioritizer
        .bus()
        .subscribe(
            &group,
            &[&namespace.instances_topic(), &namespace.findings_topic()],
        )
        .await?;
    readiness.set_ready(true);
    tracing::info!(%group, %namespace, max_in_flight = options.max_in_flight, "prioritizer consuming");

    let outcome = consume(
        &prioritizer,
        consumer.as_ref(),
        &options,
        &readiness,
        &shutdown,
    )
    .await;
    readiness.set_ready(false);
    consumer.close().await?;
    tracing::info!("prioritizer consumer stopped");
    outcome
}

async fn consume(
    prioritizer: &Prioritizer,
    consumer: &dyn Consumer,
    options: &ConsumerOptions,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Result<(), fxtriage_bus::BusError> {
    let max_in_flight = options.max_in_flight.max(1);
    let mut in_flight: JoinSet<(Received, Option<Handled>)> = JoinSet::new();
    let mut poll_backoff = options.retry_initial;
    let outcome = loop {
        tokio::select! {
            biased;
            Some(joined) = in_flight.join_next() => acknowledge(consumer, joined),
            () = shutdown.cancelled() => break Ok(()),
            next = consumer.next(), if in_flight.len() < max_in_flight => match next {
                Ok(received) => {
                    poll_backoff = options.retry_initial;
                    in_flight.spawn(handle_until_done(
                        prioritizer.clone(),
                        received,
                        options.clone(),
                        readiness.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) if error.kind() == BusErrorKind::Closed => break Err(error),
                Err(error) => {
                    tracing::warn!(%error, "consuming failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(poll_backoff) => {}
                        () = shutdown.cancelled() => {}
                    }
                    poll_backoff = (poll_backoff * 2).min(options.retry_max);
                }
            },
        }
    };
    readiness.set_ready(false);
    while let Some(joined) = in_flight.join_next().await {
        acknowledge(consumer, joined);
    }
    outcome
}

fn acknowledge(
    consumer: &dyn Consumer,
    joined: Result<(Received, Option<Handled>), tokio::task::JoinError>,
) {
    match joined {
        Ok((received, Some(_))) => {
            if let Err(error) = consumer.ack(&received) {
                tracing::warn!(%error, topic = %received.topic, offset = received.offset, "acknowledgement failed; the message will be redelivered");
            }
        }
        // Abandoned at shutdown: redelivered to the next consumer.
        Ok((_, None)) => {}
        Err(error) => {
            tracing::error!(%error, "a message handler panicked; its message will be redelivered");
        }
    }
}

/// Handles `received` until it is applied or dead-lettered, retrying transient
/// failures with backoff; `None` if shutdown came first.
async fn handle_until_done(
    prioritizer: Prioritizer,
    received: Received,
    options: ConsumerOptions,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> (Received, Option<Handled>) {
    // The message's work joins the trace of whoever produced it (ingest for an
    // instance, inference for a finding), so one trace follows an image from
    // C-STORE to the worklist.
    let span = tracing::info_span!(
        "prioritizer.apply",
        topic = %received.topic,
        partition = received.partition,
        offset = received.offset
    );
    fxtriage_telemetry::propagation::continue_trace(&span, &received.headers);
    handle_in_span(prioritizer, received, options, readiness, shutdown)
        .instrument(span)
        .await
}

async fn handle_in_span(
    prioritizer: Prioritizer,
    received: Received,
    options: ConsumerOptions,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> (Received, Option<Handled>) {
    let mut delay = options.retry_initial;
    let mut attempt = 1_u32;
    loop {
        match prioritizer.handle(&received).await {
            Ok(handled) => {
                if !shutdown.is_cancelled() {
                    readiness.set_ready(true);
                }
                if attempt > 1 {
                    tracing::info!(topic = %received.topic, offset = received.offset, attempt, "message applied after retries");
                }
                return (received, Some(handled));
            }
            Err(error) => {
                readiness.set_ready(false);
                tracing::warn!(
                    %error,
                    topic = %received.topic,
                    partition = received.partition,
                    offset = received.offset,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "transient failure; the message will be retried"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return (received, None),
                }
                delay = (delay * 2).min(options.retry_max);
                attempt += 1;
            }
        }
    }
}
