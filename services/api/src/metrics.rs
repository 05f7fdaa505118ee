//! `/metrics` in the Prometheus text format (version 0.0.4), written by hand:
//! requests by route template, method and status with a latency histogram, open
//! event streams, expired claims, and each site's worklist size, counted from
//! PostgreSQL when scraped.
//!
//! Routes are labelled by their template (`/api/v1/sites/{site}/studies/{study}`),
//! never by the path, so no UID reaches a label and the label set stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;

use crate::state::AppState;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct Latency {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Debug, Default)]
struct Requests {
    /// (route, method, status) -> count.
    answered: BTreeMap<(&'static str, String, u16), u64>,
    /// (route, method) -> latency.
    latency: BTreeMap<(&'static str, String), Latency>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<Requests>,
    sse_clients: Arc<AtomicI64>,
    claims_expired: AtomicU64,
}

/// Counts an open event stream until dropped.
#[derive(Debug)]
pub struct SseClient(Arc<AtomicI64>);

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn record_request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let Ok(mut requests) = self.requests.lock() else {
            return;
        };
        *requests
            .answered
            .entry((route, method.to_owned(), status))
            .or_default() += 1;
        let latency = requests
            .latency
            .entry((route, method.to_owned()))
            .or_default();
        let seconds = took.as_secs_f64();
        for (bucket, bound) in latency.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        latency.count += 1;
        latency.sum_seconds += seconds;
    }

    pub fn sse_client_connected(&self) -> SseClient {
        self.sse_clients.fetch_add(1, Ordering::Relaxed);
        SseClient(Arc::clone(&self.sse_clients))
    }

    pub fn claims_expired(&self, count: usize) {
        self.claims_expired
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// The process's own series.
    pub fn render(&self, out: &mut String) {
        if let Ok(requests) = self.requests.lock() {
            header(
                out,
                "fxtriage_api_requests_total",
                "counter",
                "HTTP requests answered, by route template, method and status.",
            );
            for ((route, method, status), count) in &requests.answered {
                let _ = writeln!(
                    out,
                    "fxtriage_api_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                    escape(route),
                    escape(method)
                );
            }
            header(
                out,
                "fxtriage_api_request_duration_seconds",
                "histogram",
                "Time to the response head, by route template and method.",
            );
            for ((route, method), latency) in &requests.latency {
                let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
                for (count, bound) in latency.buckets.iter().zip(LATENCY_BUCKETS) {
                    let _ = writeln!(
                        out,
                        "fxtriage_api_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "fxtriage_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    latency.count
                );
                let _ = writeln!(
                    out,
                    "fxtriage_api_request_duration_seconds_sum{{{labels}}} {}",
                    latency.sum_seconds
                );
                let _ = writeln!(
                    out,
                    "fxtriage_api_request_duration_seconds_count{{{labels}}} {}",
                    latency.count
                );
            }
        }
        header(
            out,
            "fxtriage_api_event_streams",
            "gauge",
            "Open Server-Sent Event streams.",
        );
        let _ = writeln!(
            out,
            "fxtriage_api_event_streams {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
        header(
            out,
            "fxtriage_api_claims_expired_total",
            "counter",
            "Claims this process ended because they expired.",
        );
        let _ = writeln!(
            out,
            "fxtriage_api_claims_expired_total {}",
            self.claims_expired.load(Ordering::Relaxed)
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Each site's open and claimed items (expired claims count as open) and how
/// many of them are past their deadline.
async fn render_worklist_sizes(pool: &Pool, out: &mut String) -> Result<(), String> {
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
    let mut sizes: BTreeMap<(String, &'static str), (i64, i64)> = BTreeMap::new();
    // The longest any open item of each site has waited since it arrived.
    let mut oldest: BTreeMap<String, f64> = BTreeMap::new();
    for site in &sites {
        let site: String = site.get(0);
        for state in ["open", "claimed"] {
            sizes.insert((site.clone(), state), (0, 0));
        }
        oldest.insert(site, 0.0);
    }
    for row in &counts {
        let site: String = row.get("site_id");
        let state: &str = row.get("effective_state");
        let state = if state == "open" { "open" } else { "claimed" };
        if state == "open" {
            let waited: Option<f64> = row.get("oldest");
            oldest.insert(site.clone(), waited.unwrap_or(0.0).max(0.0));
        }
        sizes.insert((site, state), (row.get("items"), row.get("overdue")));
    }
    header(
        out,
        "fxtriage_worklist_items",
        "gauge",
        "Worklist items by site and state (open, claimed).",
    );
    for ((site, state), (items, _)) in &sizes {
        let _ = writeln!(
            out,
            "fxtriage_worklist_items{{site=\"{}\",state=\"{state}\"}} {items}",
            escape(site)
        );
    }
    header(
        out,
        "fxtriage_worklist_overdue_items",
        "gauge",
        "Open or claimed worklist items past their deadline, by site and state.",
    );
    for ((site, state), (_, overdue)) in &sizes {
        let _ = writeln!(
            out,
            "fxtriage_worklist_overdue_items{{site=\"{}\",state=\"{state}\"}} {overdue}",
            escape(site)
        );
    }
    header(
        out,
        "fxtriage_worklist_oldest_waiting_seconds",
        "gauge",
        "How long the open item that arrived first has waited, by site (0 when none is open).",
    );
    for (site, waited) in &oldest {
        let _ = writeln!(
            out,
            "fxtriage_worklist_oldest_waiting_seconds{{site=\"{}\"}} {waited}",
            escape(site)
        );
    }
    Ok(())
}

/// Each model's score drift at each site over the last week, against its
/// registered reference (labels: site and model name with version, both bounded).
async fn render_drift(pool: &Pool, out: &mut String) -> Result<(), String> {
    let client = pool.get().await.map_err(|error| error.to_string())?;
    let drift = crate::analytics::current_drift(&client, None)
        .await
        .map_err(|error| error.to_string())?;
    header(
        out,
        "fxtriage_model_score_psi",
        "gauge",
        "Population stability index of each model's scores at each site over the last 7 days against the model's registered reference.",
    );
    for model in &drift {
        let _ = writeln!(
            out,
            "fxtriage_model_score_psi{{site=\"{}\",model=\"{}\"}} {}",
            escape(&model.site),
            escape(&model.model),
            model.window.psi
        );
    }
    header(
        out,
        "fxtriage_model_score_drifted",
        "gauge",
        "1 when that index is above 0.25 with at least 100 images in the window, else 0.",
    );
    for model in &drift {
        let _ = writeln!(
            out,
            "fxtriage_model_score_drifted{{site=\"{}\",model=\"{}\"}} {}",
            escape(&model.site),
            escape(&model.model),
            u8::from(model.window.drifted)
        );
    }
    Ok(())
}

/// `GET /metrics`.
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics.render(&mut out);
    let database_up = match render_worklist_sizes(&state.pool, &mut out).await {
        Ok(()) => 1,
        Err(error) => {
            tracing::warn!(%error, "worklist sizes unavailable for /metrics");
            0
        }
    };
    header(
        &mut out,
        "fxtriage_api_database_up",
        "gauge",
        "Whether the last scrape could read the worklist sizes from PostgreSQL.",
    );
    let _ = writeln!(out, "fxtriage_api_database_up {database_up}");
    if let Err(error) = render_drift(&state.pool, &mut out).await {
        tracing::warn!(%error, "score drift unavailable for /metrics");
    }
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
        let mut out = String::new();
        metrics.render(&mut out);
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
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
