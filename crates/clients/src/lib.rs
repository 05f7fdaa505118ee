//! The clients of a service: what it talks to, built once by the binary (or a
//! test) and handed to every service's `run(config, clients, shutdown)`. In
//! `fxtriage standalone` every service shares one set; in the distributed mode
//! each process builds its own from its flags.
//!
//! A service takes the clients it needs and ignores the rest; a service that
//! needs the database when none was given fails at start with [`MissingClient`].

use std::sync::Arc;

use deadpool_postgres::Pool;
use fxtriage_bus::{Bus, BusError};
use fxtriage_objstore::ObjectStore;
use fxtriage_proto::Namespace;

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
