//! `fxtriage api`: the worklist HTTP API and the web page.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use fxtriage_clients::Clients;
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, DatabaseArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address of the API, /health/live, /health/ready and /metrics. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_API_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_address: SocketAddr,
    /// Minutes a claim lasts unless its reader renews, releases or reports it.
    #[arg(long, env = "FXTRIAGE_CLAIM_MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub claim_minutes: u32,
    #[command(flatten)]
    pub https: crate::clients::HttpsArgs,
    #[command(flatten)]
    pub oidc: crate::clients::OidcArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(args: ApiArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tls = args.https.load()?;
    let Some(database) = args.database.wait_and_migrate(&shutdown).await? else {
        return Ok(());
    };
    let clients = Clients {
        bus: args.bus.connect("fxtriage-api").await?,
        namespace: args.bus.namespace.clone(),
        store: Some(args.store.connect().await?),
        database: Some(database),
    };
    let mut config = fxtriage_api::Config::new(args.http_address);
    config.claim_ttl = Duration::from_secs(u64::from(args.claim_minutes) * 60);
    config.tls = tls;
    config.failed_auth = args.https.failed_auth();
    config.oidc = args.oidc.config();
    fxtriage_api::run(config, clients, shutdown).await
}
