//! The ingest service. Receives DICOM (DIMSE C-STORE, DICOMweb STOW-RS, bulk import), validates it, stores the original in the object store and publishes InstanceStored.
//!
//! At this stage the service starts, reports health and stops cleanly; its work
//! arrives with the next issues.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served.
    pub health_address: SocketAddr,
}

/// Runs until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    fxtriage_telemetry::health::serve_until_shutdown("ingest", config.health_address, shutdown)
        .await?;
    Ok(())
}
