//! The behaviour every [`ObjectStore`] must have, written once and run
//! against each implementation (quickwit's `storage_test_suite`).
//!
//! Each check takes a store and a key prefix that nothing else uses, panics
//! with a message naming the violated guarantee, and removes what it wrote.
//! [`run_check`] adds a fresh prefix and a cleanup that also runs when a
//! check panics, so reruns against a shared bucket never collide.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use crate::error::ErrorKind;
use crate::key::ObjectKey;
use crate::store::{ObjectMeta, ObjectStore};

/// More than one S3 `ListObjectsV2` page (1000 keys).
pub const LISTED_OBJECT_COUNT: usize = 1100;

/// Enough in-flight requests to be quick, few enough not to exhaust a small
/// local server's connections.
pub const CONCURRENCY: usize = 32;

/// Above the 5 MiB that S3 clients commonly use as a multipart threshold and
/// not a multiple of any buffer size.
pub const LARGE_OBJECT_SIZE: usize = 6 * 1024 * 1024 + 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    LargeObjectRoundTrips,
    EmptyObjectRoundTrips,
    MissingKeyIsNotFound,
    ListReturnsEveryPageAndOnlyThePrefix,
    OverwriteReplacesContent,
    DeleteIsIdempotent,
    PutFileRoundTrips,
    UnusualCharactersInKeysRoundTrip,
    HealthCheckAnswers,
}

impl Check {
    pub const ALL: [Self; 9] = [
        Self::LargeObjectRoundTrips,
        Self::EmptyObjectRoundTrips,
        Self::MissingKeyIsNotFound,
        Self::ListReturnsEveryPageAndOnlyThePrefix,
        Self::OverwriteReplacesContent,
        Self::DeleteIsIdempotent,
        Self::PutFileRoundTrips,
        Self::UnusualCharactersInKeysRoundTrip,
        Self::HealthCheckAnswers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::LargeObjectRoundTrips => "large_object_round_trips",
            Self::EmptyObjectRoundTrips => "empty_object_round_trips",
            Self::MissingKeyIsNotFound => "missing_key_is_not_found",
            Self::ListReturnsEveryPageAndOnlyThePrefix => {
                "list_returns_every_page_and_only_the_prefix"
            }
            Self::OverwriteReplacesContent => "overwrite_replaces_content",
            Self::DeleteIsIdempotent => "delete_is_idempotent",
            Self::PutFileRoundTrips => "put_file_round_trips",
            Self::UnusualCharactersInKeysRoundTrip => "unusual_characters_in_keys_round_trip",
            Self::HealthCheckAnswers => "health_check_answers",
        }
    }

    pub async fn run(self, store: &dyn ObjectStore, prefix: &str) {
        match self {
            Self::LargeObjectRoundTrips => large_object_round_trips(store, prefix).await,
            Self::EmptyObjectRoundTrips => empty_object_round_trips(store, prefix).await,
            Self::MissingKeyIsNotFound => missing_key_is_not_found(store, prefix).await,
            Self::ListReturnsEveryPageAndOnlyThePrefix => {
                list_returns_every_page_and_only_the_prefix(store, prefix).await
            }
            Self::OverwriteReplacesContent => overwrite_replaces_content(store, prefix).await,
            Self::DeleteIsIdempotent => delete_is_idempotent(store, prefix).await,
            Self::PutFileRoundTrips => put_file_round_trips(store, prefix).await,
            Self::UnusualCharactersInKeysRoundTrip => {
                unusual_characters_in_keys_round_trip(store, prefix).await
            }
            Self::HealthCheckAnswers => health_check_answers(store).await,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A prefix no earlier run used: `conformance/<uuid>/`.
pub fn unique_prefix() -> String {
    format!("conformance/{}/", uuid::Uuid::new_v4())
}

/// Runs one check under a fresh prefix, then removes whatever is left there,
/// even if the check panicked. A passing check that leaves objects behind
/// fails: its own deletes did not take effect.
pub async fn run_check(store: &dyn ObjectStore, check: Check) {
    let prefix = format!("{}{}/", unique_prefix(), check.name());
    let outcome = AssertUnwindSafe(check.run(store, &prefix))
        .catch_unwind()
        .await;
    let leftovers = remove_everything_under(store, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(
        leftovers.is_empty(),
        "{check} on {}: left {} objects behind, first {:?}",
        store.describe(),
        leftovers.len(),
        leftovers.first()
    );
}

/// Every check, one after the other.
pub async fn run_all(store: &dyn ObjectStore) {
    for check in Check::ALL {
        run_check(store, check).await;
    }
}

pub async fn large_object_round_trips(store: &dyn ObjectStore, prefix: &str) {
    let key = key_under(prefix, "study/series/large.dcm");
    let body = pseudo_random_bytes(LARGE_OBJECT_SIZE, 1);
    put(store, &key, body.clone()).await;

    let meta = head(store, &key).await;
    assert_eq!(meta.key, key, "head must return the key it was asked for");
    assert_eq!(
        meta.size, LARGE_OBJECT_SIZE as u64,
        "head of {key} must report the stored size"
    );
    if let Some(last_modified) = meta.last_modified {
        let day = Duration::from_secs(24 * 60 * 60);
        let now = SystemTime::now();
        assert!(
            last_modified > now - day && last_modified < now + day,
            "head of {key} reports last_modified {last_modified:?}, not within a day of now"
        );
    }
    assert_same_bytes(&get(store, &key).await, &body, &key);

    let listed = list(store, prefix).await;
    assert_eq!(
        keys_of(&listed),
        vec![key.clone()],
        "list({prefix:?}) must show the one object"
    );
    assert_eq!(
        listed[0].size, LARGE_OBJECT_SIZE as u64,
        "list must report the stored size"
    );
    delete(store, &key).await;
}

pub async fn empty_object_round_trips(store: &dyn ObjectStore, prefix: &str) {
    let key = key_under(prefix, "empty");
    put(store, &key, Bytes::new()).await;
    assert_eq!(
        head(store, &key).await.size,
        0,
        "head of an empty object must report size 0"
    );
    assert!(
        get(store, &key).await.is_empty(),
        "get of an empty object must return no bytes"
    );
    delete(store, &key).await;
}

pub async fn missing_key_is_not_found(store: &dyn ObjectStore, prefix: &str) {
    for name in ["never-written.dcm", "no/such/directory/either.dcm"] {
        let key = key_under(prefix, name);
        assert_not_found(store.head(&key).await.map(drop), "head", &key, store);
        assert_not_found(store.get(&key).await.map(drop), "get", &key, store);
    }

    // Only S3's flat namespace has no directories; the local store must not
    // let its directories show through as objects.
    let child = key_under(prefix, "parent/child.dcm");
    let parent = key_under(prefix, "parent");
    put(store, &child, Bytes::from_static(b"child")).await;
    assert_not_found(store.head(&parent).await.map(drop), "head", &parent, store);
    assert_not_found(store.get(&parent).await.map(drop), "get", &parent, store);
    delete(store, &child).await;
}

pub async fn list_returns_every_page_and_only_the_prefix(store: &dyn ObjectStore, prefix: &str) {
    let listed_prefix = format!("{prefix}listed/");
    let expected: Vec<ObjectKey> = (0..LISTED_OBJECT_COUNT)
        .map(|index| key_under(&listed_prefix, &format!("instance-{index:05}.dcm")))
        .collect();
    // Siblings share the string "…/listed" but not the prefix "…/listed/".
    let siblings: Vec<ObjectKey> = ["listed-sibling/a.dcm", "listed-sibling/b.dcm", "listed.txt"]
        .iter()
        .map(|name| key_under(prefix, name))
        .collect();
    let all_keys: Vec<ObjectKey> = expected.iter().chain(&siblings).cloned().collect();

    futures::stream::iter(&all_keys)
        .for_each_concurrent(CONCURRENCY, |key| {
            put(store, key, Bytes::from(key.to_string()))
        })
        .await;

    let listed = list(store, &listed_prefix).await;
    assert_eq!(
        listed.len(),
        LISTED_OBJECT_COUNT,
        "list({listed_prefix:?}) must return all {LISTED_OBJECT_COUNT} objects across pages and no siblings"
    );
    assert_eq!(
        keys_of(&listed),
        expected,
        "list must return exactly the keys under the prefix, sorted"
    );
    for meta in &listed {
        assert_eq!(
            meta.size,
            meta.key.as_str().len() as u64,
            "list must report each object's size"
        );
    }

    // A prefix is a plain string prefix, not a directory.
    let without_slash = format!("{prefix}listed");
    let mut everything = all_keys.clone();
    everything.sort();
    assert_eq!(
        keys_of(&list(store, &without_slash).await),
        everything,
        "list({without_slash:?}) must match keys by string prefix"
    );
    let partial_name = format!("{listed_prefix}instance-0000");
    assert_eq!(
        keys_of(&list(store, &partial_name).await),
        expected[..10].to_vec(),
        "list({partial_name:?}) must match part of a name"
    );
    let empty_prefix = format!("{prefix}nothing-here/");
    assert!(
        list(store, &empty_prefix).await.is_empty(),
        "list({empty_prefix:?}) must be empty"
    );

    futures::stream::iter(&all_keys)
        .for_each_concurrent(CONCURRENCY, |key| delete(store, key))
        .await;
    let remaining = list(store, prefix).await;
    assert!(
        remaining.is_empty(),
        "after deleting everything, list({prefix:?}) still returns {} objects",
        remaining.len()
    );
}

pub async fn overwrite_replaces_content(store: &dyn ObjectStore, prefix: &str) {
    let key = key_under(prefix, "overwritten.dcm");
    put(
        store,
        &key,
        Bytes::from_static(b"first version, longer than the second"),
    )
    .await;
    // Shorter, so a write that does not truncate shows up.
    put(store, &key, Bytes::from_static(b"second")).await;
    assert_eq!(
        &get(store, &key).await[..],
        b"second",
        "get after an overwrite must return the new content"
    );
    assert_eq!(
        head(store, &key).await.size,
        6,
        "head after an overwrite must report the new size"
    );
    assert_eq!(
        list(store, prefix).await.len(),
        1,
        "an overwrite must not create a second object"
    );
    delete(store, &key).await;
}

pub async fn delete_is_idempotent(store: &dyn ObjectStore, prefix: &str) {
    let key = key_under(prefix, "deleted.dcm");
    put(store, &key, Bytes::from_static(b"short-lived")).await;
    delete(store, &key).await;
    assert_not_found(
        store.head(&key).await.map(drop),
        "head after delete",
        &key,
        store,
    );
    assert_not_found(
        store.get(&key).await.map(drop),
        "get after delete",
        &key,
        store,
    );
    assert!(
        list(store, prefix).await.is_empty(),
        "list must not show a deleted object"
    );

    // A retried delete, and a delete of something never written, succeed.
    delete(store, &key).await;
    delete(store, &key_under(prefix, "never-written.dcm")).await;
}

pub async fn put_file_round_trips(store: &dyn ObjectStore, prefix: &str) {
    let source = TemporaryFile::new();
    let content = pseudo_random_bytes(3 * 1024 * 1024 + 1, 2);
    std::fs::write(&source.path, &content)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", source.path.display()));

    let key = key_under(prefix, "from-file.dcm");
    store
        .put_file(&key, &source.path)
        .await
        .unwrap_or_else(|error| panic!("put_file {key} on {}: {error}", store.describe()));
    assert_eq!(
        head(store, &key).await.size,
        content.len() as u64,
        "head after put_file must report the file's size"
    );
    assert_same_bytes(&get(store, &key).await, &content, &key);
    delete(store, &key).await;

    let missing_source = source.path.with_extension("missing");
    let never_stored = key_under(prefix, "from-missing-file.dcm");
    let error = store
        .put_file(&never_stored, &missing_source)
        .await
        .expect_err("put_file of a missing local file must fail");
    assert_ne!(
        error.kind(),
        ErrorKind::NotFound,
        "a missing source file must not look like a missing object: {error}"
    );
    assert_not_found(
        store.head(&never_stored).await.map(drop),
        "head after a failed put_file",
        &never_stored,
        store,
    );
}

pub async fn unusual_characters_in_keys_round_trip(store: &dyn ObjectStore, prefix: &str) {
    let names = [
        "space and plus+sign.dcm",
        "percent%20literal=equals&amp;question?hash#.dcm",
        "ünïcödé/файл-名前.dcm",
        "tilde~colon:at@comma,semicolon;quote'bracket[].dcm",
        "..leading-dots/.hidden",
    ];
    let keys: Vec<ObjectKey> = names.iter().map(|name| key_under(prefix, name)).collect();
    for key in &keys {
        put(store, key, Bytes::from(key.to_string())).await;
    }
    for key in &keys {
        assert_eq!(
            &get(store, key).await[..],
            key.as_str().as_bytes(),
            "get {key:?} must return what was put under exactly that key"
        );
        assert_eq!(head(store, key).await.key, *key);
    }
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(
        keys_of(&list(store, prefix).await),
        expected,
        "list must return unusual keys unchanged"
    );
    for key in &keys {
        delete(store, key).await;
    }
}

fn key_under(prefix: &str, name: &str) -> ObjectKey {
    let key = format!("{prefix}{name}");
    ObjectKey::parse(&key)
        .unwrap_or_else(|error| panic!("the conformance suite built a bad key: {error}"))
}

/// A working store passes its readiness check, repeatedly, without writing.
pub async fn health_check_answers(store: &dyn ObjectStore) {
    for _ in 0..3 {
        store
            .health_check()
            .await
            .unwrap_or_else(|error| panic!("health check of {}: {error}", store.describe()));
    }
}

async fn put(store: &dyn ObjectStore, key: &ObjectKey, body: Bytes) {
    store
        .put(key, body)
        .await
        .unwrap_or_else(|error| panic!("put {key} on {}: {error}", store.describe()));
}

async fn get(store: &dyn ObjectStore, key: &ObjectKey) -> Bytes {
    store
        .get(key)
        .await
        .unwrap_or_else(|error| panic!("get {key} on {}: {error}", store.describe()))
}

async fn head(store: &dyn ObjectStore, key: &ObjectKey) -> ObjectMeta {
    store
        .head(key)
        .await
        .unwrap_or_else(|error| panic!("head {key} on {}: {error}", store.describe()))
}

async fn delete(store: &dyn ObjectStore, key: &ObjectKey) {
    store
        .delete(key)
        .await
        .unwrap_or_else(|error| panic!("delete {key} on {}: {error}", store.describe()));
}

async fn list(store: &dyn ObjectStore, prefix: &str) -> Vec<ObjectMeta> {
    store
        .list(prefix)
        .await
        .unwrap_or_else(|error| panic!("list {prefix:?} on {}: {error}", store.describe()))
}

fn keys_of(objects: &[ObjectMeta]) -> Vec<ObjectKey> {
    objects.iter().map(|meta| meta.key.clone()).collect()
}

fn assert_not_found(
    result: Result<(), crate::ObjectStoreError>,
    operation: &str,
    key: &ObjectKey,
    store: &dyn ObjectStore,
) {
    let error = match result {
        Ok(()) => panic!(
            "{operation} {key} on {} must fail with NotFound, but succeeded",
            store.describe()
        ),
        Err(error) => error,
    };
    assert!(
        matches!(error, crate::ObjectStoreError::NotFound { .. })
            && error.kind() == ErrorKind::NotFound,
        "{operation} {key} on {} must fail with the typed NotFound, got {error:?}",
        store.describe()
    );
    assert!(
        error.to_string().contains(key.as_str()),
        "the NotFound message must name the key: {error}"
    );
}

/// Compares without printing megabytes when they differ.
fn assert_same_bytes(actual: &[u8], expected: &[u8], key: &ObjectKey) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "get {key} returned the wrong number of bytes"
    );
    if let Some(offset) = actual
        .iter()
        .zip(expected)
        .position(|(left, right)| left != right)
    {
        panic!("get {key} returned different bytes, first difference at offset {offset}");
    }
}

/// Incompressible, reproducible bytes (xorshift64*), so that a store that
/// drops, repeats or reorders chunks cannot pass by accident.
fn pseudo_random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// Best-effort removal of everything under `prefix`; returns what is left.
async fn remove_everything_under(store: &dyn ObjectStore, prefix: &str) -> Vec<ObjectMeta> {
    let Ok(objects) = store.list(prefix).await else {
        return Vec::new();
    };
    futures::stream::iter(&objects)
        .for_each_concurrent(CONCURRENCY, |meta| async move {
            let _ = store.delete(&meta.key).await;
        })
        .await;
    objects
}

/// A file in the system temp directory, removed on drop even if a check panics.
struct TemporaryFile {
    path: PathBuf,
}

impl TemporaryFile {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("fxtriage-conformance-{}.bin", uuid::Uuid::new_v4()));
        Self { path }
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
