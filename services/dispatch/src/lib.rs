//! Results back into each hospital's own systems (DESIGN.md section 11).
//!
//! - [`dicom_out`]: storing an object (the SR that `fxtriage_dicom::sr` writes, later
//!   the secondary capture) on a site's DICOM peer by C-STORE, with each way it
//!   can fail classified as worth retrying or not.
//!
//! - [`outbox`]: the durable outbox of deliveries, one row per content and
//!   destination, with its state, attempts and last error;
//! - [`relay`]: sends due deliveries, retries with backoff what is worth
//!   retrying, gives up (dead) on a permanent refusal or after the last attempt.
//!
//! - [`planner`]: the SR of each study whose findings are final, into the
//!   outbox for each DICOM destination of its site, a new revision when the
//!   result changes.
//!
//! - [`hl7_out`]: the result as an HL7 v2.5.1 ORU^R01 to a RIS over MLLP.
//!
//! - [`hl7_in`]: reports from the RIS in over HL7 v2 (MLLP), closing their
//!   studies' items with the RIS's report time.
//!
//! - [`fhir_out`]: the result to a FHIR R4 server as a transaction Bundle
//!   (DiagnosticReport, Observations, Device) under ids derived from it.
//!
//! Still to come (issue 12): orders in, the priority update to the RIS.

pub mod dicom_out;
pub mod fhir_out;
pub mod hl7_in;
pub mod hl7_out;
/// The outbox of deliveries (its SQL lives with the worklist's, crates/worklist).
pub use fxtriage_worklist::deliveries as outbox;
pub mod planner;
pub mod relay;

/// Why a delivery did not arrive: worth retrying, or refused for good.
pub use dicom_out::StoreError as DeliveryError;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use fxtriage_objstore::ObjectStore;
use fxtriage_sites::SiteRegistry;
use fxtriage_telemetry::health;
use tokio_util::sync::CancellationToken;

/// The dispatch service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health/live`, `/health/ready` and `/metrics` are served.
    pub health_address: SocketAddr,
    /// How often the planner and the relay look for work when idle.
    pub poll: Duration,
    pub retry: outbox::RetryPolicy,
    /// Where the HL7 listener (reports from the RIS, over MLLP) listens; none
    /// when unset.
    pub hl7_address: Option<SocketAddr>,
}

impl Config {
    pub fn new(health_address: SocketAddr) -> Self {
        Self {
            health_address,
            poll: Duration::from_millis(500),
            retry: outbox::RetryPolicy::default(),
            hl7_address: None,
        }
    }
}

/// Plans and sends results until `shutdown`. Dispatch uses no bus: its work
/// comes from the worklist database (a trigger notes each changed study) and
/// its outbox; it reads source images from `store` for their patient and study
/// attributes.
pub async fn run(
    config: Config,
    pool: Pool,
    store: std::sync::Arc<dyn ObjectStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.child_token();
    let readiness = health::Readiness::new();
    let (bound, health_task) = health::serve(
        config.health_address,
        health::router(readiness.clone()),
        stop.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", config.health_address))?;
    tracing::info!(%bound, "dispatch health endpoints listening");
    let registry = SiteRegistry::load_and_follow(&pool, &stop)
        .await
        .context("cannot read the site registry")?;
    let listener = match config.hl7_address {
        Some(address) => Some(
            hl7_in::serve(address, pool.clone(), registry.clone(), stop.clone())
                .await
                .with_context(|| format!("cannot listen for HL7 on {address}"))?
                .1,
        ),
        None => None,
    };
    let relay = tokio::spawn(relay::run(
        pool.clone(),
        registry.clone(),
        config.retry,
        config.poll,
        stop.clone(),
    ));
    readiness.set_ready(true);
    while !stop.is_cancelled() {
        let planned = match planner::plan_noted(&pool, &registry, &store, 64).await {
            Ok(planned) => planned,
            Err(error) => {
                tracing::warn!(error = %chain(error.as_ref()), "cannot plan results; trying again");
                0
            }
        };
        if planned == 0 {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(config.poll) => {}
            }
        }
    }
    readiness.set_ready(false);
    relay.await.context("the relay task failed")?;
    if let Some(listener) = listener {
        listener.await.context("the HL7 listener task failed")?;
    }
    health_task
        .await
        .context("the health server task failed")?
        .context("the health server failed")?;
    tracing::info!("dispatch stopped");
    Ok(())
}

/// An error with its causes, for logs: "db error" alone says nothing.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The 128-bit number of a 2.25 UID (as `fxtriage_dicom::sr::derived_uid`
/// makes them) in 32 hex digits: ids for HL7 and FHIR that follow the UID.
pub(crate) fn uid_hex(uid: &str) -> String {
    let number: u128 = uid.trim_start_matches("2.25.").parse().unwrap_or_default();
    format!("{number:032x}")
}
