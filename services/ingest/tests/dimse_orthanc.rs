//! A PACS in front of fxtriage: Orthanc receives radiographs from a modality
//! (dcmtk's storescu) and forwards each CR and DX to the SCP by C-STORE, from a Lua
//! `OnStoredInstance` script.
//!
//! Orthanc always listens on 0.0.0.0, so the test runs in a private network
//! namespace: the test binary starts itself again under
//! `unshare --net --pid --fork --kill-child` with `FXTRIAGE_IN_PRIVATE_NETWORK=1`,
//! and that copy runs the SCP, Orthanc and the sender on its own loopback. It is
//! the first process of its own PID namespace too, so when it ends, however it
//! ends, the kernel stops every process it started, Orthanc included.

mod dimse_harness;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use dimse_harness::*;
use fxtriage_dicom::synthetic::SyntheticInstance;

const IN_PRIVATE_NETWORK: &str = "FXTRIAGE_IN_PRIVATE_NETWORK";
const THIS_TEST: &str = "orthanc_forwards_radiographs_to_the_scp";
const ORTHANC_AE_TITLE: &str = "ORTHANC";
const CR: &str = "1.2.840.10008.5.1.4.1.1.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_forwards_radiographs_to_the_scp() {
    if std::env::var_os(IN_PRIVATE_NETWORK).is_some() {
        forward_through_orthanc().await;
    } else {
        run_in_private_network().await;
    }
}

/// Starts this test again inside new network and PID namespaces and checks that it passed.
async fn run_in_private_network() {
    if !tools_available(
        "orthanc",
        &[
            "Orthanc", "unshare", "ip", "storescu", "echoscu", "dcmcjpeg",
        ],
    ) {
        return;
    }
    let Some(unshare_options) = private_namespace_options().await else {
        fxtriage_testkit::stack::skip(
            "cannot create private network and PID namespaces \
             (needs root, CAP_SYS_ADMIN or unprivileged user namespaces)",
        );
        return;
    };
    let this_test_binary = std::env::current_exe().expect("the test binary");
    let child = tokio::process::Command::new(find_tool("unshare").expect("unshare"))
        .args(&unshare_options)
        .args(["sh", "-c"])
        .arg(r#"ip link set lo up && exec "$0" "$@""#)
        .arg(&this_test_binary)
        .args(["--exact", THIS_TEST, "--nocapture", "--test-threads", "1"])
        .env(IN_PRIVATE_NETWORK, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start unshare");
    let output = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("the test in the private network finishes within four minutes")
        .expect("wait for unshare");
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

/// The `unshare` options that give a process private network and PID namespaces:
/// as root directly, otherwise inside a new user namespace.
async fn private_namespace_options() -> Option<Vec<&'static str>> {
    const NAMESPACES: [&str; 4] = ["--net", "--pid", "--fork", "--kill-child"];
    for user_namespace in [&[][..], &["--user", "--map-root-user"][..]] {
        let options: Vec<&str> = user_namespace.iter().chain(&NAMESPACES).copied().collect();
        let probe = run_tool("unshare", options.iter().chain(&["true"])).await;
        if probe.success {
            return Some(options);
        }
        eprintln!("unshare {}: {}", options.join(" "), probe.output.trim());
    }
    None
}

/// Kills the process when dropped (also when the test fails).
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Orthanc with its own storage in `dir`, forwarding CR and DX to `scp_port`.
fn start_orthanc(dir: &Path, dicom_port: u16, scp_port: u16) -> ChildGuard {
    let forward = dir.join("forward.lua");
    std::fs::write(
        &forward,
        r#"
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if origin['RequestOrigin'] ~= 'Lua' and (modality == 'CR' or modality == 'DX') then
    SendToModality(instanceId, 'fxtriage')
  end
end
"#,
    )
    .expect("write lua");
    let config = serde_json::json!({
        "Name": "fxtriage-test",
        "StorageDirectory": dir.join("storage"),
        "IndexDirectory": dir.join("index"),
        "HttpServerEnabled": false,
        "DicomServerEnabled": true,
        "DicomAet": ORTHANC_AE_TITLE,
        "DicomPort": dicom_port,
        "DicomModalities": { "fxtriage": [AE_TITLE, "127.0.0.1", scp_port] },
        "LuaScripts": [forward],
        "Plugins": [],
        "DicomScuTimeout": 30,
    });
    let config_path = dir.join("orthanc.json");
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("orthanc.log")).expect("log file");
    let child = std::process::Command::new(find_tool("Orthanc").expect("Orthanc"))
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start Orthanc");
    ChildGuard {
        name: "Orthanc",
        child,
    }
}

fn orthanc_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("orthanc.log")).unwrap_or_default()
}

async fn forward_through_orthanc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scp = Scp::start().await;
    let orthanc_port = free_port();
    let _orthanc = start_orthanc(dir.path(), orthanc_port, scp.address.port());
    let orthanc_port = orthanc_port.to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let echo = run_tool(
            "echoscu",
            [
                "-aec",
                ORTHANC_AE_TITLE,
                "-to",
                "5",
                "127.0.0.1",
                orthanc_port.as_str(),
            ],
        )
        .await;
        if echo.success {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Orthanc did not answer C-ECHO:\n{}\n{}",
            echo.output,
            orthanc_log(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A DX as the modality wrote it, a CR, and a DX compressed with JPEG lossless.
    let dx = write_instance(dir.path(), "dx.dcm", &SyntheticInstance::wrist());
    let cr = SyntheticInstance {
        sop_class_uid: CR.to_owned(),
        modality: "CR".to_owned(),
        body_part: "ANKLE".to_owned(),
        ..SyntheticInstance::wrist()
    };
    let cr = write_instance(dir.path(), "cr.dcm", &cr);
    let uncompressed = write_instance(dir.path(), "jpeg.src.dcm", &SyntheticInstance::wrist());
    let jpeg = dir.path().join("jpeg.dcm");
    let compressed = run_tool("dcmcjpeg", [uncompressed.as_path(), jpeg.as_path()]).await;
    assert!(compressed.success, "{}", compressed.output);
    let sent: Vec<SentFile> = [("dx", &dx), ("cr", &cr), ("jpeg-lossless", &jpeg)]
        .into_iter()
        .map(|(label, path)| describe_sent(label, SITE, path))
        .collect();

    let run = run_tool(
        "storescu",
        [
            "-xs",
            "-aec",
            ORTHANC_AE_TITLE,
            "-aet",
            "MODALITY",
            "127.0.0.1",
            orthanc_port.as_str(),
            dx.to_str().expect("path"),
            cr.to_str().expect("path"),
            jpeg.to_str().expect("path"),
        ],
    )
    .await;
    assert!(run.success, "storescu to Orthanc:\n{}", run.output);

    let events = scp.events(sent.len(), Duration::from_secs(60)).await;
    assert_eq!(
        events.len(),
        sent.len(),
        "every radiograph is forwarded; Orthanc's log:\n{}",
        orthanc_log(dir.path())
    );
    for file in &sent {
        let event = events
            .iter()
            .find(|event| event.object_key == file.object_key)
            .unwrap_or_else(|| panic!("{}: not forwarded", file.label));
        assert!(
            event
                .sender
                .starts_with(&format!("{ORTHANC_AE_TITLE} -> {AE_TITLE}")),
            "{}: forwarded by Orthanc: {}",
            file.label,
            event.sender
        );
        assert_eq!(
            event.transfer_syntax_uid, file.transfer_syntax_uid,
            "{}",
            file.label
        );
        assert_same_data_set(file, &scp.stored(&file.object_key).await);
    }
    eprintln!(
        "forwarded by Orthanc and stored unchanged: {}",
        sent.iter()
            .map(|file| file.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    scp.stop().await;
}
