//! `fxtriage prioritizer`: findings and instances into each site's worklist.

use std::net::SocketAddr;

use clap::Args;
use fxtriage_clients::Clients;
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, DatabaseArgs, SitesFileArgs};

#[derive(Debug, Args)]
pub struct PrioritizerArgs {
    /// Address of /health/live and /health/ready. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value = "127.0.0.1:8083")]
    pub health_address: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub sites: SitesFileArgs,
    #[command(flatten)]
    pub bus: BusArgs,
}

pub async fn run(args: PrioritizerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(database) = args.database.wait_and_migrate(&shutdown).await? else {
        return Ok(());
    };
    args.sites.apply_at_start(&database).await?;
    let config = fxtriage_prioritizer::Config::new(args.health_address);
    let clients = Clients {
        bus: args.bus.connect("fxtriage-prioritizer").await?,
        namespace: args.bus.namespace.clone(),
        // The prioritizer keeps no objects.
        store: None,
        database: Some(database),
    };
    fxtriage_prioritizer::run(config, clients, shutdown).await
}
