//! `fxtriage audit verify` against PostgreSQL: rows written before the chain
//! existed are chained by the migration; rows written at once by many writers
//! form one unbroken chain per site; and each kind of tampering (a row changed,
//! a row changed with its hash recomputed, a row removed) is reported at the
//! first broken link, with the other site's chain still intact.

mod support;

use std::process::{Command, Output};

use fxtriage_testkit::FreshDatabase;
use serde_json::Value;

const SITES: &str = r#"
[[site]]
id = "demo"

[[site]]
id = "other"
"#;

async fn audit(client: &tokio_postgres::Client, site: &str, actor: &str) {
    client
        .execute(
            "INSERT INTO audit_log (site_id, actor, action, study_instance_uid, detail) \
             VALUES ($1, $2, 'study.read', '1.2.3', '{\"page\": 1}')",
            &[&site, &actor],
        )
        .await
        .expect("audit row");
}

fn verify(database: &FreshDatabase) -> (Output, Value) {
    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["audit", "verify", "--format", "json"])
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    let chains = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, chains)
}

fn chain<'a>(chains: &'a Value, site: &str) -> &'a Value {
    chains
        .as_array()
        .expect("chains")
        .iter()
        .find(|chain| chain["site_id"] == site)
        .unwrap_or_else(|| panic!("no chain of {site} in {chains}"))
}

/// Changes rows as only someone who can disable the append-only trigger can.
async fn tamper(client: &tokio_postgres::Client, statement: &str) {
    client
        .batch_execute(&format!(
            "BEGIN; ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; {statement}; \
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only; COMMIT;"
        ))
        .await
        .expect("tampered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_shows_every_kind_of_tampering() {
    let Some(database) = FreshDatabase::create("fxt_audit").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    // Rows written before the chain existed (schema version 10).
    fxtriage_db::migrate_to(&config, 10)
        .await
        .expect("migrate to V10");
    let pool = config.pool().expect("pool");
    fxtriage_sites::store::apply_text(&pool, SITES, Default::default())
        .await
        .expect("sites");
    let client = config.connect().await.expect("connect");
    for index in 0..3 {
        audit(&client, "demo", &format!("before-{index}")).await;
    }
    fxtriage_db::migrate(&config).await.expect("migrate");

    // Many writers at once, on both sites.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..6 {
        let config = config.clone();
        writers.spawn(async move {
            let client = config.connect().await.expect("connect");
            for index in 0..20 {
                let site = if (writer + index) % 3 == 0 {
                    "other"
                } else {
                    "demo"
                };
                audit(&client, site, &format!("writer-{writer}-{index}")).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let (output, chains) = verify(&database);
    assert!(output.status.success(), "{chains}");
    let demo = chain(&chains, "demo");
    let other = chain(&chains, "other");
    assert_eq!(
        demo["rows"].as_i64().unwrap() + other["rows"].as_i64().unwrap(),
        3 + 120 + 2,
        "the rows before the chain, the writers', and the sites file's two (one per site added)"
    );
    assert!(
        demo["broken"].is_null() && other["broken"].is_null(),
        "{chains}"
    );
    assert_eq!(demo["head"].as_str().expect("head").len(), 64);
    let sequence: Vec<i64> = client
        .query(
            "SELECT chain_seq FROM audit_log WHERE site_id = 'demo' ORDER BY chain_seq",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(sequence, (1..=sequence.len() as i64).collect::<Vec<_>>());

    // The append-only rule still holds for everyone who cannot disable it.
    let refused = client
        .execute(
            "UPDATE audit_log SET actor = 'someone else' WHERE chain_seq = 2",
            &[],
        )
        .await
        .expect_err("append-only");
    assert!(
        refused.to_string().contains("append-only")
            || format!("{refused:?}").contains("append-only")
    );

    let truncated = client
        .batch_execute("TRUNCATE audit_log")
        .await
        .expect_err("no truncating either");
    assert!(
        format!("{truncated:?}").contains("append-only"),
        "{truncated:?}"
    );

    // A row changed: reported at that row.
    tamper(
        &client,
        "UPDATE audit_log SET actor = 'someone else' WHERE site_id = 'demo' AND chain_seq = 5",
    )
    .await;
    let (output, chains) = verify(&database);
    assert!(!output.status.success(), "a broken chain fails the command");
    let broken = &chain(&chains, "demo")["broken"];
    assert_eq!(broken["chain_seq"], 5, "{chains}");
    assert!(
        broken["reason"].as_str().unwrap().contains("content"),
        "{broken}"
    );
    assert!(chain(&chains, "other")["broken"].is_null(), "{chains}");

    // The same row with its hash recomputed: the next row shows it.
    tamper(
        &client,
        "UPDATE audit_log SET row_hash = audit_log_hash(previous_hash, audit_log) \
         WHERE site_id = 'demo' AND chain_seq = 5",
    )
    .await;
    let (_, chains) = verify(&database);
    let broken = &chain(&chains, "demo")["broken"];
    assert_eq!(broken["chain_seq"], 6, "{chains}");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("does not follow"),
        "{broken}"
    );

    // A row removed from the other site: the one after the gap shows it.
    tamper(
        &client,
        "DELETE FROM audit_log WHERE site_id = 'other' AND chain_seq = 10",
    )
    .await;
    let (_, chains) = verify(&database);
    let broken = &chain(&chains, "other")["broken"];
    assert_eq!(broken["chain_seq"], 11, "{chains}");
    assert!(
        broken["reason"].as_str().unwrap().contains("missing"),
        "{broken}"
    );

    // The table: a line per site.
    let printed = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["audit", "verify", "--site", "demo"])
        .env("FXTRIAGE_DATABASE_URL", &database.url)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.starts_with("demo: ") && text.contains("BROKEN at row 6"),
        "{text}"
    );
    assert!(!text.contains("other"), "{text}");
}
