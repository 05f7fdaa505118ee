//! The inference service: fetches stored images, decodes and preprocesses them
//! (crates/dicom), runs the fracture model with ONNX Runtime (CPU or CUDA) in
//! dynamic batches, and publishes a `Finding` per image.

pub mod analyse;
pub mod batcher;
pub mod consumer;
pub mod evaluate;
pub mod manifest;
pub mod model;
pub mod postprocess;
pub mod runtime;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use fxtriage_clients::Clients;
use fxtriage_telemetry::health;
use tokio_util::sync::CancellationToken;

pub use batcher::{BatchConfig, Batcher};
pub use model::{Model, ModelError};
pub use runtime::{ExecutionProvider, RuntimeConfig};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served.
    pub health_address: SocketAddr,
    pub batch: BatchConfig,
    /// Images being fetched, decoded, analysed or published at once.
    pub max_in_flight: usize,
    /// The model, loaded (its weights checked against its manifest).
    pub model: Arc<Model>,
}

/// Consumes instances and publishes findings until `shutdown` is cancelled, then
/// finishes the images in flight and returns. Uses the bus and the object store
/// of `clients`.
pub async fn run(
    config: Config,
    clients: Clients,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let model = config.model;
    let store = Arc::clone(clients.store("inference")?);
    let readiness = health::Readiness::new();
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
    let (bound, health_task) = health::serve(
        config.health_address,
        health::router(readiness.clone()),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", config.health_address))?;
    tracing::info!(health = %bound, model = %model.manifest.name, version = %model.manifest.version, "inference starting");
    let batcher = Batcher::start(Arc::clone(&model), config.batch);
    let deps = consumer::Deps {
        bus: clients.bus,
        store,
        model,
        batcher,
        namespace: clients.namespace,
    };
    readiness.set_ready(true);
    let consumed = consumer::consume(deps, config.max_in_flight, shutdown.clone()).await;
    readiness.set_ready(false);
    shutdown.cancel();
    watcher.await.context("the dependency watcher failed")?;
    health_task
        .await
        .context("the health server task failed")??;
    consumed
}
