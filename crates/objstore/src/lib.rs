//! The `ObjectStore` seam of fxtriage (DESIGN.md section 4): where DICOM
//! originals and quarantined files live. Ingest writes an object before it
//! announces it on the bus, so the bus carries keys, never pixels.
//!
//! Implementations: [`S3Store`] (AWS or any S3-compatible server) and
//! [`LocalDirStore`] (the embedded default). Both pass `conformance` (compiled
//! with the `testsuite` feature, which the crate's own tests enable).

#[cfg(feature = "testsuite")]
pub mod conformance;
mod error;
mod key;
mod local;
mod s3;
mod store;

pub use error::{ErrorKind, ObjectStoreError, Operation};
pub use key::{InvalidObjectKey, ObjectKey};
pub use local::LocalDirStore;
pub use s3::{S3Config, S3Credentials, S3Store};
pub use store::{ObjectMeta, ObjectStore};
