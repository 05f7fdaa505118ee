//! The ingest service: receives DICOM by DIMSE C-STORE, DICOMweb STOW-RS and bulk
//! import; validates it; quarantines what it refuses; stores the original bytes
//! and publishes `InstanceStored` for the rest.

pub mod accept;
pub mod quarantine;
mod sender;
pub mod sites;
mod urgency;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

pub use accept::{IngestError, Ingestor, InstanceSource, Stored};
pub use sender::Sender;
pub use sites::{SiteConfig, Sites};

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
