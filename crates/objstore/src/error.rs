use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::key::InvalidObjectKey;

/// What a caller should do about a failure; decides retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object does not exist. Retrying will not help, but the caller may
    /// treat it as an expected outcome (for example, a quarantined instance).
    NotFound,
    /// The store was unreachable, overloaded or timed out; the same request
    /// may succeed later.
    Transient,
    /// The request can never succeed as made (bad key, access denied, missing
    /// bucket, disk full or read-only).
    Permanent,
}

impl ErrorKind {
    pub fn is_retryable(self) -> bool {
        self == Self::Transient
    }
}

/// The store operation that failed, named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Put,
    PutFile,
    Get,
    Head,
    Delete,
    List,
    Check,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Put => "put",
            Self::PutFile => "put_file",
            Self::Get => "get",
            Self::Head => "head",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Check => "check",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("object {key:?} not found")]
    NotFound { key: String },

    #[error(transparent)]
    InvalidKey(#[from] InvalidObjectKey),

    #[error("invalid object store configuration: {message}")]
    InvalidConfig { message: String },

    /// A local filesystem failure. `path` is the file involved: the object's
    /// file for the local store, the source file for `put_file`.
    #[error("{operation} {key:?}: {path}: {source}")]
    Io {
        operation: Operation,
        /// The key, or the prefix for `list`.
        key: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A failure reported by (or on the way to) a remote store.
    #[error("{operation} {key:?}: {message}")]
    Backend {
        operation: Operation,
        /// The key, or the prefix for `list`.
        key: String,
        message: String,
        kind: ErrorKind,
    },
}

impl ObjectStoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::InvalidKey(_) | Self::InvalidConfig { .. } => ErrorKind::Permanent,
            Self::Io { source, .. } => io_error_kind(source),
            Self::Backend { kind, .. } => *kind,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

/// A missing object is reported as [`ObjectStoreError::NotFound`] before it
/// gets here, so an `Io` "not found" is about something else (a `put_file`
/// source, a vanished root) and is permanent.
fn io_error_kind(error: &io::Error) -> ErrorKind {
    match error.kind() {
        io::ErrorKind::Interrupted
        | io::ErrorKind::TimedOut
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::ResourceBusy => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_key() {
        let error = ObjectStoreError::Backend {
            operation: Operation::Head,
            key: "site/1.2/3.4.dcm".to_owned(),
            message: "service unavailable".to_owned(),
            kind: ErrorKind::Transient,
        };
        assert_eq!(
            error.to_string(),
            "head \"site/1.2/3.4.dcm\": service unavailable"
        );
        assert!(error.kind().is_retryable());
    }

    #[test]
    fn a_full_disk_is_not_retried_but_an_interrupted_call_is() {
        let io_error = |kind| ObjectStoreError::Io {
            operation: Operation::Put,
            key: "k".to_owned(),
            path: PathBuf::from("/data/k"),
            source: io::Error::from(kind),
        };
        assert_eq!(
            io_error(io::ErrorKind::StorageFull).kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            io_error(io::ErrorKind::Interrupted).kind(),
            ErrorKind::Transient
        );
    }
}
