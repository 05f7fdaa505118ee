use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError, DateTime};
use bytes::Bytes;

use crate::error::{ErrorKind, ObjectStoreError, Operation};
use crate::key::ObjectKey;
use crate::store::{ObjectMeta, ObjectStore};

/// Where an [`S3Store`] connects and as whom.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `None` for AWS itself; `http://127.0.0.1:8333` for a local server.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Addresses the bucket as `endpoint/bucket/key` rather than
    /// `bucket.endpoint/key`, which local servers without wildcard DNS need.
    pub path_style: bool,
    pub credentials: S3Credentials,
}

#[derive(Clone)]
pub enum S3Credentials {
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
    /// The AWS default chain: environment, profile, web identity, container
    /// and instance metadata.
    Default,
}

// Written by hand so that the secret never reaches a log line.
impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
            Self::Default => f.write_str("Default"),
        }
    }
}

/// An [`ObjectStore`] in one S3 bucket (AWS, SeaweedFS, Garage, MinIO...).
///
/// The SDK already retries transient failures a few times with backoff; an
/// error that reaches the caller has exhausted those retries.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: Option<String>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds a client for `config`. Nothing is sent over the network yet,
    /// so an unreachable endpoint or a missing bucket shows up on first use.
    pub async fn connect(config: S3Config) -> Result<Self, ObjectStoreError> {
        let invalid = |message: &str| {
            Err(ObjectStoreError::InvalidConfig {
                message: message.to_owned(),
            })
        };
        if config.bucket.is_empty() {
            return invalid("the S3 bucket is empty");
        }
        if config.region.is_empty() {
            return invalid("the S3 region is empty");
        }
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid(&format!(
                "the S3 endpoint {endpoint:?} is not an http:// or https:// URL"
            ));
        }

        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(config.region));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let S3Credentials::Static {
            access_key_id,
            secret_access_key,
        } = config.credentials
        {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "fxtriage-static",
            ));
        }
        let shared_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared_config)
            .force_path_style(config.path_style)
            .build();
        Ok(Self {
            client: Client::from_conf(s3_config),
            bucket: config.bucket,
            endpoint: config.endpoint,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectStoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::Put, key.as_str(), error))?;
        Ok(())
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), ObjectStoreError> {
        // A path-backed body is re-opened if the SDK retries, and is read in
        // chunks as it is sent.
        let body = ByteStream::from_path(path)
            .await
            .map_err(|error| local_file_error(key, path, &error))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(body)
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::PutFile, key.as_str(), error))?;
        Ok(())
    }

    async fn health_check(&self) -> Result<(), ObjectStoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::Check, "", error))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectStoreError> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::Get, key.as_str(), error))?;
        let body = response
            .body
            .collect()
            .await
            .map_err(|error| body_error(&self.bucket, key, &error))?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectStoreError> {
        let response = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::Head, key.as_str(), error))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: object_size(response.content_length()),
            last_modified: response.last_modified().and_then(to_system_time),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        // S3 answers 204 for a missing key too, which is the idempotence we want.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|error| sdk_error(&self.bucket, Operation::Delete, key.as_str(), error))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|error| sdk_error(&self.bucket, Operation::List, prefix, error))?;
            for object in page.contents() {
                let Some(raw_key) = object.key() else {
                    continue;
                };
                // Keys written by other tools may break our rules; callers
                // could not address them anyway.
                match ObjectKey::parse(raw_key) {
                    Ok(key) => objects.push(ObjectMeta {
                        key,
                        size: object_size(object.size()),
                        last_modified: object.last_modified().and_then(to_system_time),
                    }),
                    Err(error) => {
                        tracing::warn!(bucket = %self.bucket, %error, "skipping an object that no key can address")
                    }
                }
            }
        }
        // S3 lists in UTF-8 byte order already; sorting makes it a contract
        // rather than a property of the server.
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3://{} at {endpoint}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }
}

fn object_size(content_length: Option<i64>) -> u64 {
    content_length
        .and_then(|length| u64::try_from(length).ok())
        .unwrap_or(0)
}

fn to_system_time(time: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*time).ok()
}

/// Turns an SDK failure into the store's error, deciding what a retry could
/// change. A missing key is `NotFound` whichever way the server says it: the
/// `NoSuchKey` code on GET, or a bare 404 on HEAD, which has no body.
fn sdk_error<E>(
    bucket: &str,
    operation: Operation,
    key: &str,
    error: SdkError<E>,
) -> ObjectStoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let (kind, message) = match &error {
        SdkError::ServiceError(_) => (
            service_error_kind(operation, error.code(), status),
            service_error_message(&error, status),
        ),
        SdkError::ConstructionFailure(_) => (ErrorKind::Permanent, error_chain(&error)),
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            (ErrorKind::Permanent, error_chain(&error))
        }
        // Timeouts, connection failures and truncated responses.
        _ => (ErrorKind::Transient, error_chain(&error)),
    };
    if kind == ErrorKind::NotFound {
        return ObjectStoreError::NotFound {
            key: key.to_owned(),
        };
    }
    ObjectStoreError::Backend {
        operation,
        key: key.to_owned(),
        message: format!("bucket {bucket}: {message}"),
        kind,
    }
}

/// `NoSuchBucket: The specified bucket does not exist (HTTP 404, request id
/// …)`. The SDK's own rendering includes the whole response and is too long
/// for a log line.
fn service_error_message<E: ProvideErrorMetadata>(
    error: &SdkError<E>,
    status: Option<u16>,
) -> String {
    let what = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        // HEAD responses have no body to carry a code.
        (None, _) => "no error code".to_owned(),
    };
    let status = status.map_or_else(|| "no status".to_owned(), |status| format!("HTTP {status}"));
    match error.request_id() {
        Some(request_id) => format!("{what} ({status}, request id {request_id})"),
        None => format!("{what} ({status})"),
    }
}

/// `dispatch failure: io error: …: Connection refused (os error 111)`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their source's text in their own.
        if !message.ends_with(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

fn service_error_kind(operation: Operation, code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match (code, status) {
        (Some("NoSuchKey"), _) => ErrorKind::NotFound,
        // A HEAD of a missing bucket is a bare 404 too; it cannot be told
        // apart without another request.
        (Some("NotFound") | None, Some(404)) if operation == Operation::Head => ErrorKind::NotFound,
        (Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"), _) => {
            ErrorKind::Transient
        }
        (_, Some(408 | 429 | 500..=599)) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// The local file for `put_file` could not be opened or measured.
fn local_file_error(key: &ObjectKey, path: &Path, error: &ByteStreamError) -> ObjectStoreError {
    let source = match error
        .source()
        .and_then(|source| source.downcast_ref::<io::Error>())
    {
        Some(io_error) => io::Error::new(io_error.kind(), io_error.to_string()),
        None => io::Error::other(error.to_string()),
    };
    ObjectStoreError::Io {
        operation: Operation::PutFile,
        key: key.to_string(),
        path: path.to_owned(),
        source,
    }
}

/// The response started but its body broke off: worth another try.
fn body_error(bucket: &str, key: &ObjectKey, error: &ByteStreamError) -> ObjectStoreError {
    ObjectStoreError::Backend {
        operation: Operation::Get,
        key: key.to_string(),
        message: format!(
            "bucket {bucket}: reading the body failed: {}",
            error_chain(error)
        ),
        kind: ErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let config = S3Config {
            endpoint: Some("http://127.0.0.1:8333".to_owned()),
            bucket: "fxtriage".to_owned(),
            region: "us-east-1".to_owned(),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key_id: "fxtriage".to_owned(),
                secret_access_key: "very-secret-value".to_owned(),
            },
        };
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("very-secret-value"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(printed.contains("fxtriage"), "{printed}");
    }

    #[test]
    fn missing_keys_are_not_found_and_overload_is_transient() {
        assert_eq!(
            service_error_kind(Operation::Get, Some("NoSuchKey"), Some(404)),
            ErrorKind::NotFound
        );
        assert_eq!(
            service_error_kind(Operation::Head, None, Some(404)),
            ErrorKind::NotFound
        );
        assert_eq!(
            service_error_kind(Operation::Head, Some("NotFound"), Some(404)),
            ErrorKind::NotFound
        );
        assert_eq!(
            service_error_kind(Operation::Get, Some("NoSuchBucket"), Some(404)),
            ErrorKind::Permanent
        );
        assert_eq!(
            service_error_kind(Operation::Put, Some("SlowDown"), Some(503)),
            ErrorKind::Transient
        );
        assert_eq!(
            service_error_kind(Operation::Put, None, Some(500)),
            ErrorKind::Transient
        );
        assert_eq!(
            service_error_kind(Operation::Put, Some("AccessDenied"), Some(403)),
            ErrorKind::Permanent
        );
    }

    #[tokio::test]
    async fn connect_rejects_an_endpoint_without_a_scheme() {
        let config = S3Config {
            endpoint: Some("127.0.0.1:8333".to_owned()),
            bucket: "fxtriage".to_owned(),
            region: "us-east-1".to_owned(),
            path_style: true,
            credentials: S3Credentials::Default,
        };
        let error = S3Store::connect(config).await.unwrap_err();
        assert!(
            matches!(error, ObjectStoreError::InvalidConfig { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn describe_names_bucket_and_endpoint_but_not_credentials() {
        let store = S3Store::connect(S3Config {
            endpoint: Some("http://127.0.0.1:18333".to_owned()),
            bucket: "fxtriage".to_owned(),
            region: "us-east-1".to_owned(),
            path_style: true,
            credentials: S3Credentials::Static {
                access_key_id: "fxtriage".to_owned(),
                secret_access_key: "very-secret-value".to_owned(),
            },
        })
        .await
        .unwrap();
        assert_eq!(store.describe(), "s3://fxtriage at http://127.0.0.1:18333");
        assert!(!format!("{store:?}").contains("very-secret-value"));
    }
}
