//! The sites ingest serves come from the site registry (crates/sites), kept
//! current without a restart: called AE titles pick the site of a C-STORE, the
//! URL names the site of a STOW-RS request, and each site's routing rules, limits
//! and urgency mapping apply.

pub use fxtriage_sites::{SiteConfig, SiteRegistry, Snapshot as Sites, UrgencyMapping};
