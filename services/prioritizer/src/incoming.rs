//! The messages the prioritizer consumes, decoded and checked once at the edge:
//! `InstanceStored` from the instances topic and `Finding` from the findings
//! topic (`fxtriage.instances.v1`, `fxtriage.findings.v1` in the deployment's
//! namespace). A message that fails here can never succeed, so it goes to the
//! dead-letter topic with the reason. The records themselves belong to the
//! worklist ([`fxtriage_worklist::records`]).

use fxtriage_bus::Received;
use fxtriage_proto::{Namespace, topics};

pub use fxtriage_worklist::records::*;

/// A consumed message, decoded and checked.
// Handled one at a time and never stored in bulk: the size difference between
// the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Instance(StoredInstance),
    Finding(ImageFinding),
}

impl Incoming {
    pub fn image(&self) -> &ImageIdentity {
        match self {
            Incoming::Instance(instance) => &instance.image,
            Incoming::Finding(finding) => &finding.image,
        }
    }
}

/// Decodes a message by its topic (one of `namespace`'s).
pub fn decode(received: &Received, namespace: &Namespace) -> Result<Incoming, Refused> {
    match namespace.bare_topic(&received.topic) {
        Some(topics::INSTANCES) => decode_instance(&received.payload).map(Incoming::Instance),
        Some(topics::FINDINGS) => decode_finding(&received.payload).map(Incoming::Finding),
        _ => Err(Refused {
            kind: dead_letter_kind::UNEXPECTED_TOPIC,
            reason: format!(
                "the prioritizer of namespace {namespace} does not consume topic {}",
                received.topic
            ),
        }),
    }
}
