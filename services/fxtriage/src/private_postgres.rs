//! A private PostgreSQL cluster for `fxtriage standalone` when it is given no
//! database URL: initialised in the data directory from the installed PostgreSQL
//! binaries, listening on 127.0.0.1 only (and a socket in the cluster directory),
//! stopped on exit. PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` system user.
//!
//! That user must be able to reach the cluster's files. When, as root, it cannot
//! traverse the directory (a data directory under /root, say), the cluster lives
//! in a directory of its own, `/var/tmp/fxtriage-postgres-<hash>/cluster`, where
//! `<hash>` is the first 12 hex digits of the SHA-256 of the directory's absolute
//! path, as `infra/local/stack` does for its stack directory. The same directory
//! always finds the same cluster again, and `cluster.location` in the directory
//! names where it is.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Where a cluster that cannot live in its directory lives instead.
const RELOCATED_PARENT: &str = "/var/tmp";
/// The file in the directory that names a relocated cluster.
const LOCATION_FILE: &str = "cluster.location";

#[derive(Debug)]
pub struct PrivatePostgres {
    binaries: PathBuf,
    data: PathBuf,
    run_as_postgres: bool,
    pub url: String,
}

fn newest_binaries() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (no /usr/lib/postgresql); install the postgresql package or give --database-url")?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    candidates.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates
        .pop()
        .context("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
}

/// The relocated home of the cluster of `directory` (absolute):
/// `/var/tmp/fxtriage-postgres-<first 12 hex digits of sha256(directory)>`.
fn relocated_home(directory: &Path) -> anyhow::Result<PathBuf> {
    let mut sha256sum = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run sha256sum (coreutils)")?;
    sha256sum
        .stdin
        .take()
        .context("sha256sum's input")?
        .write_all(directory.as_os_str().as_encoded_bytes())?;
    let output = sha256sum.wait_with_output()?;
    let digest = String::from_utf8_lossy(&output.stdout);
    let hex: String = digest.chars().take(12).collect();
    anyhow::ensure!(
        output.status.success() && hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "sha256sum failed"
    );
    Ok(Path::new(RELOCATED_PARENT).join(format!("fxtriage-postgres-{hex}")))
}

/// Whether the postgres user can traverse `path` and every directory above it.
fn postgres_can_reach(path: &Path) -> anyhow::Result<bool> {
    let mut reachable = path;
    while !reachable.exists() {
        match reachable.parent() {
            Some(parent) => reachable = parent,
            None => break,
        }
    }
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(reachable)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run runuser to test what the postgres user can reach")?;
    Ok(status.success())
}

/// Creates `home` (as root) for a relocated cluster, or checks that the one
/// there is a directory of root's: /var/tmp is writable by everyone, and a
/// directory or link someone else put there must not receive the cluster.
fn prepare_relocated_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    match std::fs::DirBuilder::new().mode(0o755).create(home) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create {}", home.display()));
        }
    }
    let metadata = std::fs::symlink_metadata(home)?;
    if !metadata.file_type().is_dir() || metadata.uid() != 0 {
        bail!(
            "{} is not a directory of root's; remove it, or use a data directory the postgres \
             user can reach, or give --database-url",
            home.display()
        );
    }
    Ok(())
}

/// The cluster directory of `directory` (absolute), and whether it is relocated:
/// an existing cluster in the directory, else an existing relocated one, else
/// a new one where the postgres user can reach it.
fn cluster_directory(directory: &Path, run_as_postgres: bool) -> anyhow::Result<(PathBuf, bool)> {
    let in_place = directory.join("cluster");
    if !run_as_postgres {
        return Ok((in_place, false));
    }
    let reachable = postgres_can_reach(directory)?;
    if in_place.join("PG_VERSION").is_file() {
        if !reachable {
            bail!(
                "the postgres user cannot reach the cluster in {} (a parent directory is not \
                 traversable); make it traversable, move the data directory, or give --database-url",
                in_place.display()
            );
        }
        return Ok((in_place, false));
    }
    let relocated = relocated_home(directory)?.join("cluster");
    if relocated.join("PG_VERSION").is_file() || !reachable {
        return Ok((relocated, true));
    }
    Ok((in_place, false))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl PrivatePostgres {
    fn command(&self, program: &str) -> Command {
        let binary = self.binaries.join(program);
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn run(&self, program: &str, arguments: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(program)
            .args(arguments)
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Initialises (first time) and starts the cluster of `directory`: in it, or,
    /// as root when the postgres user cannot reach it, under /var/tmp (see the
    /// module's documentation).
    pub fn start(directory: &Path) -> anyhow::Result<Self> {
        let binaries = newest_binaries()?;
        let run_as_postgres = is_root();
        std::fs::create_dir_all(directory)?;
        let directory = directory.canonicalize()?;
        let (data, relocated) = cluster_directory(&directory, run_as_postgres)?;
        let location = directory.join(LOCATION_FILE);
        if relocated {
            let home = data.parent().context("a relocated cluster has a parent")?;
            prepare_relocated_home(home)?;
            std::fs::write(&location, format!("{}\n", data.display()))
                .with_context(|| format!("cannot write {}", location.display()))?;
            tracing::info!(
                directory = %directory.display(),
                cluster = %data.display(),
                "the postgres user cannot reach the data directory; the private cluster lives elsewhere"
            );
        } else if location.exists() {
            std::fs::remove_file(&location)?;
        }
        let mut cluster = Self {
            binaries,
            data: data.clone(),
            run_as_postgres,
            url: String::new(),
        };
        if !data.join("PG_VERSION").is_file() {
            std::fs::create_dir_all(&data)?;
            if run_as_postgres {
                let status = Command::new("chown")
                    .args(["postgres:", &data.display().to_string()])
                    .status()?;
                anyhow::ensure!(
                    status.success(),
                    "cannot give {} to the postgres user",
                    data.display()
                );
            }
            let data_text = data.display().to_string();
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &data_text,
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
            )?;
        }
        // A cluster still running here was left by a standalone that was
        // killed: the caller holds the data directory's lock, so no live
        // standalone uses it. Stop it, then start afresh.
        let data_text = data.display().to_string();
        if cluster.run("pg_ctl", &["-D", &data_text, "status"]).is_ok() {
            tracing::warn!(data = %data.display(), "stopping a private PostgreSQL left running by an earlier standalone");
            cluster.run("pg_ctl", &["-D", &data_text, "-m", "fast", "-w", "stop"])?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            data.display()
        );
        let log = data.join("postgres.log").display().to_string();
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        )?;
        cluster.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        tracing::info!(data = %data.display(), port, "private PostgreSQL started");
        Ok(cluster)
    }

    pub fn stop(&self) {
        let data = self.data.display().to_string();
        if let Err(error) = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]) {
            tracing::warn!(%error, "stopping the private PostgreSQL failed");
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relocated_cluster_is_named_as_the_local_stack_names_its_own() {
        // printf '%s' /root/fxtriage/data/postgres | sha256sum | cut -c1-12
        assert_eq!(
            relocated_home(Path::new("/root/fxtriage/data/postgres")).unwrap(),
            Path::new("/var/tmp/fxtriage-postgres-16a9aac7d8f7")
        );
    }
}
