//! Dev-only helpers shared by every fxtriage test suite (a dev-dependency only;
//! nothing in a service depends on it):
//!
//! - [`stack`]: the one rule for when the real local stack is required, and a
//!   skip notice that a plain `cargo test` run shows;
//! - [`database`]: an empty PostgreSQL database of a test's own on the stack's
//!   server;
//! - [`namespace`]: a deployment namespace of a test's own, so tests sharing the
//!   stack's broker never see each other's topics or consumer groups;
//! - [`eventually`]: waiting on progress with a deadline, instead of sleeping;
//! - [`process`]: child processes killed (with everything they started in their
//!   process group) when their guard drops, also when the test panics;
//! - [`pki`]: certificates generated for the TLS tests.

pub mod binary;
pub mod database;
pub mod eventually;
pub mod namespace;
pub mod oidc;
pub mod pki;
pub mod private_network;
pub mod process;
pub mod stack;

pub use binary::fxtriage_bin;
pub use database::FreshDatabase;
pub use eventually::{Progress, eventually, poll_until, until};
pub use namespace::unique_namespace;
pub use process::ChildGuard;
