//! The event contracts of fxtriage: Rust types generated from
//! `proto/fxtriage/v1/*.proto` at build time.
//!
//! Field numbers are stable (see `common.proto`); topics carry the major version
//! in their name, so a breaking change means new topics.

#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/fxtriage.v1.rs"));
}

/// The bare topic names (the default namespace's). Every topic has a dead-letter
/// twin `<topic>.dlq`. Services take their names from a [`Namespace`], never
/// from these constants directly.
pub mod topics {
    /// `InstanceStored` events from ingest, keyed by StudyInstanceUID.
    pub const INSTANCES: &str = "fxtriage.instances.v1";
    /// `Finding` events from inference, keyed by StudyInstanceUID.
    pub const FINDINGS: &str = "fxtriage.findings.v1";
    /// `WorklistChange` events from the prioritizer, keyed by StudyInstanceUID.
    pub const WORKLIST: &str = "fxtriage.worklist.v1";

    /// The dead-letter topic of `topic`.
    pub fn dead_letter_topic(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

mod convert;
mod namespace;

pub use namespace::{ConsumerGroup, InvalidNamespace, MAX_NAMESPACE_LENGTH, Namespace};
pub use prost::Message;
pub use prost_types::Timestamp;
