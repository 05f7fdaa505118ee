//! Errors of the worklist store, with the kind that decides between retrying a
//! message and dead-lettering it.

use fxtriage_core::SiteId;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database is unreachable, overloaded, restarting, or a transaction
    /// conflicted: retry later, the message must not be lost.
    Transient,
    /// The message can never be applied as it is.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("site {0} is not in the site registry (`fxtriage sites apply`)")]
    UnknownSite(SiteId),
    /// The message contradicts what is stored, e.g. a finding naming another study
    /// than its instance.
    #[error("{0}")]
    Conflict(String),
    #[error("PostgreSQL error while {doing}: {}", describe(source))]
    Database {
        doing: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no database connection: {}", describe_pool_error(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::UnknownSite(_) | StoreError::Conflict(_) => ErrorKind::Permanent,
            StoreError::Database { source, .. } => database_error_kind(source),
            StoreError::Pool(_) => ErrorKind::Transient,
        }
    }
}

/// Data exceptions (SQLSTATE class 22) and integrity violations (class 23) say the
/// values themselves are refused, so no retry helps; everything else (connection
/// loss, serialization failures, deadlocks, shutdowns, resource limits, even a
/// missing table while a migration is pending) may pass.
fn database_error_kind(error: &tokio_postgres::Error) -> ErrorKind {
    match error.code().map(|state| state.code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// The error with the server's own message ("db error" alone says nothing).
fn describe(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

fn describe_pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(backend) => describe(backend),
        other => other.to_string(),
    }
}

/// Adds what was being done to a PostgreSQL error.
pub trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, tokio_postgres::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { doing, source })
    }
}
