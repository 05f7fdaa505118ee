//! Results back into the hospital's own systems, the whole way, with real
//! third-party receivers: dcmtk's storescp and Orthanc as the PACS (SR and
//! secondary captures, checked by dsrdump and dciodvfy), hl7apy's MLLP server
//! as the RIS (ORU^R01 and order priority updates in strict 2.5.1), a recording
//! HTTP front door as the FHIR server (bundles checked by @medplum/core); orders
//! and reports come back in from hl7apy. A standalone killed with every result
//! pending loses none. A second site without destinations gets nothing.
//!
//! storescp always listens on 0.0.0.0, so the test runs in a private network
//! namespace: the test binary starts itself again under
//! `unshare --net --pid --fork --kill-child`, and that copy runs storescp and
//! standalone (with its private PostgreSQL) on its own loopback. As the first
//! process of its own PID namespace, when it ends the kernel stops everything
//! it started.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Standalone, dcmsend_all, free_loopback_port};

const STUDIES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_studys_report_reaches_the_pacs_once() {
    if fxtriage_testkit::private_network::inside() {
        report_to_storescp().await;
    } else {
        run_in_private_network("each_studys_report_reaches_the_pacs_once");
    }
}

/// Results wait in the outbox while the PACS and the RIS are away; standalone
/// is killed (SIGKILL) with all of them pending, started again, and once the
/// peers are back each result arrives, none lost and no content twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_standalone_loses_no_result() {
    if fxtriage_testkit::private_network::inside() {
        survive_a_kill().await;
    } else {
        run_in_private_network("a_killed_standalone_loses_no_result");
    }
}

/// The whole flow with Orthanc as the hospital's PACS: a modality stores
/// radiographs in Orthanc, which forwards them to fxtriage; the SR and a
/// secondary capture of each come back into Orthanc, once each, also after
/// every one was sent again; an ORU^R01 of each study reaches the RIS (hl7apy's
/// MLLP server), and the RIS's final report (hl7apy sending) closes the item
/// with the RIS's report time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_back_into_orthanc_once() {
    if fxtriage_testkit::private_network::inside() {
        through_orthanc().await;
    } else if fxtriage_testkit::stack::tool("Orthanc", "orthanc") {
        run_in_private_network("results_come_back_into_orthanc_once");
    }
}

fn run_in_private_network(this_test: &str) {
    for (program, package) in [
        ("storescp", "dcmtk"),
        ("dcmsend", "dcmtk"),
        ("dsrdump", "dcmtk"),
        ("dcmdump", "dcmtk"),
        ("dciodvfy", "dicom3tools"),
        ("node", "nodejs"),
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if !fxtriage_testkit::stack::tool(program, package) {
            return;
        }
    }
    let Some(ort) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let Some(hl7apy) = fxtriage_testkit::stack::setting("FXTRIAGE_HL7APY_DIR") else {
        return;
    };
    let Some(medplum) = fxtriage_testkit::stack::setting("FXTRIAGE_MEDPLUM_DIR") else {
        return;
    };
    fxtriage_testkit::private_network::rerun(
        this_test,
        &[
            ("ORT_DYLIB_PATH", ort),
            ("FXTRIAGE_HL7APY_DIR", hl7apy),
            ("FXTRIAGE_MEDPLUM_DIR", medplum),
        ],
    );
}

/// The files storescp wrote whose names start with `prefix`: it names a file
/// by its SOP class's abbreviation and its SOP Instance UID ("SRc." for a
/// Comprehensive SR, "SC." for a secondary capture).
fn received_as(directory: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .expect("the receiver's directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

fn received(directory: &Path) -> Vec<std::path::PathBuf> {
    received_as(directory, "SR")
}

fn tool_output(program: &str, arguments: &[&str], path: &Path) -> (bool, String) {
    let output = Command::new(program)
        .args(arguments)
        .arg(path)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The source image of a secondary capture: the one ReferencedSOPInstanceUID
/// it has (in its Source Image Sequence); `None` while it is being written.
fn source_of(file: &Path) -> Option<String> {
    let (_, printed) = tool_output("dcmdump", &[], file);
    let line = printed.lines().find(|line| line.contains("(0008,1155)"))?;
    let start = line.find('[')?;
    let end = line[start..].find(']')? + start;
    Some(line[start + 1..end].to_owned())
}

/// The studies of the ORU^R01 messages the RIS kept (OBX 110180, Study Instance UID).
fn oru_studies(directory: &Path) -> BTreeSet<String> {
    std::fs::read_dir(directory)
        .expect("the RIS's directory")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "hl7" {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            text.split('\r')
                .find(|segment| segment.starts_with("OBX") && segment.contains("|110180^"))
                .and_then(|segment| segment.split('|').nth(5))
                .map(str::to_owned)
        })
        .collect()
}

/// The StudyInstanceUID of a DICOM file, as dcmdump prints it; `None` while
/// the receiver is still writing the file.
fn study_of(file: &Path) -> Option<String> {
    let (_, printed) = tool_output("dcmdump", &["+P", "StudyInstanceUID"], file);
    let start = printed.find('[')?;
    let end = printed[start..].find(']')? + start;
    Some(printed[start + 1..end].to_owned())
}

async fn report_to_storescp() {
    let directory = tempfile::Builder::new()
        .prefix("fxtriage-dispatch-flow")
        .tempdir_in("/tmp")
        .expect("tempdir");
    // As root the private cluster runs as the postgres user, which must reach it.
    std::fs::set_permissions(
        directory.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let pacs = directory.path().join("pacs");
    std::fs::create_dir(&pacs).expect("pacs directory");
    let pacs_port = free_loopback_port();
    let mut storescp = fxtriage_testkit::ChildGuard::spawn(
        "storescp",
        Command::new("storescp")
            .args(["--aetitle", "NORTH_PACS", "--output-directory"])
            .arg(&pacs)
            .arg(pacs_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start storescp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", pacs_port)).is_err() {
        assert!(Instant::now() < deadline, "storescp listens within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The RIS: hl7apy's MLLP server, validating every message strictly.
    let ris = directory.path().join("ris");
    std::fs::create_dir(&ris).expect("ris directory");
    let mut receiver = fxtriage_testkit::ChildGuard::spawn(
        "hl7 receiver",
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../services/dispatch/tests/tools/hl7_receiver.py"
            ))
            .arg(&ris)
            .env(
                "PYTHONPATH",
                std::env::var("FXTRIAGE_HL7APY_DIR").expect("FXTRIAGE_HL7APY_DIR"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .expect("start the HL7 receiver");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.take_stdout().expect("its output")),
        &mut line,
    )
    .expect("the receiver says where it listens");
    let ris_port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the receiver printed {line:?}"));

    // The FHIR server's front door, recording what it is sent.
    let fhir = directory.path().join("fhir");
    std::fs::create_dir(&fhir).expect("fhir directory");
    let mut fhir_receiver = fxtriage_testkit::ChildGuard::spawn(
        "fhir receiver",
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../services/dispatch/tests/tools/fhir_receiver.py"
            ))
            .arg(&fhir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .expect("start the FHIR receiver");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fhir_receiver.take_stdout().expect("its output")),
        &mut line,
    )
    .expect("the FHIR receiver says where it listens");
    let fhir_port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("the FHIR receiver printed {line:?}"));
    let fhir_token = directory.path().join("fhir-token");
    std::fs::write(&fhir_token, "flow-token\n").expect("token");
    let fhir_token = fhir_token.display();

    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        format!(
            r#"
[[site]]
id = "north"
name = "North hospital"
called_ae_titles = ["NORTH_FX"]
hl7_sending_facilities = ["NORTH_RIS"]

[[site.destinations.dicom]]
name = "pacs"
ae_title = "NORTH_PACS"
host = "127.0.0.1"
port = {pacs_port}
objects = ["sr", "sc"]

[[site.destinations.hl7]]
name = "ris"
host = "127.0.0.1"
port = {ris_port}
receiving_application = "RIS"
receiving_facility = "NORTH"
messages = ["oru", "priority-update"]

[[site.destinations.fhir]]
name = "fhir"
base_url = "http://127.0.0.1:{fhir_port}/r4/ok"
token = "file:{fhir_token}"
resources = ["diagnostic-report"]

[[site]]
id = "south"
called_ae_titles = ["SOUTH_FX"]
"#
        ),
    )
    .expect("sites file");
    let samples = directory.path().join("samples");
    let written = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["samples", "--studies", &STUDIES.to_string(), "--out"])
        .arg(&samples)
        .output()
        .expect("samples");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let south_samples = directory.path().join("south-samples");
    let written = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["samples", "--studies", "2", "--seed", "7", "--out"])
        .arg(&south_samples)
        .output()
        .expect("samples");
    assert!(written.status.success());
    // The first study's accession number, from the samples' truth table, which
    // goes (dcmsend sends every file of a directory, and it is no image).
    let truth = std::fs::read_to_string(samples.join("samples.csv")).expect("samples.csv");
    let first: Vec<&str> = truth.lines().nth(1).expect("a study").split(',').collect();
    let (first_study, first_accession) = (first[1].to_owned(), first[2].to_owned());
    for directory in [&samples, &south_samples] {
        std::fs::remove_file(directory.join("samples.csv")).expect("samples.csv");
    }

    let environment: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key == "ORT_DYLIB_PATH")
        .collect();
    let data = directory.path().join("data");
    let sites_argument = sites.display().to_string();
    let hl7_port = free_loopback_port();
    let hl7_address = format!("127.0.0.1:{hl7_port}");
    let standalone = Standalone::start(
        "standalone-dispatch",
        &data,
        &environment,
        &["--sites", &sites_argument, "--hl7-address", &hl7_address],
        directory.path(),
    )
    .await;
    // The RIS orders the first study stat before its images come (hl7apy
    // sends an OMI^O23): the study arrives as an emergency.
    let ordered = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../services/dispatch/tests/tools/hl7_send.py"
        ))
        .args([
            "--order",
            &hl7_port.to_string(),
            "RIS-ORDER-1",
            "NORTH_RIS",
            &first_accession,
            "S",
            "20261130080000",
            &first_study,
        ])
        .env(
            "PYTHONPATH",
            std::env::var("FXTRIAGE_HL7APY_DIR").expect("FXTRIAGE_HL7APY_DIR"),
        )
        .output()
        .expect("hl7_send.py");
    let ack = String::from_utf8_lossy(&ordered.stdout);
    assert!(
        ack.contains("MSA|AA|RIS-ORDER-1"),
        "{ack}{}",
        String::from_utf8_lossy(&ordered.stderr)
    );
    dcmsend_all("NORTH_FX", standalone.dimse, &samples).await;
    dcmsend_all("SOUTH_FX", standalone.dimse, &south_samples).await;

    // Each study's report arrives: wait on progress, not on a fixed time. (A
    // study whose second image was stored after its first was analysed gets a
    // report, then a revision that supersedes it: both count once each.)
    let instances = std::fs::read_dir(&samples).expect("samples").count();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let studies: BTreeSet<String> = received(&pacs)
            .iter()
            .filter_map(|file| study_of(file))
            .collect();
        let sources: BTreeSet<String> = received_as(&pacs, "SC")
            .iter()
            .filter_map(|file| source_of(file))
            .collect();
        let reported = oru_studies(&ris);
        if studies.len() >= STUDIES && sources.len() >= instances && reported.len() >= STUDIES {
            break;
        }
        if studies.len() + sources.len() + reported.len() > last_count {
            last_count = studies.len() + sources.len() + reported.len();
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(180),
            "reports of {} of {STUDIES} studies and captures of {} of {instances} images \
             in the PACS, results of {} studies in the RIS, none new for 180 s:\n{}",
            studies.len(),
            sources.len(),
            reported.len(),
            standalone.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every delivery is recorded as sent; none for south, which has no destination.
    let database_url = standalone.described("database_url");
    let deadline = Instant::now() + Duration::from_secs(60);
    let deliveries = loop {
        let listed = Command::new(fxtriage_testkit::fxtriage_bin())
            .args([
                "dispatch",
                "list",
                "--json",
                "--database-url",
                &database_url,
            ])
            .output()
            .expect("dispatch list");
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let deliveries: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON record"))
            .collect();
        // Sent, or superseded unsent by a newer revision of the same result.
        if deliveries.iter().all(settled) {
            break deliveries;
        }
        assert!(Instant::now() < deadline, "not all sent: {deliveries:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(deliveries.iter().all(|delivery| {
        let destination = match delivery["kind"].as_str() {
            Some("hl7-oru" | "hl7-priority") => "ris",
            Some("fhir-diagnostic-report") => "fhir",
            _ => "pacs",
        };
        delivery["site_id"] == "north" && delivery["destination"] == destination
    }));
    // What reached its destination: the superseded revisions never leave.
    let of_kind = |kind: &str| {
        deliveries
            .iter()
            .filter(|delivery| delivery["kind"] == kind && delivery["state"] == "sent")
            .count()
    };

    // What arrived: one object per delivery (never the same content twice),
    // each a valid SR filed under its study, with the patient's attributes from
    // the source image; a second report of a study supersedes the first.
    let files = received(&pacs);
    assert_eq!(
        files.len(),
        of_kind("dicom-sr"),
        "one object per delivery: {files:?}"
    );
    let mut studies = BTreeSet::new();
    let mut revisions = 0;
    for file in &files {
        let (valid, dump) = tool_output("dsrdump", &["+Pl"], file);
        assert!(valid, "dsrdump refuses {}:\n{dump}", file.display());
        assert!(dump.contains("Imaging Measurement Report"), "{dump}");
        assert!(
            dump.contains("SYNTHETIC^PATIENT"),
            "the patient's name: {dump}"
        );
        assert!(
            [
                "Fracture suspected",
                "Fracture possible",
                "No fracture found by the AI"
            ]
            .iter()
            .any(|result| dump.contains(result)),
            "a study result: {dump}"
        );
        let (_, verdict) = tool_output("dciodvfy", &[], file);
        let errors: Vec<&str> = verdict
            .lines()
            .filter(|line| line.starts_with("Error"))
            .collect();
        assert!(
            errors.is_empty(),
            "dciodvfy on {}: {errors:#?}",
            file.display()
        );
        let (_, header) = tool_output("dcmdump", &[], file);
        if header.contains("PredecessorDocumentsSequence") {
            revisions += 1;
        }
        studies.insert(study_of(file).expect("a study UID"));
    }
    assert_eq!(studies.len(), STUDIES, "a report for each study");
    assert_eq!(
        files.len(),
        STUDIES + revisions,
        "every further report is a revision"
    );

    // A secondary capture of each analysed image: burned-in regions and banner,
    // derived from its source image, valid for dciodvfy.
    let captures = received_as(&pacs, "SC");
    assert_eq!(
        captures.len(),
        of_kind("dicom-sc"),
        "one object per delivery: {captures:?}"
    );
    let mut sources = BTreeSet::new();
    for file in &captures {
        let (_, verdict) = tool_output("dciodvfy", &[], file);
        let errors: Vec<&str> = verdict
            .lines()
            .filter(|line| line.starts_with("Error"))
            .collect();
        assert!(
            errors.is_empty(),
            "dciodvfy on {}: {errors:#?}",
            file.display()
        );
        let (_, header) = tool_output("dcmdump", &[], file);
        assert!(
            header.contains("AI TRIAGE AID - NOT A DIAGNOSIS"),
            "{header}"
        );
        assert!(
            header.contains("(0028,0301) CS [YES]"),
            "burned in: {header}"
        );
        sources.insert(source_of(file).expect("the source image's UID"));
    }
    assert_eq!(sources.len(), instances, "a capture of each analysed image");

    // The RIS has an ORU^R01 of each study (valid in strict 2.5.1: the receiver
    // answers AA only then), one per delivery.
    let messages: Vec<_> = std::fs::read_dir(&ris)
        .expect("ris")
        .filter_map(|entry| {
            let path = entry.expect("entry").path();
            path.extension()
                .is_some_and(|extension| extension == "hl7")
                .then_some(path)
        })
        .collect();
    assert_eq!(
        messages.len(),
        of_kind("hl7-oru") + of_kind("hl7-priority"),
        "one message per delivery: {messages:?}"
    );
    // The orders of the studies the AI flags are raised (stat or ASAP).
    let raised: Vec<String> = messages
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter(|text| text.contains("|OMI^O23^OMI_O23|"))
        .collect();
    assert_eq!(raised.len(), of_kind("hl7-priority"));
    assert!(
        !raised.is_empty(),
        "a fracture among the samples raises its order"
    );
    assert!(
        raised
            .iter()
            .all(|text| text.contains("\rTQ1|1||||||||S^Stat^HL70485")
                || text.contains("\rTQ1|1||||||||A^ASAP^HL70485")),
        "{raised:#?}"
    );
    assert_eq!(oru_studies(&ris).len(), STUDIES, "a result of each study");
    assert!(
        !ris.join("errors.txt").exists(),
        "the receiver found no message invalid: {}",
        std::fs::read_to_string(ris.join("errors.txt")).unwrap_or_default()
    );

    // The FHIR server got one valid R4 transaction per delivery, with the token.
    let mut bundles = Vec::new();
    for entry in std::fs::read_dir(&fhir).expect("fhir") {
        let recorded: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.expect("entry").path()).expect("read"))
                .expect("json");
        assert_eq!(recorded["authorization"], "Bearer flow-token");
        let path = directory
            .path()
            .join(format!("bundle-{}.json", bundles.len()));
        std::fs::write(&path, serde_json::to_vec(&recorded["body"]).expect("json")).expect("write");
        bundles.push(path);
    }
    assert_eq!(
        bundles.len(),
        of_kind("fhir-diagnostic-report"),
        "one per delivery"
    );
    assert!(bundles.len() >= STUDIES, "a report of each study");
    let validated = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../services/dispatch/tests/tools/fhir_validate.mjs"
        ))
        .args(&bundles)
        .env(
            "NODE_PATH",
            format!(
                "{}/node_modules",
                std::env::var("FXTRIAGE_MEDPLUM_DIR").expect("FXTRIAGE_MEDPLUM_DIR")
            ),
        )
        .output()
        .expect("node");
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stdout)
    );

    // The RIS reports the first study (hl7apy sends a final ORU^R01): its item
    // closes, with the RIS's report time.
    let sent = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../services/dispatch/tests/tools/hl7_send.py"
        ))
        .args([
            &hl7_port.to_string(),
            "RIS-FLOW-1",
            "NORTH_RIS",
            &first_accession,
            "F",
            "20261130120000+0000",
        ])
        .env(
            "PYTHONPATH",
            std::env::var("FXTRIAGE_HL7APY_DIR").expect("FXTRIAGE_HL7APY_DIR"),
        )
        .output()
        .expect("hl7_send.py");
    let ack = String::from_utf8_lossy(&sent.stdout);
    assert!(
        ack.contains("MSA|AA|RIS-FLOW-1"),
        "{ack}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to standalone's database");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT s.state, to_char(s.reported_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS'), r.source
             FROM studies s JOIN reports r USING (site_id, study_instance_uid)
             WHERE s.site_id = 'north' AND s.study_instance_uid = $1",
            &[&first_study],
        )
        .await
        .expect("the reported study");
    assert_eq!(row.get::<_, String>(0), "reported");
    assert_eq!(row.get::<_, String>(1), "20261130120000");
    assert_eq!(row.get::<_, String>(2), "ris");
    // The order came first: the study took its priority (the dataset says ROUTINE).
    let row = client
        .query_one(
            "SELECT urgency, urgency_source FROM studies WHERE site_id = 'north' AND study_instance_uid = $1",
            &[&first_study],
        )
        .await
        .expect("the ordered study");
    assert_eq!(row.get::<_, String>(0), "emergency");
    assert_eq!(row.get::<_, String>(1), "order");
    drop(client);

    standalone.service.stop().await;
    storescp.kill();
    receiver.kill();
    fhir_receiver.kill();
}

/// storescp as NORTH_PACS on `port`, writing into `directory`, listening.
async fn start_storescp(directory: &Path, port: u16) -> fxtriage_testkit::ChildGuard {
    let storescp = fxtriage_testkit::ChildGuard::spawn(
        "storescp",
        Command::new("storescp")
            .args(["--aetitle", "NORTH_PACS", "--output-directory"])
            .arg(directory)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start storescp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp listens within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    storescp
}

/// hl7apy's MLLP server on `port`, keeping what it accepts in `directory`.
fn start_ris(directory: &Path, port: u16) -> fxtriage_testkit::ChildGuard {
    let mut receiver = fxtriage_testkit::ChildGuard::spawn(
        "hl7 receiver",
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../services/dispatch/tests/tools/hl7_receiver.py"
            ))
            .arg(directory)
            .args(["--port", &port.to_string()])
            .env(
                "PYTHONPATH",
                std::env::var("FXTRIAGE_HL7APY_DIR").expect("FXTRIAGE_HL7APY_DIR"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .expect("start the HL7 receiver");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.take_stdout().expect("its output")),
        &mut line,
    )
    .expect("the receiver says where it listens");
    assert_eq!(line.trim(), format!("listening {port}"));
    receiver
}

/// `fxtriage dispatch list --json` of the database at `url`.
/// A delivery that is done: sent, or superseded by a newer revision of the
/// same result before it was sent (and so never sent).
fn settled(delivery: &serde_json::Value) -> bool {
    delivery["state"] == "sent" || delivery["state"] == "superseded"
}

fn deliveries(url: &str) -> Vec<serde_json::Value> {
    let listed = Command::new(fxtriage_testkit::fxtriage_bin())
        .args([
            "dispatch",
            "list",
            "--json",
            "--limit",
            "1000",
            "--database-url",
            url,
        ])
        .output()
        .expect("dispatch list");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record"))
        .collect()
}

async fn survive_a_kill() {
    let directory = tempfile::Builder::new()
        .prefix("fxtriage-dispatch-kill")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(
        directory.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (pacs, ris) = (directory.path().join("pacs"), directory.path().join("ris"));
    std::fs::create_dir(&pacs).expect("pacs");
    std::fs::create_dir(&ris).expect("ris");
    // Both peers are away at first: nothing listens on their ports.
    let (pacs_port, ris_port) = (free_loopback_port(), free_loopback_port());
    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        format!(
            r#"
[[site]]
id = "north"
called_ae_titles = ["NORTH_FX"]

[[site.destinations.dicom]]
name = "pacs"
ae_title = "NORTH_PACS"
host = "127.0.0.1"
port = {pacs_port}
objects = ["sr", "sc"]

[[site.destinations.hl7]]
name = "ris"
host = "127.0.0.1"
port = {ris_port}
messages = ["oru"]
"#
        ),
    )
    .expect("sites file");
    let samples = directory.path().join("samples");
    let written = Command::new(fxtriage_testkit::fxtriage_bin())
        .args([
            "samples",
            "--studies",
            &STUDIES.to_string(),
            "--seed",
            "11",
            "--out",
        ])
        .arg(&samples)
        .output()
        .expect("samples");
    assert!(written.status.success());
    std::fs::remove_file(samples.join("samples.csv")).expect("samples.csv");
    let instances = std::fs::read_dir(&samples).expect("samples").count();
    let environment: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key == "ORT_DYLIB_PATH")
        .collect();
    let data = directory.path().join("data");
    let sites_argument = sites.display().to_string();
    let first = Standalone::start(
        "standalone-before-kill",
        &data,
        &environment,
        &["--sites", &sites_argument],
        directory.path(),
    )
    .await;
    let url = first.described("database_url");
    dcmsend_all("NORTH_FX", first.dimse, &samples).await;

    // Every result is planned, and each peer has refused at least one
    // connection: they are away. (A result planned after its destination
    // failed waits with the destination's backoff before its first attempt, so
    // not every one has been tried.)
    let mut last = 0;
    let mut last_progress = Instant::now();
    loop {
        let pending = deliveries(&url);
        let studies_of = |kind: &str| {
            pending
                .iter()
                .filter(|delivery| delivery["kind"] == kind)
                .map(|delivery| {
                    delivery["study_instance_uid"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect::<BTreeSet<String>>()
                .len()
        };
        let captures = pending
            .iter()
            .filter(|delivery| delivery["kind"] == "dicom-sc")
            .count();
        let failed_at = |destination: &str| {
            pending.iter().any(|delivery| {
                delivery["destination"] == destination
                    && delivery["attempts"].as_i64().unwrap_or(0) >= 1
                    && delivery["last_error"]
                        .as_str()
                        .is_some_and(|error| !error.is_empty())
            })
        };
        if studies_of("dicom-sr") == STUDIES
            && studies_of("hl7-oru") == STUDIES
            && captures >= instances
            && failed_at("pacs")
            && failed_at("ris")
        {
            assert!(
                pending
                    .iter()
                    .all(|delivery| delivery["state"] == "pending"
                        || delivery["state"] == "superseded"),
                "nothing can be sent while the peers are away: {pending:#?}"
            );
            break;
        }
        if pending.len() > last {
            last = pending.len();
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(180),
            "{} deliveries planned, none new for 180 s: {pending:#?}\n{}",
            pending.len(),
            first.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let planned = deliveries(&url).len();
    // The latest next attempt, in seconds from now: after the restart the
    // relay keeps each delivery's backoff, so progress may pause that long.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to standalone's database");
    let connection = tokio::spawn(connection);
    let backoff: f64 = client
        .query_one(
            "SELECT COALESCE(EXTRACT(EPOCH FROM max(next_attempt_at) - now())::float8, 0)
             FROM deliveries WHERE state = 'pending'",
            &[],
        )
        .await
        .expect("the deliveries' backoff")
        .get(0);
    drop(client);
    connection.abort();
    let patience = Duration::from_secs(180) + Duration::from_secs_f64(backoff.max(0.0));

    // Killed with everything pending; its private PostgreSQL is left running.
    first.service.kill();
    let _storescp = start_storescp(&pacs, pacs_port).await;
    let _receiver = start_ris(&ris, ris_port);
    let second = Standalone::start(
        "standalone-after-kill",
        &data,
        &environment,
        &["--sites", &sites_argument],
        directory.path(),
    )
    .await;
    let url = second.described("database_url");

    let mut last = 0;
    let mut last_progress = Instant::now();
    let sent = loop {
        let now = deliveries(&url);
        let sent = now.iter().filter(|delivery| settled(delivery)).count();
        if sent == now.len() && sent >= planned {
            break now;
        }
        if sent > last {
            last = sent;
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < patience,
            "{sent} of {} deliveries sent, none new for {patience:?}\n{}",
            now.len(),
            second.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        sent.len(),
        planned,
        "nothing planned twice after the restart"
    );
    let of_kind = |kind: &str| {
        sent.iter()
            .filter(|delivery| delivery["kind"] == kind && delivery["state"] == "sent")
            .count()
    };
    // Each delivery is one object at the PACS (the same content twice would
    // be one file: storescp names files by SOP Instance UID) and one control
    // id at the RIS.
    assert_eq!(received_as(&pacs, "SR").len(), of_kind("dicom-sr"));
    assert_eq!(received_as(&pacs, "SC").len(), of_kind("dicom-sc"));
    let control_ids: BTreeSet<String> = std::fs::read_dir(&ris)
        .expect("ris")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.ends_with(".hl7")
                .then(|| name.split('.').next().unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(control_ids.len(), of_kind("hl7-oru"));
    let studies: BTreeSet<String> = received(&pacs)
        .iter()
        .filter_map(|file| study_of(file))
        .collect();
    assert_eq!(studies.len(), STUDIES, "a report of each study");
    assert_eq!(oru_studies(&ris).len(), STUDIES, "a result of each study");
    second.service.stop().await;
}

/// Orthanc with its own storage in `directory`: DICOM on `dicom_port` as
/// ORTHANC, REST on `http_port`, forwarding each CR and DX it is sent by a
/// modality (not what comes back from fxtriage) to fxtriage at `fxtriage_port`.
fn start_orthanc(
    directory: &Path,
    dicom_port: u16,
    http_port: u16,
    fxtriage_port: u16,
) -> fxtriage_testkit::ChildGuard {
    let forward = directory.join("forward.lua");
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
    .expect("lua");
    let config = serde_json::json!({
        "Name": "fxtriage-test-pacs",
        "StorageDirectory": directory.join("storage"),
        "IndexDirectory": directory.join("index"),
        "HttpServerEnabled": true,
        "HttpPort": http_port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "DicomServerEnabled": true,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomModalities": { "fxtriage": ["NORTH_FX", "127.0.0.1", fxtriage_port] },
        "LuaScripts": [forward],
        "Plugins": [],
        "DicomScuTimeout": 30,
    });
    let path = directory.join("orthanc.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
    let log = std::fs::File::create(directory.join("orthanc.log")).expect("log");
    fxtriage_testkit::ChildGuard::spawn(
        "Orthanc",
        Command::new("Orthanc")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    )
    .expect("start Orthanc")
}

/// The SOP Instance UIDs Orthanc holds of `modality`.
async fn orthanc_instances(http: &reqwest::Client, port: u16, modality: &str) -> Vec<String> {
    let found: Vec<serde_json::Value> = http
        .post(format!("http://127.0.0.1:{port}/tools/find"))
        .json(&serde_json::json!({
            "Level": "Instance",
            "Query": { "Modality": modality },
            "Expand": true,
        }))
        .send()
        .await
        .expect("Orthanc's REST API")
        .json()
        .await
        .expect("JSON");
    let mut uids: Vec<String> = found
        .iter()
        .filter_map(|instance| instance["MainDicomTags"]["SOPInstanceUID"].as_str())
        .map(str::to_owned)
        .collect();
    uids.sort();
    uids
}

async fn through_orthanc() {
    let directory = tempfile::Builder::new()
        .prefix("fxtriage-dispatch-orthanc")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(
        directory.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (orthanc_dicom, orthanc_http) = (free_loopback_port(), free_loopback_port());
    // The RIS: hl7apy's MLLP server, validating strictly.
    let ris = directory.path().join("ris");
    std::fs::create_dir(&ris).expect("ris");
    let ris_port = free_loopback_port();
    let mut ris_receiver = start_ris(&ris, ris_port);
    let sites = directory.path().join("sites.toml");
    std::fs::write(
        &sites,
        format!(
            r#"
[[site]]
id = "north"
called_ae_titles = ["NORTH_FX"]
calling_ae_titles = ["ORTHANC"]
hl7_sending_facilities = ["NORTH_RIS"]

[[site.destinations.dicom]]
name = "pacs"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc_dicom}
objects = ["sr", "sc"]

[[site.destinations.hl7]]
name = "ris"
host = "127.0.0.1"
port = {ris_port}
messages = ["oru"]
"#
        ),
    )
    .expect("sites file");
    let samples = directory.path().join("samples");
    let written = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["samples", "--studies", "3", "--seed", "5", "--out"])
        .arg(&samples)
        .output()
        .expect("samples");
    assert!(written.status.success());
    let truth = std::fs::read_to_string(samples.join("samples.csv")).expect("samples.csv");
    let first: Vec<&str> = truth.lines().nth(1).expect("a study").split(',').collect();
    let (first_study, first_accession) = (first[1].to_owned(), first[2].to_owned());
    std::fs::remove_file(samples.join("samples.csv")).expect("samples.csv");
    let images = std::fs::read_dir(&samples).expect("samples").count();
    let environment: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key == "ORT_DYLIB_PATH")
        .collect();
    let sites_argument = sites.display().to_string();
    let hl7_port = free_loopback_port();
    let hl7_address = format!("127.0.0.1:{hl7_port}");
    let standalone = Standalone::start(
        "standalone-orthanc",
        &directory.path().join("data"),
        &environment,
        &["--sites", &sites_argument, "--hl7-address", &hl7_address],
        directory.path(),
    )
    .await;
    let orthanc_dir = directory.path().join("orthanc");
    std::fs::create_dir(&orthanc_dir).expect("orthanc dir");
    let mut orthanc = start_orthanc(&orthanc_dir, orthanc_dicom, orthanc_http, standalone.dimse);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("http://127.0.0.1:{orthanc_http}/system"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "Orthanc answers within 60 s:\n{}",
            std::fs::read_to_string(orthanc_dir.join("orthanc.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The modality sends to the PACS; the PACS forwards to fxtriage.
    dcmsend_all("ORTHANC", orthanc_dicom, &samples).await;
    let url = standalone.described("database_url");
    let mut last = 0;
    let mut last_progress = Instant::now();
    loop {
        let reports = orthanc_instances(&http, orthanc_http, "SR").await;
        let captures = orthanc_instances(&http, orthanc_http, "OT").await;
        let listed = deliveries(&url);
        let all_sent = !listed.is_empty() && listed.iter().all(settled);
        if reports.len() >= 3
            && captures.len() >= images
            && oru_studies(&ris).len() >= 3
            && all_sent
        {
            break;
        }
        if reports.len() + captures.len() > last {
            last = reports.len() + captures.len();
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(180),
            "{} reports and {} captures in Orthanc, none new for 180 s\n{}\n{}",
            reports.len(),
            captures.len(),
            standalone.service.log_tail(),
            std::fs::read_to_string(orthanc_dir.join("orthanc.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // What was sent (a revision superseded before it was sent never was).
    let listed: Vec<serde_json::Value> = deliveries(&url)
        .into_iter()
        .filter(|delivery| delivery["state"] == "sent")
        .collect();
    let of_kind = |kind: &str| -> BTreeSet<String> {
        listed
            .iter()
            .filter(|delivery| delivery["kind"] == kind)
            .map(|delivery| delivery["object_id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let reports: BTreeSet<String> = orthanc_instances(&http, orthanc_http, "SR")
        .await
        .into_iter()
        .collect();
    let captures: BTreeSet<String> = orthanc_instances(&http, orthanc_http, "OT")
        .await
        .into_iter()
        .collect();
    assert_eq!(reports, of_kind("dicom-sr"), "each SR in Orthanc once");
    assert_eq!(
        captures,
        of_kind("dicom-sc"),
        "each capture in Orthanc once"
    );

    // Every delivery sent again (as after a crash between sending and
    // recording): the same objects, which Orthanc does not add twice.
    for delivery in &listed {
        let id = delivery["delivery_id"].as_i64().expect("an id").to_string();
        let resent = Command::new(fxtriage_testkit::fxtriage_bin())
            .args(["dispatch", "retry", "--resend", &id, "--database-url", &url])
            .output()
            .expect("dispatch retry");
        assert!(
            resent.status.success(),
            "{}",
            String::from_utf8_lossy(&resent.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = deliveries(&url);
        if now.iter().all(|delivery| {
            delivery["state"] == "superseded"
                || (delivery["state"] == "sent" && delivery["attempts"] == 1)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "not all sent again: {now:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let again: BTreeSet<String> = orthanc_instances(&http, orthanc_http, "SR")
        .await
        .into_iter()
        .collect();
    assert_eq!(again, reports, "still each SR once");
    let again: BTreeSet<String> = orthanc_instances(&http, orthanc_http, "OT")
        .await
        .into_iter()
        .collect();
    assert_eq!(again, captures, "still each capture once");

    // The RIS got an ORU^R01 of each study (valid: it answers AA only then);
    // its final report of the first study closes that item at the RIS's time.
    assert_eq!(
        oru_studies(&ris).len(),
        3,
        "a result of each study in the RIS"
    );
    let sent = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../services/dispatch/tests/tools/hl7_send.py"
        ))
        .args([
            &hl7_port.to_string(),
            "RIS-ORTHANC-1",
            "NORTH_RIS",
            &first_accession,
            "F",
            "20261130130500+0000",
        ])
        .env(
            "PYTHONPATH",
            std::env::var("FXTRIAGE_HL7APY_DIR").expect("FXTRIAGE_HL7APY_DIR"),
        )
        .output()
        .expect("hl7_send.py");
    let ack = String::from_utf8_lossy(&sent.stdout);
    assert!(ack.contains("MSA|AA|RIS-ORTHANC-1"), "{ack}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to standalone's database");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT state, to_char(reported_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
             FROM studies WHERE site_id = 'north' AND study_instance_uid = $1",
            &[&first_study],
        )
        .await
        .expect("the reported study");
    assert_eq!(row.get::<_, String>(0), "reported");
    assert_eq!(row.get::<_, String>(1), "20261130130500");
    drop(client);

    standalone.service.stop().await;
    orthanc.kill();
    ris_receiver.kill();
}
