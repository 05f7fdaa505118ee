//! The prioritizer service. Aggregates findings per study, applies the site's priority policy and keeps each site's worklist in PostgreSQL.
//!
//! At this stage the service starts, reports health and stops cleanly; its work
//! arrives with the next issues.

pub mod policy;

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live` and `/health/ready` are served.
    pub health_address: SocketAddr,
}

/// Runs until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    fxtriage_telemetry::health::serve_until_shutdown(
        "prioritizer",
        config.health_address,
        shutdown,
    )
    .await?;
    Ok(())
}
