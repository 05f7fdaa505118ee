//! `fxtriage ingest`: DIMSE C-STORE and STOW-RS into the object store, events on the bus.

use std::net::SocketAddr;

use clap::Args;
use fxtriage_clients::Clients;
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, DatabaseArgs, SitesFileArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// HTTP address: STOW-RS under /dicomweb, /health/live, /health/ready.
    #[arg(
        long,
        env = "FXTRIAGE_INGEST_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub http_address: SocketAddr,
    /// DIMSE C-STORE SCP address.
    #[arg(long, env = "FXTRIAGE_DIMSE_ADDR", default_value = "127.0.0.1:11112")]
    pub dimse_address: SocketAddr,
    /// Most concurrent DIMSE associations.
    #[arg(long, env = "FXTRIAGE_DIMSE_MAX_ASSOCIATIONS", default_value_t = 32)]
    pub max_associations: usize,
    /// Memory for C-STORE instances being received, in MiB, shared by every
    /// association: an instance is held (and parsed, hashed and stored) in
    /// memory while it fits, else it goes through a buffer file. 0: always a file.
    #[arg(long, env = "FXTRIAGE_DIMSE_MEMORY_BUDGET_MB", default_value_t = 256)]
    pub dimse_memory_budget_mb: u64,
    /// The largest C-STORE instance held in memory, in MiB.
    #[arg(long, env = "FXTRIAGE_DIMSE_INSTANCE_MEMORY_MB", default_value_t = 32)]
    pub dimse_instance_memory_mb: u64,
    #[command(flatten)]
    pub sites: SitesFileArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(args: IngestArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(database) = args.database.wait_and_migrate(&shutdown).await? else {
        return Ok(());
    };
    args.sites.apply_at_start(&database).await?;
    let clients = Clients {
        bus: args.bus.connect("fxtriage-ingest").await?,
        namespace: args.bus.namespace.clone(),
        store: Some(args.store.connect().await?),
        database: Some(database),
    };
    let config = fxtriage_ingest::Config {
        http_address: args.http_address,
        dimse_address: args.dimse_address,
        dimse: fxtriage_ingest::dimse::DimseOptions {
            max_associations: args.max_associations,
            memory_budget_bytes: args.dimse_memory_budget_mb << 20,
            instance_memory_limit_bytes: args.dimse_instance_memory_mb << 20,
            ..Default::default()
        },
        // The registry of the database, followed as it changes.
        sites: None,
    };
    fxtriage_ingest::run(config, clients, shutdown).await
}
