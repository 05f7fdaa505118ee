//! The built `fxtriage` binary, for the end-to-end tests in the top-level
//! `tests/` package. Cargo hands a package's tests only that package's own
//! binaries (`CARGO_BIN_EXE_*`), so the tests find it next to themselves in
//! the target directory, where `cargo build -p fxtriage` puts it
//! (`scripts/test` builds it before the tests).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `fxtriage` binary to test: `FXTRIAGE_BIN` when set, else the one in the
/// target directory of the running test (`target/debug/fxtriage`). Panics,
/// naming the command that builds it, when it is missing or older than a
/// source file of the workspace, so that no test runs a stale binary.
pub fn fxtriage_bin() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(chosen) = std::env::var_os("FXTRIAGE_BIN") {
            return PathBuf::from(chosen);
        }
        let test = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test>-<hash>
        let profile = test
            .parent()
            .and_then(Path::parent)
            .expect("a test runs from <target>/<profile>/deps");
        let binary = profile.join("fxtriage");
        let built = std::fs::metadata(&binary)
            .and_then(|metadata| metadata.modified())
            .unwrap_or_else(|_| {
                panic!(
                    "no fxtriage binary at {}: run `cargo build -p fxtriage` first (scripts/test does)",
                    binary.display()
                )
            });
        if let Some(newer) = newer_input(&profile.join("fxtriage.d"), built) {
            panic!(
                "{} is older than {}: run `cargo build -p fxtriage` first (scripts/test does)",
                binary.display(),
                newer.display()
            );
        }
        binary
    })
}

/// An input of the binary that changed after `built`, by the dependency list
/// Cargo writes next to it (`fxtriage.d`: every source file of every
/// workspace crate it was built from); `None` when there is no such list.
fn newer_input(dependencies: &Path, built: SystemTime) -> Option<PathBuf> {
    let listed = std::fs::read_to_string(dependencies).ok()?;
    let (_, inputs) = listed.split_once(": ")?;
    inputs
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|path| PathBuf::from(path.replace('\u{0}', " ")))
        .find(|path| {
            std::fs::metadata(path)
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified > built)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_input_changed_after_the_build_is_found() {
        let directory = tempfile::tempdir().expect("tempdir");
        let input = directory.path().join("a source.rs");
        std::fs::write(&input, "fn main() {}").expect("input");
        let other = directory.path().join("other.rs");
        std::fs::write(&other, "").expect("input");
        let list = directory.path().join("fxtriage.d");
        std::fs::write(
            &list,
            format!(
                "{}/fxtriage: {} {}\n",
                directory.path().display(),
                other.display(),
                input.display().to_string().replace(' ', "\\ ")
            ),
        )
        .expect("dependency list");
        let before = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(newer_input(&list, before), Some(other.clone()));
        std::fs::remove_file(&other).expect("remove");
        assert_eq!(
            newer_input(&list, before),
            Some(input),
            "a path with a space"
        );
        let after = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(newer_input(&list, after), None);
        assert_eq!(newer_input(&directory.path().join("none.d"), before), None);
    }
}
