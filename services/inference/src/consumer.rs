//! The inference consumer: reads the instances topic (`fxtriage.instances.v1` in
//! its namespace), analyses eligible images, and produces one `Finding` per image
//! to the findings topic (`fxtriage.findings.v1`). A
//! message is acknowledged only after its finding is confirmed by the bus. An
//! image that cannot be analysed still gets a finding, with status failed and the
//! reason, so its study reaches the worklist at clinical priority and the
//! partition moves on. In-flight work is bounded, which gives backpressure.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fxtriage_bus::{Bus, Consumer, DeadLetterReason, Received, Record};
use fxtriage_objstore::{ObjectKey, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::v1::{
    Detection, Finding, FindingStatus, InstanceStored, ModelIdentity, StageTimings,
};
use fxtriage_proto::{ConsumerGroup, Namespace};
use fxtriage_telemetry::metrics::names;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::analyse::{AnalysisError, analyse};
use crate::batcher::Batcher;
use crate::manifest::OUTSIDE_INTENDED_USE;
use crate::model::Model;

/// What the consumer works with.
#[derive(Debug, Clone)]
pub struct Deps {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn ObjectStore>,
    pub model: Arc<Model>,
    pub batcher: Batcher,
    /// Where topic and group names come from.
    pub namespace: Namespace,
}

/// Consumes until `shutdown`, then finishes what is in flight and leaves the group.
pub async fn consume(
    deps: Deps,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let group = deps.namespace.consumer_group(ConsumerGroup::Inference);
    let instances = deps.namespace.instances_topic();
    let consumer: Arc<dyn Consumer> = Arc::from(deps.bus.subscribe(&group, &[&instances]).await?);
    tracing::info!(%group, topic = %instances, "inference consuming");
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => permit?,
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.next() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "receiving from the bus failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let deps = deps.clone();
        let consumer = Arc::clone(&consumer);
        let shutdown = shutdown.clone();
        let gauge = metrics::gauge!(names::INFERENCE_IN_FLIGHT);
        gauge.increment(1.0);
        in_flight.spawn(async move {
            handle(&deps, consumer.as_ref(), &message, &shutdown).await;
            gauge.decrement(1.0);
            drop(permit);
        });
    }
    while in_flight.join_next().await.is_some() {}
    consumer.close().await?;
    Ok(())
}

async fn handle(
    deps: &Deps,
    consumer: &dyn Consumer,
    message: &Received,
    shutdown: &CancellationToken,
) {
    let span = tracing::info_span!(
        "inference.instance",
        partition = message.partition,
        offset = message.offset
    );
    fxtriage_telemetry::propagation::continue_trace(&span, &message.headers);
    async {
        let instance = match InstanceStored::decode(message.payload.as_slice()) {
            Ok(instance) => instance,
            Err(error) => {
                let reason = DeadLetterReason::new(
                    "malformed-message",
                    format!("not an InstanceStored: {error}"),
                );
                dead_letter_then_ack(deps, consumer, message, &reason).await;
                return;
            }
        };
        if !instance.eligible {
            // Not for the model; the prioritizer keeps the study at clinical priority.
            images_counted("not-eligible", "");
            acknowledge(consumer, message);
            return;
        }
        let Some(finding) = analyse_unless_shut_down(deps, &instance, shutdown).await else {
            // Shutting down while the store was unavailable: redelivered later.
            return;
        };
        record_finding_metrics(&finding);
        let record = Record::new(
            message.key.clone().unwrap_or_default(),
            finding.encode_to_vec(),
        );
        let findings = deps.namespace.findings_topic();
        if produce_until_confirmed(deps.bus.as_ref(), &findings, record, shutdown).await {
            acknowledge(consumer, message);
        }
    }
    .instrument(span)
    .await;
}

fn images_counted(outcome: &'static str, kind: &str) {
    metrics::counter!(
        names::INFERENCE_IMAGES,
        "outcome" => outcome,
        "kind" => kind.to_owned(),
    )
    .increment(1);
}

/// The image's outcome and, when analysed, the time of each stage.
fn record_finding_metrics(finding: &Finding) {
    if finding.status == FindingStatus::Analysed as i32 {
        images_counted("analysed", "");
    } else if finding.failure_kind == OUTSIDE_INTENDED_USE {
        // Not a failure: the model was not made for this image.
        images_counted("not-eligible", OUTSIDE_INTENDED_USE);
    } else {
        images_counted("failed", &finding.failure_kind);
    }
    if let Some(timings) = &finding.timings {
        for (stage, micros) in [
            ("fetch", timings.fetch_us),
            ("decode", timings.decode_us),
            ("preprocess", timings.preprocess_us),
            ("queue", timings.queue_us),
            ("inference", timings.inference_us),
        ] {
            metrics::histogram!(names::INFERENCE_STAGE_SECONDS, "stage" => stage)
                .record(micros as f64 / 1e6);
        }
    }
}

fn acknowledge(consumer: &dyn Consumer, message: &Received) {
    if let Err(error) = consumer.ack(message) {
        tracing::warn!(%error, "acknowledging failed; the message will be redelivered");
    }
}

async fn dead_letter_then_ack(
    deps: &Deps,
    consumer: &dyn Consumer,
    message: &Received,
    reason: &DeadLetterReason,
) {
    match deps.bus.dead_letter(message, reason).await {
        Ok(_) => {
            tracing::warn!(kind = %reason.kind, reason = %reason.message, "message dead-lettered");
            acknowledge(consumer, message);
        }
        Err(error) => {
            tracing::error!(%error, "dead-lettering failed; the message stays unacknowledged")
        }
    }
}

/// Retries a produce until the bus confirms it; gives up (false) only on shutdown,
/// leaving the message unacknowledged for redelivery.
async fn produce_until_confirmed(
    bus: &dyn Bus,
    topic: &str,
    record: Record,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        match bus.produce(topic, record.clone()).await {
            Ok(_) => return true,
            Err(error) => tracing::warn!(%error, "producing the finding failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Why an image could not be fetched.
enum FetchFailure {
    /// It never will be: (failure kind, reason).
    Permanent(String, String),
    /// Shutdown came while the store was unavailable.
    ShutDown,
}

/// Reads the stored image. While the store is unavailable (down, unreachable,
/// overloaded) it waits and tries again, with backoff up to
/// [`FETCH_RETRY_MAX`], for as long as that lasts: the image was stored and will
/// be readable again, and a finding "not analysed" would send a possible
/// fracture to the back of the list for an outage of a few seconds. The message
/// stays in flight meanwhile (the store is down for every image alike), and
/// readiness reports the store. Only a missing object or an invalid key fails
/// the image.
async fn fetch(
    store: &dyn ObjectStore,
    key: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<u8>, FetchFailure> {
    let key = ObjectKey::parse(key).map_err(|error| {
        FetchFailure::Permanent("invalid-object-key".to_owned(), error.to_string())
    })?;
    let mut backoff = Duration::from_millis(200);
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        match store.get(&key).await {
            Ok(bytes) => return Ok(bytes.to_vec()),
            Err(error) if error.is_not_found() => {
                return Err(FetchFailure::Permanent(
                    "object-missing".into(),
                    error.to_string(),
                ));
            }
            Err(error) => {
                // Logged at the first attempts, then once a minute or so.
                if attempt <= 3 || attempt.is_multiple_of(12) {
                    tracing::warn!(%error, attempt, "fetching the image failed; retrying");
                }
                metrics::counter!(FETCH_RETRIES).increment(1);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(FetchFailure::ShutDown),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(FETCH_RETRY_MAX);
    }
}

/// The longest wait between two attempts to fetch an image from an unavailable store.
const FETCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Counter: fetches of a stored image retried because the store did not answer.
pub const FETCH_RETRIES: &str = "fxtriage_inference_fetch_retries_total";

/// The finding for one instance: analysed, or failed with a specific reason.
pub async fn analyse_instance(deps: &Deps, instance: &InstanceStored) -> Finding {
    match analyse_unless_shut_down(deps, instance, &CancellationToken::new()).await {
        Some(finding) => finding,
        None => unreachable!("a token that is never cancelled"),
    }
}

/// The finding for one instance, analysed or failed with a specific reason;
/// `None` when `shutdown` came while the object store was unavailable (the
/// message is then left unacknowledged, for redelivery).
async fn analyse_unless_shut_down(
    deps: &Deps,
    instance: &InstanceStored,
    shutdown: &CancellationToken,
) -> Option<Finding> {
    let manifest = &deps.model.manifest;
    let mut finding = Finding {
        instance: instance.instance.clone(),
        model: Some(ModelIdentity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256: deps.model.sha256().to_owned(),
        }),
        ..Default::default()
    };
    let fetch_started = Instant::now();
    let bytes = match fetch(deps.store.as_ref(), &instance.object_key, shutdown).await {
        Ok(bytes) => bytes,
        Err(FetchFailure::ShutDown) => return None,
        Err(FetchFailure::Permanent(kind, reason)) => {
            return Some(failed(
                finding,
                &kind,
                format!("cannot fetch {}: {reason}", instance.object_key),
            ));
        }
    };
    let fetch_us = fetch_started.elapsed().as_micros() as u64;
    // The model's intended use: an image outside it is never scored.
    let scope = &manifest.scope;
    let age = if scope.bounds_age() {
        fxtriage_dicom::inspect_bytes(&bytes)
            .ok()
            .and_then(|info| fxtriage_dicom::age_in_years(&info.patient_age))
    } else {
        None
    };
    if let Some(reason) = scope.refusal(&instance.body_part, &instance.view_position, age) {
        return Some(failed(finding, OUTSIDE_INTENDED_USE, reason));
    }
    Some(
        match analyse(
            bytes,
            &deps.batcher,
            deps.model.input_size(),
            &manifest.output.classes,
        )
        .await
        {
            Ok(analysis) => {
                finding.status = FindingStatus::Analysed as i32;
                finding.probability = analysis.probability;
                finding.detections = analysis.detections.iter().map(Detection::from).collect();
                finding.timings = Some(StageTimings {
                    fetch_us,
                    decode_us: analysis.decode_us,
                    preprocess_us: analysis.preprocess_us,
                    queue_us: analysis.timing.queue_us,
                    decode_wait_us: analysis.decode_wait_us,
                    inference_us: analysis.timing.inference_us,
                    postprocess_us: 0,
                    batch_size: analysis.timing.batch_size,
                });
                finding.image_rows = analysis.rows;
                finding.image_columns = analysis.columns;
                finding.analysed_at = Some(SystemTime::now().into());
                tracing::info!(
                    probability = analysis.probability,
                    boxes = finding.detections.len(),
                    "image analysed"
                );
                finding
            }
            Err(error) => {
                let kind = error.kind();
                let reason = match &error {
                    AnalysisError::Pixels(pixels) => format!("cannot decode the image: {pixels}"),
                    AnalysisError::Model(model) => model.to_string(),
                };
                failed(finding, kind, reason)
            }
        },
    )
}

fn failed(mut finding: Finding, kind: &str, reason: String) -> Finding {
    tracing::warn!(kind, %reason, "image not analysed");
    finding.status = FindingStatus::Failed as i32;
    finding.failure_kind = kind.to_owned();
    finding.failure_reason = reason;
    finding.analysed_at = Some(SystemTime::now().into());
    finding
}
