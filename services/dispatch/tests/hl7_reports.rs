//! Reports from the RIS close worklist items, on a real PostgreSQL: the sender
//! is hl7apy (PyPI), building each ORU^R01 in strict 2.5.1 validation and
//! sending it over MLLP. A final report closes the item with the RIS's report
//! time; a preliminary one closes nothing; a resend is acted on once; every
//! message that cannot be applied gets a negative ACK with its reason and is
//! kept for the operator.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::Command;

use fxtriage_core::SiteId;
use fxtriage_dispatch::hl7_in;
use fxtriage_sites::{SiteConfig, SiteRegistry};
use fxtriage_testkit::FreshDatabase;
use tokio_util::sync::CancellationToken;

const STUDY: &str = "1.2.826.0.1.3680043.10.1234.1";
const ACCESSION: &str = "ACC-42";

/// hl7apy sends a report; the acknowledgement's segments, one per line.
fn send_report(
    hl7apy: &str,
    address: SocketAddr,
    control_id: &str,
    facility: &str,
    accession: &str,
    status: &str,
    report_time: &str,
) -> String {
    send_report_with(
        hl7apy,
        address,
        [control_id, facility, accession, status, report_time],
        None,
    )
}

/// [`send_report`] with the radiologist's coded finding (Y or N) when given.
fn send_report_with(
    hl7apy: &str,
    address: SocketAddr,
    [control_id, facility, accession, status, report_time]: [&str; 5],
    fracture: Option<&str>,
) -> String {
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/hl7_send.py"
        ))
        .args([
            &address.port().to_string(),
            control_id,
            facility,
            accession,
            status,
            report_time,
        ])
        .args(fracture)
        .env("PYTHONPATH", hl7apy)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "hl7_send.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// hl7apy sends a new imaging order (OMI^O23); the acknowledgement.
fn send_order(
    hl7apy: &str,
    address: SocketAddr,
    control_id: &str,
    accession: &str,
    priority: &str,
    study: &str,
) -> String {
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/hl7_send.py"
        ))
        .args([
            "--order",
            &address.port().to_string(),
            control_id,
            "NORTH_RIS",
            accession,
            priority,
            "202611300930",
            study,
        ])
        .env("PYTHONPATH", hl7apy)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "hl7_send.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A message as it is (even a broken one), over MLLP; the acknowledgement.
fn send_raw(address: SocketAddr, message: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(&fxtriage_hl7::mllp::frame(message))
        .expect("send");
    let mut answer = Vec::new();
    let mut byte = [0_u8; 1];
    while !answer.ends_with(&fxtriage_hl7::mllp::END) {
        let read = stream.read(&mut byte).expect("read the ACK");
        assert!(read == 1, "the connection closed without an ACK");
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer)
        .trim_matches(['\u{b}', '\u{1c}', '\r'])
        .replace('\r', "\n")
}

fn msa(ack: &str) -> (String, String) {
    let line = ack
        .lines()
        .find(|line| line.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    let fields: Vec<&str> = line.split('|').collect();
    (
        fields[1].to_owned(),
        fields.get(2).copied().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_the_ris_close_items_once_and_refusals_are_kept() {
    let Some(hl7apy) = fxtriage_testkit::stack::setting("FXTRIAGE_HL7APY_DIR") else {
        return;
    };
    let Some(database) = FreshDatabase::create("fxt_dispatch_hl7_in").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    let mut north = SiteConfig::new(SiteId::parse("north").expect("id"), "North");
    north.hl7_sending_facilities = vec!["NORTH_RIS".into()];
    fxtriage_sites::store::put_sites(&pool, vec![north])
        .await
        .expect("site");
    let client = pool.get().await.expect("connection");
    client
        .execute(
            "INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency,
                 urgency_source, arrived_at, ai_result, probability, deadline)
             VALUES ('north', $1, $2, 'emergency', 'dataset', '2026-11-30T09:00:00Z',
                 'suspected', 0.9, '2026-11-30T09:30:00Z')",
            &[&STUDY, &ACCESSION],
        )
        .await
        .expect("a study");
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let shutdown = CancellationToken::new();
    let (address, task) = hl7_in::serve(
        "127.0.0.1:0".parse().expect("address"),
        pool.clone(),
        registry,
        shutdown.clone(),
    )
    .await
    .expect("listen");
    let state = || async {
        let row = client
            .query_one(
                "SELECT state, reported_at FROM studies WHERE site_id = 'north' AND study_instance_uid = $1",
                &[&STUDY],
            )
            .await
            .expect("study");
        (
            row.get::<_, String>(0),
            row.get::<_, Option<time::OffsetDateTime>>(1),
        )
    };

    // An order for a study that is here: its stat priority makes it an
    // emergency (from outpatient), with the emergency deadline for its AI result.
    let routine = "1.2.826.0.1.3680043.10.1234.2";
    client
        .execute(
            "INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency,
                 urgency_source, arrived_at, ai_result, probability, deadline)
             VALUES ('north', $1, 'ACC-43', 'outpatient', 'default', '2026-11-30T09:00:00Z',
                 'suspected', 0.9, '2026-11-30T11:00:00Z')",
            &[&routine],
        )
        .await
        .expect("a routine study");
    let ack = send_order(&hl7apy, address, "ORD0001", "ACC-43", "S", routine);
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    let row = client
        .query_one(
            "SELECT urgency, urgency_source, EXTRACT(EPOCH FROM deadline - arrived_at)::float8
             FROM studies WHERE study_instance_uid = $1",
            &[&routine],
        )
        .await
        .expect("study");
    assert_eq!(row.get::<_, String>(0), "emergency");
    assert_eq!(row.get::<_, String>(1), "order");
    let policy = fxtriage_core::policy::Policy::default();
    let target = policy.target(
        fxtriage_core::Urgency::Emergency,
        fxtriage_core::policy::AiResult::Suspected,
    );
    assert_eq!(row.get::<_, f64>(2), target.as_secs_f64());
    // An order whose study has not arrived is kept for when it does.
    let ack = send_order(&hl7apy, address, "ORD0002", "ACC-77", "A", "1.2.3.77");
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    assert!(ack.contains("applies when its images arrive"), "{ack}");
    let stored: String = client
        .query_one(
            "SELECT urgency FROM orders WHERE accession_number = 'ACC-77'",
            &[],
        )
        .await
        .expect("the order")
        .get(0);
    assert_eq!(stored, "inpatient");

    // A preliminary report: recorded, the item stays open.
    let ack = send_report(
        &hl7apy,
        address,
        "RIS0001",
        "NORTH_RIS",
        ACCESSION,
        "P",
        "202611300955",
    );
    assert_eq!(msa(&ack), ("AA".into(), "RIS0001".into()), "{ack}");
    assert_eq!(state().await.0, "open");

    // The final report closes it, at the RIS's time (with its UTC offset),
    // with the radiologist's coded finding: no fracture.
    let ack = send_report_with(
        &hl7apy,
        address,
        [
            "RIS0002",
            "NORTH_RIS",
            ACCESSION,
            "F",
            "20261130111000+0100",
        ],
        Some("N"),
    );
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    let (state_now, reported_at) = state().await;
    assert_eq!(state_now, "reported");
    assert_eq!(
        reported_at.expect("reported_at").unix_timestamp(),
        time::macros::datetime!(2026-11-30 10:10:00 UTC).unix_timestamp()
    );
    let report = client
        .query_one(
            "SELECT source, reader, ris_control_id, met_deadline,
                    EXTRACT(EPOCH FROM turnaround)::float8, fracture
             FROM reports WHERE study_instance_uid = $1",
            &[&STUDY],
        )
        .await
        .expect("the report");
    assert_eq!(report.get::<_, String>(0), "ris");
    assert!(
        report.get::<_, String>(1).contains("SMITH"),
        "the reader as the RIS names them"
    );
    assert_eq!(report.get::<_, String>(2), "RIS0002");
    assert!(
        !report.get::<_, bool>(3),
        "reported after its 30-minute deadline"
    );
    assert_eq!(
        report.get::<_, f64>(4),
        70.0 * 60.0,
        "turnaround from arrival to the RIS's time"
    );
    assert_eq!(
        report.get::<_, Option<String>>(5).as_deref(),
        Some("no"),
        "the radiologist's coded finding, from its OBX"
    );
    let changes: i64 = client
        .query_one(
            "SELECT count(*) FROM worklist_outbox WHERE study_instance_uid = $1",
            &[&STUDY],
        )
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(changes, 1, "the change goes to the worklist topic");
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'study.report' AND actor = 'ris:NORTH_RIS'",
            &[],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(audited, 1);

    // The same message again: acknowledged, acted on once.
    let ack = send_report(
        &hl7apy,
        address,
        "RIS0002",
        "NORTH_RIS",
        ACCESSION,
        "F",
        "20261130111000+0100",
    );
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    let reports: i64 = client
        .query_one("SELECT count(*) FROM reports", &[])
        .await
        .expect("reports")
        .get(0);
    assert_eq!(reports, 1);

    // Refusals, each with its reason.
    let ack = send_report(
        &hl7apy,
        address,
        "RIS0003",
        "NORTH_RIS",
        "NO-SUCH",
        "F",
        "202611301200",
    );
    assert_eq!(msa(&ack).0, "AE", "{ack}");
    assert!(
        ack.contains("no study with accession number \"NO-SUCH\""),
        "{ack}"
    );
    let ack = send_report(
        &hl7apy,
        address,
        "RIS0004",
        "ELSEWHERE",
        ACCESSION,
        "F",
        "202611301200",
    );
    assert_eq!(msa(&ack).0, "AE", "{ack}");
    assert!(
        ack.contains("no site has HL7 sending facility \"ELSEWHERE\""),
        "{ack}"
    );
    let out_of_order = b"MSH|^~\\&|RIS|NORTH_RIS|FXTRIAGE|FXTRIAGE|202611301200||ORU^R01^ORU_R01|RIS0005|P|2.5.1\rPID|1||X\rOBX|1|TX|R^R^L||text||||||F\rOBR|1||ACC-42|XR^XR^L|||||||||||||||||||F\r";
    let ack = send_raw(address, out_of_order);
    assert_eq!(msa(&ack).0, "AR", "{ack}");
    assert!(
        ack.contains("OBX (segment 3) comes before OBR (segment 4)"),
        "{ack}"
    );
    let ack = send_raw(
        address,
        b"MSH|^~\\&|RIS|NORTH_RIS|FXTRIAGE|FXTRIAGE|202611301200||ORU^R01^ORU_R01||P|2.5.1\rOBR|1||ACC-42|XR^XR^L\r",
    );
    assert_eq!(msa(&ack).0, "AR", "{ack}");
    assert!(
        ack.contains("MSH-10 (message control id) is missing"),
        "{ack}"
    );
    let ack = send_raw(
        address,
        b"MSH|^~\\&|RIS|NORTH_RIS|FXTRIAGE|FXTRIAGE|202611301200||ORU^R01^ORU_R01|RIS0007|P|2.5.1\rPID|1||\xff\xfe\rOBR|1\r",
    );
    assert_eq!(msa(&ack).0, "AR", "{ack}");
    assert!(ack.contains("not valid UTF-8"), "{ack}");
    let ack = send_raw(
        address,
        b"MSH|^~\\&|RIS|NORTH_RIS|FXTRIAGE|FXTRIAGE|202611301200||ORM^O01^ORM_O01|RIS0008|P|2.5.1\rPID|1\r",
    );
    assert_eq!(msa(&ack).0, "AR", "{ack}");
    assert!(ack.contains("an order needs an ORC segment"), "{ack}");

    // Every message is kept, with what became of it.
    let kept: Vec<(String, String, String)> = client
        .query(
            "SELECT control_id, outcome, ack_code FROM hl7_messages ORDER BY message_id",
            &[],
        )
        .await
        .expect("kept")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected = [
        ("ORD0001", "applied", "AA"),
        ("ORD0002", "recorded", "AA"),
        ("RIS0001", "recorded", "AA"),
        ("RIS0002", "applied", "AA"),
        ("RIS0002", "duplicate", "AA"),
        ("RIS0003", "error", "AE"),
        ("RIS0004", "error", "AE"),
        ("RIS0005", "rejected", "AR"),
        ("", "rejected", "AR"),
        ("", "rejected", "AR"),
        ("RIS0008", "rejected", "AR"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(id, outcome, ack)| ((*id).into(), (*outcome).into(), (*ack).into()))
        .collect();
    assert_eq!(kept, expected);

    // A study reported before without an outcome (here by an earlier RIS
    // message): a later report's coded finding fills the outcome, and nothing
    // else changes.
    let earlier = "1.2.826.0.1.3680043.10.1234.4";
    client
        .execute(
            "INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency,
                 urgency_source, arrived_at, ai_result, probability, deadline, state, reported_at)
             VALUES ('north', $1, 'ACC-44', 'emergency', 'dataset', '2026-11-30T09:00:00Z',
                 'suspected', 0.9, '2026-11-30T09:30:00Z', 'reported', '2026-11-30T09:20:00Z')",
            &[&earlier],
        )
        .await
        .expect("a reported study");
    client
        .execute(
            "INSERT INTO reports (site_id, study_instance_uid, reader, reported_at, arrived_at,
                 deadline, urgency, ai_result, probability, source, ris_control_id)
             SELECT site_id, study_instance_uid, 'dr-first', reported_at, arrived_at, deadline,
                 urgency, ai_result, probability, 'ris', 'EARLIER'
             FROM studies WHERE study_instance_uid = $1",
            &[&earlier],
        )
        .await
        .expect("its report");
    let ack = send_report_with(
        &hl7apy,
        address,
        ["RIS0009", "NORTH_RIS", "ACC-44", "C", "202611301000"],
        Some("Y"),
    );
    assert_eq!(msa(&ack).0, "AA", "{ack}");
    let report = client
        .query_one(
            "SELECT fracture, reader, ris_control_id FROM reports WHERE study_instance_uid = $1",
            &[&earlier],
        )
        .await
        .expect("the report");
    assert_eq!(report.get::<_, Option<String>>(0).as_deref(), Some("yes"));
    assert_eq!(
        report.get::<_, String>(1),
        "dr-first",
        "the report itself stays"
    );
    assert_eq!(report.get::<_, String>(2), "EARLIER");

    shutdown.cancel();
    task.await.expect("listener");
    drop(client);
    drop(pool);
    database.drop_database().await;
}
