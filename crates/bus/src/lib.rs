//! The message bus seam of fxtriage.
//!
//! Delivery is at-least-once with explicit acknowledgement: a consumer's position
//! in a partition advances only past messages its owner acknowledged, after the
//! side effect happened. Whatever was delivered but not acknowledged is delivered
//! again to the group after the consumer goes away (restart, crash, rebalance).
//! Effects downstream are therefore idempotent; nothing relies on Kafka transactions.
//!
//! Two implementations pass one conformance suite (`conformance`, compiled with
//! the `testsuite` feature, which the crate's own tests enable): Kafka through
//! rdkafka ([`KafkaBus`]) and an in-process bus for the embedded default
//! ([`InProcessBus`]).

#[cfg(feature = "testsuite")]
pub mod conformance;
mod dead_letter;
mod error;
mod headers;
mod inprocess;
mod kafka;
mod offsets;
mod stall;

use async_trait::async_trait;

pub use dead_letter::{DeadLetterReason, dead_letter_headers, dead_letter_topic};
pub use error::{BusError, BusErrorKind};
pub use headers::Headers;
pub use inprocess::{InProcessBus, InProcessConfig};
pub use kafka::{KafkaBus, KafkaConfig};

/// A message to produce. The key decides the partition, so all messages with the
/// same key (a StudyInstanceUID) stay in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Headers,
}

impl Record {
    pub fn new(key: impl Into<Vec<u8>>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// Where a produced message landed, once the bus confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// A consumed message. Acknowledge it with [`Consumer::ack`] after its effect is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Headers,
    /// Milliseconds since the Unix epoch when the message was produced, if known.
    pub timestamp_ms: Option<i64>,
}

impl Received {
    /// The key as text, lossily (keys are StudyInstanceUIDs, so ASCII in practice).
    pub fn key_text(&self) -> String {
        self.key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default()
    }
}

/// A message bus: topics of partitioned, ordered logs, consumed by groups.
#[async_trait]
pub trait Bus: Send + Sync + std::fmt::Debug {
    /// Creates `topic` and its dead-letter twin `<topic>.dlq` with `partitions`
    /// partitions when they do not exist. Existing topics are left as they are.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// Produces `record` and waits until the bus confirms it is stored. The current
    /// trace context is added to the headers unless they already carry one.
    async fn produce(&self, topic: &str, record: Record) -> Result<Delivery, BusError>;

    /// Joins consumer group `group` for `topics`. Partitions are shared among the
    /// group's members; each message is delivered to one member.
    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, BusError>;

    /// Sends `message` unchanged to `<topic>.dlq`, with `reason` and the message's
    /// origin in headers, and counts it in `fxtriage_dead_letters_total` by topic
    /// and reason kind. The caller then acknowledges the original, so the
    /// partition moves on.
    async fn dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<Delivery, BusError> {
        let mut headers = message.headers.clone();
        dead_letter_headers(&mut headers, message, reason);
        let record = Record {
            key: message.key.clone().unwrap_or_default(),
            payload: message.payload.clone(),
            headers,
        };
        let delivery = self
            .produce(&dead_letter_topic(&message.topic), record)
            .await?;
        metrics::counter!(
            fxtriage_telemetry::metrics::names::DEAD_LETTERS,
            "topic" => message.topic.clone(),
            "kind" => reason.kind.clone(),
        )
        .increment(1);
        Ok(delivery)
    }

    /// Whether the bus answers (for readiness): a broker gives the cluster's
    /// metadata in a few seconds. The in-process bus always answers.
    async fn health_check(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// A short description for logs, without credentials.
    fn describe(&self) -> String;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send + Sync + std::fmt::Debug {
    /// Waits for the next message of this member's partitions. Cancel-safe: a
    /// message is never lost by dropping the future.
    async fn next(&self) -> Result<Received, BusError>;

    /// Marks `message` done. The group's position advances past it once every
    /// earlier message of its partition is acknowledged too; an acknowledgement for
    /// a partition this member no longer owns is ignored (the new owner redelivers).
    fn ack(&self, message: &Received) -> Result<(), BusError>;

    /// The (topic, partition) pairs this member currently owns.
    fn assignment(&self) -> Vec<(String, i32)>;

    /// Commits acknowledged positions and leaves the group; `next` must not be
    /// called afterwards. Dropping a consumer without closing it leaves the group
    /// too; unacknowledged messages are redelivered either way.
    async fn close(&self) -> Result<(), BusError>;
}
