//! `/metrics` in the Prometheus text format: requests by route template,
//! method and status with a latency histogram, open event streams, expired
//! claims, and, counted from PostgreSQL when scraped, each site's worklist size
//! and each model's score drift; then what the process recorded through the
//! `metrics` facade (dead letters, ...).
//!
//! The series are kept and written by `metrics-exporter-prometheus` (the
//! maintained implementation of the format: escaping, types, histograms), in a
//! recorder of this API's own rather than the process-wide one, so that two
//! APIs in one process (the tests, `standalone`) never count each other's
//! requests or sites.
//!
//! Routes are labelled by their template (`/api/v1/sites/{site}/studies/{study}`),
//! never by the path, so no UID reaches a label and the label set stays bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use metrics::{Gauge, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::state::AppState;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const REQUESTS: &str = "fxtriage_api_requests_total";
const REQUEST_DURATION: &str = "fxtriage_api_request_duration_seconds";
const EVENT_STREAMS: &str = "fxtriage_api_event_streams";
const CLAIMS_EXPIRED: &str = "fxtriage_api_claims_expired_total";
const DATABASE_UP: &str = "fxtriage_api_database_up";
const WORKLIST_ITEMS: &str = "fxtriage_worklist_items";
const WORKLIST_OVERDUE: &str = "fxtriage_worklist_overdue_items";
const WORKLIST_OLDEST: &str = "fxtriage_worklist_oldest_waiting_seconds";
const SCORE_PSI: &str = "fxtriage_model_score_psi";
const SCORE_DRIFTED: &str = "fxtriage_model_score_drifted";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// This API's series.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The sites, and the (site, model) pairs, the last scrape reported: a
    /// series that is no longer measured (a site retired, a model that scored
    /// nothing for a week, a database that does not answer) is set to NaN
    /// rather than left at its last value.
    sites: Mutex<BTreeSet<String>>,
    models: Mutex<BTreeSet<(String, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let help = |name: &'static str, text: &'static str| (name, text);
        for (name, text) in [
            help(
                REQUESTS,
                "HTTP requests answered, by route template, method and status.",
            ),
            help(EVENT_STREAMS, "Open Server-Sent Event streams."),
            help(
                CLAIMS_EXPIRED,
                "Claims this process ended because they expired.",
            ),
            help(
                DATABASE_UP,
                "Whether the last scrape could read the worklist sizes from PostgreSQL.",
            ),
            help(
                WORKLIST_ITEMS,
                "Worklist items by site and state (open, claimed).",
            ),
            help(
                WORKLIST_OVERDUE,
                "Open or claimed worklist items past their deadline, by site and state.",
            ),
            help(
                WORKLIST_OLDEST,
                "How long the open item that arrived first has waited, by site (0 when none is open).",
            ),
            help(
                SCORE_PSI,
                "Population stability index of each model's scores at each site over the last 7 days against the model's registered reference.",
            ),
            help(
                SCORE_DRIFTED,
                "1 when that index is above 0.25 with at least 100 images in the window, else 0.",
            ),
        ] {
            if name.ends_with("_total") {
                recorder.describe_counter(name.into(), None, text.into());
            } else {
                recorder.describe_gauge(name.into(), None, text.into());
            }
        }
        recorder.describe_histogram(
            REQUEST_DURATION.into(),
            Some(Unit::Seconds),
            "Time to the response head, by route template and method.".into(),
        );
        Self {
            recorder,
            handle,
            sites: Mutex::default(),
            models: Mutex::default(),
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(label, value)| Label::new(*label, (*value).to_owned()))
            .collect::<Vec<_>>(),
    )
}

/// Counts an open event stream until dropped.
pub struct SseClient(Gauge);

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClient").finish_non_exhaustive()
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Metrics {
    pub fn record_request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.recorder
            .register_counter(
                &key(
                    REQUESTS,
                    &[("route", route), ("method", method), ("status", &status)],
                ),
                &METADATA,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &key(REQUEST_DURATION, &[("route", route), ("method", method)]),
                &METADATA,
            )
            .record(took.as_secs_f64());
    }

    pub fn sse_client_connected(&self) -> SseClient {
        let gauge = self.gauge(EVENT_STREAMS, &[]);
        gauge.increment(1.0);
        SseClient(gauge)
    }

    pub fn claims_expired(&self, count: usize) {
        self.recorder
            .register_counter(&key(CLAIMS_EXPIRED, &[]), &METADATA)
            .increment(count as u64);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    /// Makes sure the process's own series exist before the first event, so
    /// that a fresh API already shows them at zero.
    fn touch(&self) {
        self.gauge(EVENT_STREAMS, &[]).increment(0.0);
        self.recorder
            .register_counter(&key(CLAIMS_EXPIRED, &[]), &METADATA)
            .increment(0);
    }

    /// Each site's open and claimed items (expired claims count as open), how
    /// many of them are past their deadline, and how long the first has waited;
    /// every site of the registry, at zero when nothing waits. Each value is
    /// set once, so that a concurrent scrape never reads a half-set family.
    async fn count_worklists(&self, pool: &Pool) -> Result<(), String> {
        let client = pool.get().await.map_err(|error| error.to_string())?;
        let sites = client
            .query("SELECT site_id FROM sites ORDER BY site_id", &[])
            .await
            .map_err(|error| error.to_string())?;
        let counts = client
            .query(
                "SELECT site_id, \
                     CASE WHEN state = 'claimed' AND claim_expires_at <= now() THEN 'open' \
                          ELSE state END AS effective_state, \
                     count(*) AS items, count(*) FILTER (WHERE deadline < now()) AS overdue, \
                     EXTRACT(EPOCH FROM now() - min(arrived_at))::float8 AS oldest \
                 FROM studies WHERE state IN ('open', 'claimed') GROUP BY 1, 2",
                &[],
            )
            .await
            .map_err(|error| error.to_string())?;
        // (site, state) -> (items, overdue); site -> oldest open wait.
        let mut sizes: BTreeMap<(String, &'static str), (f64, f64)> = BTreeMap::new();
        let mut oldest: BTreeMap<String, f64> = BTreeMap::new();
        for site in &sites {
            let site: String = site.get(0);
            for state in ["open", "claimed"] {
                sizes.insert((site.clone(), state), (0.0, 0.0));
            }
            oldest.insert(site, 0.0);
        }
        for row in &counts {
            let site: String = row.get("site_id");
            let state = if row.get::<_, &str>("effective_state") == "open" {
                "open"
            } else {
                "claimed"
            };
            if state == "open" {
                let waited: Option<f64> = row.get("oldest");
                oldest.insert(site.clone(), waited.unwrap_or(0.0).max(0.0));
            }
            sizes.insert(
                (site, state),
                (
                    row.get::<_, i64>("items") as f64,
                    row.get::<_, i64>("overdue") as f64,
                ),
            );
        }
        for ((site, state), (items, overdue)) in &sizes {
            let labels = [("site", site.as_str()), ("state", *state)];
            self.gauge(WORKLIST_ITEMS, &labels).set(*items);
            self.gauge(WORKLIST_OVERDUE, &labels).set(*overdue);
        }
        for (site, waited) in &oldest {
            self.gauge(WORKLIST_OLDEST, &[("site", site.as_str())])
                .set(*waited);
        }
        let now: BTreeSet<String> = oldest.into_keys().collect();
        let gone: Vec<String> = match self.sites.lock() {
            Ok(mut known) => {
                let gone = known.difference(&now).cloned().collect();
                *known = now;
                gone
            }
            Err(_) => Vec::new(),
        };
        for site in &gone {
            self.unknown_worklist(site);
        }
        Ok(())
    }

    /// A site's worklist series, unknown (NaN).
    fn unknown_worklist(&self, site: &str) {
        for state in ["open", "claimed"] {
            let labels = [("site", site), ("state", state)];
            self.gauge(WORKLIST_ITEMS, &labels).set(f64::NAN);
            self.gauge(WORKLIST_OVERDUE, &labels).set(f64::NAN);
        }
        self.gauge(WORKLIST_OLDEST, &[("site", site)]).set(f64::NAN);
    }

    /// When the database does not answer, every site's worklist series is
    /// unknown until it does.
    fn worklists_unknown(&self) {
        let known: Vec<String> = self
            .sites
            .lock()
            .map(|known| known.iter().cloned().collect())
            .unwrap_or_default();
        for site in &known {
            self.unknown_worklist(site);
        }
    }

    /// Each model's score drift at each site over the last week, against its
    /// registered reference (labels: site and model name with version, both
    /// bounded); a pair measured before but not now is NaN and not drifted.
    async fn measure_drift(&self, pool: &Pool) -> Result<(), String> {
        let client = pool.get().await.map_err(|error| error.to_string())?;
        let drift = crate::analytics::current_drift(&client, None)
            .await
            .map_err(|error| error.to_string())?;
        let mut now = BTreeSet::new();
        for model in &drift {
            let labels = [
                ("site", model.site.as_str()),
                ("model", model.model.as_str()),
            ];
            self.gauge(SCORE_PSI, &labels).set(model.window.psi);
            self.gauge(SCORE_DRIFTED, &labels)
                .set(f64::from(u8::from(model.window.drifted)));
            now.insert((model.site.clone(), model.model.clone()));
        }
        let gone: Vec<(String, String)> = match self.models.lock() {
            Ok(mut known) => {
                let gone = known.difference(&now).cloned().collect();
                *known = now;
                gone
            }
            Err(_) => Vec::new(),
        };
        for (site, model) in &gone {
            let labels = [("site", site.as_str()), ("model", model.as_str())];
            self.gauge(SCORE_PSI, &labels).set(f64::NAN);
            self.gauge(SCORE_DRIFTED, &labels).set(0.0);
        }
        Ok(())
    }
}

/// `GET /metrics`.
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics;
    metrics.touch();
    let database_up = match metrics.count_worklists(&state.pool).await {
        Ok(()) => 1.0,
        Err(error) => {
            tracing::warn!(%error, "worklist sizes unavailable for /metrics");
            metrics.worklists_unknown();
            0.0
        }
    };
    metrics.gauge(DATABASE_UP, &[]).set(database_up);
    if let Err(error) = metrics.measure_drift(&state.pool).await {
        tracing::warn!(%error, "score drift unavailable for /metrics");
    }
    let mut out = metrics.handle.render();
    // What the process recorded through the metrics facade (dead letters, ...).
    out.push_str(&fxtriage_telemetry::metrics::render());
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The route template of `path`, or `other`.
pub fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "health", "live"] => "/health/live",
        ["", "health", "ready"] => "/health/ready",
        ["", "metrics"] => "/metrics",
        ["", "api", "v1", "sites", _, "worklist"] => "/api/v1/sites/{site}/worklist",
        ["", "api", "v1", "sites", _, "worklist", "next"] => "/api/v1/sites/{site}/worklist/next",
        ["", "api", "v1", "sites", _, "events"] => "/api/v1/sites/{site}/events",
        ["", "api", "v1", "sites", _, "studies", _] => "/api/v1/sites/{site}/studies/{study}",
        ["", "api", "v1", "sites", _, "studies", _, "claim"] => {
            "/api/v1/sites/{site}/studies/{study}/claim"
        }
        ["", "api", "v1", "sites", _, "studies", _, "release"] => {
            "/api/v1/sites/{site}/studies/{study}/release"
        }
        ["", "api", "v1", "sites", _, "studies", _, "report"] => {
            "/api/v1/sites/{site}/studies/{study}/report"
        }
        [
            "",
            "api",
            "v1",
            "sites",
            _,
            "studies",
            _,
            "instances",
            _,
            "overlay.png",
        ] => "/api/v1/sites/{site}/studies/{study}/instances/{sop}/overlay.png",
        _ => "other",
    }
}

/// Middleware around every route: counts and times the request, and logs it
/// (route template and status only: no path, no token, no patient data).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_template(request.uri().path());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.record_request(route, &method, status, took);
    tracing::debug!(
        route,
        method,
        status,
        millis = took.as_secs_f64() * 1000.0,
        "request answered"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporter writes what the hand-written writer wrote: the same names,
    /// labels in the same order, help and type lines, histogram buckets.
    #[test]
    fn requests_are_counted_with_their_latency_and_two_apis_never_mix() {
        let metrics = Metrics::default();
        let other = Metrics::default();
        metrics.record_request(
            "/api/v1/sites/{site}/worklist",
            "GET",
            200,
            Duration::from_millis(30),
        );
        metrics.record_request(
            "/api/v1/sites/{site}/worklist",
            "GET",
            200,
            Duration::from_millis(3),
        );
        let stream = metrics.sse_client_connected();
        metrics.claims_expired(2);
        let text = metrics.handle.render();
        for expected in [
            "# TYPE fxtriage_api_requests_total counter",
            "fxtriage_api_requests_total{route=\"/api/v1/sites/{site}/worklist\",method=\"GET\",status=\"200\"} 2",
            "# TYPE fxtriage_api_request_duration_seconds histogram",
            "fxtriage_api_request_duration_seconds_bucket{route=\"/api/v1/sites/{site}/worklist\",method=\"GET\",le=\"0.005\"} 1",
            "fxtriage_api_request_duration_seconds_bucket{route=\"/api/v1/sites/{site}/worklist\",method=\"GET\",le=\"0.05\"} 2",
            "fxtriage_api_request_duration_seconds_count{route=\"/api/v1/sites/{site}/worklist\",method=\"GET\"} 2",
            "fxtriage_api_event_streams 1",
            "fxtriage_api_claims_expired_total 2",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        drop(stream);
        assert!(
            metrics
                .handle
                .render()
                .contains("fxtriage_api_event_streams 0")
        );
        assert!(
            !other
                .handle
                .render()
                .contains("fxtriage_api_requests_total{"),
            "another API's recorder saw nothing"
        );
    }

    #[test]
    fn paths_are_labelled_by_template_and_nothing_else() {
        assert_eq!(
            route_template("/api/v1/sites/demo/studies/1.2.3/instances/1.2.3.4/overlay.png"),
            "/api/v1/sites/{site}/studies/{study}/instances/{sop}/overlay.png"
        );
        assert_eq!(
            route_template("/api/v1/sites/demo/worklist"),
            "/api/v1/sites/{site}/worklist"
        );
        assert_eq!(route_template("/api/v1/sites/demo/anything/else"), "other");
        assert_eq!(route_template("/"), "other");
    }

    #[test]
    fn the_text_format_has_counters_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.record_request("/metrics", "GET", 200, Duration::from_millis(20));
        metrics.record_request("/metrics", "GET", 200, Duration::from_millis(2));
        metrics.record_request("/metrics", "GET", 503, Duration::from_secs(20));
        let out = metrics.handle.render();
        assert!(out.contains(
            "fxtriage_api_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(out.contains(
            "fxtriage_api_request_duration_seconds_bucket{route=\"/metrics\",method=\"GET\",le=\"0.005\"} 1"
        ));
        assert!(out.contains(
            "fxtriage_api_request_duration_seconds_bucket{route=\"/metrics\",method=\"GET\",le=\"0.025\"} 2"
        ));
        assert!(out.contains(
            "fxtriage_api_request_duration_seconds_bucket{route=\"/metrics\",method=\"GET\",le=\"+Inf\"} 3"
        ));
        // Label values are escaped as the format requires.
        metrics
            .gauge(WORKLIST_ITEMS, &[("site", "a\"b\\c\nd"), ("state", "open")])
            .set(1.0);
        let out = metrics.handle.render();
        assert!(
            out.contains(r#"fxtriage_worklist_items{site="a\"b\\c\nd",state="open"} 1"#),
            "{out}"
        );
    }
}
