//! The container image (Containerfile, target `prebuilt`, built by
//! scripts/build-image around the binary these tests built): it runs as a
//! non-root user, names its version and revision, stops at once naming a
//! missing setting, and ingest, inference and the prioritizer run from it with
//! podman (`--network host`, each bound to 127.0.0.1) against the local stack:
//! studies sent by C-STORE reach the worklist once each.

mod support;

use std::process::Output;

use support::deployment::{Deployment, write_studies};
use support::{Stack, dcmsend_all, podman, repository_path, stack_env};

/// `podman run` of `image` with podman's `options`, then the image's `arguments`.
fn run(image: &str, options: &[&str], arguments: &[&str]) -> Output {
    podman()
        .args(["run", "--rm", "--network", "host"])
        .args(options)
        .arg(image)
        .args(arguments)
        .output()
        .expect("podman run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_run_from_the_image_against_the_local_stack() {
    if stack_env().is_none() {
        return;
    }
    let tag = format!("localhost/fxtriage:test-{}", std::process::id());
    let built = std::process::Command::new(repository_path("scripts/build-image"))
        .arg(fxtriage_testkit::fxtriage_bin())
        .arg(&tag)
        .output()
        .expect("run scripts/build-image");
    assert!(
        built.status.success(),
        "scripts/build-image failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // A non-root user; the version and revision of the binary inside.
    let user = run(&tag, &["--entrypoint", "id"], &["-u"]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001");
    let version = run(&tag, &[], &["--version"]);
    let expected = std::process::Command::new(fxtriage_testkit::fxtriage_bin())
        .arg("--version")
        .output()
        .expect("version");
    assert!(version.status.success(), "{version:?}");
    assert_eq!(version.stdout, expected.stdout);
    // Without its required settings a service stops at once, naming them.
    let bare = run(&tag, &[], &["ingest"]);
    assert!(!bare.status.success());
    let said = String::from_utf8_lossy(&bare.stderr);
    assert!(
        said.contains("--database-url") && said.contains("--kafka-brokers"),
        "{said}"
    );

    let stack = Stack::start("image").await.expect("the stack");
    let deployment = Deployment::start_from(stack, Some(tag.clone())).await;
    let inputs = deployment.directory.path().join("studies");
    let studies = write_studies(&inputs, 10, false);
    dcmsend_all(&deployment.ae_title, deployment.dimse_port, &inputs).await;
    let client = deployment.stack.client().await;
    deployment.settled_once(&client, &studies).await;
    drop(client);
    deployment.stop().await;
    let _ = podman().args(["rmi", "--force", &tag]).output();
}
