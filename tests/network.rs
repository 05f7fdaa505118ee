//! A new user's path through `fxtriage standalone` and the site registry:
//!
//! - the printed token stores an instance over STOW-RS, and broken requests get
//!   a 4xx with their reason;
//! - `fxtriage sites apply` of a two-hospital network file, then C-STORE to both
//!   hospitals' AE titles (in force within seconds, no restart), shows both
//!   studies in the group's merged worklist in deadline order, for a group token
//!   made by `fxtriage tokens create --group`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_testkit::{FreshDatabase, Progress, eventually};
use serde_json::Value;
use support::{Standalone, setting, stack_env};

const NETWORK: &str = r#"
[[site]]
id = "north"
name = "North hospital"
called_ae_titles = ["NORTH_FX"]

[[site]]
id = "south"
name = "South hospital"
called_ae_titles = ["SOUTH_FX"]

[[group]]
id = "network"
name = "North and South imaging network"
sites = ["north", "south"]
"#;

/// The binary's command `arguments` against the database of `url`.
fn fxtriage(arguments: &[&str], url: &str) -> Output {
    let mut command = Command::new(fxtriage_testkit::fxtriage_bin());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FXTRIAGE_")) {
        command.env_remove(name);
    }
    command
        .args(arguments)
        .env("FXTRIAGE_DATABASE_URL", url)
        .env("FXTRIAGE_LOG", "warn")
        .output()
        .expect("run fxtriage")
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn multipart(instance: &[u8]) -> Vec<u8> {
    let mut body = b"--b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(instance);
    body.extend_from_slice(b"\r\n--b--\r\n");
    body
}

/// One study of one image for `ae_title` on `port`, with `priority`.
fn send_study(directory: &Path, ae_title: &str, port: u16, priority: &str) -> String {
    std::fs::create_dir_all(directory).expect("mkdir");
    let study = new_uid();
    let instance = SyntheticInstance {
        study_instance_uid: study.clone(),
        series_instance_uid: format!("{study}.1"),
        sop_instance_uid: format!("{study}.1.1"),
        requested_priority: priority.into(),
        ..SyntheticInstance::wrist()
    };
    std::fs::write(directory.join("image.dcm"), instance.to_part10()).expect("write");
    let sent = Command::new("dcmsend")
        .args(["-aec", ae_title, "127.0.0.1", &port.to_string(), "+sd"])
        .arg(directory)
        .output()
        .expect("dcmsend (dcmtk)");
    assert!(
        sent.status.success(),
        "dcmsend to {ae_title}: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    study
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_applied_to_a_running_standalone_reads_as_one_worklist() {
    let Some(environment) = stack_env() else {
        return;
    };
    let database = FreshDatabase::create_on(
        &setting(&environment, "FXTRIAGE_DATABASE_URL"),
        "fxt_network",
    )
    .await;
    let directory = tempfile::tempdir().expect("tempdir");
    let standalone_environment = vec![
        (
            "ORT_DYLIB_PATH".to_owned(),
            setting(&environment, "ORT_DYLIB_PATH"),
        ),
        ("FXTRIAGE_DATABASE_URL".to_owned(), database.url.clone()),
    ];
    let standalone = Standalone::start(
        "standalone",
        &directory.path().join("data"),
        &standalone_environment,
        &[],
        directory.path(),
    )
    .await;
    let (http, dimse) = (standalone.http, standalone.dimse);
    let description = &standalone.description;
    let url = description["database_url"].as_str().expect("database_url");
    assert_eq!(url, database.url, "every CLI command can use it");
    let printed_token = description["token"].as_str().expect("token");
    let stow_url = description["stow"].as_str().expect("stow");
    let client = reqwest::Client::new();

    // STOW-RS with the printed token: stored.
    let stow_request = |token: &str, url: &str, body: Vec<u8>| {
        client
            .post(url)
            .bearer_auth(token)
            .header("Accept", "application/dicom+json")
            .header(
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=b",
            )
            .body(body)
            .send()
    };
    let stored = stow_request(
        printed_token,
        stow_url,
        multipart(&SyntheticInstance::wrist().to_part10()),
    )
    .await
    .expect("request");
    assert_eq!(stored.status(), 200, "the printed token stores");
    // Broken requests: a 4xx each, with its reason.
    let corrupt = SyntheticInstance::wrist().to_part10();
    let refused = stow_request(
        printed_token,
        stow_url,
        multipart(&corrupt[..corrupt.len() / 2]),
    )
    .await
    .expect("request");
    assert_eq!(refused.status(), 409, "a truncated instance");
    assert!(
        refused.text().await.expect("body").contains("unreadable"),
        "the reason is in the response"
    );
    let unknown = stow_request(
        &format!("fxt_{}", "0".repeat(64)),
        stow_url,
        multipart(&SyntheticInstance::wrist().to_part10()),
    )
    .await
    .expect("request");
    assert_eq!(unknown.status(), 401);
    let elsewhere = stow_request(
        printed_token,
        &stow_url.replace("/sites/demo/", "/sites/nowhere/"),
        multipart(&SyntheticInstance::wrist().to_part10()),
    )
    .await
    .expect("request");
    assert_eq!(elsewhere.status(), 404);
    let viewer = succeeded(
        &fxtriage(
            &["tokens", "create", "--site", "demo", "--role", "viewer"],
            url,
        ),
        "tokens create",
    );
    let forbidden = stow_request(
        viewer.trim(),
        stow_url,
        multipart(&SyntheticInstance::wrist().to_part10()),
    )
    .await
    .expect("request");
    assert_eq!(forbidden.status(), 403);
    assert!(
        forbidden.text().await.expect("body").contains("sender"),
        "names the role it lacks"
    );

    // The network, applied to the running standalone.
    let network = directory.path().join("network.toml");
    std::fs::write(&network, NETWORK).expect("network file");
    let dry = succeeded(
        &fxtriage(
            &[
                "sites",
                "apply",
                "--dry-run",
                &network.display().to_string(),
            ],
            url,
        ),
        "sites apply --dry-run",
    );
    assert!(dry.contains("would: add site north"), "{dry}");
    let applied = succeeded(
        &fxtriage(&["sites", "apply", &network.display().to_string()], url),
        "sites apply",
    );
    assert!(
        applied.contains("add site north")
            && applied.contains("add site south")
            && applied.contains("add group network"),
        "{applied}"
    );
    let again = succeeded(
        &fxtriage(&["sites", "apply", &network.display().to_string()], url),
        "sites apply again",
    );
    assert!(again.contains("no change"), "{again}");
    let shown = succeeded(
        &fxtriage(&["sites", "show", "north", "--format", "toml"], url),
        "sites show",
    );
    let shown_file = directory.path().join("north.toml");
    std::fs::write(&shown_file, &shown).expect("write");
    let reapplied = succeeded(
        &fxtriage(&["sites", "apply", &shown_file.display().to_string()], url),
        "sites apply of sites show",
    );
    assert!(reapplied.contains("no change"), "{shown}\n{reapplied}");
    let listed = succeeded(&fxtriage(&["sites", "list"], url), "sites list");
    assert!(
        listed.contains("NORTH_FX") && listed.contains("network"),
        "{listed}"
    );
    let group_token = succeeded(
        &fxtriage(
            &["tokens", "create", "--group", "network", "--role", "reader"],
            url,
        ),
        "tokens create --group",
    );
    let group_token = group_token.trim().to_owned();

    // Ingest takes the new AE titles within seconds, without a restart.
    eventually("NORTH_FX to be served", Duration::from_secs(10), || async {
        let echo = Command::new("echoscu")
            .args(["-aec", "NORTH_FX", "127.0.0.1", &dimse.to_string()])
            .output()
            .expect("echoscu (dcmtk)");
        if echo.status.success() {
            Progress::Done(())
        } else {
            Progress::NotYet(String::from_utf8_lossy(&echo.stderr).into_owned())
        }
    })
    .await;
    let north = send_study(
        &directory.path().join("north"),
        "NORTH_FX",
        dimse,
        "ROUTINE",
    );
    let south = send_study(&directory.path().join("south"), "SOUTH_FX", dimse, "STAT");

    let page = eventually(
        "both studies analysed on the network's worklist",
        Duration::from_secs(120),
        || async {
            let response = client
                .get(format!(
                    "http://127.0.0.1:{http}/api/v1/groups/network/worklist"
                ))
                .bearer_auth(&group_token)
                .send()
                .await
                .expect("request");
            let page: Value = response.json().await.expect("JSON");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let settled = items.len() == 2
                && items
                    .iter()
                    .all(|item| item["ai_result"] != "awaiting-analysis");
            if settled {
                Progress::Done(items)
            } else {
                Progress::NotYet(page.to_string())
            }
        },
    )
    .await;
    let order: Vec<(&str, &str)> = page
        .iter()
        .map(|item| {
            (
                item["site_id"].as_str().expect("site"),
                item["study_instance_uid"].as_str().expect("uid"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [("south", south.as_str()), ("north", north.as_str())],
        "the emergency at South is read before the routine study at North"
    );
    let deadlines: Vec<&str> = page
        .iter()
        .map(|item| item["deadline"].as_str().expect("deadline"))
        .collect();
    assert!(
        deadlines[0] <= deadlines[1],
        "deadline order: {deadlines:?}"
    );
    // The group token sees neither the demo site nor its study.
    let demo = client
        .get(format!(
            "http://127.0.0.1:{http}/api/v1/sites/demo/worklist"
        ))
        .bearer_auth(&group_token)
        .send()
        .await
        .expect("request");
    assert_eq!(demo.status(), 404);

    standalone.service.stop().await;
    database.drop_database().await;
}
