/// Whether retrying can help, so that callers decide between retry and dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusErrorKind {
    /// The broker is unreachable or slow; retry later.
    Transient,
    /// The request can never succeed as made (bad topic name, message too large).
    Permanent,
    /// The bus is shutting down or the consumer was closed.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("producing to {topic} failed: {message}")]
    Produce {
        topic: String,
        message: String,
        kind: BusErrorKind,
    },
    #[error("consuming from {topics} failed: {message}")]
    Consume {
        topics: String,
        message: String,
        kind: BusErrorKind,
    },
    #[error("creating topic {topic} failed: {message}")]
    Topic { topic: String, message: String },
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("the bus is closed")]
    Closed,
}

impl BusError {
    pub fn kind(&self) -> BusErrorKind {
        match self {
            BusError::Produce { kind, .. } | BusError::Consume { kind, .. } => *kind,
            BusError::Topic { .. } => BusErrorKind::Transient,
            BusError::Config(_) => BusErrorKind::Permanent,
            BusError::Closed => BusErrorKind::Closed,
        }
    }
}
