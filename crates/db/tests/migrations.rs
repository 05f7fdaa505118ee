//! Migrations apply on an empty database and are idempotent, against the real
//! PostgreSQL of the local stack (infra/local/stack).

use fxtriage_db::{DbConfig, latest_known_version, migrate};

/// A uniquely named empty database (crates/testkit) and its config. Left for the
/// stack's `down --purge`: each test's database is small.
async fn fresh_database() -> Option<DbConfig> {
    let database = fxtriage_testkit::FreshDatabase::create("fxt_db").await?;
    Some(DbConfig::from_url(&database.url).expect("valid URL"))
}

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    let Some(config) = fresh_database().await else {
        return;
    };

    let first = migrate(&config).await.expect("first migration run");
    let every_version: Vec<i32> = (1..=latest_known_version()).collect();
    assert_eq!(
        first.applied, every_version,
        "an empty database gets every migration"
    );
    assert_eq!(first.current_version, Some(latest_known_version()));

    let second = migrate(&config).await.expect("second migration run");
    assert!(
        second.applied.is_empty(),
        "nothing is applied twice: {:?}",
        second.applied
    );
    assert_eq!(second.current_version, Some(latest_known_version()));

    let client = config.connect().await.expect("connect");
    let sites: i64 = client
        .query_one("SELECT count(*) FROM sites", &[])
        .await
        .expect("the sites table exists")
        .get(0);
    assert_eq!(sites, 0);
}

#[tokio::test]
async fn concurrent_start_ups_migrate_once() {
    let Some(config) = fresh_database().await else {
        return;
    };
    let runs = futures_join(&config).await;
    let total_applied: usize = runs.iter().map(|report| report.applied.len()).sum();
    assert_eq!(total_applied, latest_known_version() as usize);
}

async fn futures_join(config: &DbConfig) -> Vec<fxtriage_db::MigrationReport> {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { migrate(&config).await.expect("migrate") })
        })
        .collect();
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.expect("join"));
    }
    reports
}

#[test]
fn the_password_never_appears_in_debug_output() {
    let config =
        DbConfig::from_url("postgres://reader:s3cr3t@127.0.0.1:5432/fxtriage").expect("url");
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("127.0.0.1:5432/fxtriage"), "{shown}");
}
