//! As root, `fxtriage standalone` with a data directory that the postgres user
//! cannot traverse (under /root) still gets its private PostgreSQL cluster: it
//! lives under /var/tmp instead, named in DIR/postgres/cluster.location, is
//! stopped on exit, and the next start of the same data directory finds it again.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use fxtriage_testkit::stack;
use support::{Service, free_loopback_port, repository_path, wait_for_status};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// `printf '%s' PATH | sha256sum | cut -c1-12`, as infra/local/stack names its
/// relocated PostgreSQL directory.
fn short_sha256(path: &Path) -> String {
    let output = Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" | sha256sum | cut -c1-12", "sh"])
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(output.status.success(), "sha256sum failed");
    String::from_utf8(output.stdout)
        .expect("hex")
        .trim()
        .to_owned()
}

/// The relocated cluster directory that `cluster.location` of `postgres` names.
fn relocated_cluster(postgres: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(postgres.join("cluster.location")).ok()?;
    Some(PathBuf::from(text.trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_a_data_dir_the_postgres_user_cannot_reach_gets_a_cluster_under_var_tmp() {
    if !is_root() {
        stack::not_applicable(
            "runs only as root (the private cluster then runs as the postgres user)",
        );
        return;
    }
    if !Path::new("/usr/lib/postgresql").is_dir() {
        stack::skip("PostgreSQL is not installed (/usr/lib/postgresql)");
        return;
    }
    let Some(library) = stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let environment = vec![("ORT_DYLIB_PATH".to_owned(), library)];
    // Mode 0700 and owned by root: the postgres user cannot traverse it.
    let directory = tempfile::Builder::new()
        .prefix("fxtriage-root-pg")
        .tempdir_in("/root")
        .expect("tempdir under /root");
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(directory.path())
        .status()
        .expect("runuser");
    assert!(
        !reachable.success(),
        "the postgres user must not reach {}",
        directory.path().display()
    );
    let data = directory.path().join("data");
    let postgres = data.join("postgres");
    // pg_ctl detaches the postmaster into a session of its own: if this test
    // fails before standalone stops it, this guard does, and removes the
    // relocated cluster.
    let _relocated = RelocatedClusterGuard(postgres.clone());

    let mut first_location = None;
    for run in ["first", "second"] {
        let http = free_loopback_port();
        let arguments: Vec<String> = [
            "standalone",
            "--data-dir",
            &data.display().to_string(),
            "--model",
            &repository_path("models/testdata/heatmap")
                .display()
                .to_string(),
            "--http-address",
            &format!("127.0.0.1:{http}"),
            "--dimse-address",
            &format!("127.0.0.1:{}", free_loopback_port()),
            "--stow-address",
            &format!("127.0.0.1:{}", free_loopback_port()),
        ]
        .map(str::to_owned)
        .to_vec();
        let standalone = Service::start(
            &format!("standalone-root-{run}"),
            &arguments,
            &environment,
            directory.path(),
        );
        wait_for_status(&format!("http://127.0.0.1:{http}/health/ready"), 200).await;
        let description: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join("standalone.json")).expect("standalone.json"),
        )
        .expect("json");
        assert_eq!(description["database"], "private");

        let cluster = relocated_cluster(&postgres).expect("cluster.location names the cluster");
        let expected_home = format!(
            "/var/tmp/fxtriage-postgres-{}",
            short_sha256(&postgres.canonicalize().expect("absolute"))
        );
        assert_eq!(cluster, Path::new(&expected_home).join("cluster"));
        assert!(
            !postgres.join("cluster").exists(),
            "no cluster in the unreachable data directory"
        );
        let postmaster = cluster.join("postmaster.pid");
        assert!(
            postmaster.is_file(),
            "the {run} run's cluster runs from {}",
            cluster.display()
        );
        match &first_location {
            None => first_location = Some(cluster.clone()),
            Some(first) => assert_eq!(&cluster, first, "the second start finds the same cluster"),
        }

        standalone.stop().await;
        assert!(
            !postmaster.exists(),
            "the cluster is stopped on exit of the {run} run"
        );
        assert!(
            cluster.join("PG_VERSION").is_file(),
            "the cluster is kept for the next start"
        );
    }
}

/// When dropped: kills the postmaster of the relocated cluster that
/// `cluster.location` in this directory names, if it still runs, and removes
/// the cluster's directory under /var/tmp.
struct RelocatedClusterGuard(PathBuf);

impl Drop for RelocatedClusterGuard {
    fn drop(&mut self) {
        let Some(cluster) = relocated_cluster(&self.0) else {
            return;
        };
        if let Ok(text) = std::fs::read_to_string(cluster.join("postmaster.pid"))
            && let Some(pid) = text.lines().next()
        {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let Some(home) = cluster.parent() else {
            return;
        };
        if home
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("fxtriage-postgres-"))
            && home.parent() == Some(Path::new("/var/tmp"))
        {
            let _ = std::fs::remove_dir_all(home);
        }
    }
}
