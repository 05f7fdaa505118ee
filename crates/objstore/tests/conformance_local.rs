//! The conformance suite against `LocalDirStore` in a fresh temporary directory.

use std::sync::Arc;

use fxtriage_objstore::conformance::{self, Check};
use fxtriage_objstore::{LocalDirStore, ObjectStore};

async fn check_in_fresh_directory(check: Check) {
    let directory = tempfile::tempdir().expect("cannot create a temporary directory");
    let store = LocalDirStore::new(directory.path().join("objects"));
    conformance::run_check(&store, check).await;
}

#[tokio::test]
async fn large_object_round_trips() {
    check_in_fresh_directory(Check::LargeObjectRoundTrips).await;
}

#[tokio::test]
async fn empty_object_round_trips() {
    check_in_fresh_directory(Check::EmptyObjectRoundTrips).await;
}

#[tokio::test]
async fn missing_key_is_not_found() {
    check_in_fresh_directory(Check::MissingKeyIsNotFound).await;
}

#[tokio::test]
async fn list_returns_every_page_and_only_the_prefix() {
    check_in_fresh_directory(Check::ListReturnsEveryPageAndOnlyThePrefix).await;
}

#[tokio::test]
async fn overwrite_replaces_content() {
    check_in_fresh_directory(Check::OverwriteReplacesContent).await;
}

#[tokio::test]
async fn delete_is_idempotent() {
    check_in_fresh_directory(Check::DeleteIsIdempotent).await;
}

#[tokio::test]
async fn put_file_round_trips() {
    check_in_fresh_directory(Check::PutFileRoundTrips).await;
}

#[tokio::test]
async fn unusual_characters_in_keys_round_trip() {
    check_in_fresh_directory(Check::UnusualCharactersInKeysRoundTrip).await;
}

#[tokio::test]
async fn health_check_answers() {
    check_in_fresh_directory(Check::HealthCheckAnswers).await;
}

/// Every check in one store, held the way services hold it, so checks that
/// pass alone also pass together.
#[tokio::test]
async fn all_checks_share_one_store() {
    let directory = tempfile::tempdir().expect("cannot create a temporary directory");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(directory.path().to_owned()));
    conformance::run_all(store.as_ref()).await;
}

/// A root that cannot be a directory (a file is in the way) fails the health
/// check with the path, so readiness names the problem.
#[tokio::test]
async fn health_check_fails_when_the_root_cannot_be_a_directory() {
    let directory = tempfile::tempdir().expect("cannot create a temporary directory");
    let blocked = directory.path().join("objects");
    std::fs::write(&blocked, b"not a directory").expect("write a file");
    let store = LocalDirStore::new(blocked.clone());
    let error = store
        .health_check()
        .await
        .expect_err("a file where the root should be");
    assert!(
        error.to_string().contains(&blocked.display().to_string()),
        "{error}"
    );
}
