//! The prioritizer service: keeps every site's worklist in PostgreSQL from the
//! stream of stored instances and findings.
//!
//! - [`incoming`]: decoding and checking the consumed messages;
//! - [`aggregate`]: a study's values from its images (probability, AI result, deadline);
//! - [`policy`] and [`policy_book`]: the deadline policy and its per-site configuration;
//! - [`apply`]: one message, one transaction, exactly once in effect;
//! - [`worklist_store`]: the SQL;
//! - [`outbox`]: worklist changes to `fxtriage.worklist.v1`, at least once;
//! - [`handler`] and [`consumer`]: the consumer loop, retries and dead letters;
//! - [`sites`]: registering sites.

pub mod aggregate;
pub mod apply;
pub mod consumer;
pub mod error;
pub mod handler;
pub mod incoming;
pub mod outbox;
pub mod policy;
pub mod policy_book;
pub mod sites;
pub mod study;
pub mod worklist_store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fxtriage_bus::Bus;
use fxtriage_db::{DbConfig, DbError, DbPool};
use fxtriage_proto::Namespace;
use fxtriage_telemetry::health;
use tokio_util::sync::CancellationToken;

pub use apply::{Applied, apply_finding, apply_instance};
pub use consumer::{ConsumerOptions, run_consumer};
pub use error::{ErrorKind, StoreError};
pub use handler::{Handled, Prioritizer};
pub use policy_book::{PolicyBook, PolicyBookError};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served. Ready means: the schema
    /// is current, the consumer joined its group, and the database answers.
    pub health_address: SocketAddr,
    pub database: DbConfig,
    pub policies: PolicyBook,
    pub consumer: ConsumerOptions,
    /// Partitions of the topics the prioritizer creates when they are missing.
    pub topic_partitions: u32,
    /// How often changes left in the outbox (after a bus failure) are retried.
    pub outbox_interval: Duration,
    /// The deployment namespace: topic and consumer group names.
    pub namespace: Namespace,
}

impl Config {
    pub fn new(health_address: SocketAddr, database: DbConfig) -> Self {
        Self {
            health_address,
            database,
            policies: PolicyBook::default(),
            consumer: ConsumerOptions::default(),
            topic_partitions: 8,
            outbox_interval: Duration::from_secs(2),
            namespace: Namespace::none(),
        }
    }
}

/// Runs until `shutdown` is cancelled (or the bus closes), then drains and returns.
pub async fn run(
    config: Config,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Stops this service's tasks also when the consumer ends on its own.
    let stop = shutdown.child_token();
    let readiness = health::Readiness::new();
    let (bound, health_task) = health::serve(
        config.health_address,
        health::router(readiness.clone()),
        stop.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", config.health_address))?;
    tracing::info!(%bound, "prioritizer health endpoints listening");

    let outcome = serve(config, bus, readiness, stop.clone()).await;
    stop.cancel();
    let served = health_task.await.context("the health server task failed")?;
    outcome?;
    served.context("the health server failed")?;
    tracing::info!("prioritizer stopped");
    Ok(())
}

async fn serve(
    config: Config,
    bus: Arc<dyn Bus>,
    readiness: health::Readiness,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(pool) = migrated_pool(&config.database, &stop).await? else {
        return Ok(());
    };
    for topic in config.namespace.topics() {
        bus.ensure_topic(&topic, config.topic_partitions)
            .await
            .with_context(|| format!("cannot create topic {topic}"))?;
    }
    // Changes a crash left between commit and produce go out before anything new.
    let relay = tokio::spawn(outbox::run_relay(
        pool.clone(),
        Arc::clone(&bus),
        config.namespace.worklist_topic(),
        config.outbox_interval,
        stop.clone(),
    ));
    let prioritizer = Prioritizer::new(bus, pool, Arc::new(config.policies), config.namespace);
    let consumed = run_consumer(prioritizer, config.consumer, readiness, stop.clone()).await;
    stop.cancel();
    relay.await.context("the outbox relay task failed")?;
    consumed.context("the prioritizer consumer failed")
}

/// Applies pending migrations and builds the pool, waiting (not ready) while
/// PostgreSQL is unreachable; `None` if `stop` came first.
async fn migrated_pool(
    database: &DbConfig,
    stop: &CancellationToken,
) -> anyhow::Result<Option<DbPool>> {
    let mut delay = Duration::from_millis(200);
    loop {
        match fxtriage_db::migrate(database).await {
            Ok(report) => {
                tracing::info!(version = ?report.current_version, database = database.database(), "schema is current");
                return Ok(Some(database.pool()?));
            }
            Err(error @ DbError::Connect { .. }) => {
                tracing::warn!(%error, "PostgreSQL is unreachable; retrying");
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
