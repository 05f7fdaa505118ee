//! Results back into each hospital's own systems (DESIGN.md section 11).
//!
//! - [`dicom_out`]: storing an object (the SR that `fxtriage_dicom::sr` writes, later
//!   the secondary capture) on a site's DICOM peer by C-STORE, with each way it
//!   can fail classified as worth retrying or not.
//!
//! Still to come (issue 12): the durable outbox and its relay, the service's
//! `run`, HL7 v2 over MLLP both ways, FHIR, the `fxtriage dispatch` commands.

pub mod dicom_out;
