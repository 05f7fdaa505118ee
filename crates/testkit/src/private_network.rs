//! Tests of tools that can only listen on 0.0.0.0 (dcmtk's storescp, Orthanc)
//! run in a private network namespace: the test binary starts itself again
//! under `unshare --net --pid --fork --kill-child`, and that copy (which sees
//! [`IN_PRIVATE_NETWORK`]) runs everything on its own loopback. As the first
//! process of its own PID namespace, when it ends the kernel stops every
//! process it started.

use std::process::{Command, Stdio};

/// Set in the copy of a test that runs in the private network.
pub const IN_PRIVATE_NETWORK: &str = "FXTRIAGE_IN_PRIVATE_NETWORK";

/// Whether this is the copy running in the private network.
pub fn inside() -> bool {
    std::env::var_os(IN_PRIVATE_NETWORK).is_some()
}

/// The `unshare` options that give private network and PID namespaces: as root
/// directly, otherwise inside a new user namespace.
pub fn unshare_options() -> Option<Vec<&'static str>> {
    const NAMESPACES: [&str; 4] = ["--net", "--pid", "--fork", "--kill-child"];
    for user_namespace in [&[][..], &["--user", "--map-root-user"][..]] {
        let options: Vec<&str> = user_namespace.iter().chain(&NAMESPACES).copied().collect();
        let works = Command::new("unshare")
            .args(&options)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if works {
            return Some(options);
        }
    }
    None
}

/// Runs `this_test` of this test binary again in private network and PID
/// namespaces with `environment` added, and asserts that it ran and passed;
/// skips (fails when the stack is required) when no namespace can be made.
pub fn rerun(this_test: &str, environment: &[(&str, String)]) {
    let Some(options) = unshare_options() else {
        crate::stack::skip(
            "cannot create private network and PID namespaces \
             (needs root, CAP_SYS_ADMIN or unprivileged user namespaces)",
        );
        return;
    };
    let this_test_binary = std::env::current_exe().expect("the test binary");
    let output = Command::new("unshare")
        .args(&options)
        .args(["sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(&this_test_binary)
        .args(["--exact", this_test, "--nocapture", "--test-threads", "1"])
        .env(IN_PRIVATE_NETWORK, "1")
        .envs(environment.iter().map(|(key, value)| (*key, value)))
        .stdin(Stdio::null())
        .output()
        .expect("run the test in a private network namespace");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{printed}");
    assert!(
        output.status.success(),
        "the test failed in the private network namespace"
    );
    assert!(
        printed.contains("1 passed"),
        "the copy in the private network ran the test"
    );
}
