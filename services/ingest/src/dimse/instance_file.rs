//! One C-STORE's data set, received fragment by fragment as a Part 10
//! instance: a preamble, `DICM`, a file meta group written by fxtriage, then the
//! data set bytes exactly as the sender encoded them.
//!
//! An instance is held in memory while it is small enough and the SCP's memory
//! budget (shared by every association) has room; it is then parsed, hashed and
//! stored from that one copy, with no temporary file. A larger instance, or one
//! arriving when the budget is spent, goes on to a temporary file in the buffer
//! directory (what was already received is written there first, and its
//! memory returned). Memory for instances is therefore at most the budget, plus
//! one write buffer per association, whatever the instance sizes; the site's
//! size limit is enforced as bytes arrive. A temporary file is removed when the
//! value is dropped, however the C-STORE ends.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use dicom_object::FileMetaTableBuilder;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::InstanceSource;

/// Identifies fxtriage as the writer of the file meta group (PS3.7 D.3.3.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.40701245212639652571871080222229070977";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("FXTRIAGE_", env!("CARGO_PKG_VERSION"));

const PREAMBLE_LENGTH: usize = 128;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// The memory budget counts in units of this many bytes.
const BUDGET_UNIT: u64 = 1024;

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

/// Where received instances are held: memory within a budget, else files.
#[derive(Debug, Clone)]
pub(crate) struct Buffering {
    /// The buffer directory for instances that go to a file.
    pub dir: PathBuf,
    /// Memory for instances, in [`BUDGET_UNIT`]s, shared by every association.
    memory: Arc<Semaphore>,
    /// The largest instance held in memory.
    instance_memory_limit: u64,
}

impl Buffering {
    /// `memory_budget` bytes for instances of at most `instance_memory_limit`
    /// bytes each; a budget of 0 sends every instance to a file.
    pub(crate) fn new(dir: PathBuf, memory_budget: u64, instance_memory_limit: u64) -> Self {
        let units = usize::try_from(memory_budget / BUDGET_UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            dir,
            memory: Arc::new(Semaphore::new(units)),
            instance_memory_limit: instance_memory_limit.min(memory_budget),
        }
    }
}

#[derive(Debug)]
enum Held {
    Memory {
        bytes: Vec<u8>,
        /// The budget this instance holds ([`BUDGET_UNIT`]s); `None` before
        /// the first grant.
        granted: Option<OwnedSemaphorePermit>,
    },
    File {
        path: TempPath,
        writer: tokio::io::BufWriter<tokio::fs::File>,
    },
}

/// A Part 10 instance being received.
#[derive(Debug)]
pub(crate) struct IncomingInstance {
    buffering: Buffering,
    held: Held,
    written: u64,
    limit: u64,
}

/// A completely received Part 10 instance; a temporary file is removed when
/// dropped, memory returned to the budget.
#[derive(Debug)]
pub(crate) enum ReceivedInstance {
    Memory {
        bytes: Bytes,
        _granted: Option<OwnedSemaphorePermit>,
    },
    File {
        path: TempPath,
        len: u64,
    },
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
    /// Starts an instance with `header`. `limit` bounds the whole instance,
    /// header included, as the validation that follows does.
    pub(crate) async fn create(
        buffering: &Buffering,
        header: &[u8],
        limit: u64,
    ) -> Result<Self, InstanceFileError> {
        let mut incoming = Self {
            buffering: buffering.clone(),
            held: Held::Memory {
                bytes: Vec::new(),
                granted: None,
            },
            written: 0,
            limit,
        };
        incoming.append(header).await?;
        Ok(incoming)
    }

    fn io_error(&self, source: std::io::Error) -> InstanceFileError {
        InstanceFileError::Io {
            dir: self.buffering.dir.clone(),
            source,
        }
    }

    /// Appends the next fragment of the data set.
    pub(crate) async fn append(&mut self, fragment: &[u8]) -> Result<(), InstanceFileError> {
        let after = self.written + fragment.len() as u64;
        if after > self.limit {
            return Err(InstanceFileError::TooLarge { limit: self.limit });
        }
        if let Held::Memory { bytes, granted } = &mut self.held {
            // The budget counts the vector's capacity, which grows by doubling
            // up to the per-instance limit.
            let capacity = bytes.capacity() as u64;
            let wanted = if after > capacity {
                (capacity * 2)
                    .min(self.buffering.instance_memory_limit)
                    .max(after)
            } else {
                capacity
            };
            if self.buffering.grow(granted, wanted) {
                bytes.reserve_exact((wanted as usize).saturating_sub(bytes.len()));
                bytes.extend_from_slice(fragment);
                self.written = after;
                return Ok(());
            }
            self.spill().await?;
        }
        let Held::File { writer, .. } = &mut self.held else {
            unreachable!("spilled to a file above");
        };
        if let Err(source) = writer.write_all(fragment).await {
            return Err(self.io_error(source));
        }
        self.written = after;
        Ok(())
    }

    /// Moves what was received so far to a temporary file; the rest follows it.
    async fn spill(&mut self) -> Result<(), InstanceFileError> {
        let dir = self.buffering.dir.clone();
        let created = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix("fxtriage-c-store-")
                .suffix(".dcm")
                .tempfile_in(dir)
        })
        .await
        .map_err(|error| self.io_error(std::io::Error::other(error)))?
        .map_err(|source| self.io_error(source))?;
        let (file, path) = created.into_parts();
        let mut writer = tokio::io::BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            tokio::fs::File::from_std(file),
        );
        let Held::Memory { bytes, .. } = &self.held else {
            return Ok(());
        };
        if let Err(source) = writer.write_all(bytes).await {
            return Err(self.io_error(source));
        }
        // Dropping the memory state returns its budget.
        self.held = Held::File { path, writer };
        Ok(())
    }

    pub(crate) async fn finish(self) -> Result<ReceivedInstance, InstanceFileError> {
        match self.held {
            Held::Memory { bytes, granted } => Ok(ReceivedInstance::Memory {
                bytes: Bytes::from(bytes),
                _granted: granted,
            }),
            Held::File { path, mut writer } => {
                let flushed = async {
                    writer.flush().await?;
                    writer.get_mut().shutdown().await
                }
                .await;
                flushed.map_err(|source| InstanceFileError::Io {
                    dir: self.buffering.dir.clone(),
                    source,
                })?;
                Ok(ReceivedInstance::File {
                    path,
                    len: self.written,
                })
            }
        }
    }

    /// Whether the instance is (still) held in memory.
    #[cfg(test)]
    fn in_memory(&self) -> bool {
        matches!(self.held, Held::Memory { .. })
    }
}

impl Buffering {
    /// Extends `granted` to cover `total` bytes; false when the instance would
    /// be over the per-instance limit or the budget has no room.
    fn grow(&self, granted: &mut Option<OwnedSemaphorePermit>, total: u64) -> bool {
        if total > self.instance_memory_limit {
            return false;
        }
        let needed = total.div_ceil(BUDGET_UNIT);
        let held = granted
            .as_ref()
            .map_or(0, |permit| permit.num_permits() as u64);
        if needed <= held {
            return true;
        }
        let Ok(more) = u32::try_from(needed - held) else {
            return false;
        };
        match Arc::clone(&self.memory).try_acquire_many_owned(more) {
            Ok(permit) => {
                match granted {
                    Some(held) => held.merge(permit),
                    None => *granted = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }
}

impl ReceivedInstance {
    pub(crate) fn source(&self) -> InstanceSource {
        match self {
            ReceivedInstance::Memory { bytes, .. } => InstanceSource::Memory(bytes.clone()),
            ReceivedInstance::File { path, len } => InstanceSource::File {
                path: path.to_path_buf(),
                len: *len,
            },
        }
    }

    /// Removes a temporary file now (dropping also removes it, without
    /// reporting errors) and returns memory to the budget.
    pub(crate) async fn remove(self) {
        let ReceivedInstance::File { path, .. } = self else {
            return;
        };
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
    use std::path::Path;

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
        // No memory budget: every instance goes to a file.
        let buffering = Buffering::new(dir.path().to_owned(), 0, 0);
        let mut incoming = IncomingInstance::create(&buffering, &header, u64::MAX)
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
        let buffering = Buffering::new(dir.path().to_owned(), 0, 0);
        let mut incoming = IncomingInstance::create(&buffering, &[0_u8; 300], 1000)
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

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).expect("list").count()
    }

    async fn receive(buffering: &Buffering, bytes: &[u8]) -> IncomingInstance {
        let mut incoming = IncomingInstance::create(buffering, &bytes[..100], u64::MAX)
            .await
            .expect("create");
        for fragment in bytes[100..].chunks(16_000) {
            incoming.append(fragment).await.expect("append");
        }
        incoming
    }

    #[tokio::test]
    async fn a_small_instance_stays_in_memory_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffering = Buffering::new(dir.path().to_owned(), 1 << 20, 512 << 10);
        let sent: Vec<u8> = (0..200_000_u32).map(|value| value as u8).collect();
        let incoming = receive(&buffering, &sent).await;
        assert!(incoming.in_memory());
        assert_eq!(files_in(dir.path()), 0, "no temporary file");
        let held = buffering.memory.available_permits();
        assert!(
            held <= 1024 - 196,
            "the budget counts the instance: {held} KiB left"
        );
        let received = incoming.finish().await.expect("finish");
        let InstanceSource::Memory(bytes) = received.source() else {
            panic!("in memory")
        };
        assert_eq!(&bytes[..], &sent[..]);
        received.remove().await;
        assert_eq!(
            buffering.memory.available_permits(),
            1024,
            "the budget is returned"
        );
    }

    #[tokio::test]
    async fn an_instance_over_the_memory_limit_continues_in_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffering = Buffering::new(dir.path().to_owned(), 1 << 20, 64 << 10);
        let sent: Vec<u8> = (0..200_000_u32).map(|value| (value % 251) as u8).collect();
        let incoming = receive(&buffering, &sent).await;
        assert!(!incoming.in_memory());
        assert_eq!(
            buffering.memory.available_permits(),
            1024,
            "memory returned on spilling"
        );
        let received = incoming.finish().await.expect("finish");
        let InstanceSource::File { path, len } = received.source() else {
            panic!("a file")
        };
        assert_eq!(len, sent.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read"), sent, "nothing lost");
        received.remove().await;
        assert_eq!(files_in(dir.path()), 0);
    }

    #[tokio::test]
    async fn instances_beyond_the_shared_budget_go_to_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for one 150 KB instance (with its vector's doubling), not two.
        let buffering = Buffering::new(dir.path().to_owned(), 300 << 10, 300 << 10);
        let sent: Vec<u8> = vec![7; 150_000];
        let first = receive(&buffering, &sent).await;
        let second = receive(&buffering, &sent).await;
        assert!(first.in_memory());
        assert!(!second.in_memory(), "the budget was spent");
        assert_eq!(files_in(dir.path()), 1);
        for incoming in [first, second] {
            let received = incoming.finish().await.expect("finish");
            let bytes = match received.source() {
                InstanceSource::Memory(bytes) => bytes.to_vec(),
                InstanceSource::File { path, .. } => std::fs::read(path).expect("read"),
            };
            assert_eq!(bytes, sent);
            received.remove().await;
        }
        assert_eq!(buffering.memory.available_permits(), 300);
    }
}
