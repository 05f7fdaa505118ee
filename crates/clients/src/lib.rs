//! The clients of a service: what it talks to, built once by the binary (or a
//! test) and handed to every service's `run(config, clients, shutdown)`. In
//! `fxtriage standalone` every service shares one set; in the distributed mode
//! each process builds its own from its flags.
//!
//! A service takes the clients it needs and ignores the rest; a service that
//! needs the database when none was given fails at start with [`MissingClient`].

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_bus::{Bus, BusError};
use fxtriage_objstore::ObjectStore;
use fxtriage_proto::Namespace;
use fxtriage_telemetry::health::Readiness;
use tokio_util::sync::CancellationToken;

/// What services talk to.
#[derive(Debug, Clone)]
pub struct Clients {
    /// The message bus (Kafka, or in-process in standalone).
    pub bus: Arc<dyn Bus>,
    /// Where the bus's topic and group names come from.
    pub namespace: Namespace,
    /// The object store (S3, or a local directory); absent for a service that
    /// keeps no objects.
    pub store: Option<Arc<dyn ObjectStore>>,
    /// PostgreSQL, migrated; absent for a service that does not use it.
    pub database: Option<Pool>,
}

/// A service was started without a client it needs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} needs {client} ({hint})")]
pub struct MissingClient {
    pub service: &'static str,
    pub client: &'static str,
    pub hint: &'static str,
}

impl Clients {
    /// The object store, or why `service` cannot start without one.
    pub fn store(&self, service: &'static str) -> Result<&Arc<dyn ObjectStore>, MissingClient> {
        self.store.as_ref().ok_or(MissingClient {
            service,
            client: "an object store",
            hint: "give --s3-bucket (S3) or --store-dir (a local directory)",
        })
    }

    /// The database pool, or why `service` cannot start without one.
    pub fn database(&self, service: &'static str) -> Result<&Pool, MissingClient> {
        self.database.as_ref().ok_or(MissingClient {
            service,
            client: "a PostgreSQL database",
            hint: "give --database-url or FXTRIAGE_DATABASE_URL",
        })
    }
}

/// Creates every topic of `namespace` (each with its dead-letter twin) that is
/// missing: the one place topics are created, at start-up, before any service
/// produces or subscribes.
pub async fn ensure_topics(
    bus: &dyn Bus,
    namespace: &Namespace,
    partitions: u32,
) -> Result<(), BusError> {
    for topic in namespace.topics() {
        bus.ensure_topic(&topic, partitions).await?;
    }
    Ok(())
}

/// The dependencies a service needs to do its work, watched for readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watched {
    pub bus: bool,
    pub store: bool,
    pub database: bool,
}

/// How often each watched dependency is checked, and how long a check may take.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Until `stop`: checks each `watched` dependency every [`WATCH_INTERVAL`] and
/// records the outcome in `readiness` (so `/health/ready` is 503 and names the
/// dependency while it does not answer) and in the `fxtriage_dependency_up`
/// gauge. A dependency that comes back makes the service ready again without a
/// restart. Changes are logged once each, not at every check.
pub fn watch_dependencies(
    clients: &Clients,
    watched: Watched,
    readiness: Readiness,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let clients = clients.clone();
    tokio::spawn(async move {
        let mut last: Vec<(&'static str, bool)> = Vec::new();
        loop {
            let first_round = last.is_empty();
            let mut states = Vec::new();
            if watched.bus {
                let state = within(clients.bus.health_check()).await;
                states.push(("bus", state));
            }
            if watched.store
                && let Some(store) = &clients.store
            {
                states.push(("object-store", within(store.health_check()).await));
            }
            if watched.database
                && let Some(pool) = &clients.database
            {
                states.push(("database", within(check_database(pool)).await));
            }
            for (dependency, state) in states {
                let up = state.is_ok();
                let changed = last
                    .iter()
                    .find(|(name, _)| *name == dependency)
                    .is_none_or(|(_, was_up)| *was_up != up);
                match (&state, changed) {
                    (Err(why), true) => tracing::warn!(dependency, %why, "dependency unavailable"),
                    (Ok(()), true) if !first_round => {
                        tracing::info!(dependency, "dependency available again")
                    }
                    _ => {}
                }
                last.retain(|(name, _)| *name != dependency);
                last.push((dependency, up));
                metrics::gauge!(
                    fxtriage_telemetry::metrics::names::DEPENDENCY_UP,
                    "dependency" => dependency
                )
                .set(if up { 1.0 } else { 0.0 });
                readiness.set_dependency(dependency, state);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    })
}

async fn within<E: std::fmt::Display>(
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

async fn check_database(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|error| error.to_string())?;
    client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}
