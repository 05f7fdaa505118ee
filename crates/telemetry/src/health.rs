//! `/health/live` and `/health/ready` for orchestrators and load balancers, and
//! `/metrics` for Prometheus.
//! Live: the process is running and serving. Ready: its start-up finished and its
//! dependencies answered, so it should receive work.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Whether a service should receive work: its own state (set once it can take
/// work, cleared while draining on shutdown) and the state of each dependency it
/// watches (the broker, the object store, the database). Ready only when it has
/// started and every watched dependency answers; `/health/ready` names the ones
/// that do not.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Debug, Default)]
struct ReadinessState {
    started: AtomicBool,
    /// Dependency name -> why it is unavailable; absent when it answers.
    unavailable: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// The service's own state: it can take work (or no longer can).
    pub fn set_ready(&self, ready: bool) {
        self.0.started.store(ready, Ordering::SeqCst);
    }

    /// Records whether `dependency` answers: `Err` with why when it does not.
    pub fn set_dependency(&self, dependency: &'static str, state: Result<(), String>) {
        let mut unavailable = self
            .0
            .unavailable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match state {
            Ok(()) => {
                unavailable.remove(dependency);
            }
            Err(why) => {
                unavailable.insert(dependency, why);
            }
        }
    }

    /// The dependencies that do not answer, with why.
    pub fn unavailable(&self) -> Vec<(&'static str, String)> {
        self.0
            .unavailable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, why)| (*name, why.clone()))
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.0.started.load(Ordering::SeqCst) && self.unavailable().is_empty()
    }
}

/// The health routes and `/metrics`, to be served alone or merged into a
/// service's own router.
pub fn router(readiness: Readiness) -> Router {
    probes(readiness).route("/metrics", get(metrics))
}

/// `/health/live` and `/health/ready` only, for a service that serves
/// `/metrics` itself (with [`crate::metrics::render`] in it).
pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route("/health/live", get(|| async { (StatusCode::OK, "live\n") }))
        .route("/health/ready", get(ready))
        .with_state(readiness)
}

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        crate::metrics::render(),
    )
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    if readiness.is_ready() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = "not ready\n".to_owned();
    if !readiness.0.started.load(Ordering::SeqCst) {
        body.push_str("starting or draining\n");
    }
    for (dependency, why) in readiness.unavailable() {
        body.push_str(&format!("{dependency} unavailable: {why}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Binds `address`, returning the bound address (useful with port 0) and a task
/// that serves `router` until `shutdown` is cancelled.
pub async fn serve(
    address: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    serve_with_tls(address, router, shutdown, None).await
}

/// [`serve`], over HTTPS when `tls` is given (see [`crate::tls::https_config`]).
pub async fn serve_with_tls(
    address: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(serve_listener(listener, router, shutdown, tls));
    Ok((bound, task))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets the
/// requests in progress finish: plain HTTP with axum, or HTTPS (rustls, by
/// axum-server, since axum's own server has no TLS) when `tls` is given.
/// Either way each request knows its peer's address (`ConnectInfo<SocketAddr>`:
/// STOW-RS records who sent, and failed authentication is throttled by it).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        return axum::serve(listener, service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    };
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    let stop = tokio::spawn(async move {
        shutdown.cancelled().await;
        // As axum's graceful shutdown: no new connections, the requests in
        // progress finish (long-lived ones end with the services' own drain).
        draining.graceful_shutdown(Some(HTTPS_DRAIN_TIMEOUT));
    });
    let served = axum_server::from_tcp_rustls(
        listener.into_std()?,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handle(handle)
    .serve(service)
    .await;
    stop.abort();
    served
}

/// How long HTTPS connections may take to finish once shutdown begins.
const HTTPS_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the health routes of a service that has nothing else to serve yet:
/// ready as soon as it listens, not ready while draining, stopped on `shutdown`.
pub async fn serve_until_shutdown(
    service: &str,
    address: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let readiness = Readiness::new();
    let (bound, task) = serve(address, router(readiness.clone()), shutdown.clone()).await?;
    readiness.set_ready(true);
    tracing::info!(service, %bound, "health endpoints listening");
    shutdown.cancelled().await;
    readiness.set_ready(false);
    let served = task.await.map_err(std::io::Error::other)?;
    tracing::info!(service, "stopped");
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_follows_the_flag_and_live_is_always_ok() {
        let readiness = Readiness::new();
        let shutdown = CancellationToken::new();
        let (address, task) = serve(
            "127.0.0.1:0".parse().expect("addr"),
            router(readiness.clone()),
            shutdown.clone(),
        )
        .await
        .expect("bind");
        let client = reqwest::Client::new();
        let status = |path: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://{address}{path}"))
                    .send()
                    .await
                    .expect("request")
                    .status()
            }
        };
        assert_eq!(status("/health/live").await, 200);
        assert_eq!(status("/health/ready").await, 503);
        readiness.set_ready(true);
        assert_eq!(status("/health/ready").await, 200);
        // A dependency that does not answer makes it unready, and is named.
        readiness.set_dependency("object store", Err("connection refused".into()));
        assert_eq!(status("/health/ready").await, 503);
        let body = client
            .get(format!("http://{address}/health/ready"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains("object store unavailable: connection refused"),
            "{body}"
        );
        readiness.set_dependency("bus", Ok(()));
        assert_eq!(status("/health/ready").await, 503);
        readiness.set_dependency("object store", Ok(()));
        assert_eq!(status("/health/ready").await, 200);
        shutdown.cancel();
        task.await.expect("join").expect("serve ends cleanly");
    }
}
