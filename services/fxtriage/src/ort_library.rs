//! Where the ONNX Runtime shared library is looked for when `--ort-library` /
//! `ORT_DYLIB_PATH` does not name it. The first file found wins, in this order:
//!
//! 1. next to the running binary: `libonnxruntime.so`, then the newest
//!    `libonnxruntime.so.<version>`;
//! 2. the local stack's tools directory (where `infra/local/stack up` puts it):
//!    the newest `onnxruntime-*/libonnxruntime.so.<version>`;
//! 3. `pip install onnxruntime`: in each of python3's site-packages directories,
//!    `onnxruntime/capi/libonnxruntime.so`, then the newest
//!    `onnxruntime/capi/libonnxruntime.so.<version>`.
//!
//! [`find`] takes the places as parameters; the argument layer
//! (`model_args.rs`) says where they are.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const LIBRARY: &str = "libonnxruntime.so";

/// Nothing was found: every place looked in, in order, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    pub searched: Vec<String>,
}

impl fmt::Display for NotFound {
    /// One line (errors are logged as one field): every place, numbered, then
    /// how to point at the library.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the ONNX Runtime shared library ({LIBRARY}) was not found; looked in, in order:"
        )?;
        for (number, place) in self.searched.iter().enumerate() {
            write!(f, " ({}) {place};", number + 1)?;
        }
        write!(
            f,
            " give its path with --ort-library PATH (or ORT_DYLIB_PATH=PATH), or install it: \
             `infra/local/stack up` puts it in the local stack's tools directory, \
             `pip install onnxruntime` in python3's site-packages"
        )
    }
}

impl std::error::Error for NotFound {}

/// The first library found in `binary_dir`, then under `tools_dir`, then in the
/// site-packages directories that `site_packages` lists (asked only when the
/// first two have none).
pub fn find(
    binary_dir: Option<&Path>,
    tools_dir: Option<&Path>,
    site_packages: impl FnOnce() -> Vec<PathBuf>,
) -> Result<PathBuf, NotFound> {
    let mut searched = Vec::new();

    match binary_dir {
        Some(directory) => {
            if let Some(found) = exact_then_newest(directory) {
                return Ok(found);
            }
            searched.push(format!(
                "next to the binary: {}, then {}",
                directory.join(LIBRARY).display(),
                directory.join(format!("{LIBRARY}.*")).display()
            ));
        }
        None => searched.push("next to the binary: its directory is unknown".to_owned()),
    }

    match tools_dir {
        Some(tools) => {
            let newest = subdirectories(tools, "onnxruntime-")
                .into_iter()
                .filter_map(|directory| newest_versioned(&directory))
                .max();
            if let Some((_, found)) = newest {
                return Ok(found);
            }
            searched.push(format!(
                "the local stack's tools directory: {}",
                tools
                    .join("onnxruntime-*")
                    .join(format!("{LIBRARY}.*"))
                    .display()
            ));
        }
        None => searched.push(
            "the local stack's tools directory: unknown (FXTRIAGE_TOOLS_DIR, XDG_CACHE_HOME \
             and HOME are unset)"
                .to_owned(),
        ),
    }

    let sites = site_packages();
    if sites.is_empty() {
        searched.push(
            "python3's onnxruntime package: no site-packages directory (python3 did not answer)"
                .to_owned(),
        );
    }
    for site in sites {
        let capi = site.join("onnxruntime").join("capi");
        if let Some(found) = exact_then_newest(&capi) {
            return Ok(found);
        }
        searched.push(format!(
            "python3's onnxruntime package: {}",
            capi.join(format!("{LIBRARY}*")).display()
        ));
    }

    Err(NotFound { searched })
}

/// The directory of the running binary.
pub fn binary_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|binary| binary.parent().map(Path::to_path_buf))
}

/// python3's site-packages directories (system, then the user's), or none when
/// python3 is missing or fails.
pub fn python_site_packages() -> Vec<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import site,sys; print(\"\\n\".join(site.getsitepackages()+[site.getusersitepackages()]))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// `directory/libonnxruntime.so` if it is a file, else the newest versioned one.
fn exact_then_newest(directory: &Path) -> Option<PathBuf> {
    let exact = directory.join(LIBRARY);
    if exact.is_file() {
        return Some(exact);
    }
    newest_versioned(directory).map(|(_, path)| path)
}

/// The file `libonnxruntime.so.<version>` of `directory` with the highest
/// numeric version (1.31.1 > 1.9.0); other suffixes (`.tmp`) are not libraries.
fn newest_versioned(directory: &Path) -> Option<(Vec<u64>, PathBuf)> {
    let prefix = format!("{LIBRARY}.");
    std::fs::read_dir(directory)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = version(name.to_str()?.strip_prefix(&prefix)?)?;
            let path = entry.path();
            path.is_file().then_some((version, path))
        })
        .max()
}

fn version(text: &str) -> Option<Vec<u64>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

/// The subdirectories of `directory` whose names start with `prefix`.
fn subdirectories(directory: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(prefix))
        })
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary tree: a binary directory, a tools directory and two
    /// site-packages directories, all empty.
    struct Layout {
        _root: tempfile::TempDir,
        bin: PathBuf,
        tools: PathBuf,
        sites: Vec<PathBuf>,
    }

    impl Layout {
        fn new() -> Self {
            let root = tempfile::tempdir().expect("tempdir");
            let bin = root.path().join("bin");
            let tools = root.path().join("cache/fxtriage/tools");
            let sites = vec![
                root.path().join("lib/python3/site-packages"),
                root.path().join("home/.local/lib/python3/site-packages"),
            ];
            for directory in [&bin, &tools].into_iter().chain(&sites) {
                std::fs::create_dir_all(directory).expect("mkdir");
            }
            Self {
                _root: root,
                bin,
                tools,
                sites,
            }
        }

        fn find(&self) -> Result<PathBuf, NotFound> {
            let sites = self.sites.clone();
            find(Some(&self.bin), Some(&self.tools), move || sites)
        }
    }

    fn touch(path: &Path) -> PathBuf {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"ELF").expect("write");
        path.to_path_buf()
    }

    #[test]
    fn next_to_the_binary_the_plain_name_wins_over_versions() {
        let layout = Layout::new();
        touch(&layout.bin.join("libonnxruntime.so.1.31.1"));
        let plain = touch(&layout.bin.join("libonnxruntime.so"));
        touch(
            &layout
                .tools
                .join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1"),
        );
        assert_eq!(layout.find().unwrap(), plain);
    }

    #[test]
    fn next_to_the_binary_the_newest_version_wins() {
        let layout = Layout::new();
        touch(&layout.bin.join("libonnxruntime.so.1.9.0"));
        let newest = touch(&layout.bin.join("libonnxruntime.so.1.31.1"));
        touch(&layout.bin.join("libonnxruntime.so.1.40.0.tmp"));
        touch(&layout.bin.join("libonnxruntime_providers_shared.so"));
        assert_eq!(layout.find().unwrap(), newest);
    }

    #[test]
    fn the_binary_directory_comes_before_the_tools_directory() {
        let layout = Layout::new();
        let beside = touch(&layout.bin.join("libonnxruntime.so.1.20.0"));
        touch(
            &layout
                .tools
                .join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1"),
        );
        assert_eq!(layout.find().unwrap(), beside);
    }

    #[test]
    fn the_tools_directory_gives_its_newest_version_and_python_is_not_asked() {
        let layout = Layout::new();
        touch(
            &layout
                .tools
                .join("onnxruntime-1.9.0/libonnxruntime.so.1.9.0"),
        );
        let newest = touch(
            &layout
                .tools
                .join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1"),
        );
        touch(&layout.tools.join("tansu-0.6.0/libonnxruntime.so.9.9.9"));
        touch(&layout.sites[0].join("onnxruntime/capi/libonnxruntime.so"));
        let found = find(Some(&layout.bin), Some(&layout.tools), || {
            panic!("python3 is asked only when nothing else is found")
        });
        assert_eq!(found.unwrap(), newest);
    }

    #[test]
    fn the_tools_directory_comes_before_site_packages() {
        let layout = Layout::new();
        let tools = touch(
            &layout
                .tools
                .join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1"),
        );
        touch(&layout.sites[0].join("onnxruntime/capi/libonnxruntime.so"));
        assert_eq!(layout.find().unwrap(), tools);
    }

    #[test]
    fn site_packages_are_searched_in_order() {
        let layout = Layout::new();
        let first = touch(&layout.sites[0].join("onnxruntime/capi/libonnxruntime.so.1.17.1"));
        touch(&layout.sites[1].join("onnxruntime/capi/libonnxruntime.so"));
        assert_eq!(layout.find().unwrap(), first);

        std::fs::remove_file(&first).unwrap();
        assert_eq!(
            layout.find().unwrap(),
            layout.sites[1].join("onnxruntime/capi/libonnxruntime.so")
        );
    }

    #[test]
    fn a_directory_with_the_library_name_is_not_a_library() {
        let layout = Layout::new();
        std::fs::create_dir_all(layout.bin.join("libonnxruntime.so")).unwrap();
        std::fs::create_dir_all(
            layout
                .tools
                .join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1"),
        )
        .unwrap();
        assert!(layout.find().is_err());
    }

    #[test]
    fn nothing_found_lists_every_place_in_order_and_how_to_give_it() {
        let layout = Layout::new();
        let error = layout.find().unwrap_err();
        let expected = [
            layout.bin.join("libonnxruntime.so"),
            layout.tools.join("onnxruntime-*/libonnxruntime.so.*"),
            layout.sites[0].join("onnxruntime/capi/libonnxruntime.so*"),
            layout.sites[1].join("onnxruntime/capi/libonnxruntime.so*"),
        ];
        assert_eq!(error.searched.len(), expected.len());
        for (place, path) in error.searched.iter().zip(&expected) {
            assert!(
                place.contains(&path.display().to_string()),
                "{place} names {}",
                path.display()
            );
        }
        let message = error.to_string();
        assert!(message.contains("--ort-library"), "{message}");
        assert!(message.contains("ORT_DYLIB_PATH"), "{message}");
        assert!(message.contains("pip install onnxruntime"), "{message}");
    }

    #[test]
    fn unknown_places_are_named_too() {
        let error = find(None, None, Vec::new).unwrap_err();
        assert_eq!(error.searched.len(), 3, "{error}");
        assert!(error.to_string().contains("python3 did not answer"));
    }
}
