//! What a request that failed gets back: a status and a JSON body
//! `{"error": "<kind>", "message": "<what to do>"}`. Internal causes are logged,
//! never sent: a client learns what it did wrong, not how the server is built.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fxtriage_worklist::{ErrorKind, StoreError};

/// A failed request. Build one with the constructors, which fix the status and
/// the machine-readable kind together.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `unauthenticated`, `not-found`, `conflict`, ...
    pub kind: &'static str,
    pub message: String,
    /// Extra JSON fields, e.g. who holds a conflicting claim.
    pub detail: Option<serde_json::Value>,
    /// `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
    /// `Retry-After` in seconds, of a 429 or 503.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            detail: None,
            challenge: None,
            retry_after: None,
        }
    }

    /// No credentials, or a malformed `Authorization` header.
    pub fn unauthenticated() -> Self {
        Self {
            challenge: Some("Bearer realm=\"fxtriage\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send `Authorization: Bearer <token>` with a token of this site",
            )
        }
    }

    /// A token that is unknown or revoked.
    pub fn invalid_token() -> Self {
        Self {
            challenge: Some("Bearer realm=\"fxtriage\", error=\"invalid_token\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the bearer token is unknown or revoked",
            )
        }
    }

    /// Too many invalid tokens from this address or with this token's prefix
    /// lately (`fxtriage_sites::throttle`): refused before any lookup.
    pub fn too_many_failures(retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(fxtriage_sites::throttle::retry_after_seconds(retry_after)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-failures",
                "too many invalid tokens from this address or with this token's prefix; retry after the Retry-After seconds",
            )
        }
    }

    /// Missing, or not this token's to see: the two are indistinguishable on purpose.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "no such resource")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this route does not take that method",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The stored image cannot be rendered (unsupported or damaged pixel data).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// A dependency (database, object store) is down or overloaded: retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the cause",
        )
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.kind, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(object)) =
            (self.detail, body.as_object_mut())
        {
            object.extend(extra);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Database trouble: logged with its cause, answered 503 when a retry may pass
/// and 500 otherwise.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error.kind() {
            ErrorKind::Transient => {
                tracing::warn!(%error, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry later")
            }
            ErrorKind::Permanent => {
                tracing::error!(%error, "database refused a request");
                ApiError::internal()
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::from(error).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Database {
            doing: "serving an API request",
            source: error,
        }
        .into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Adds what was being done to a PostgreSQL error: the prioritizer's store's.
pub(crate) use fxtriage_worklist::Doing;
