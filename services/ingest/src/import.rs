//! Bulk import of an archive: every DICOM file of a directory tree or of a
//! bucket prefix goes through the same [`Ingestor::accept`] as a C-STORE, with
//! [`Sender::Import`] naming the file.
//!
//! - Files are found first (so that progress can show totals and an ETA), then
//!   imported a few at a time ([`ImportOptions::concurrency`]).
//! - A file is imported if it looks like DICOM: "DICM" at offset 128 (or 0), or
//!   a `.dcm`/`.dicom` name. Other files and DICOMDIRs are skipped and counted.
//!   A directory walk does not follow symbolic links.
//! - A file already stored is skipped without an event: its header names the key
//!   it would be stored at (`{site}/{study}/{series}/{sop}.dcm`), and the object
//!   there has the same size and SHA-256. A changed file with the same SOP
//!   Instance UID is stored again (and announced).
//! - Rejected files are quarantined with their reason, as from any sender; a
//!   second import quarantines them again.
//! - Files of a bucket are read whole into memory; files of a directory are
//!   handed over by path and never held in memory.

mod sources;
mod summary;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use fxtriage_core::{DicomUid, InstanceKey};
use fxtriage_objstore::{ObjectKey, ObjectStore};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::stow::HeaderUids;
use crate::{IngestError, Ingestor, InstanceSource, Sender, SiteConfig};

pub use summary::{Examples, FileOutcome, ImportSummary};

use sources::{Candidate, Found};

/// What to import.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// A directory tree (or a single file).
    Directory(PathBuf),
    /// The objects under `prefix` of `store`. `name` (`s3://bucket`) prefixes each
    /// key where a file is shown or recorded.
    Bucket {
        store: Arc<dyn ObjectStore>,
        name: String,
        prefix: String,
    },
}

impl ImportSource {
    fn object_name(&self, key: &ObjectKey) -> String {
        match self {
            ImportSource::Bucket { name, .. } => format!("{}/{key}", name.trim_end_matches('/')),
            ImportSource::Directory(_) => key.to_string(),
        }
    }

    fn bucket(&self) -> Option<&Arc<dyn ObjectStore>> {
        match self {
            ImportSource::Bucket { store, .. } => Some(store),
            ImportSource::Directory(_) => None,
        }
    }
}

impl fmt::Display for ImportSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportSource::Directory(path) => write!(f, "{}", path.display()),
            ImportSource::Bucket { name, prefix, .. } => {
                write!(f, "{}/{prefix}", name.trim_end_matches('/'))
            }
        }
    }
}

/// Where an import reads from, as a user writes it: a path, or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportLocation {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl ImportLocation {
    pub fn parse(location: &str) -> Result<Self, ImportError> {
        let Some(rest) = location.strip_prefix("s3://") else {
            return Ok(ImportLocation::Directory(PathBuf::from(location)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ImportError::Source {
                source_name: location.to_owned(),
                message: "no bucket: write s3://bucket/prefix".to_owned(),
            });
        }
        Ok(ImportLocation::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Files imported at the same time.
    pub concurrency: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { concurrency: 4 }
    }
}

/// Told how an import goes, e.g. to draw a progress bar.
pub trait ImportProgress: Send + Sync {
    /// Every file to import is known.
    fn found(&self, files: u64, bytes: u64);
    /// One of them is done.
    fn done(&self, source: &str, bytes: u64, outcome: &FileOutcome);
}

/// Progress reported nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ImportProgress for NoProgress {
    fn found(&self, _files: u64, _bytes: u64) {}
    fn done(&self, _source: &str, _bytes: u64, _outcome: &FileOutcome) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the import source {source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
}

/// Imports every DICOM file of `source` into `site`; stops starting new files
/// when `shutdown` is cancelled (those in flight finish). Per-file failures are
/// in the summary; only an unreadable source is an error.
pub async fn import(
    ingestor: &Ingestor,
    site: &SiteConfig,
    source: &ImportSource,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
    shutdown: CancellationToken,
) -> Result<ImportSummary, ImportError> {
    let Found {
        candidates,
        passed_over,
    } = sources::find(source).await?;
    let mut summary = ImportSummary {
        source: source.to_string(),
        site: site.id.to_string(),
        files: candidates.len() as u64,
        bytes: candidates.iter().map(|candidate| candidate.size).sum(),
        ..Default::default()
    };
    for (display, outcome) in passed_over {
        summary.record(&display, 0, outcome);
    }
    progress.found(summary.files, summary.bytes);
    tracing::info!(source = %source, site = %site.id, files = summary.files, bytes = summary.bytes, "import started");

    let importer = FileImporter {
        ingestor,
        site,
        bucket: source.bucket(),
    };
    let total = candidates.len();
    let mut seen = 0;
    let mut outcomes = std::pin::pin!(
        futures::stream::iter(candidates)
            .take_until(shutdown.cancelled())
            .map(|candidate| importer.import(candidate))
            .buffer_unordered(options.concurrency.max(1))
    );
    while let Some((candidate, outcome)) = outcomes.next().await {
        seen += 1;
        progress.done(&candidate.display, candidate.size, &outcome);
        summary.record(&candidate.display, candidate.size, outcome);
    }
    summary.interrupted = seen < total;
    tracing::info!(
        stored = summary.stored,
        duplicates = summary.duplicates,
        quarantined = summary.quarantined_count(),
        failed = summary.failed.count,
        interrupted = summary.interrupted,
        "import finished"
    );
    Ok(summary)
}

struct FileImporter<'a> {
    ingestor: &'a Ingestor,
    site: &'a SiteConfig,
    bucket: Option<&'a Arc<dyn ObjectStore>>,
}

impl FileImporter<'_> {
    async fn import(&self, candidate: Candidate) -> (Candidate, FileOutcome) {
        let outcome = self.outcome(&candidate).await;
        (candidate, outcome)
    }

    async fn outcome(&self, candidate: &Candidate) -> FileOutcome {
        let instance = match sources::load(candidate, self.bucket).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(why)) => return FileOutcome::Skipped { why },
            Err(message) => {
                return FileOutcome::Failed {
                    message: format!("cannot read: {message}"),
                };
            }
        };
        if self.is_already_stored(&instance).await {
            return FileOutcome::Duplicate;
        }
        let sender = Sender::Import {
            source: candidate.display.clone(),
        };
        match self.ingestor.accept(self.site, instance, &sender).await {
            Ok(_) => FileOutcome::Stored,
            Err(IngestError::Rejected { rejection, .. }) => FileOutcome::Quarantined {
                kind: rejection.kind.as_str().to_owned(),
                reason: rejection.message,
            },
            Err(error @ IngestError::Unavailable { .. }) => FileOutcome::Failed {
                message: error.to_string(),
            },
        }
    }

    /// Whether the object this instance would be stored as exists with the same
    /// bytes. Any doubt (unreadable header, store error) means "no": storing
    /// again is harmless, skipping wrongly is not.
    async fn is_already_stored(&self, instance: &InstanceSource) -> bool {
        let Some(HeaderUids {
            study_instance: Some(study),
            series_instance: Some(series),
            sop_instance: Some(sop),
            ..
        }) = HeaderUids::read(instance).await
        else {
            return false;
        };
        let (Ok(study), Ok(series), Ok(sop)) = (
            DicomUid::parse(&study),
            DicomUid::parse(&series),
            DicomUid::parse(&sop),
        ) else {
            return false;
        };
        let instance_key = InstanceKey {
            site: self.site.id.clone(),
            study,
            series,
            sop,
        };
        let Ok(key) = ObjectKey::parse(&instance_key.object_key()) else {
            return false;
        };
        let store = self.ingestor.store();
        match store.head(&key).await {
            Ok(meta) if meta.size == instance.len() => {}
            _ => return false,
        }
        let Ok(stored) = store.get(&key).await else {
            return false;
        };
        let (stored_digest, instance_digest) =
            tokio::join!(sha256_of_bytes(stored), sha256_of(instance.clone()));
        matches!((stored_digest, instance_digest), (Some(a), Some(b)) if a == b)
    }
}

async fn sha256_of_bytes(bytes: Bytes) -> Option<[u8; 32]> {
    sha256_of(InstanceSource::Memory(bytes)).await
}

async fn sha256_of(instance: InstanceSource) -> Option<[u8; 32]> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        match &instance {
            InstanceSource::Memory(bytes) => hasher.update(bytes),
            InstanceSource::File { path, .. } => {
                let mut file = std::fs::File::open(path).ok()?;
                std::io::copy(&mut file, &mut hasher).ok()?;
            }
        }
        Some(hasher.finalize().into())
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_path_or_an_s3_prefix() {
        assert_eq!(
            ImportLocation::parse("/data/archive").expect("path"),
            ImportLocation::Directory(PathBuf::from("/data/archive"))
        );
        assert_eq!(
            ImportLocation::parse("s3://archive/2024/wrists").expect("s3"),
            ImportLocation::S3 {
                bucket: "archive".into(),
                prefix: "2024/wrists".into()
            }
        );
        assert_eq!(
            ImportLocation::parse("s3://archive").expect("s3"),
            ImportLocation::S3 {
                bucket: "archive".into(),
                prefix: String::new()
            }
        );
        assert!(ImportLocation::parse("s3:///prefix").is_err());
    }
}
