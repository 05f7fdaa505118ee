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

/// A role of the cluster made for one test, dropped (with its grants in
/// `database_url`'s database) when the test ends.
struct TestRole {
    name: String,
    admin_url: String,
}

impl TestRole {
    async fn create(admin_url: &str) -> Self {
        let name = format!("fxt_svc_{}", uuid::Uuid::new_v4().simple());
        let config = DbConfig::from_url(admin_url).expect("URL");
        let client = config.connect().await.expect("connect");
        client
            .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
            .await
            .expect("create role");
        Self {
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// `admin_url` with this role as the user.
    fn url(&self) -> String {
        let (scheme, rest) = self.admin_url.split_once("://").expect("URL");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}@{host}", self.name)
    }

    async fn drop_role(self) {
        let config = DbConfig::from_url(&self.admin_url).expect("URL");
        let client = config.connect().await.expect("connect");
        client
            .batch_execute(&format!("DROP OWNED BY {0}; DROP ROLE {0}", self.name))
            .await
            .expect("drop role");
    }
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(tokio_postgres::error::SqlState::code)
}

#[tokio::test]
async fn the_service_role_appends_to_the_audit_log_but_can_neither_change_nor_remove_a_row() {
    let Some(database) = fxtriage_testkit::FreshDatabase::create("fxt_db").await else {
        return;
    };
    let owner = DbConfig::from_url(&database.url).expect("URL");
    migrate(&owner).await.expect("migrate as the owner");
    let role = TestRole::create(&database.url).await;

    assert!(matches!(
        fxtriage_db::grant_service_role(&owner, "Robert'); DROP TABLE sites; --").await,
        Err(fxtriage_db::GrantError::InvalidRole(_))
    ));
    assert!(matches!(
        fxtriage_db::grant_service_role(&owner, "fxt_no_such_role").await,
        Err(fxtriage_db::GrantError::NoSuchRole(_))
    ));
    fxtriage_db::grant_service_role(&owner, &role.name)
        .await
        .expect("grant");
    // Granting again (after the next upgrade's migrations) is harmless.
    fxtriage_db::grant_service_role(&owner, &role.name)
        .await
        .expect("grant again");

    let service = DbConfig::from_url(&role.url()).expect("URL");
    // A service starts as this role: the schema is current, so nothing is
    // created or altered, and it gets its pool.
    let stop = tokio_util::sync::CancellationToken::new();
    let pool = fxtriage_db::wait_and_migrate(&service, &stop)
        .await
        .expect("a service starts as the role")
        .expect("a pool");
    let client = pool.get().await.expect("connection");

    // It does the services' work: the registry, and appending to the audit log.
    client
        .execute(
            "INSERT INTO sites (site_id, display_name, config) VALUES ('a', 'A', '{}')",
            &[],
        )
        .await
        .expect("write a site");
    client
        .execute(
            "UPDATE sites SET display_name = 'A hospital' WHERE site_id = 'a'",
            &[],
        )
        .await
        .expect("change a site");
    for action in ["worklist.read", "study.claim"] {
        client
            .execute(
                "INSERT INTO audit_log (site_id, actor, action) VALUES ('a', 'system', $1)",
                &[&action],
            )
            .await
            .expect("append an audit row");
    }
    let chained: i64 = client
        .query_one(
            "SELECT max(chain_seq) FROM audit_log WHERE site_id = 'a'",
            &[],
        )
        .await
        .expect("read")
        .get(0);
    assert_eq!(chained, 2, "the rows joined the site's chain");

    // But no audit row can be changed or removed, not even by first turning
    // off the triggers that refuse it (only the owner may).
    for statement in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TRIGGER audit_log_chain ON audit_log",
        "CREATE TABLE shadow (id int)",
        "DELETE FROM refinery_schema_history",
    ] {
        let error = client.batch_execute(statement).await.expect_err(statement);
        assert!(
            matches!(sqlstate(&error), Some("42501")),
            "{statement}: {error:?} (expected insufficient privilege)"
        );
    }
    let rows: i64 = client
        .query_one("SELECT count(*) FROM audit_log", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(rows, 2);

    // The owner still migrates and could change rows only by dropping its own
    // trigger, which the chain would show (tested in the audit command's tests).
    drop(client);
    drop(pool);
    role.drop_role().await;
}
