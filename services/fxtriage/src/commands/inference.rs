//! `fxtriage inference`: stored images through the model, findings on the bus.

use std::net::SocketAddr;

use clap::Args;
use fxtriage_clients::Clients;
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, StoreArgs};
use crate::model_args::ModelArgs;

#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// Address of /health/live and /health/ready. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value = "127.0.0.1:8082")]
    pub health_address: SocketAddr,
    /// Images in flight at once (fetch, decode, inference, publish).
    #[arg(long, env = "FXTRIAGE_MAX_IN_FLIGHT", default_value_t = 32)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(args: InferenceArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (model, batch) = args.model.load()?;
    let clients = Clients {
        bus: args.bus.connect("fxtriage-inference").await?,
        namespace: args.bus.namespace.clone(),
        store: Some(args.store.connect().await?),
        // Inference keeps no worklist.
        database: None,
    };
    let config = fxtriage_inference::Config {
        health_address: args.health_address,
        batch,
        max_in_flight: args.max_in_flight,
        model,
    };
    fxtriage_inference::run(config, clients, shutdown).await
}
