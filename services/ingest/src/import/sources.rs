//! Where imported files come from: the regular files of a directory tree, or the
//! objects under a prefix of a bucket; and which of them look like DICOM.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fxtriage_objstore::{ObjectKey, ObjectStore};

use super::{FileOutcome, ImportError, ImportSource};
use crate::InstanceSource;

/// Why a file is not imported (the keys of `ImportSummary::skipped`).
pub(super) const NOT_DICOM: &str = "not DICOM";
pub(super) const DICOMDIR: &str = "DICOMDIR (a media directory, not an instance)";
pub(super) const SYMBOLIC_LINK: &str = "symbolic link (not followed)";
pub(super) const NOT_A_FILE: &str = "not a regular file";

/// Enough of a file to recognise Part 10: the preamble and "DICM".
const MAGIC_END: usize = 132;

/// A file to import.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub location: Location,
    /// The path, or `s3://bucket/key`: shown to the user, recorded as the sender.
    pub display: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub(super) enum Location {
    File(PathBuf),
    Object(ObjectKey),
}

/// Everything found under the source: files to import, and what was passed over.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub candidates: Vec<Candidate>,
    pub passed_over: Vec<(String, FileOutcome)>,
}

pub(super) async fn find(source: &ImportSource) -> Result<Found, ImportError> {
    match source {
        ImportSource::Directory(root) => {
            let root = root.clone();
            tokio::task::spawn_blocking(move || walk(&root))
                .await
                .map_err(|error| ImportError::Source {
                    source_name: source.to_string(),
                    message: error.to_string(),
                })?
        }
        ImportSource::Bucket { store, prefix, .. } => {
            let objects = store
                .list(prefix)
                .await
                .map_err(|error| ImportError::Source {
                    source_name: source.to_string(),
                    message: error.to_string(),
                })?;
            let candidates = objects
                .into_iter()
                .map(|object| Candidate {
                    display: source.object_name(&object.key),
                    location: Location::Object(object.key),
                    size: object.size,
                })
                .collect();
            Ok(Found {
                candidates,
                passed_over: Vec::new(),
            })
        }
    }
}

/// Walks `root` in file-name order without following symbolic links (except
/// `root` itself): an import never leaves the tree it was given, nor reads a file
/// twice through a link.
fn walk(root: &Path) -> Result<Found, ImportError> {
    std::fs::metadata(root).map_err(|error| ImportError::Source {
        source_name: root.display().to_string(),
        message: error.to_string(),
    })?;
    let mut found = Found::default();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let display = error
                    .path()
                    .map(|path| path.display().to_string())
                    .unwrap_or_else(|| root.display().to_string());
                found.passed_over.push((
                    display,
                    FileOutcome::Failed {
                        message: format!("cannot read: {error}"),
                    },
                ));
                continue;
            }
        };
        let display = entry.path().display().to_string();
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        if file_type.is_symlink() {
            found
                .passed_over
                .push((display, FileOutcome::Skipped { why: SYMBOLIC_LINK }));
            continue;
        }
        if !file_type.is_file() {
            found
                .passed_over
                .push((display, FileOutcome::Skipped { why: NOT_A_FILE }));
            continue;
        }
        match entry.metadata() {
            Ok(metadata) => found.candidates.push(Candidate {
                location: Location::File(entry.into_path()),
                display,
                size: metadata.len(),
            }),
            Err(error) => found.passed_over.push((
                display,
                FileOutcome::Failed {
                    message: format!("cannot read: {error}"),
                },
            )),
        }
    }
    Ok(found)
}

/// The candidate's bytes, if it looks like DICOM: `Ok(Err(why))` when it is
/// passed over.
pub(super) async fn load(
    candidate: &Candidate,
    bucket: Option<&Arc<dyn ObjectStore>>,
) -> Result<Result<InstanceSource, &'static str>, String> {
    if file_name(&candidate.display).eq_ignore_ascii_case("DICOMDIR") {
        return Ok(Err(DICOMDIR));
    }
    match (&candidate.location, bucket) {
        (Location::File(path), _) => {
            let path = path.clone();
            let display = candidate.display.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path).map_err(|error| error.to_string())?;
                let len = file.metadata().map_err(|error| error.to_string())?.len();
                let mut start = Vec::with_capacity(MAGIC_END);
                file.take(MAGIC_END as u64)
                    .read_to_end(&mut start)
                    .map_err(|error| error.to_string())?;
                if !looks_like_dicom(&start, &display) {
                    return Ok(Err(NOT_DICOM));
                }
                Ok(Ok(InstanceSource::File { path, len }))
            })
            .await
            .map_err(|error| error.to_string())?
        }
        (Location::Object(key), Some(store)) => {
            let bytes = store.get(key).await.map_err(|error| error.to_string())?;
            if !looks_like_dicom(&bytes[..bytes.len().min(MAGIC_END)], &candidate.display) {
                return Ok(Err(NOT_DICOM));
            }
            Ok(Ok(InstanceSource::Memory(bytes)))
        }
        (Location::Object(_), None) => Err("an object without its bucket".to_owned()),
    }
}

/// Part 10 with its preamble ("DICM" at 128), without it ("DICM" at 0), or a
/// file named as DICOM: such a file is meant to be an instance, and if it is not
/// one it is quarantined with the reason rather than silently passed over.
fn looks_like_dicom(start: &[u8], name: &str) -> bool {
    let magic = b"DICM";
    let extension = file_name(name)
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    start.get(128..132) == Some(magic)
        || start.starts_with(magic)
        || matches!(extension.as_deref(), Some("dcm" | "dicom"))
}

fn file_name(display: &str) -> &str {
    display
        .rsplit(['/', std::path::MAIN_SEPARATOR])
        .next()
        .unwrap_or(display)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_is_recognised_by_its_magic_or_its_name() {
        let mut part10 = vec![0_u8; 128];
        part10.extend_from_slice(b"DICM\x02\x00");
        assert!(looks_like_dicom(&part10, "/a/IM0001"));
        assert!(looks_like_dicom(b"DICM\x02\x00", "/a/IM0001"));
        assert!(looks_like_dicom(b"garbage", "/a/scan.DCM"));
        assert!(!looks_like_dicom(b"hello", "/a/notes.txt"));
        assert!(!looks_like_dicom(&[0_u8; 200], "/a/IM0002"));
        assert_eq!(file_name("s3://bucket/dir/DICOMDIR"), "DICOMDIR");
    }
}
