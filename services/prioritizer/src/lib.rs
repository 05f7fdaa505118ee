//! The prioritizer service: keeps every site's worklist in PostgreSQL from the
//! stream of stored instances and findings.
//!
//! - [`incoming`]: decoding and checking the consumed messages;
//! - [`aggregate`]: a study's values from its images (probability, AI result, deadline);
//! - [`policy`]: the deadline policy (each site's is in the site registry);
//! - [`apply`]: one message, one transaction, exactly once in effect;
//! - [`worklist_store`]: the SQL;
//! - [`outbox`]: worklist changes to `fxtriage.worklist.v1`, at least once;
//! - [`handler`] and [`consumer`]: the consumer loop, retries and dead letters.

pub mod aggregate;
/// The deadline policy lives beside the other domain types.
pub use fxtriage_core::policy;
/// The worklist's SQL, records and states (crates/worklist), as the prioritizer uses them.
pub use fxtriage_worklist::{error, outbox, store as worklist_store, study};
pub mod apply;
pub mod consumer;
pub mod handler;
pub mod incoming;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fxtriage_clients::Clients;
use fxtriage_sites::SiteRegistry;
use fxtriage_telemetry::health;
use tokio_util::sync::CancellationToken;

pub use apply::{Applied, apply_finding, apply_instance};
pub use consumer::{ConsumerOptions, run_consumer};
pub use error::{ErrorKind, StoreError};
pub use handler::{Handled, Prioritizer};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served. Ready means: the schema
    /// is current, the consumer joined its group, and the database answers.
    pub health_address: SocketAddr,
    /// The sites and their policies; `None`: the site registry of the database
    /// of `clients`, followed as it changes.
    pub sites: Option<SiteRegistry>,
    pub consumer: ConsumerOptions,
    /// How often changes left in the outbox (after a bus failure) are retried.
    pub outbox_interval: Duration,
}

impl Config {
    pub fn new(health_address: SocketAddr) -> Self {
        Self {
            health_address,
            sites: None,
            consumer: ConsumerOptions::default(),
            outbox_interval: Duration::from_secs(2),
        }
    }
}

/// Runs until `shutdown` is cancelled (or the bus closes), then drains and
/// returns. Uses the bus and the (migrated) database of `clients`.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = clients.database("the prioritizer")?.clone();
    // Stops this service's tasks also when the consumer ends on its own.
    let stop = shutdown.child_token();
    let readiness = health::Readiness::new();
    let watcher = fxtriage_clients::watch_dependencies(
        &clients,
        fxtriage_clients::Watched {
            bus: true,
            store: false,
            database: true,
        },
        readiness.clone(),
        stop.clone(),
    );
    let (bound, health_task) = health::serve(
        config.health_address,
        health::router(readiness.clone()),
        stop.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", config.health_address))?;
    tracing::info!(%bound, "prioritizer health endpoints listening");
    let sites = match config.sites {
        Some(sites) => sites,
        None => SiteRegistry::load_and_follow(&pool, &stop)
            .await
            .context("cannot read the site registry")?,
    };

    // Changes a crash left between commit and produce go out before anything new.
    let relay = tokio::spawn(outbox::run_relay(
        pool.clone(),
        Arc::clone(&clients.bus),
        clients.namespace.worklist_topic(),
        config.outbox_interval,
        stop.clone(),
    ));
    let prioritizer = Prioritizer::new(clients.bus, pool, sites, clients.namespace);
    let consumed = run_consumer(prioritizer, config.consumer, readiness, stop.clone()).await;
    stop.cancel();
    let watched = watcher.await.context("the dependency watcher failed");
    let relayed = relay.await.context("the outbox relay task failed");
    let served = health_task.await.context("the health server task failed")?;
    watched?;
    relayed?;
    consumed.context("the prioritizer consumer failed")?;
    served.context("the health server failed")?;
    tracing::info!("prioritizer stopped");
    Ok(())
}
