//! A deployment namespace of a test's own: its topics, dead-letter topics and
//! consumer groups are new, so the test neither sees earlier runs' history nor
//! takes (or loses) another test's messages on the shared broker.

use fxtriage_proto::Namespace;

/// `prefix` plus a random suffix, e.g. `e2e-3f9a1c2b7d4e`.
pub fn unique_namespace(prefix: &str) -> Namespace {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Namespace::new(&format!("{prefix}-{}", &suffix[..12]))
        .expect("a test namespace prefix of letters, digits, '_' and '-'")
}
