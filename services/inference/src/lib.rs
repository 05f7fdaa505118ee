//! The inference service: fetches stored images, decodes and preprocesses them
//! (crates/dicom), runs the fracture model with ONNX Runtime (CPU or CUDA) in
//! dynamic batches, and publishes a `Finding` per image.

pub mod manifest;
pub mod model;
pub mod postprocess;
pub mod runtime;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

pub use model::{Model, ModelError};
pub use runtime::{ExecutionProvider, RuntimeConfig};

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served.
    pub health_address: SocketAddr,
}

/// Runs until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    fxtriage_telemetry::health::serve_until_shutdown("inference", config.health_address, shutdown)
        .await?;
    Ok(())
}
