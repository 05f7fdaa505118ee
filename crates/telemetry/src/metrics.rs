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

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder; a second call changes nothing.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
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
}

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
}
