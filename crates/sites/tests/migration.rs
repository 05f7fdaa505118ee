//! The registry's migration (V3) over a database written by the schema before it:
//! sites, their worklists and their tokens come through without loss, and a
//! token of then still opens its site with its role.

use fxtriage_core::SiteId;
use fxtriage_sites::credentials::{self, ApiToken, Role, Scope};
use fxtriage_sites::store;
use fxtriage_testkit::FreshDatabase;

#[tokio::test]
async fn sites_worklists_and_tokens_of_the_earlier_schema_come_through() {
    let Some(database) = FreshDatabase::create("fxt_sites_migration").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate_to(&config, 2)
        .await
        .expect("the earlier schema");
    let client = config.connect().await.expect("connect");
    let token = ApiToken::from_presented(&format!("fxt_{}", "c3".repeat(32))).expect("shape");
    client
        .batch_execute(&format!(
            "INSERT INTO sites (site_id, display_name) VALUES ('st-marys', 'St Mary''s');
             INSERT INTO api_credentials (token_id, site_id, token_sha256, role)
                 VALUES ('tok-000000000001', 'st-marys', '{}', 'reader');
             INSERT INTO studies (site_id, study_instance_uid, urgency, urgency_source,
                     arrived_at, ai_result, deadline)
                 VALUES ('st-marys', '1.2.3', 'emergency', 'dataset', now(),
                         'not-analysed', now() + interval '1 hour');",
            token.sha256()
        ))
        .await
        .expect("data of the earlier schema");

    let report = fxtriage_db::migrate(&config).await.expect("migrate");
    assert!(report.applied.contains(&3), "{report:?}");
    let pool = config.pool().expect("pool");
    let registry = {
        let connection = pool.get().await.expect("connection");
        store::load(&connection).await.expect("registry")
    };
    let site = &registry.sites[&SiteId::parse("st-marys").expect("id")];
    assert_eq!(site.config.name, "St Mary's");
    assert!(!site.retired);
    assert_eq!(
        site.config.policy,
        fxtriage_core::policy::Policy::default(),
        "the defaults until a sites file says otherwise"
    );
    let studies: i64 = client
        .query_one("SELECT count(*) FROM studies", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(studies, 1, "the worklist is untouched");
    let connection = pool.get().await.expect("connection");
    let credential = credentials::authenticate(&connection, &token)
        .await
        .expect("lookup")
        .expect("the token still works");
    assert_eq!(credential.role, Role::Reader);
    assert_eq!(
        credential.scope,
        Scope::Site(SiteId::parse("st-marys").expect("id"))
    );
    drop(connection);
    drop(client);
    database.drop_database().await;
}
