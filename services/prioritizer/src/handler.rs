//! What happens to one consumed message: decode it, apply it to the worklist in
//! one transaction, publish the resulting worklist change; or, if it can never
//! succeed, send it to the dead-letter topic with the reason. Only a transient
//! failure (database or bus unavailable) comes back as an error, for the caller
//! to retry; the message is acknowledged in every other case.

use std::sync::Arc;

use deadpool_postgres::Pool;
use fxtriage_bus::{Bus, BusError, DeadLetterReason, Received};
use fxtriage_core::SiteId;
use fxtriage_proto::Namespace;
use fxtriage_sites::SiteRegistry;

use crate::apply::{Applied, apply_finding, apply_instance};
use crate::error::{ErrorKind, StoreError};
use crate::incoming::{self, Incoming, dead_letter_kind};
use crate::outbox;

/// The prioritizer's dependencies, cheap to clone.
#[derive(Debug, Clone)]
pub struct Prioritizer {
    bus: Arc<dyn Bus>,
    pool: Pool,
    /// Each site's policy comes from here.
    sites: SiteRegistry,
    namespace: Namespace,
}

/// The end of a message: it may be acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    Applied(Applied),
    DeadLettered(DeadLetterReason),
}

/// A failure that may pass: the message must not be acknowledged yet.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    #[error(transparent)]
    Store(StoreError),
    #[error("dead-lettering failed: {0}")]
    DeadLetter(BusError),
}

impl Prioritizer {
    pub fn new(bus: Arc<dyn Bus>, pool: Pool, sites: SiteRegistry, namespace: Namespace) -> Self {
        Self {
            bus,
            pool,
            sites,
            namespace,
        }
    }

    /// Where the topic and group names come from.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn handle(&self, received: &Received) -> Result<Handled, TransientError> {
        let incoming = match incoming::decode(received, &self.namespace) {
            Ok(incoming) => incoming,
            Err(refused) => {
                let reason = DeadLetterReason::new(refused.kind, refused.reason);
                return self.dead_letter(received, reason).await;
            }
        };
        let site = incoming.image().site_id.clone();
        let study = incoming.image().study_instance_uid.to_string();
        let policy = self.sites.current().policy(&site);
        let policy = &policy;
        let applying = std::time::Instant::now();
        let (event, outcome) = match &incoming {
            Incoming::Instance(instance) => (
                "instance",
                apply_instance(&self.pool, policy, instance).await,
            ),
            Incoming::Finding(finding) => {
                ("finding", apply_finding(&self.pool, policy, finding).await)
            }
        };
        match outcome {
            Ok(applied) => {
                metrics::histogram!(fxtriage_telemetry::metrics::names::PRIORITIZER_APPLY_SECONDS)
                    .record(applying.elapsed());
                metrics::counter!(
                    fxtriage_telemetry::metrics::names::PRIORITIZER_APPLIED,
                    "event" => event
                )
                .increment(1);
                if !matches!(applied, Applied::Recorded) {
                    // A change just committed, or (for a duplicate) one a crash left
                    // unpublished.
                    self.publish_changes(&site, &study).await;
                }
                Ok(Handled::Applied(applied))
            }
            Err(error) if error.kind() == ErrorKind::Permanent => {
                let kind = match error {
                    StoreError::UnknownSite(_) => dead_letter_kind::UNKNOWN_SITE,
                    _ => dead_letter_kind::INVALID_MESSAGE,
                };
                self.dead_letter(received, DeadLetterReason::new(kind, error.to_string()))
                    .await
            }
            Err(error) => Err(TransientError::Store(error)),
        }
    }

    /// Publishing is best effort here: a change left in the outbox is published by
    /// the relay, so the message can be acknowledged either way.
    async fn publish_changes(&self, site: &SiteId, study: &str) {
        let topic = self.namespace.worklist_topic();
        if let Err(error) =
            outbox::publish_study(&self.pool, self.bus.as_ref(), &topic, site, study).await
        {
            tracing::warn!(%site, study, %error, "worklist change left in the outbox for the relay");
        }
    }

    async fn dead_letter(
        &self,
        received: &Received,
        reason: DeadLetterReason,
    ) -> Result<Handled, TransientError> {
        self.bus
            .dead_letter(received, &reason)
            .await
            .map_err(TransientError::DeadLetter)?;
        tracing::warn!(
            topic = %received.topic,
            partition = received.partition,
            offset = received.offset,
            kind = %reason.kind,
            reason = %reason.message,
            "message dead-lettered"
        );
        Ok(Handled::DeadLettered(reason))
    }
}
