use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{ObjectStoreError, Operation};
use crate::key::{InvalidObjectKey, ObjectKey};
use crate::store::{ObjectMeta, ObjectStore};

/// Holds half-written objects. It lives under the root so that the final
/// rename stays on one filesystem and is therefore atomic.
const TEMP_DIR_NAME: &str = ".tmp";

/// How often a put retries its rename when a concurrent delete pruned the
/// freshly created parent directory.
const RENAME_ATTEMPTS: usize = 3;

/// An [`ObjectStore`] in a local directory, for `fxtriage standalone` and
/// tests: key `a/b/c` is the file `<root>/a/b/c`.
///
/// Writes go to a temporary file that is fsynced and then renamed over the
/// target, so a crash leaves either the old object or the new one. One
/// difference from S3 remains: `a` and `a/b` cannot both exist, because `a`
/// cannot be a file and a directory at once.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// Uses `root` as the store; it and the directories below it are created
    /// on the first write.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file for `key`. `ObjectKey` has already ruled out absolute paths,
    /// `..` and `\`, so the join cannot leave the root.
    fn object_path(&self, key: &ObjectKey) -> Result<PathBuf, ObjectStoreError> {
        if key.segments().next() == Some(TEMP_DIR_NAME) {
            return Err(InvalidObjectKey {
                key: key.to_string(),
                reason: "'.tmp/' is reserved for the local store's temporary files",
            }
            .into());
        }
        Ok(key
            .segments()
            .fold(self.root.clone(), |path, segment| path.join(segment)))
    }

    /// Writes a new temporary file with `fill`, makes it durable and renames
    /// it over `target`.
    fn write_atomically(
        &self,
        operation: Operation,
        key: &ObjectKey,
        target: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), ObjectStoreError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| ObjectStoreError::Io {
                operation,
                key: key.to_string(),
                path,
                source,
            }
        };
        let temp_dir = self.root.join(TEMP_DIR_NAME);
        fs::create_dir_all(&temp_dir).map_err(io_error(&temp_dir))?;
        let temp_path = temp_dir.join(uuid::Uuid::new_v4().to_string());
        let mut temp_file = File::create_new(&temp_path).map_err(io_error(&temp_path))?;

        let written = fill(&mut temp_file)
            .and_then(|()| temp_file.sync_all())
            .map_err(io_error(&temp_path))
            .and_then(|()| {
                drop(temp_file);
                rename_creating_parent(&temp_path, target).map_err(io_error(target))
            });
        if written.is_err() {
            // Best effort: the temp file is garbage either way.
            let _ = fs::remove_file(&temp_path);
        }
        written?;

        // The rename is only durable once the directory entry is.
        let parent = target.parent().unwrap_or(&self.root);
        sync_directory(parent).map_err(io_error(parent))
    }

    /// Removes now-empty directories between the deleted file and the root,
    /// so deleted studies do not leave a trail of empty directories.
    fn prune_empty_parents(&self, deleted_file: &Path) {
        let mut directory = deleted_file.parent();
        while let Some(path) = directory {
            if path == self.root || !path.starts_with(&self.root) {
                break;
            }
            // Fails (and stops the walk) as soon as a directory is not empty.
            if fs::remove_dir(path).is_err() {
                break;
            }
            directory = path.parent();
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let io_error = |path: &Path, source| ObjectStoreError::Io {
            operation: Operation::List,
            key: prefix.to_owned(),
            path: path.to_owned(),
            source,
        };
        // Only the directory named by the prefix's complete segments can hold
        // matches. If those segments are not valid key segments, no valid key
        // can start with them.
        let start_key = match prefix.rsplit_once('/') {
            None => String::new(),
            Some((directory_key, _)) => match ObjectKey::parse(directory_key) {
                Ok(key) if key.segments().next() != Some(TEMP_DIR_NAME) => key.into_string(),
                _ => return Ok(Vec::new()),
            },
        };
        let start_dir = start_key
            .split('/')
            .filter(|segment| !segment.is_empty())
            .fold(self.root.clone(), |path, segment| path.join(segment));

        let mut objects = Vec::new();
        let mut pending = vec![(start_dir, start_key)];
        while let Some((dir, dir_key)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Absent, or pruned by a concurrent delete: nothing to list.
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(io_error(&dir, error)),
            };
            for entry in entries {
                let entry = entry.map_err(|error| io_error(&dir, error))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                    continue;
                };
                if dir_key.is_empty() && name == TEMP_DIR_NAME {
                    continue;
                }
                let key = if dir_key.is_empty() {
                    name
                } else {
                    format!("{dir_key}/{name}")
                };
                // Not followed: a symlink could point outside the root.
                let file_type = match entry.file_type() {
                    Ok(file_type) => file_type,
                    Err(error) if is_missing(&error) => continue,
                    Err(error) => return Err(io_error(&entry.path(), error)),
                };
                if file_type.is_dir() {
                    let dir_prefix = format!("{key}/");
                    if dir_prefix.starts_with(prefix) || prefix.starts_with(&dir_prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    let metadata = match entry.metadata() {
                        Ok(metadata) => metadata,
                        Err(error) if is_missing(&error) => continue,
                        Err(error) => return Err(io_error(&entry.path(), error)),
                    };
                    match ObjectKey::parse(&key) {
                        Ok(key) => objects.push(ObjectMeta {
                            key,
                            size: metadata.len(),
                            last_modified: metadata.modified().ok(),
                        }),
                        Err(error) => {
                            tracing::warn!(%error, "skipping a file that no key can address")
                        }
                    }
                }
            }
        }
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }
}

/// The rename fails with "not found" if a concurrent delete pruned the parent
/// directory between creating it and renaming into it; create it again.
fn rename_creating_parent(from: &Path, to: &Path) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        if let Some(parent) = to.parent() {
            create_dir_all_durably(parent)?;
        }
        match fs::rename(from, to) {
            Err(error) if error.kind() == io::ErrorKind::NotFound && attempt < RENAME_ATTEMPTS => {
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Like `fs::create_dir_all`, but fsyncs the parent of every directory it
/// creates: an object is only durable if every directory on its path is.
/// When the directory exists, this costs one syscall.
fn create_dir_all_durably(directory: &Path) -> io::Result<()> {
    let create = |directory: &Path| match fs::create_dir(directory) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    };
    let created = match create(directory) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = directory.parent() else {
                return Err(error);
            };
            create_dir_all_durably(parent)?;
            create(directory)?
        }
        result => result?,
    };
    if created && let Some(parent) = directory.parent() {
        sync_directory(parent)?;
    }
    Ok(())
}

/// Makes a directory's entries durable. `""`, the parent of a relative
/// single-segment root, is the working directory.
fn sync_directory(directory: &Path) -> io::Result<()> {
    let directory = if directory.as_os_str().is_empty() {
        Path::new(".")
    } else {
        directory
    };
    File::open(directory)?.sync_all()
}

/// Errors that mean "there is no file at this path": a missing file or
/// directory, a path running through a file (`a/b` when `a` is a file), or a
/// directory where the object would be (`a` when `a/b` exists).
fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
    )
}

/// Runs blocking filesystem work off the async threads.
async fn run_blocking<T: Send + 'static>(
    operation: Operation,
    key: String,
    work: impl FnOnce() -> Result<T, ObjectStoreError> + Send + 'static,
) -> Result<T, ObjectStoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) if join_error.is_panic() => {
            std::panic::resume_unwind(join_error.into_panic())
        }
        Err(join_error) => Err(ObjectStoreError::Backend {
            operation,
            key,
            message: format!("the blocking task was cancelled: {join_error}"),
            kind: crate::ErrorKind::Transient,
        }),
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectStoreError> {
        let target = self.object_path(key)?;
        let store = self.clone();
        let owned_key = key.clone();
        run_blocking(Operation::Put, key.to_string(), move || {
            store.write_atomically(Operation::Put, &owned_key, &target, |temp_file| {
                temp_file.write_all(&body)
            })
        })
        .await
    }

    async fn put_file(&self, key: &ObjectKey, path: &Path) -> Result<(), ObjectStoreError> {
        let target = self.object_path(key)?;
        let store = self.clone();
        let owned_key = key.clone();
        let source_path = path.to_owned();
        run_blocking(Operation::PutFile, key.to_string(), move || {
            let mut source_file =
                File::open(&source_path).map_err(|source| ObjectStoreError::Io {
                    operation: Operation::PutFile,
                    key: owned_key.to_string(),
                    path: source_path.clone(),
                    source,
                })?;
            store.write_atomically(Operation::PutFile, &owned_key, &target, |temp_file| {
                // File-to-file io::copy uses copy_file_range on Linux: no
                // user-space buffer holds the whole file.
                io::copy(&mut source_file, temp_file).map(drop)
            })
        })
        .await
    }

    async fn health_check(&self) -> Result<(), ObjectStoreError> {
        // The root is created on first use; a root that cannot be created (or
        // is a file) is what makes the store unavailable.
        let root = self.root.clone();
        run_blocking(Operation::Check, String::new(), move || {
            fs::create_dir_all(&root).map_err(|source| ObjectStoreError::Io {
                operation: Operation::Check,
                key: String::new(),
                path: root,
                source,
            })
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectStoreError> {
        let path = self.object_path(key)?;
        let owned_key = key.to_string();
        run_blocking(Operation::Get, key.to_string(), move || {
            match fs::read(&path) {
                Ok(content) => Ok(Bytes::from(content)),
                Err(error) if is_missing(&error) => {
                    Err(ObjectStoreError::NotFound { key: owned_key })
                }
                Err(source) => Err(ObjectStoreError::Io {
                    operation: Operation::Get,
                    key: owned_key,
                    path,
                    source,
                }),
            }
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, ObjectStoreError> {
        let path = self.object_path(key)?;
        let owned_key = key.clone();
        run_blocking(
            Operation::Head,
            key.to_string(),
            move || match fs::metadata(&path) {
                Ok(metadata) if metadata.is_file() => Ok(ObjectMeta {
                    key: owned_key,
                    size: metadata.len(),
                    last_modified: metadata.modified().ok(),
                }),
                Ok(_) => Err(ObjectStoreError::NotFound {
                    key: owned_key.into_string(),
                }),
                Err(error) if is_missing(&error) => Err(ObjectStoreError::NotFound {
                    key: owned_key.into_string(),
                }),
                Err(source) => Err(ObjectStoreError::Io {
                    operation: Operation::Head,
                    key: owned_key.into_string(),
                    path,
                    source,
                }),
            },
        )
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        let path = self.object_path(key)?;
        let store = self.clone();
        let owned_key = key.to_string();
        run_blocking(
            Operation::Delete,
            key.to_string(),
            move || match fs::remove_file(&path) {
                Ok(()) => {
                    store.prune_empty_parents(&path);
                    Ok(())
                }
                Err(error) if is_missing(&error) => Ok(()),
                Err(source) => Err(ObjectStoreError::Io {
                    operation: Operation::Delete,
                    key: owned_key,
                    path,
                    source,
                }),
            },
        )
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectStoreError> {
        let store = self.clone();
        let owned_prefix = prefix.to_owned();
        run_blocking(Operation::List, prefix.to_owned(), move || {
            store.list_blocking(&owned_prefix)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ObjectKey {
        ObjectKey::parse(text).unwrap()
    }

    fn temp_files(store: &LocalDirStore) -> Vec<PathBuf> {
        match fs::read_dir(store.root.join(TEMP_DIR_NAME)) {
            Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("{error}"),
        }
    }

    #[tokio::test]
    async fn puts_leave_no_temporary_files_and_temp_files_are_not_listed() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(directory.path().to_owned());
        for index in 0..20 {
            store
                .put(
                    &key(&format!("site/study/{index}.dcm")),
                    Bytes::from(vec![7; index * 100]),
                )
                .await
                .unwrap();
        }
        assert!(
            temp_files(&store).is_empty(),
            "left behind: {:?}",
            temp_files(&store)
        );

        fs::write(
            store.root.join(TEMP_DIR_NAME).join("crashed-write"),
            b"half",
        )
        .unwrap();
        let listed = store.list("").await.unwrap();
        assert_eq!(listed.len(), 20);
        assert!(
            listed
                .iter()
                .all(|meta| meta.key.as_str().starts_with("site/study/"))
        );
    }

    #[tokio::test]
    async fn a_failed_put_file_leaves_neither_object_nor_temporary_file() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(directory.path().to_owned());
        let missing_source = directory.path().join("no-such-file.dcm");
        let error = store
            .put_file(&key("a/b.dcm"), &missing_source)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no-such-file.dcm"), "{error}");

        // A source that is a directory fails during the copy, after the temp file exists.
        let error = store
            .put_file(&key("a/b.dcm"), directory.path())
            .await
            .unwrap_err();
        assert!(matches!(error, ObjectStoreError::Io { .. }), "{error}");
        assert!(
            temp_files(&store).is_empty(),
            "left behind: {:?}",
            temp_files(&store)
        );
        assert!(
            store
                .head(&key("a/b.dcm"))
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn keys_cannot_reach_outside_the_root_or_into_the_temp_directory() {
        assert!(ObjectKey::parse("../outside").is_err());
        assert!(ObjectKey::parse("a/../../outside").is_err());
        assert!(ObjectKey::parse("/etc/passwd").is_err());

        let directory = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(directory.path().join("root"));
        let error = store
            .put(&key(".tmp/sneaky"), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(error, ObjectStoreError::InvalidKey(_)), "{error}");
        assert_eq!(error.kind(), crate::ErrorKind::Permanent);
        assert!(store.list(".tmp/").await.unwrap().is_empty());
        assert!(store.list("../").await.unwrap().is_empty());
        assert!(store.list("/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_does_not_follow_symlinks_out_of_the_root() {
        let directory = tempfile::tempdir().unwrap();
        let outside = directory.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret.txt"), b"secret").unwrap();
        let store = LocalDirStore::new(directory.path().join("root"));
        store
            .put(&key("inside.txt"), Bytes::from_static(b"ok"))
            .await
            .unwrap();
        std::os::unix::fs::symlink(&outside, store.root.join("link")).unwrap();

        let listed = store.list("").await.unwrap();
        let keys: Vec<&str> = listed.iter().map(|meta| meta.key.as_str()).collect();
        assert_eq!(keys, ["inside.txt"]);
    }

    #[tokio::test]
    async fn delete_removes_directories_it_emptied_but_not_the_root() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(directory.path().join("root"));
        store
            .put(&key("site/study/series/1.dcm"), Bytes::from_static(b"1"))
            .await
            .unwrap();
        store
            .put(&key("site/other.dcm"), Bytes::from_static(b"2"))
            .await
            .unwrap();

        store.delete(&key("site/study/series/1.dcm")).await.unwrap();
        assert!(!store.root.join("site/study").exists());
        assert!(store.root.join("site/other.dcm").exists());
        store.delete(&key("site/other.dcm")).await.unwrap();
        assert!(!store.root.join("site").exists());
        assert!(store.root.exists());
    }

    #[test]
    fn the_parent_of_a_relative_root_is_the_working_directory() {
        sync_directory(Path::new("")).unwrap();
    }

    #[tokio::test]
    async fn readers_see_the_old_or_the_new_object_never_a_mix() {
        let directory = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(directory.path().to_owned());
        let object = key("study/instance.dcm");
        let old = Bytes::from(vec![b'o'; 256 * 1024]);
        let new = Bytes::from(vec![b'n'; 64 * 1024]);
        store.put(&object, old.clone()).await.unwrap();

        let writer = {
            let (store, object, old, new) =
                (store.clone(), object.clone(), old.clone(), new.clone());
            tokio::spawn(async move {
                for round in 0..50 {
                    let body = if round % 2 == 0 {
                        new.clone()
                    } else {
                        old.clone()
                    };
                    store.put(&object, body).await.unwrap();
                }
            })
        };
        while !writer.is_finished() {
            let read = store.get(&object).await.unwrap();
            assert!(
                read == old || read == new,
                "read a mix of {} bytes",
                read.len()
            );
        }
        writer.await.unwrap();
        assert!(temp_files(&store).is_empty());
    }
}
