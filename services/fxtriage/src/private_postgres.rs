//! A private PostgreSQL cluster for `fxtriage standalone` when it is given no
//! database URL: initialised in the data directory from the installed PostgreSQL
//! binaries, listening on 127.0.0.1 only (and a socket in the directory), stopped
//! on exit. PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` system user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

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

    /// Initialises (first time) and starts the cluster in `directory`.
    pub fn start(directory: &Path) -> anyhow::Result<Self> {
        let binaries = newest_binaries()?;
        let run_as_postgres = is_root();
        std::fs::create_dir_all(directory)?;
        let directory = directory.canonicalize()?;
        let data = directory.join("cluster");
        let mut cluster = Self {
            binaries,
            data: data.clone(),
            run_as_postgres,
            url: String::new(),
        };
        if run_as_postgres {
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x"])
                .arg(&directory)
                .status()?;
            if !reachable.success() {
                bail!(
                    "the postgres user cannot reach {} (a parent directory is not traversable); \
                     use a data directory elsewhere or give --database-url",
                    directory.display()
                );
            }
        }
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
