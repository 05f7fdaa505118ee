//! The ingest service: receives DICOM by DIMSE C-STORE ([`dimse`]), DICOMweb
//! STOW-RS ([`stow`]) and bulk import ([`import`]); validates it; quarantines what
//! it refuses; stores the original bytes and publishes `InstanceStored` for the
//! rest ([`accept`]).

pub mod accept;
pub mod dimse;
pub mod import;
mod intake;
pub mod quarantine;
mod sender;
pub mod sites;
pub mod stow;
mod urgency;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use fxtriage_clients::Clients;
use fxtriage_telemetry::health;
use tokio_util::sync::CancellationToken;

pub use accept::{IngestError, Ingestor, InstanceSource, Stored};
pub use sender::Sender;
pub use sites::{SiteConfig, SiteRegistry, Sites};

#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP: STOW-RS under `/dicomweb`, and `/health/live`, `/health/ready`.
    pub http_address: SocketAddr,
    /// HTTPS on `http_address` with this configuration
    /// (`fxtriage_telemetry::tls::https_config`); `None`: plain HTTP.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    /// Invalid STOW-RS tokens allowed per client address and token prefix.
    pub failed_auth: fxtriage_sites::ThrottleLimits,
    /// DIMSE C-STORE SCP.
    pub dimse_address: SocketAddr,
    pub dimse: dimse::DimseOptions,
    /// DIMSE C-STORE SCP over DICOM TLS (the secure transport profile; its
    /// port is 2762 by convention), with its configuration
    /// ([`dimse::server_config`]); `None`: no TLS listener.
    pub dimse_tls: Option<dimse::DimseTls>,
    /// The sites served; `None`: the site registry of the database of `clients`,
    /// followed as it changes.
    pub sites: Option<SiteRegistry>,
}

/// Serves C-STORE and STOW-RS until `shutdown` is cancelled, then stops accepting,
/// lets in-flight associations and requests finish, and returns. Stores into the
/// object store of `clients` and announces on its bus.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let database = clients.database("ingest")?.clone();
    let readiness = health::Readiness::new();
    // Ready only while what it stores into and announces on answers: during an
    // outage it refuses with a retryable status, and says so here. The database
    // is not watched: C-STORE works without it (the site registry is kept in
    // memory), and STOW-RS answers 503 with Retry-After itself when it cannot
    // check a token.
    let watcher = fxtriage_clients::watch_dependencies(
        &clients,
        fxtriage_clients::Watched {
            bus: true,
            store: true,
            database: false,
        },
        readiness.clone(),
        shutdown.clone(),
    );
    let ingestor = Ingestor::new(
        Arc::clone(clients.store("ingest")?),
        clients.bus,
        &clients.namespace,
    );
    let sites = match config.sites {
        Some(sites) => sites,
        None => SiteRegistry::load_and_follow(&database, &shutdown)
            .await
            .context("cannot read the site registry")?,
    };
    // Logged, not fatal, at start and at each change of the registry: one
    // site's setting must not keep every other site's images out.
    let _tls_settings = dimse::watch_tls_settings(
        sites.clone(),
        config.dimse_tls.as_ref().map(|tls| tls.verifies_clients),
        shutdown.clone(),
    );
    let stow_limits = stow::StowLimits {
        failed_auth: config.failed_auth,
        ..stow::StowLimits::default()
    };
    let router = stow::router_with_limits(ingestor.clone(), sites.clone(), database, stow_limits)
        .merge(health::router(readiness.clone()));
    let (http_bound, http_task) = health::serve_with_tls(
        config.http_address,
        router,
        shutdown.clone(),
        config.http_tls.clone(),
    )
    .await
    .with_context(|| format!("cannot listen for HTTP on {}", config.http_address))?;
    let dimse_listener = tokio::net::TcpListener::bind(config.dimse_address)
        .await
        .with_context(|| format!("cannot listen for DIMSE on {}", config.dimse_address))?;
    let dimse_bound = dimse_listener.local_addr()?;
    // Both C-STORE listeners draw on one set of limits: the associations,
    // the memory budget and each site's count.
    let dimse_limits = dimse::DimseLimits::new(&config.dimse);
    let tls_task = match config.dimse_tls {
        None => None,
        Some(dimse::DimseTls {
            address,
            config: tls,
            ..
        }) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for DICOM TLS on {address}"))?;
            tracing::info!(dimse_tls = %listener.local_addr()?, "ingest listening for DICOM TLS");
            Some(tokio::spawn(dimse::serve_sharing(
                listener,
                ingestor.clone(),
                sites.clone(),
                dimse::DimseOptions {
                    tls: Some(tls),
                    ..config.dimse.clone()
                },
                dimse_limits.clone(),
                shutdown.clone(),
            )))
        }
    };
    let dimse_task = tokio::spawn(dimse::serve_sharing(
        dimse_listener,
        ingestor,
        sites,
        config.dimse,
        dimse_limits,
        shutdown.clone(),
    ));
    readiness.set_ready(true);
    tracing::info!(http = %http_bound, dimse = %dimse_bound, "ingest listening");

    shutdown.cancelled().await;
    readiness.set_ready(false);
    if let Some(tls_task) = tls_task {
        tls_task
            .await
            .context("the DICOM TLS server task failed")??;
    }
    let dimse_outcome = dimse_task.await.context("the DIMSE server task failed")?;
    let http_outcome = http_task.await.context("the HTTP server task failed")?;
    watcher.await.context("the dependency watcher failed")?;
    dimse_outcome?;
    http_outcome?;
    tracing::info!("ingest stopped");
    Ok(())
}
