//! `fxtriage analytics` against a PostgreSQL database holding reported and
//! waiting studies (written as the RIS report path writes them): the figures
//! per urgency as JSON, CSV and a table, and the timelines exported with
//! pseudonyms, or with identifiers when asked.

mod support;

use std::process::Command;

use fxtriage_testkit::FreshDatabase;
use parquet::record::Field;
use support::succeeded;

const SITES: &str = r#"
[[site]]
id = "demo"
name = "Demo hospital"

[[site]]
id = "other"
name = "Other hospital"

[[site]]
id = "third"
name = "Third hospital"
ai_enabled_from = "2026-02-01"

[[group]]
id = "network"
name = "Demo and Other"
sites = ["demo", "other"]
"#;

/// The column names of a Parquet file, in order.
fn parquet_columns(path: &std::path::Path) -> Vec<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader =
        SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("Parquet");
    reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|column| column.name().to_owned())
        .collect()
}

/// The rows of a Parquet file, each as its columns by name.
fn parquet_rows(path: &std::path::Path) -> Vec<std::collections::BTreeMap<String, Field>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader =
        SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("Parquet");
    reader
        .get_row_iter(None)
        .expect("rows")
        .map(|row| {
            row.expect("row")
                .get_column_iter()
                .map(|(name, field)| (name.clone(), field.clone()))
                .collect()
        })
        .collect()
}

/// A study received `received_minutes` ago with a deadline `target_minutes`
/// after it, reported `reported_minutes` ago by the RIS when given.
async fn study(
    client: &tokio_postgres::Client,
    site: &str,
    uid: &str,
    urgency: &str,
    received_minutes: i64,
    target_minutes: i64,
    reported_minutes: Option<i64>,
) {
    client
        .execute(
            "INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency, \
                 urgency_source, arrived_at, body_parts, ai_result, probability, deadline, state, \
                 reported_at) \
             VALUES ($1, $2, 'ACC' || replace($2, '.', ''), $3, 'dataset', \
                 now() - make_interval(mins => $4::int), '{WRIST}', 'suspected', 0.9, \
                 now() - make_interval(mins => $4::int) + make_interval(mins => $5::int), \
                 CASE WHEN $6::int IS NULL THEN 'open' ELSE 'reported' END, \
                 now() - make_interval(mins => $6::int))",
            &[
                &site,
                &uid,
                &urgency,
                &(received_minutes as i32),
                &(target_minutes as i32),
                &reported_minutes.map(|m| m as i32),
            ],
        )
        .await
        .expect("study");
    if reported_minutes.is_some() {
        client
            .execute(
                "INSERT INTO reports (site_id, study_instance_uid, reader, reported_at, \
                     arrived_at, deadline, urgency, ai_result, probability, source, ris_control_id) \
                 SELECT site_id, study_instance_uid, 'dr-ris', reported_at, arrived_at, deadline, \
                     urgency, ai_result, probability, 'ris', 'MSG-' || study_instance_uid \
                 FROM studies WHERE site_id = $1 AND study_instance_uid = $2",
                &[&site, &uid],
            )
            .await
            .expect("report");
    }
}

#[tokio::test]
async fn figures_per_urgency_and_timelines_with_pseudonyms() {
    let Some(database) = FreshDatabase::create("fxt_analytics").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    fxtriage_sites::store::apply_text(&pool, SITES, Default::default())
        .await
        .expect("sites");
    let client = config.connect().await.expect("connect");
    // Emergencies with a 30-minute target: reported after 50 (late) and 20
    // minutes;
    // an outpatient after 120 minutes within two days; an emergency waiting
    // past its target; another site's study, never counted.
    study(&client, "demo", "1.41.1", "emergency", 80, 30, Some(30)).await;
    study(&client, "demo", "1.41.2", "emergency", 30, 30, Some(10)).await;
    study(&client, "demo", "1.41.3", "outpatient", 200, 2880, Some(80)).await;
    study(&client, "demo", "1.41.4", "emergency", 90, 30, None).await;
    study(&client, "other", "1.41.9", "emergency", 50, 30, Some(0)).await;

    let directory = tempfile::tempdir().expect("tempdir");
    let timelines = directory.path().join("timelines.csv");
    let run = |arguments: &[&str]| {
        succeeded(
            &Command::new(fxtriage_testkit::fxtriage_bin())
                .arg("analytics")
                .args(arguments)
                .env("FXTRIAGE_DATABASE_URL", &database.url)
                .output()
                .expect("run"),
        )
    };
    let printed = run(&[
        "--site",
        "demo",
        "--by",
        "urgency",
        "--format",
        "json",
        "--timelines",
        timelines.to_str().unwrap(),
    ]);
    let figures: serde_json::Value = serde_json::from_str(&printed).expect("JSON");
    let emergency = &figures["groups"][0];
    assert_eq!(emergency["group"], "emergency", "{figures}");
    assert_eq!(emergency["studies"], 3);
    assert_eq!(emergency["reported"], 2);
    // Turnarounds of 50 and 20 minutes: the median 35.
    let median = emergency["turnaround_seconds"]["median"].as_f64().unwrap();
    assert!((median - 2100.0).abs() < 5.0, "{median}");
    assert_eq!(emergency["deadline_met"]["successes"], 1);
    assert_eq!(emergency["deadline_met"]["total"], 2);
    assert_eq!(emergency["waiting_past_target"], 1);
    let outpatient = &figures["groups"][1];
    assert_eq!(outpatient["group"], "outpatient");
    let max = outpatient["turnaround_seconds"]["max"].as_f64().unwrap();
    assert!((max - 7200.0).abs() < 5.0, "{max}");
    assert_eq!(figures["groups"].as_array().unwrap().len(), 2);

    // The timelines: one row per study of the site, UIDs and accessions
    // replaced by pseudonyms.
    let written = std::fs::read_to_string(&timelines).expect("timelines");
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows.len(), 5, "{written}");
    assert!(
        rows[0].starts_with("site,study,accession,urgency"),
        "{}",
        rows[0]
    );
    assert!(!written.contains("1.41."), "no study UID: {written}");
    assert!(!written.contains("ACC141"), "no accession: {written}");
    assert!(rows[1].contains(",study-") && rows[1].contains(",accession-"));

    run(&[
        "--site",
        "demo",
        "--timelines",
        timelines.to_str().unwrap(),
        "--identifiable",
    ]);
    let written = std::fs::read_to_string(&timelines).expect("timelines");
    assert!(
        written.contains("1.41.1") && written.contains("ACC1411"),
        "{written}"
    );
    assert!(
        !written.contains("1.41.9"),
        "another site's study: {written}"
    );

    // The same as Parquet, for analytics teams: the timelines (pseudonyms,
    // times as UTC timestamps, absent times null) and the figures.
    let parquet = directory.path().join("timelines.parquet");
    let figures_file = directory.path().join("figures.parquet");
    run(&[
        "--site",
        "demo",
        "--by",
        "urgency",
        "--format",
        "parquet",
        "--output",
        figures_file.to_str().unwrap(),
        "--timelines",
        parquet.to_str().unwrap(),
    ]);
    let rows = parquet_rows(&parquet);
    assert_eq!(rows.len(), 4, "one row per study of the site");
    let columns = parquet_columns(&parquet);
    assert!(
        columns[..4] == ["site", "study", "accession", "urgency"],
        "{columns:?}"
    );
    for row in &rows {
        assert_eq!(row["site"], Field::Str("demo".into()));
        let Field::Str(study) = &row["study"] else {
            panic!("study {:?}", row["study"]);
        };
        assert!(
            study.starts_with("study-") && !study.contains("1.41."),
            "{study}"
        );
        assert!(
            matches!(row["received"], Field::TimestampMicros(_)),
            "{row:?}"
        );
    }
    let reported = rows
        .iter()
        .filter(|row| matches!(row["reported"], Field::TimestampMicros(_)))
        .count();
    let unreported = rows
        .iter()
        .filter(|row| row["reported"] == Field::Null)
        .count();
    assert_eq!((reported, unreported), (3, 1), "{rows:?}");
    let groups = parquet_rows(&figures_file);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group"], Field::Str("emergency".into()));
    assert_eq!(groups[0]["studies"], Field::Long(3));
    let Field::Double(median) = groups[0]["turnaround_median_s"] else {
        panic!("{:?}", groups[0]);
    };
    assert!((median - 2100.0).abs() < 5.0, "{median}");
    let refused = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["analytics", "--site", "demo", "--format", "parquet"])
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--output FILE"));

    let csv = run(&[
        "--site", "demo", "--site", "other", "--by", "site", "--format", "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("demo,4,3,"), "{csv}");
    assert!(lines[2].starts_with("other,1,1,"), "{csv}");

    // A reading network: its sites, as the registry has them.
    let csv = run(&["--group", "network", "--by", "site", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("demo,4,3,"), "{csv}");
    assert!(lines[2].starts_with("other,1,1,"), "{csv}");
    let unknown = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["analytics", "--group", "nowhere"])
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no such reading network"));

    let table = run(&["--site", "demo", "--from", "2000-01-01"]);
    assert!(
        table.contains("4 studies received from 2000-01-01T00:00:00Z"),
        "{table}"
    );
    assert!(table.contains("67% (2/3)"), "{table}");

    // The AI against the readers' outcomes: only a study with a finding and an
    // outcome counts (1.41.1, suspected, a fracture; 1.41.2, suspected, none).
    for (uid, fracture) in [("1.41.1", "yes"), ("1.41.2", "no")] {
        client
            .execute(
                "INSERT INTO findings (site_id, study_instance_uid, series_instance_uid, \
                     sop_instance_uid, model_name, model_version, model_sha256, status, \
                     probability, analysed_at) \
                 VALUES ('demo', $1, $1 || '.1', $1 || '.1.1', 'wrist-model', '2.0', 'ab', \
                     'analysed', 0.9, now())",
                &[&uid],
            )
            .await
            .expect("finding");
        client
            .execute(
                "UPDATE reports SET fracture = $2 WHERE study_instance_uid = $1",
                &[&uid, &fracture],
            )
            .await
            .expect("outcome");
    }
    let accuracy: serde_json::Value =
        serde_json::from_str(&run(&["--site", "demo", "--accuracy", "--format", "json"]))
            .expect("JSON");
    assert_eq!(accuracy[0]["model"], "wrist-model 2.0", "{accuracy}");
    let all = &accuracy[0]["groups"][0];
    assert_eq!(all["with_outcome"], 2, "{accuracy}");
    assert_eq!(all["at_suspected"]["sensitivity"]["successes"], 1);
    assert_eq!(all["at_suspected"]["ppv"]["successes"], 1);
    assert_eq!(all["at_suspected"]["ppv"]["total"], 2);
    let printed = run(&["--site", "demo", "--accuracy"]);
    assert!(printed.contains("model wrist-model 2.0"), "{printed}");

    // Before and after the third site's AI began (2026-02-01): one study
    // reported in 3 hours before, two in 1 and 2 hours after, and one
    // reported an hour before it was received (a wrong clock): counted as an
    // impossible order, out of the turnaround.
    for (uid, received, hours) in [
        ("1.42.1", "2026-01-10T10:00:00Z", 3),
        ("1.42.2", "2026-03-10T10:00:00Z", 1),
        ("1.42.3", "2026-03-11T10:00:00Z", 2),
        ("1.42.4", "2026-03-12T10:00:00Z", -1),
    ] {
        client
            .execute(
                "INSERT INTO studies (site_id, study_instance_uid, urgency, urgency_source, \
                     arrived_at, ai_result, probability, deadline, state, reported_at) \
                 VALUES ('third', $1, 'outpatient', 'dataset', $2::text::timestamptz, \
                     'no-finding', 0.1, $2::text::timestamptz + interval '2 days', 'reported', \
                     $2::text::timestamptz + make_interval(hours => $3::int))",
                &[&uid, &received, &hours],
            )
            .await
            .expect("study");
        client
            .execute(
                "INSERT INTO reports (site_id, study_instance_uid, reader, reported_at, \
                     arrived_at, deadline, urgency, ai_result, probability, source, ris_control_id) \
                 SELECT site_id, study_instance_uid, 'dr-ris', reported_at, arrived_at, deadline, \
                     urgency, ai_result, probability, 'ris', 'MSG-' || study_instance_uid \
                 FROM studies WHERE study_instance_uid = $1",
                &[&uid],
            )
            .await
            .expect("report");
    }
    let compared: serde_json::Value = serde_json::from_str(&run(&[
        "--site",
        "third",
        "--before-after-ai",
        "--format",
        "json",
    ]))
    .expect("JSON");
    let groups = compared["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{compared}");
    assert_eq!(groups[0]["group"], "before AI · all");
    assert_eq!(groups[0]["studies"], 1);
    assert_eq!(groups[0]["turnaround_seconds"]["median"], 10800.0);
    assert_eq!(groups[1]["group"], "with AI · all");
    assert_eq!(groups[1]["studies"], 3);
    assert_eq!(groups[1]["impossible_order"], 1);
    assert_eq!(groups[1]["turnaround_seconds"]["count"], 2);
    assert_eq!(
        groups[1]["deadline_met"]["total"], 2,
        "nor in the deadline's count"
    );
    assert_eq!(groups[1]["turnaround_seconds"]["median"], 5400.0);
    assert_eq!(groups[0]["impossible_order"], 0);

    // A model's reference score distribution, registered for the drift
    // monitoring; a file whose bins do not sum to 1 is refused.
    let reference = directory.path().join("reference.json");
    let mut file = serde_json::json!({
        "model_name": "wrist-model",
        "model_version": "2.0",
        "model_sha256": "ab".repeat(32),
        "images": 400,
        "bins": [0.5, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025],
        "data": "the wrist model's held-out set",
    });
    std::fs::write(&reference, file.to_string()).unwrap();
    let registered = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["models", "register-reference"])
        .arg(&reference)
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let row = client
        .query_one(
            "SELECT model_name, images, bins->>0 FROM model_references WHERE model_sha256 = $1",
            &[&"ab".repeat(32)],
        )
        .await
        .expect("the reference");
    assert_eq!(row.get::<_, String>(0), "wrist-model");
    assert_eq!(row.get::<_, i64>(1), 400);
    assert_eq!(row.get::<_, String>(2), "0.5");
    file["bins"][0] = serde_json::json!(0.9);
    std::fs::write(&reference, file.to_string()).unwrap();
    let refused = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["models", "register-reference"])
        .arg(&reference)
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("summing to 1"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let refused = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["analytics", "--site", "demo", "--by", "colour"])
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    drop(client);
}
