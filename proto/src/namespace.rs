//! The deployment namespace: the one place where the names fxtriage uses on a
//! broker (topics, their dead-letter twins, consumer groups) are derived.
//!
//! Two deployments that share one Kafka cluster (staging and production, two
//! reading networks, two test runs) give each a namespace of its own; every name
//! is then prefixed with `<namespace>.`, so neither reads, consumes nor
//! dead-letters the other's messages. The default namespace is empty: the names
//! are the bare ones of [`crate::topics`].

use std::fmt;

use crate::topics;

/// A validated deployment namespace (empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Namespace {
    name: String,
}

/// Longest namespace accepted: the longest topic name stays well under Kafka's 249.
pub const MAX_NAMESPACE_LENGTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNamespace {
    pub given: String,
    pub reason: &'static str,
}

impl fmt::Display for InvalidNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid namespace {:?}: {}", self.given, self.reason)
    }
}

impl std::error::Error for InvalidNamespace {}

/// A consumer group of fxtriage. Every group name comes from here, through
/// [`Namespace::consumer_group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroup<'a> {
    /// Every inference process shares the instances topic's partitions.
    Inference,
    /// Every prioritizer process shares the instance and finding topics' partitions.
    Prioritizer,
    /// One API process's own view of every worklist change (`process` is unique to it).
    ApiEvents { process: &'a str },
    /// A tool's or a test's own group.
    Named(&'a str),
}

impl Namespace {
    /// The default: no prefix.
    pub fn none() -> Self {
        Self::default()
    }

    /// `name` must be empty (no prefix) or 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, `-`.
    pub fn new(name: &str) -> Result<Self, InvalidNamespace> {
        let invalid = |reason| InvalidNamespace {
            given: name.to_owned(),
            reason,
        };
        if name.len() > MAX_NAMESPACE_LENGTH {
            return Err(invalid("longer than 64 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "only letters, digits, '_' and '-' are allowed (it becomes part of topic names)",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// The name as given ("" for the default).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }

    fn prefixed(&self, bare: &str) -> String {
        if self.name.is_empty() {
            bare.to_owned()
        } else {
            format!("{}.{bare}", self.name)
        }
    }

    /// `InstanceStored` events from ingest.
    pub fn instances_topic(&self) -> String {
        self.prefixed(topics::INSTANCES)
    }

    /// `Finding` events from inference.
    pub fn findings_topic(&self) -> String {
        self.prefixed(topics::FINDINGS)
    }

    /// `WorklistChange` events from the prioritizer and the API.
    pub fn worklist_topic(&self) -> String {
        self.prefixed(topics::WORKLIST)
    }

    /// Every topic fxtriage produces to (each has a dead-letter twin).
    pub fn topics(&self) -> [String; 3] {
        [
            self.instances_topic(),
            self.findings_topic(),
            self.worklist_topic(),
        ]
    }

    /// The dead-letter twins of [`Namespace::topics`].
    pub fn dead_letter_topics(&self) -> [String; 3] {
        self.topics().map(|topic| topics::dead_letter_topic(&topic))
    }

    /// The name of `group` in this namespace.
    pub fn consumer_group(&self, group: ConsumerGroup<'_>) -> String {
        let bare = match group {
            ConsumerGroup::Inference => "fxtriage-inference".to_owned(),
            ConsumerGroup::Prioritizer => "fxtriage-prioritizer".to_owned(),
            ConsumerGroup::ApiEvents { process } => format!("fxtriage-api-events-{process}"),
            ConsumerGroup::Named(name) => name.to_owned(),
        };
        self.prefixed(&bare)
    }

    /// Which of this namespace's topics `topic` is, by its bare name.
    pub fn bare_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        if self.name.is_empty() {
            return Some(topic);
        }
        topic
            .strip_prefix(self.name.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str("(default)")
        } else {
            f.write_str(&self.name)
        }
    }
}

impl std::str::FromStr for Namespace {
    type Err = InvalidNamespace;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_namespace_uses_the_bare_names() {
        let namespace = Namespace::none();
        assert_eq!(namespace.instances_topic(), "fxtriage.instances.v1");
        assert_eq!(
            namespace.dead_letter_topics()[1],
            "fxtriage.findings.v1.dlq"
        );
        assert_eq!(
            namespace.consumer_group(ConsumerGroup::Inference),
            "fxtriage-inference"
        );
    }

    #[test]
    fn a_namespace_prefixes_every_topic_dead_letter_topic_and_group() {
        let namespace = Namespace::new("staging").expect("valid");
        for topic in namespace
            .topics()
            .iter()
            .chain(namespace.dead_letter_topics().iter())
        {
            assert!(topic.starts_with("staging.fxtriage."), "{topic}");
        }
        for group in [
            ConsumerGroup::Inference,
            ConsumerGroup::Prioritizer,
            ConsumerGroup::ApiEvents { process: "abc" },
            ConsumerGroup::Named("tool"),
        ] {
            assert!(
                namespace.consumer_group(group).starts_with("staging."),
                "{group:?}"
            );
        }
        assert_eq!(namespace.worklist_topic(), "staging.fxtriage.worklist.v1");
        assert_eq!(
            namespace.bare_topic("staging.fxtriage.findings.v1"),
            Some("fxtriage.findings.v1")
        );
        assert_eq!(namespace.bare_topic("fxtriage.findings.v1"), None);
        assert_eq!(namespace.bare_topic("stagingx.fxtriage.findings.v1"), None);
    }

    #[test]
    fn names_that_cannot_be_part_of_a_topic_are_refused() {
        for bad in ["a.b", "a b", "ä", "x/y", &"n".repeat(65)] {
            let error = Namespace::new(bad).expect_err(bad);
            assert_eq!(error.given, bad);
        }
        assert!(Namespace::new("prod-eu_1").is_ok());
        assert!(Namespace::new("").expect("empty").is_default());
    }
}
