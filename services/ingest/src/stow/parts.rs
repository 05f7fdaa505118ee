//! Receiving one part of a Store request without holding an unbounded amount of
//! it in memory: a part stays in memory up to a threshold and is spooled to a
//! temporary file beyond it; a part over the site's instance limit is read to
//! its end but only its first `limit` bytes are kept (enough to name it in the
//! response), so that the parts after it can still be stored.

use std::io;
use std::path::PathBuf;

use bytes::BytesMut;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;

use crate::InstanceSource;

#[derive(Debug, Clone)]
pub(super) struct PartLimits {
    /// The site's `limits.max_instance_bytes`.
    pub max_instance_bytes: u64,
    /// Parts up to this size stay in memory.
    pub memory_threshold: u64,
    /// Where larger parts are spooled; the system's temporary directory if `None`.
    pub spool_dir: Option<PathBuf>,
}

/// A part as received.
#[derive(Debug)]
pub(super) struct ReceivedPart {
    /// The whole part, or its first `max_instance_bytes` when `over_limit`.
    pub source: InstanceSource,
    /// The size of the whole part.
    pub size: u64,
    pub over_limit: bool,
    /// Removes the spool file when the part is dropped.
    _spool: Option<TempPath>,
}

#[derive(Debug)]
pub(super) enum PartError {
    /// The multipart body itself is broken, cut off or too large.
    Body(multer::Error),
    /// The part could not be spooled (the disk is full, the directory is missing).
    Spool(io::Error),
}

pub(super) async fn receive(
    mut field: multer::Field<'_>,
    limits: &PartLimits,
) -> Result<ReceivedPart, PartError> {
    let mut memory = BytesMut::new();
    let mut spool: Option<(tokio::fs::File, TempPath)> = None;
    let mut size: u64 = 0;
    let mut kept: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(PartError::Body)? {
        size += chunk.len() as u64;
        if size > limits.max_instance_bytes {
            // Keep reading (and dropping) to the part's end, to reach the next part.
            continue;
        }
        kept = size;
        match &mut spool {
            Some((file, _)) => file.write_all(&chunk).await.map_err(PartError::Spool)?,
            None if kept > limits.memory_threshold => {
                let (mut file, path) = create_spool_file(limits.spool_dir.clone())
                    .await
                    .map_err(PartError::Spool)?;
                file.write_all(&memory).await.map_err(PartError::Spool)?;
                file.write_all(&chunk).await.map_err(PartError::Spool)?;
                memory = BytesMut::new();
                spool = Some((file, path));
            }
            None => memory.extend_from_slice(&chunk),
        }
    }
    let over_limit = size > limits.max_instance_bytes;
    let (source, spool_path) = match spool {
        Some((mut file, path)) => {
            file.flush().await.map_err(PartError::Spool)?;
            drop(file);
            let source = InstanceSource::File {
                path: path.to_path_buf(),
                len: kept,
            };
            (source, Some(path))
        }
        None => (InstanceSource::Memory(memory.freeze()), None),
    };
    Ok(ReceivedPart {
        source,
        size,
        over_limit,
        _spool: spool_path,
    })
}

async fn create_spool_file(directory: Option<PathBuf>) -> io::Result<(tokio::fs::File, TempPath)> {
    let created = tokio::task::spawn_blocking(move || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("fxtriage-stow-").suffix(".part");
        match &directory {
            Some(directory) => builder.tempfile_in(directory),
            None => builder.tempfile(),
        }
    })
    .await
    .map_err(io::Error::other)??;
    let (file, path) = created.into_parts();
    Ok((tokio::fs::File::from_std(file), path))
}
