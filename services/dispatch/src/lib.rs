//! Results back into each hospital's own systems (DESIGN.md section 11).
//!
//! - [`dicom_out`]: storing an object (the SR that `fxtriage_dicom::sr` writes, later
//!   the secondary capture) on a site's DICOM peer by C-STORE, with each way it
//!   can fail classified as worth retrying or not.
//!
//! - [`outbox`]: the durable outbox of deliveries, one row per content and
//!   destination, with its state, attempts and last error;
//! - [`relay`]: sends due deliveries, retries with backoff what is worth
//!   retrying, gives up (dead) on a permanent refusal or after the last attempt.
//!
//! Still to come (issue 12): planning the SR of each study whose findings are
//! final, the secondary capture, the service's `run`, HL7 v2 over MLLP both
//! ways, FHIR.

pub mod dicom_out;
pub mod outbox;
pub mod relay;
