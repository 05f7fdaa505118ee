//! Records the git revision the binary is built from, for `fxtriage --version`.
//!
//! `FXTRIAGE_GIT_REVISION` wins when set (an image build copies the sources
//! without `.git` and passes the revision in); otherwise `git rev-parse`, when the
//! sources are a git checkout (the commit checked out: uncommitted changes are
//! not marked, as the build would have to rerun on every file to know);
//! otherwise "unknown". Hand-written: it is one git
//! call, and a crate for it (vergen) would add a build dependency tree for that.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FXTRIAGE_GIT_REVISION");
    let revision = std::env::var("FXTRIAGE_GIT_REVISION")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FXTRIAGE_GIT_REVISION={}", revision.trim());
}

fn git_revision() -> Option<String> {
    let git_dir = Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let git_dir = String::from_utf8(git_dir.stdout).ok()?;
    let git_dir = Path::new(git_dir.trim());
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit changes the
    // branch's ref (loose, or packed after a gc).
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        git_dir.join("packed-refs").display()
    );
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        println!(
            "cargo:rerun-if-changed={}",
            git_dir.join(reference).display()
        );
    }
    let output = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    let revision = String::from_utf8(output.stdout).ok()?;
    Some(revision.trim().to_owned())
}
