//! The site registry (DESIGN.md section 10): one definition of each site, in
//! PostgreSQL, that every service reads and that follows changes without a
//! restart; reading networks (groups of sites); and the one credential system.
//!
//! - [`config`]: what a site and a group are;
//! - [`destinations`]: where a site's results go (PACS, RIS, FHIR);
//! - [`file`]: the declarative sites file, checked whole with a line for every error;
//! - [`store`]: reading the registry and applying a file in one transaction;
//! - [`registry`]: a service's live snapshot;
//! - [`credentials`]: tokens with a role on a site, a group or the deployment;
//! - [`throttle`]: failed authentication rate-limited per address and token prefix.

pub mod audit;
pub mod config;
pub mod credentials;
pub mod destinations;
pub mod file;
pub mod registry;
pub mod store;
pub mod throttle;

pub use config::{DicomTls, GroupConfig, IntakeLimits, SiteConfig, UrgencyMapping};
pub use credentials::{ApiToken, CreatedToken, Credential, Role, Scope, TokenError};
pub use destinations::Destinations;
pub use file::{Existing, InvalidFile, RegistryFile};
pub use registry::{SiteRegistry, Snapshot};
pub use store::{ApplyError, ApplyOptions, Change, Registry, RegistryError};
pub use throttle::{FailedAuthThrottle, ThrottleLimits};
