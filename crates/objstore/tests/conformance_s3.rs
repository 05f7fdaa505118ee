//! The conformance suite against a real S3-compatible server, configured by
//! `FXTRIAGE_S3_ENDPOINT`, `FXTRIAGE_S3_BUCKET`, `FXTRIAGE_S3_REGION`,
//! `FXTRIAGE_S3_ACCESS_KEY_ID` and `FXTRIAGE_S3_SECRET_ACCESS_KEY`.
//!
//! Without an endpoint the tests skip, unless the real stack is required
//! (`fxtriage_testkit::stack`): there a skipped S3 test would hide a broken
//! stack, so they fail.

use std::env;

use bytes::Bytes;
use fxtriage_objstore::conformance::{self, Check};
use fxtriage_objstore::{ErrorKind, ObjectKey, ObjectStore, S3Config, S3Credentials, S3Store};

fn env_value(name: &str) -> Option<String> {
    env::var(name).ok().filter(|value| !value.is_empty())
}

/// The store under test, or `None` (after saying why) when no server is configured.
async fn store_from_env(test_name: &str) -> Option<S3Store> {
    let endpoint = fxtriage_testkit::stack::setting("FXTRIAGE_S3_ENDPOINT")?;
    let credentials = match (
        env_value("FXTRIAGE_S3_ACCESS_KEY_ID"),
        env_value("FXTRIAGE_S3_SECRET_ACCESS_KEY"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => S3Credentials::Static {
            access_key_id,
            secret_access_key,
        },
        _ => S3Credentials::Default,
    };
    let config = S3Config {
        endpoint: Some(endpoint),
        bucket: env_value("FXTRIAGE_S3_BUCKET").unwrap_or_else(|| "fxtriage".to_owned()),
        region: env_value("FXTRIAGE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
        path_style: true,
        credentials,
    };
    let store = S3Store::connect(config)
        .await
        .unwrap_or_else(|error| panic!("{test_name}: {error}"));
    Some(store)
}

async fn check_against_s3(check: Check) {
    if let Some(store) = store_from_env(check.name()).await {
        conformance::run_check(&store, check).await;
    }
}

#[tokio::test]
async fn large_object_round_trips() {
    check_against_s3(Check::LargeObjectRoundTrips).await;
}

#[tokio::test]
async fn empty_object_round_trips() {
    check_against_s3(Check::EmptyObjectRoundTrips).await;
}

#[tokio::test]
async fn missing_key_is_not_found() {
    check_against_s3(Check::MissingKeyIsNotFound).await;
}

#[tokio::test]
async fn list_returns_every_page_and_only_the_prefix() {
    check_against_s3(Check::ListReturnsEveryPageAndOnlyThePrefix).await;
}

#[tokio::test]
async fn overwrite_replaces_content() {
    check_against_s3(Check::OverwriteReplacesContent).await;
}

#[tokio::test]
async fn delete_is_idempotent() {
    check_against_s3(Check::DeleteIsIdempotent).await;
}

#[tokio::test]
async fn put_file_round_trips() {
    check_against_s3(Check::PutFileRoundTrips).await;
}

#[tokio::test]
async fn unusual_characters_in_keys_round_trip() {
    check_against_s3(Check::UnusualCharactersInKeysRoundTrip).await;
}

#[tokio::test]
async fn health_check_answers() {
    check_against_s3(Check::HealthCheckAnswers).await;
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_error() {
    let Some(store) = store_from_env("wrong_secret_is_a_permanent_error").await else {
        return;
    };
    let wrong = S3Store::connect(S3Config {
        endpoint: env_value("FXTRIAGE_S3_ENDPOINT"),
        bucket: store.bucket().to_owned(),
        region: env_value("FXTRIAGE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
        path_style: true,
        credentials: S3Credentials::Static {
            access_key_id: env_value("FXTRIAGE_S3_ACCESS_KEY_ID")
                .unwrap_or_else(|| "fxtriage".to_owned()),
            secret_access_key: "not-the-secret".to_owned(),
        },
    })
    .await
    .expect("connect does not talk to the server");
    let key = ObjectKey::parse(&format!("{}denied.dcm", conformance::unique_prefix())).unwrap();
    let error = wrong
        .put(&key, Bytes::from_static(b"denied"))
        .await
        .expect_err("a wrong secret must be rejected");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    assert!(error.to_string().contains(key.as_str()), "{error}");
    assert!(!error.to_string().contains("not-the-secret"), "{error}");
}

/// Readiness sees a server that does not answer and credentials it refuses.
#[tokio::test]
async fn health_check_fails_when_unreachable_or_refused() {
    let Some(store) = store_from_env("health_check_fails_when_unreachable_or_refused").await else {
        return;
    };
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let connect = |endpoint: String, secret: String| {
        S3Store::connect(S3Config {
            endpoint: Some(endpoint),
            bucket: store.bucket().to_owned(),
            region: env_value("FXTRIAGE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key_id: env_value("FXTRIAGE_S3_ACCESS_KEY_ID")
                    .unwrap_or_else(|| "fxtriage".to_owned()),
                secret_access_key: secret,
            },
        })
    };
    let unreachable = connect(
        format!("http://127.0.0.1:{closed_port}"),
        env_value("FXTRIAGE_S3_SECRET_ACCESS_KEY").unwrap_or_default(),
    )
    .await
    .expect("connect does not talk to the server");
    let error = unreachable
        .health_check()
        .await
        .expect_err("nothing listens there");
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    let refused = connect(
        env_value("FXTRIAGE_S3_ENDPOINT").expect("endpoint"),
        "not-the-secret".to_owned(),
    )
    .await
    .expect("connect does not talk to the server");
    let error = refused
        .health_check()
        .await
        .expect_err("a wrong secret must be refused");
    assert!(!error.to_string().contains("not-the-secret"), "{error}");
}
