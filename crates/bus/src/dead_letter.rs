//! Dead letters: a message that can never succeed goes to `<topic>.dlq`, unchanged,
//! with the reason and its origin in headers, so an operator can inspect and
//! replay it while the partition moves on.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Headers, Received};

/// Header names on a dead-lettered message.
pub mod header {
    /// Human-readable reason, e.g. "malformed protobuf: invalid wire type".
    pub const REASON: &str = "fxtriage-dlq-reason";
    /// Machine-readable kind, e.g. "malformed-message" or "unknown-site".
    pub const KIND: &str = "fxtriage-dlq-kind";
    pub const SOURCE_TOPIC: &str = "fxtriage-dlq-source-topic";
    pub const SOURCE_PARTITION: &str = "fxtriage-dlq-source-partition";
    pub const SOURCE_OFFSET: &str = "fxtriage-dlq-source-offset";
    /// Milliseconds since the Unix epoch.
    pub const FAILED_AT: &str = "fxtriage-dlq-failed-at-ms";
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterReason {
    pub kind: String,
    pub message: String,
}

impl DeadLetterReason {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Adds the dead-letter headers for `message` failing with `reason`.
pub fn dead_letter_headers(headers: &mut Headers, message: &Received, reason: &DeadLetterReason) {
    let failed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    headers.insert(header::REASON, reason.message.as_bytes());
    headers.insert(header::KIND, reason.kind.as_bytes());
    headers.insert(header::SOURCE_TOPIC, message.topic.as_bytes());
    headers.insert(header::SOURCE_PARTITION, message.partition.to_string());
    headers.insert(header::SOURCE_OFFSET, message.offset.to_string());
    headers.insert(header::FAILED_AT, failed_at_ms.to_string());
}
