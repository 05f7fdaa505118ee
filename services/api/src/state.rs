//! What every handler shares: the clients, the configuration, the metrics and the
//! live-change hub.

use std::sync::Arc;

use deadpool_postgres::Pool;
use fxtriage_bus::Bus;
use fxtriage_core::SiteId;
use fxtriage_objstore::ObjectStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::events::EventHub;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
    pub store: Arc<dyn ObjectStore>,
    pub bus: Arc<dyn Bus>,
    /// The sites and groups, followed as the registry changes.
    pub sites: fxtriage_sites::SiteRegistry,
    /// Where the worklist topic's name comes from.
    pub namespace: fxtriage_proto::Namespace,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub events: EventHub,
    /// Overlays decode whole radiographs: at most this many at once.
    pub overlay_permits: Arc<Semaphore>,
    /// Invalid tokens counted per address and token prefix.
    pub auth_throttle: Arc<fxtriage_sites::FailedAuthThrottle>,
    /// The identity provider's token verifier, when one is configured.
    pub oidc: Option<Arc<crate::oidc::OidcVerifier>>,
    /// Cancelled when the server drains; long-lived responses (event streams) end.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Produces the outbox rows a committed change left for `study`, in the
    /// background so the response does not wait for the bus. What fails here
    /// stays in the outbox for the prioritizer's relay: never lost, only late.
    pub fn publish_soon(&self, site: &SiteId, study_instance_uid: &str) {
        let pool = self.pool.clone();
        let bus = Arc::clone(&self.bus);
        let site = site.clone();
        let study = study_instance_uid.to_owned();
        let topic = self.namespace.worklist_topic();
        tokio::spawn(async move {
            if let Err(error) =
                fxtriage_worklist::outbox::publish_study(&pool, bus.as_ref(), &topic, &site, &study)
                    .await
            {
                tracing::warn!(%error, %site, "worklist change left in the outbox for the relay");
            }
        });
    }
}
