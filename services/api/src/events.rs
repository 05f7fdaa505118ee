//! `GET /api/v1/sites/{site}/events`: the site's worklist changes as Server-Sent
//! Events, for live views.
//!
//! Design: each API process reads the worklist topic (`fxtriage.worklist.v1` in
//! its namespace) once, in a consumer group of its own
//! (`fxtriage-api-events-<uuid>`, so every process sees every
//! change, whichever partition it is on), and fans the changes out to its SSE
//! clients through a `tokio::sync::broadcast` channel; each client keeps its own
//! site's. The topic carries every change, the prioritizer's and the API's (both
//! go through the outbox), so nothing is polled. A new group starts at the
//! topic's beginning: changes produced more than [`HISTORY_SLACK`] before the
//! process subscribed are skipped, as the worklist read gives the current state.
//!
//! Delivery to a client is best effort: a client that falls more than the
//! channel's capacity behind gets an `event: resync` telling it to read the
//! worklist again. Every change carries the study's `revision`; a client keeps
//! the highest it has seen per study.
//!
//! Stream: `event: ready` once subscribed, then `event: worklist-change` with
//! `id: <study>/<revision>` and the change as JSON; a comment every 15 s keeps
//! proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use fxtriage_bus::{Bus, BusErrorKind, Consumer};
use fxtriage_proto::Message as _;
use fxtriage_proto::v1 as proto;
use fxtriage_proto::{ConsumerGroup, Namespace};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::views::rfc3339;

/// Changes older than this when the process subscribed are history, not news.
pub const HISTORY_SLACK: Duration = Duration::from_secs(30);
/// How far a slow client may fall behind before it is told to resync.
const CHANNEL_CAPACITY: usize = 1024;

/// One worklist change, ready to send.
#[derive(Debug, Clone)]
pub struct SiteEvent {
    pub site_id: String,
    pub id: String,
    pub json: String,
}

/// The fan-out of worklist changes to SSE clients.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<SiteEvent>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self { sender }
    }

    pub fn publish(&self, event: SiteEvent) {
        // No receiver (no client connected) is not an error.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SiteEvent>> {
        self.sender.subscribe()
    }
}

/// The JSON of a `worklist-change` event.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub study_instance_uid: String,
    /// `added`, `reprioritised`, `claimed`, `released`, `reported`, `updated`.
    pub kind: &'static str,
    pub state: &'static str,
    pub urgency: &'static str,
    pub ai_result: &'static str,
    pub probability: Option<f32>,
    pub arrived_at: Option<String>,
    pub deadline: Option<String>,
    pub revision: u64,
    pub changed_at: Option<String>,
    pub accession_number: String,
}

impl ChangeView {
    pub fn new(change: &proto::WorklistChange) -> Self {
        let kind = match change.kind() {
            proto::ChangeKind::Added => "added",
            proto::ChangeKind::Reprioritised => "reprioritised",
            proto::ChangeKind::Claimed => "claimed",
            proto::ChangeKind::Released => "released",
            proto::ChangeKind::Reported => "reported",
            proto::ChangeKind::Updated => "updated",
            proto::ChangeKind::Unspecified => "unspecified",
        };
        let state = match change.state() {
            proto::WorklistState::Open => "open",
            proto::WorklistState::Claimed => "claimed",
            proto::WorklistState::Reported => "reported",
            proto::WorklistState::Unspecified => "unspecified",
        };
        let urgency = match change.urgency() {
            proto::Urgency::Emergency => "emergency",
            proto::Urgency::Inpatient => "inpatient",
            proto::Urgency::Outpatient => "outpatient",
            proto::Urgency::Unspecified => "unspecified",
        };
        let ai_result = match change.ai_result() {
            proto::AiResult::AwaitingAnalysis => "awaiting-analysis",
            proto::AiResult::Suspected => "suspected",
            proto::AiResult::Possible => "possible",
            proto::AiResult::NoFinding => "no-finding",
            proto::AiResult::NotAnalysed => "not-analysed",
            proto::AiResult::Unspecified => "unspecified",
        };
        let time = |at: Option<&fxtriage_proto::Timestamp>| {
            at.and_then(|at| {
                OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos),
                )
                .ok()
            })
            .map(rfc3339)
        };
        Self {
            study_instance_uid: change.study_instance_uid.clone(),
            kind,
            state,
            urgency,
            ai_result,
            probability: change.has_probability.then_some(change.probability),
            arrived_at: time(change.arrived_at.as_ref()),
            deadline: time(change.deadline.as_ref()),
            revision: change.revision,
            changed_at: time(change.changed_at.as_ref()),
            accession_number: change.accession_number.clone(),
        }
    }
}

/// This process's subscription to the worklist topic.
#[derive(Debug)]
pub struct FanOut {
    consumer: Box<dyn Consumer>,
    since_ms: i64,
}

impl FanOut {
    pub async fn subscribe(bus: &dyn Bus, namespace: &Namespace) -> anyhow::Result<Self> {
        let process = uuid::Uuid::new_v4().simple().to_string();
        let group = namespace.consumer_group(ConsumerGroup::ApiEvents { process: &process });
        let consumer = bus
            .subscribe(&group, &[&namespace.worklist_topic()])
            .await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis() as i64)
            .unwrap_or_default();
        Ok(Self {
            consumer,
            since_ms: now_ms - HISTORY_SLACK.as_millis() as i64,
        })
    }

    /// Forwards changes to `hub` until `shutdown`, then leaves the group.
    pub async fn run(self, hub: EventHub, shutdown: CancellationToken) {
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                next = self.consumer.next() => next,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) if error.kind() == BusErrorKind::Closed => break,
                Err(error) => {
                    tracing::warn!(%error, "reading worklist changes failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let is_history = message.timestamp_ms.is_some_and(|at| at < self.since_ms);
            if !is_history {
                match proto::WorklistChange::decode(message.payload.as_slice()) {
                    Ok(change) => hub.publish(SiteEvent {
                        id: format!("{}/{}", change.study_instance_uid, change.revision),
                        json: serde_json::to_string(&ChangeView::new(&change))
                            .unwrap_or_else(|_| "{}".into()),
                        site_id: change.site_id,
                    }),
                    // Skipped and counted, not dead-lettered: every API process
                    // reads the topic in a group of its own, so each would copy
                    // the poison to the dead-letter topic again; the change it
                    // should have carried is in PostgreSQL all the same.
                    Err(error) => {
                        tracing::warn!(%error, "skipped a malformed WorklistChange");
                        metrics::counter!(
                            fxtriage_telemetry::metrics::names::MALFORMED_SKIPPED,
                            "topic" => message.topic.clone(),
                        )
                        .increment(1);
                    }
                }
            }
            // Nothing here is durable: a change is as done as it will be.
            if let Err(error) = self.consumer.ack(&message) {
                tracing::warn!(%error, "acknowledging a worklist change failed");
            }
        }
        if let Err(error) = self.consumer.close().await {
            tracing::warn!(%error, "leaving the worklist events group failed");
        }
    }
}

pub async fn get_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let receiver = state.events.subscribe();
    let client = state.pool.get().await?;
    audit::record(
        &client,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::caller(&caller),
            action: action::EVENTS_SUBSCRIBE,
            study_instance_uid: None,
            sop_instance_uid: None,
            detail: serde_json::json!({}),
        },
    )
    .await?;
    drop(client);
    let connected = state.metrics.sse_client_connected();
    let site = caller.site.as_str().to_owned();
    let ready = Event::default()
        .event("ready")
        .data(serde_json::json!({ "site": site }).to_string());
    // Open streams would hold a graceful shutdown forever: they end with it.
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (Some(ready), receiver, site, connected),
        move |(first, mut receiver, site, connected)| {
            let shutdown = shutdown.clone();
            async move {
                if let Some(ready) = first {
                    return Some((Ok(ready), (None, receiver, site, connected)));
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        received = receiver.recv() => received,
                    };
                    match received {
                        Ok(event) if event.site_id == site => {
                            let sse = Event::default()
                                .event("worklist-change")
                                .id(event.id.clone())
                                .data(event.json.clone());
                            return Some((Ok(sse), (None, receiver, site, connected)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let resync = Event::default()
                                .event("resync")
                                .data(serde_json::json!({ "missed": missed }).to_string());
                            return Some((Ok(resync), (None, receiver, site, connected)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
