//! Prometheus metrics of a process, through the `metrics` facade (any crate
//! records with `metrics::counter!` and friends, without knowing who exports)
//! and `metrics-exporter-prometheus`'s recorder, which renders the text
//! exposition format. We use that pair rather than a hand-written writer: the
//! facade keeps the recording call sites one line each, and the exporter is the
//! maintained implementation of the format (escaping, histograms, types).
//!
//! The recorder is installed once per process by [`install`] (the binary does
//! it at start-up); without it every recording is a no-op, so library tests need
//! nothing. [`render`] gives what `/metrics` serves.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder; a second call changes nothing.
pub fn install() {
    HANDLE.get_or_init(|| {
        // Histograms with buckets (not summaries), so they aggregate across
        // replicas in PromQL.
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(names::INFERENCE_BATCH_SIZE.to_owned()),
                    &BATCH_SIZE_BUCKETS,
                )
            })
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            // Another recorder was installed first (a test harness): keep it.
            tracing::warn!(%error, "a metrics recorder is already installed");
        }
        handle
    });
}

/// The process's metrics in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Names of the metrics every service may record, with their help texts, so
/// that one place documents them.
pub mod names {
    /// Counter: messages sent to a dead-letter topic, labelled `topic` (the
    /// topic the message came from) and `kind` (the reason's kind, such as
    /// `malformed-message` or `unknown-site`).
    pub const DEAD_LETTERS: &str = "fxtriage_dead_letters_total";
    /// Counter: a consumer group member rejoined because its group was stuck
    /// (it held no partitions while messages waited and nothing was committed),
    /// labelled `group`.
    pub const CONSUMER_REJOINS: &str = "fxtriage_consumer_rejoins_total";
    /// Counter: deliveries of results that reached their destination,
    /// labelled `site`, `destination` and `kind` (such as `dicom-sr`).
    pub const DELIVERIES_SENT: &str = "fxtriage_deliveries_sent_total";
    /// Counter: failed delivery attempts, labelled `site`, `destination`,
    /// `kind` and `outcome` (`retry` or `dead`).
    pub const DELIVERIES_FAILED: &str = "fxtriage_deliveries_failed_total";
    /// Gauge: deliveries waiting to be sent, labelled `site` and `destination`.
    pub const DELIVERIES_PENDING: &str = "fxtriage_deliveries_pending";
    /// Gauge: age in seconds of the oldest waiting delivery, labelled `site`
    /// and `destination`.
    pub const DELIVERIES_OLDEST_PENDING_SECONDS: &str =
        "fxtriage_deliveries_oldest_pending_seconds";
    /// Gauge: 1 while a dependency the service watches answers, 0 while it does
    /// not, labelled `dependency` (`bus`, `object-store`, `database`).
    pub const DEPENDENCY_UP: &str = "fxtriage_dependency_up";
    /// Counter: instances ingest handled, labelled `site`, `channel` (`dimse`,
    /// `stow-rs`, `import`), `outcome` (`stored`, `refused`: quarantined,
    /// `unavailable`: refused with a retryable status) and `reason` (the
    /// rejection kind, or the stage that was unavailable; empty when stored).
    pub const INGEST_INSTANCES: &str = "fxtriage_ingest_instances_total";
    /// Counter: bytes of instances stored, labelled `channel`.
    pub const INGEST_BYTES: &str = "fxtriage_ingest_bytes_total";
    /// Histogram: seconds to write one instance into the object store.
    pub const INGEST_STORE_SECONDS: &str = "fxtriage_ingest_store_seconds";
    /// Histogram: seconds to announce one instance on the bus (until confirmed).
    pub const INGEST_PUBLISH_SECONDS: &str = "fxtriage_ingest_publish_seconds";
    /// Counter: DICOM associations, labelled `outcome` (`accepted`, `rejected`).
    pub const INGEST_ASSOCIATIONS: &str = "fxtriage_ingest_associations_total";
    /// Counter: images inference handled, labelled `outcome` (`analysed`,
    /// `failed`, `not-eligible`) and `kind` (the failure kind; empty otherwise).
    pub const INFERENCE_IMAGES: &str = "fxtriage_inference_images_total";
    /// Histogram: seconds per image in each stage, labelled `stage` (`fetch`,
    /// `decode`, `preprocess`, `queue`, `inference`).
    pub const INFERENCE_STAGE_SECONDS: &str = "fxtriage_inference_stage_seconds";
    /// Histogram: images per model run.
    pub const INFERENCE_BATCH_SIZE: &str = "fxtriage_inference_batch_size";
    /// Gauge: images being fetched, decoded, analysed or published.
    pub const INFERENCE_IN_FLIGHT: &str = "fxtriage_inference_in_flight";
    /// Counter: messages the prioritizer applied to the worklist, labelled
    /// `event` (`instance`, `finding`).
    pub const PRIORITIZER_APPLIED: &str = "fxtriage_prioritizer_applied_total";
    /// Histogram: seconds to apply one message (its database transaction).
    pub const PRIORITIZER_APPLY_SECONDS: &str = "fxtriage_prioritizer_apply_seconds";
    /// Gauge: messages waiting past a consumer group's position, labelled
    /// `group`, `topic` and `partition` (from librdkafka's statistics).
    pub const CONSUMER_LAG: &str = "fxtriage_consumer_lag";
    /// Counter: malformed messages a reader skipped without dead-lettering
    /// them (the API's worklist change fan-out), labelled `topic`.
    pub const MALFORMED_SKIPPED: &str = "fxtriage_malformed_messages_skipped_total";
}

/// Upper bounds (seconds) of every latency histogram.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the batch size histogram.
pub const BATCH_SIZE_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Registers the help texts of [`names`] with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        names::DEAD_LETTERS,
        "Messages sent to a dead-letter topic, by source topic and reason kind."
    );
    metrics::describe_counter!(
        names::CONSUMER_REJOINS,
        "Rejoins of a consumer group member whose group was stuck, by group."
    );
    metrics::describe_counter!(
        names::DELIVERIES_SENT,
        "Result deliveries that reached their destination, by site, destination and kind."
    );
    metrics::describe_counter!(
        names::DELIVERIES_FAILED,
        "Failed result delivery attempts, by site, destination, kind and outcome (retry or dead)."
    );
    metrics::describe_gauge!(
        names::DELIVERIES_PENDING,
        "Result deliveries waiting to be sent, by site and destination."
    );
    metrics::describe_gauge!(
        names::DELIVERIES_OLDEST_PENDING_SECONDS,
        "Age of the oldest waiting result delivery, by site and destination."
    );
    metrics::describe_gauge!(
        names::DEPENDENCY_UP,
        "1 while a dependency of the service (bus, object-store, database) answers its readiness check, else 0."
    );
    metrics::describe_counter!(
        names::INGEST_INSTANCES,
        "Instances handled by ingest, by site, channel, outcome (stored, refused, unavailable) and reason."
    );
    metrics::describe_counter!(
        names::INGEST_BYTES,
        metrics::Unit::Bytes,
        "Bytes of instances stored by ingest, by channel."
    );
    metrics::describe_histogram!(
        names::INGEST_STORE_SECONDS,
        metrics::Unit::Seconds,
        "Time to write one instance into the object store."
    );
    metrics::describe_histogram!(
        names::INGEST_PUBLISH_SECONDS,
        metrics::Unit::Seconds,
        "Time to announce one instance on the bus, until confirmed."
    );
    metrics::describe_counter!(
        names::INGEST_ASSOCIATIONS,
        "DICOM associations, by outcome (accepted, rejected)."
    );
    metrics::describe_counter!(
        names::INFERENCE_IMAGES,
        "Images handled by inference, by outcome (analysed, failed, not-eligible) and failure kind."
    );
    metrics::describe_histogram!(
        names::INFERENCE_STAGE_SECONDS,
        metrics::Unit::Seconds,
        "Time per image in each inference stage (fetch, decode, preprocess, queue, inference)."
    );
    metrics::describe_histogram!(names::INFERENCE_BATCH_SIZE, "Images per model run.");
    metrics::describe_gauge!(
        names::INFERENCE_IN_FLIGHT,
        "Images being fetched, decoded, analysed or published."
    );
    metrics::describe_counter!(
        names::PRIORITIZER_APPLIED,
        "Messages applied to the worklist by the prioritizer, by event."
    );
    metrics::describe_histogram!(
        names::PRIORITIZER_APPLY_SECONDS,
        metrics::Unit::Seconds,
        "Time to apply one message to the worklist (its transaction)."
    );
    metrics::describe_counter!(
        names::MALFORMED_SKIPPED,
        "Malformed messages skipped without dead-lettering (the API's worklist change fan-out), by topic."
    );
    metrics::describe_gauge!(
        names::CONSUMER_LAG,
        "Messages waiting past a consumer group's position, by group, topic and partition."
    );
}
