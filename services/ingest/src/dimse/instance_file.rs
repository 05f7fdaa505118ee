//! One C-STORE's data set, streamed fragment by fragment into a temporary Part 10
//! file: a preamble, `DICM`, a file meta group written by fxtriage, then the data
//! set bytes exactly as the sender encoded them. Memory use is one write buffer,
//! whatever the instance size; the site's size limit is enforced as bytes arrive.
//! The file is removed when the value is dropped, however the C-STORE ends.

use std::path::{Path, PathBuf};

use dicom_object::FileMetaTableBuilder;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;

use crate::InstanceSource;

/// Identifies fxtriage as the writer of the file meta group (PS3.7 D.3.3.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.40701245212639652571871080222229070977";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("FXTRIAGE_", env!("CARGO_PKG_VERSION"));

const PREAMBLE_LENGTH: usize = 128;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// What the file meta group records about one received instance.
#[derive(Debug, Clone)]
pub(crate) struct MetaFields<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
    pub calling_ae_title: &'a str,
    pub called_ae_title: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceFileError {
    #[error("the instance exceeds the site's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot build the file meta group: {0}")]
    Meta(String),
    #[error("cannot write the temporary file in {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// A Part 10 file being received.
#[derive(Debug)]
pub(crate) struct IncomingInstance {
    path: TempPath,
    dir: PathBuf,
    writer: tokio::io::BufWriter<tokio::fs::File>,
    written: u64,
    limit: u64,
}

/// A completely received Part 10 file; removed when dropped.
#[derive(Debug)]
pub(crate) struct ReceivedInstance {
    path: TempPath,
    len: u64,
}

/// The preamble, magic code and file meta group that precede the data set.
pub(crate) fn part10_header(fields: &MetaFields<'_>) -> Result<Vec<u8>, InstanceFileError> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(fields.sop_class_uid)
        .media_storage_sop_instance_uid(fields.sop_instance_uid)
        .transfer_syntax(fields.transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(fields.called_ae_title)
        .sending_application_entity_title(fields.calling_ae_title)
        .receiving_application_entity_title(fields.called_ae_title)
        .build()
        .map_err(|error| InstanceFileError::Meta(error.to_string()))?;
    let mut header = vec![0_u8; PREAMBLE_LENGTH];
    header.extend_from_slice(b"DICM");
    meta.write(&mut header)
        .map_err(|error| InstanceFileError::Meta(error.to_string()))?;
    Ok(header)
}

impl IncomingInstance {
    /// Creates the temporary file in `dir` and writes `header` to it. `limit` bounds
    /// the whole file, header included, as the validation that follows does.
    pub(crate) async fn create(
        dir: &Path,
        header: &[u8],
        limit: u64,
    ) -> Result<Self, InstanceFileError> {
        let io_error = |source| InstanceFileError::Io {
            dir: dir.to_owned(),
            source,
        };
        let owned_dir = dir.to_owned();
        let created = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix("fxtriage-c-store-")
                .suffix(".dcm")
                .tempfile_in(owned_dir)
        })
        .await
        .map_err(|error| io_error(std::io::Error::other(error)))?
        .map_err(io_error)?;
        let (file, path) = created.into_parts();
        let mut incoming = Self {
            path,
            dir: dir.to_owned(),
            writer: tokio::io::BufWriter::with_capacity(
                WRITE_BUFFER_BYTES,
                tokio::fs::File::from_std(file),
            ),
            written: 0,
            limit,
        };
        incoming.append(header).await?;
        Ok(incoming)
    }

    /// Appends the next fragment of the data set.
    pub(crate) async fn append(&mut self, fragment: &[u8]) -> Result<(), InstanceFileError> {
        let after = self.written + fragment.len() as u64;
        if after > self.limit {
            return Err(InstanceFileError::TooLarge { limit: self.limit });
        }
        self.writer
            .write_all(fragment)
            .await
            .map_err(|source| InstanceFileError::Io {
                dir: self.dir.clone(),
                source,
            })?;
        self.written = after;
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> Result<ReceivedInstance, InstanceFileError> {
        let flushed = async {
            self.writer.flush().await?;
            self.writer.get_mut().shutdown().await
        }
        .await;
        flushed.map_err(|source| InstanceFileError::Io {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(ReceivedInstance {
            path: self.path,
            len: self.written,
        })
    }
}

impl ReceivedInstance {
    pub(crate) fn source(&self) -> InstanceSource {
        InstanceSource::File {
            path: self.path.to_path_buf(),
            len: self.len,
        }
    }

    /// Removes the file now (dropping also removes it, without reporting errors).
    pub(crate) async fn remove(self) {
        let path = self.path;
        let removed = tokio::task::spawn_blocking(move || path.close()).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%error, "could not remove a received instance's temporary file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;
    use fxtriage_dicom::synthetic::SyntheticInstance;

    /// The bytes after the file meta group of a Part 10 file.
    fn data_set_of(part10: &[u8]) -> &[u8] {
        assert_eq!(&part10[128..132], b"DICM");
        let group_length =
            u32::from_le_bytes(part10[140..144].try_into().expect("4 bytes")) as usize;
        &part10[144 + group_length..]
    }

    #[tokio::test]
    async fn the_received_file_is_valid_part10_with_the_data_set_bytes_unchanged() {
        let instance = SyntheticInstance::wrist();
        let sent = instance.to_part10();
        let data_set = data_set_of(&sent);
        let dir = tempfile::tempdir().expect("tempdir");
        let header = part10_header(&MetaFields {
            sop_class_uid: &instance.sop_class_uid,
            sop_instance_uid: &instance.sop_instance_uid,
            transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            calling_ae_title: "CR01",
            called_ae_title: "FXTRIAGE",
        })
        .expect("header");
        let mut incoming = IncomingInstance::create(dir.path(), &header, u64::MAX)
            .await
            .expect("create");
        for fragment in data_set.chunks(1000) {
            incoming.append(fragment).await.expect("append");
        }
        let received = incoming.finish().await.expect("finish");
        let InstanceSource::File { path, len } = received.source() else {
            panic!("a file")
        };
        let written = std::fs::read(&path).expect("read");
        assert_eq!(len, written.len() as u64);
        assert_eq!(data_set_of(&written), data_set, "data set bytes unchanged");

        let object = dicom_object::OpenFileOptions::new()
            .open_file(&path)
            .expect("a valid Part 10 file");
        assert_eq!(
            object.meta().implementation_class_uid(),
            IMPLEMENTATION_CLASS_UID
        );
        assert_eq!(
            object
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            instance.sop_instance_uid
        );
        received.remove().await;
        assert!(!path.exists(), "the temporary file is removed");
    }

    #[tokio::test]
    async fn an_instance_over_the_limit_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut incoming = IncomingInstance::create(dir.path(), &[0_u8; 300], 1000)
            .await
            .expect("create");
        incoming
            .append(&[0_u8; 700])
            .await
            .expect("exactly at the limit");
        let error = incoming
            .append(&[0_u8; 1])
            .await
            .expect_err("over the limit");
        assert!(
            matches!(error, InstanceFileError::TooLarge { limit: 1000 }),
            "{error}"
        );
        drop(incoming);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
