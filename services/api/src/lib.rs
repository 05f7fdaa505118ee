//! The api service: each site's worklist over HTTP, as JSON.
//!
//! Routes (every `/api/v1` route needs a bearer token whose site or group covers
//! it; see [`auth`]):
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /api/v1/sites/{site}/worklist` | viewer | the worklist in reading order, filtered, paged ([`worklist`]) |
//! | `POST /api/v1/sites/{site}/worklist/next` | reader | claim the next open study (204 when none) |
//! | `GET /api/v1/sites/{site}/studies/{study}` | viewer | the study, its images, findings and detections |
//! | `POST /api/v1/sites/{site}/studies/{study}/claim` | reader | claim it (409 when someone else holds it) |
//! | `POST /api/v1/sites/{site}/studies/{study}/release` | reader | end the own claim (admin: anyone's) |
//! | `POST /api/v1/sites/{site}/studies/{study}/report` | reader | close it and record the turnaround (and, optionally, whether there is a fracture) |
//! | `GET /api/v1/sites/{site}/analytics` | viewer | turnaround and queue figures over a period, grouped ([`analytics`]) |
//! | `GET /api/v1/sites/{site}/monitoring` | viewer | the AI's accuracy against the readers' outcomes, per model ([`analytics`]) |
//! | `GET /api/v1/sites/{site}/drift-alerts` | admin | each model's score drift over the last 7 days against its reference: the admins' banner |
//! | `GET /api/v1/sites/{site}/discrepancies`, `POST .../studies/{study}/discrepancy-review` | reader | reported "no fracture" where the AI suspected one: the second look ([`discrepancies`]) |
//! | `GET /api/v1/sites/{site}/studies/{study}/instances/{sop}/overlay.png` | viewer | the image with its boxes |
//! | `GET /api/v1/sites/{site}/events` | viewer | worklist changes as Server-Sent Events ([`events`]) |
//! | `GET /api/v1/groups/{group}/...` | viewer, reader | a reading network's merged worklist ([`groups`]) |
//! | `GET /api/v1/groups/{group}/analytics` | viewer | the network's turnaround figures over its sites ([`analytics`]) |
//! | `GET /api/v1/sites/{site}/deliveries`, `POST .../deliveries/{id}/retry` | admin | the site's result deliveries ([`deliveries`]) |
//! | `/api/v1/admin/...` | deployment admin | the site registry and the tokens ([`admin`]) |
//! | `GET /health/live`, `/health/ready`, `/metrics` | none | probes and Prometheus metrics |
//!
//! Errors are JSON `{"error", "message"}` ([`error`]); every read of a study and
//! every claim, release and report is in the audit log ([`audit`]). Claims expire
//! ([`claims`]); tokens are created by `fxtriage tokens create` or the admin API
//! (`fxtriage_sites::credentials`).

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod claims;
pub mod deliveries;
pub mod discrepancies;
pub mod error;
pub mod events;
pub mod fhir_reports;
pub mod groups;
pub mod metrics;
pub mod oidc;
pub mod overlay;
pub mod reports;
pub mod sign_in;
pub mod state;
pub mod study_detail;
pub mod study_path;
pub mod views;
pub mod web;
pub mod worklist;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use deadpool_postgres::Pool;
use fxtriage_clients::Clients;
use fxtriage_telemetry::health::{self, Readiness};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::events::{EventHub, FanOut};
use crate::metrics::Metrics;
use crate::state::AppState;

pub use fxtriage_sites::credentials::{
    ApiToken, CreatedToken, Credential, Role, Scope, TokenError, create_token, revoke_token,
};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the API, `/health/*` and `/metrics` are served. Loopback by default.
    pub http_address: SocketAddr,
    /// How long a claim lasts unless renewed, released or reported.
    pub claim_ttl: Duration,
    /// How often expired claims are ended in the database.
    pub claim_sweep_interval: Duration,
    /// Overlays rendered at once (each decodes a whole radiograph).
    pub max_concurrent_overlays: usize,
    /// The sites and groups; `None`: the site registry of the database of
    /// `clients`, followed as it changes.
    pub sites: Option<fxtriage_sites::SiteRegistry>,
    /// Invalid tokens allowed per client address and per token prefix before
    /// that address or prefix is answered 429 for the rest of the window.
    pub failed_auth: fxtriage_sites::ThrottleLimits,
    /// HTTPS with this configuration (`fxtriage_telemetry::tls::https_config`);
    /// `None`: plain HTTP (behind a TLS-terminating proxy, or on loopback).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Single sign-on: people's tokens from this identity provider (see
    /// [`oidc`]); `None`: service tokens only.
    pub oidc: Option<oidc::OidcConfig>,
}

impl Config {
    pub fn new(http_address: SocketAddr) -> Self {
        Self {
            http_address,
            claim_ttl: Duration::from_secs(15 * 60),
            claim_sweep_interval: Duration::from_secs(30),
            max_concurrent_overlays: 2,
            sites: None,
            failed_auth: fxtriage_sites::ThrottleLimits::default(),
            tls: None,
            oidc: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

/// Serves on `config.http_address` until `shutdown` is cancelled, then drains and
/// returns. Uses the (migrated) database, the object store and the bus of `clients`.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http_address)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_address))?;
    serve(listener, config, clients, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = clients.database("the API")?.clone();
    anyhow::ensure!(
        config.claim_ttl >= Duration::from_secs(1),
        "the claim expiry must be at least one second"
    );
    let bound = listener.local_addr()?;
    // Stops the helpers also when the server ends on its own.
    let stop = shutdown.child_token();
    let fan_out = FanOut::subscribe(clients.bus.as_ref(), &clients.namespace)
        .await
        .context("cannot subscribe to worklist changes")?;
    let sites = match config.sites.clone() {
        Some(sites) => sites,
        None => fxtriage_sites::SiteRegistry::load_and_follow(&pool, &stop)
            .await
            .context("cannot read the site registry")?,
    };
    let state = AppState {
        sites,
        pool,
        store: Arc::clone(clients.store("the API")?),
        bus: clients.bus,
        namespace: clients.namespace,
        overlay_permits: Arc::new(Semaphore::new(config.max_concurrent_overlays.max(1))),
        auth_throttle: Arc::new(fxtriage_sites::FailedAuthThrottle::new(config.failed_auth)),
        oidc: config
            .oidc
            .clone()
            .map(|oidc| Arc::new(oidc::OidcVerifier::new(oidc))),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::default()),
        events: EventHub::new(),
        shutdown: stop.clone(),
    };
    let readiness = Readiness::new();
    let helpers = [
        tokio::spawn(fan_out.run(state.events.clone(), stop.clone())),
        tokio::spawn(claims::run_sweeper(
            state.clone(),
            state.config.claim_sweep_interval,
            stop.clone(),
        )),
        tokio::spawn(watch_database(
            state.pool.clone(),
            readiness.clone(),
            stop.clone(),
        )),
    ];
    tracing::info!(%bound, "api listening");
    // HTTPS when configured; the client's address is kept for the
    // failed-authentication throttle either way.
    let tls = state.config.tls.clone();
    let served =
        health::serve_listener(listener, router(state, readiness), stop.clone(), tls).await;
    stop.cancel();
    for helper in helpers {
        helper.await.context("an api task failed")?;
    }
    served.context("the HTTP server failed")?;
    tracing::info!("api stopped");
    Ok(())
}

/// Every route of the service.
pub fn router(state: AppState, readiness: Readiness) -> Router {
    let site_routes = Router::new()
        .route("/worklist", get(worklist::get_worklist))
        .route("/worklist/next", post(claims::post_claim_next))
        .route("/events", get(events::get_events))
        .route("/studies/{study}", get(study_detail::get_study))
        .route("/studies/{study}/claim", post(claims::post_claim))
        .route("/studies/{study}/release", post(claims::post_release))
        .route("/studies/{study}/report", post(reports::post_report))
        .route(
            "/fhir/DiagnosticReport",
            post(fhir_reports::post_diagnostic_report).layer(axum::extract::DefaultBodyLimit::max(
                fhir_reports::MAX_BODY_BYTES,
            )),
        )
        .route(
            "/studies/{study}/discrepancy-review",
            post(discrepancies::post_review),
        )
        .route("/discrepancies", get(discrepancies::get_discrepancies))
        .route("/analytics", get(analytics::get_analytics))
        .route("/analytics/plots", get(analytics::get_plots))
        .route("/monitoring", get(analytics::get_monitoring))
        .route("/drift-alerts", get(analytics::get_drift_alerts))
        .route(
            "/studies/{study}/instances/{sop}/overlay.png",
            get(overlay::get_overlay),
        )
        .route("/deliveries", get(deliveries::get_deliveries))
        .route("/deliveries/{delivery}/retry", post(deliveries::post_retry))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let group_routes = Router::new()
        .route("/", get(groups::get_group))
        .route("/worklist", get(groups::get_group_worklist))
        .route("/worklist/next", post(groups::post_group_claim_next))
        .route("/analytics", get(analytics::get_group_analytics))
        .route("/analytics/plots", get(analytics::get_group_plots))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate_group));
    let admin_routes = Router::new()
        .route("/sites", get(admin::get_sites))
        .route(
            "/sites/apply",
            // The sites file's own bound, not axum's 2 MiB default.
            post(admin::post_apply).layer(axum::extract::DefaultBodyLimit::max(
                fxtriage_sites::file::MAX_FILE_BYTES,
            )),
        )
        .route("/sites/{site}", get(admin::get_site))
        .route("/tokens", get(admin::get_tokens).post(admin::post_token))
        .route(
            "/tokens/{token_id}",
            axum::routing::delete(admin::delete_token),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate_admin));
    Router::new()
        .nest("/api/v1/sites/{site}", site_routes)
        .nest("/api/v1/groups/{group}", group_routes)
        .nest("/api/v1/admin", admin_routes)
        .route("/api/v1/auth/config", get(sign_in::get_config))
        .route(
            "/api/v1/auth/token",
            post(sign_in::post_token).layer(axum::extract::DefaultBodyLimit::max(32 * 1024)),
        )
        .route("/metrics", get(metrics::get_metrics))
        .with_state(state.clone())
        .merge(health::probes(readiness))
        .merge(web::router())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(state, metrics::observe))
}

/// Ready while PostgreSQL answers; checked every few seconds.
async fn watch_database(pool: Pool, readiness: Readiness, stop: CancellationToken) {
    loop {
        let answered = tokio::time::timeout(Duration::from_secs(3), async {
            let client = pool.get().await.ok()?;
            client.query_one("SELECT 1", &[]).await.ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        if answered != readiness.is_ready() {
            if answered {
                tracing::info!("api ready");
            } else {
                tracing::warn!("PostgreSQL does not answer; api not ready");
            }
        }
        readiness.set_ready(answered);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    readiness.set_ready(false);
}
