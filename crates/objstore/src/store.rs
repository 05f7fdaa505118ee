use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ObjectStoreError;
use crate::key::ObjectKey;

/// What a store knows about one object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    /// `None` where the backend does not report it.
    pub last_modified: Option<SystemTime>,
}

/// Where fxtriage keeps DICOM originals and quarantined files.
///
/// Every implementation passes `crate::conformance` (feature `testsuite`).
/// Writes replace the whole object atomically: a reader sees the old bytes or
/// the new ones, never a mix, which is what makes retried ingest writes
/// idempotent.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `body` under `key`, replacing any existing object.
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectStoreError>;

    /// Stores the content of the local file at `path` under `key`, streaming
    /// it rather than reading it into memory.
    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), ObjectStoreError>;

    /// Reads the whole object. A missing key is [`ObjectStoreError::NotFound`].
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectStoreError>;

    /// Reads the object's metadata. A missing key is [`ObjectStoreError::NotFound`].
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectStoreError>;

    /// Removes the object. Removing a missing key succeeds, so a retried
    /// delete is harmless.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError>;

    /// Every object whose key starts with `prefix` (a plain string prefix, as
    /// in S3: `"a/b"` matches `"a/b/c"` and `"a/bc"`), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError>;

    /// Whether the store answers (for readiness): the bucket or directory is
    /// reachable. Cheap: it reads no object.
    async fn health_check(&self) -> Result<(), ObjectStoreError>;

    /// Where the objects live, for logs: `s3://bucket at http://host:port`,
    /// `dir:/var/lib/fxtriage/objects`. Never contains credentials.
    fn describe(&self) -> String;
}
