//! The worklist: the schema's SQL and what it stores (crates/db/migrations).
//!
//! - [`records`]: an image's stored instance and finding, validated from their messages;
//! - [`summary`]: what a study's aggregation reads (images, findings) and computes;
//! - [`study`]: the words of a worklist item (AI result, state);
//! - [`store`]: the SQL of studies, instances and findings, and [`store::StudyRow`];
//! - [`query`]: the filtered, paged read in reading order (one site or several) and
//!   the choice of the next study to claim;
//! - [`outbox`]: worklist changes written in the changing transaction and
//!   published to the worklist topic, in order per study, at least once;
//! - [`deliveries`]: the outbox of results to the sites' PACS, RIS and FHIR servers;
//! - [`orders`]: orders from the RIS, their priority as the study's urgency;
//! - [`ris`]: a report signed in the RIS closing its study's item;
//! - [`error`]: errors with the kind that decides between retrying and refusing.
//!
//! The prioritizer and the API are two clients of this crate; neither depends on
//! the other.

pub mod audit_chain;
pub mod deliveries;
pub mod error;
pub mod orders;
pub mod outbox;
pub mod query;
pub mod records;
pub mod ris;
pub mod store;
pub mod study;
pub mod summary;

pub use error::{Doing, ErrorKind, StoreError};
pub use store::{StudyRow, WorklistCursor};
pub use study::{StudyAiResult, WorklistState};
