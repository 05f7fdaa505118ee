//! The site registry in the real PostgreSQL of the local stack: applying a sites
//! file is idempotent, a site's `show` output applies back unchanged, a dry run
//! changes nothing, pruning retires, a file that contradicts the registry is
//! refused with its line, services see a change within seconds, and the one
//! credential system honours scopes, roles and revocation. Every change is in
//! the audit log of the sites it concerns.

use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_core::{GroupId, SiteId};
use fxtriage_sites::credentials::{self, ApiToken, Role, Scope};
use fxtriage_sites::store::{self, ApplyError, ApplyOptions, Change};
use fxtriage_sites::{SiteRegistry, file};
use fxtriage_testkit::{FreshDatabase, Progress, eventually};

const NETWORK: &str = r#"
[[site]]
id = "north"
name = "North hospital"
called_ae_titles = ["NORTH_FX"]
[site.policy.operating_points]
suspected = 0.8
possible = 0.5

[[site]]
id = "south"
name = "South hospital"
called_ae_titles = ["SOUTH_FX"]
calling_ae_titles = ["CR_SOUTH"]

[[group]]
id = "network"
name = "Imaging network"
sites = ["north", "south"]
"#;

async fn database() -> Option<(FreshDatabase, Pool)> {
    let database = FreshDatabase::create("fxt_sites").await?;
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    Some((database, pool))
}

fn site(id: &str) -> SiteId {
    SiteId::parse(id).expect("site id")
}

async fn apply(pool: &Pool, text: &str, options: ApplyOptions) -> Result<Vec<Change>, ApplyError> {
    store::apply_text(pool, text, options).await
}

#[tokio::test]
async fn applying_a_file_twice_changes_nothing_the_second_time() {
    let Some((database, pool)) = database().await else {
        return;
    };
    let first = apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    assert_eq!(
        first,
        [
            Change::AddSite(site("north")),
            Change::AddSite(site("south")),
            Change::AddGroup(GroupId::parse("network").expect("id")),
        ]
    );
    let again = apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    assert!(again.is_empty(), "{again:?}");

    let client = pool.get().await.expect("connection");
    let registry = store::load(&client).await.expect("registry");
    let north = &registry.sites[&site("north")].config;
    assert_eq!(north.called_ae_titles, ["NORTH_FX"]);
    assert_eq!(north.policy.operating_points.suspected, 0.8);
    assert_eq!(
        registry.sites[&site("south")].config.calling_ae_titles,
        Some(vec!["CR_SOUTH".to_owned()])
    );
    // Each change is in the audit log of the sites it concerns, by the
    // operator: a site's own, and the group's in each of its sites. The
    // second apply changed nothing and added nothing.
    let audited: Vec<(String, String)> = client
        .query(
            "SELECT site_id, detail->>'change' FROM audit_log \
             WHERE action = 'sites.apply' AND actor = 'operator' AND token_id IS NULL \
             ORDER BY site_id, id",
            &[],
        )
        .await
        .expect("audit")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("north", "add site north"),
        ("north", "add group network"),
        ("south", "add site south"),
        ("south", "add group network"),
    ]
    .map(|(site, change)| (site.to_owned(), change.to_owned()));
    assert_eq!(audited, expected);
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn a_sites_show_output_applies_back_unchanged_and_a_change_is_listed_by_field() {
    let Some((database, pool)) = database().await else {
        return;
    };
    apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    let client = pool.get().await.expect("connection");
    let registry = store::load(&client).await.expect("registry");
    let shown = file::to_toml(
        std::slice::from_ref(&registry.sites[&site("north")].config),
        &[],
    );
    let unchanged = apply(&pool, &shown, ApplyOptions::default())
        .await
        .expect("applied");
    assert!(unchanged.is_empty(), "{shown}\n{unchanged:?}");

    let edited = shown.replace("NORTH_FX", "NORTH_NEW");
    let dry = apply(
        &pool,
        &edited,
        ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        },
    )
    .await
    .expect("dry run");
    assert_eq!(
        dry,
        [Change::ChangeSite(site("north"), vec!["called_ae_titles"])]
    );
    let after_dry_run = store::load(&client).await.expect("registry");
    assert_eq!(
        after_dry_run.sites[&site("north")].config.called_ae_titles,
        ["NORTH_FX"],
        "a dry run changes nothing"
    );
    apply(&pool, &edited, ApplyOptions::default())
        .await
        .expect("applied");
    let after = store::load(&client).await.expect("registry");
    assert_eq!(
        after.sites[&site("north")].config.called_ae_titles,
        ["NORTH_NEW"]
    );
    assert!(after.revision > after_dry_run.revision);
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn a_file_that_takes_another_sites_ae_title_is_refused_whole_with_its_line() {
    let Some((database, pool)) = database().await else {
        return;
    };
    apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    let thief =
        "[[site]]\nid = \"east\"\ncalled_ae_titles = [\"SOUTH_FX\"]\n\n[[site]]\nid = \"west\"\n";
    let Err(ApplyError::Invalid(invalid)) = apply(&pool, thief, ApplyOptions::default()).await
    else {
        panic!("refused");
    };
    assert_eq!(invalid.errors.len(), 1, "{invalid}");
    assert_eq!(invalid.errors[0].line, 3);
    assert!(invalid.errors[0].message.contains("south"), "{invalid}");
    let client = pool.get().await.expect("connection");
    let registry = store::load(&client).await.expect("registry");
    assert!(
        !registry.sites.contains_key(&site("west")),
        "nothing of a refused file is applied"
    );
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn pruning_retires_the_sites_a_file_leaves_out_and_frees_their_ae_titles() {
    let Some((database, pool)) = database().await else {
        return;
    };
    apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    let north_only = "[[site]]\nid = \"north\"\nname = \"North hospital\"\ncalled_ae_titles = [\"NORTH_FX\", \"SOUTH_FX\"]\n[site.policy.operating_points]\nsuspected = 0.8\npossible = 0.5\n";
    let changes = apply(
        &pool,
        north_only,
        ApplyOptions {
            prune: true,
            ..ApplyOptions::default()
        },
    )
    .await
    .expect("applied");
    assert!(
        changes.contains(&Change::RetireSite(site("south"))),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Change::RetireGroup(GroupId::parse("network").expect("id"))),
        "{changes:?}"
    );
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let snapshot = registry.current();
    assert!(snapshot.site("south").is_none(), "retired");
    assert_eq!(
        snapshot
            .by_called_ae_title("SOUTH_FX")
            .map(|site| site.id.as_str()),
        Some("north"),
        "the retired site's AE title moved"
    );
    assert!(snapshot.group_sites("network").is_none());
    database.drop_database().await;
}

#[tokio::test]
async fn a_service_sees_a_registry_change_within_seconds_without_a_restart() {
    let Some((database, pool)) = database().await else {
        return;
    };
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let stop = tokio_util::sync::CancellationToken::new();
    let refresher = registry.keep_current(pool.clone(), Duration::from_millis(200), stop.clone());
    assert!(registry.current().by_called_ae_title("NORTH_FX").is_none());
    let applied_at = tokio::time::Instant::now();
    apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    eventually(
        "the new site in the service's view",
        Duration::from_secs(5),
        || async {
            match registry.current().by_called_ae_title("NORTH_FX") {
                Some(site) => Progress::Done(site.id.clone()),
                None => Progress::NotYet("not yet".into()),
            }
        },
    )
    .await;
    assert!(applied_at.elapsed() < Duration::from_secs(5));
    let policy = registry.current().policy(&site("north"));
    assert_eq!(policy.operating_points.suspected, 0.8);
    stop.cancel();
    refresher.await.expect("refresher");
    database.drop_database().await;
}

#[tokio::test]
async fn tokens_work_only_in_their_scope_and_stop_when_revoked_or_retired() {
    let Some((database, pool)) = database().await else {
        return;
    };
    apply(&pool, NETWORK, ApplyOptions::default())
        .await
        .expect("applied");
    let client = pool.get().await.expect("connection");
    let group = Scope::Group(GroupId::parse("network").expect("id"));
    let reader = credentials::create_token(&pool, &group, Role::Reader, "reading room")
        .await
        .expect("token");
    let found = credentials::authenticate(&client, &reader.token)
        .await
        .expect("lookup")
        .expect("valid");
    assert_eq!(found.scope, group);
    assert_eq!(found.role, Role::Reader);

    let unknown = ApiToken::from_presented(&format!("fxt_{}", "ab".repeat(32))).expect("shape");
    assert!(
        credentials::authenticate(&client, &unknown)
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(matches!(
        credentials::create_token(&pool, &Scope::Site(site("nowhere")), Role::Viewer, "").await,
        Err(credentials::TokenError::UnknownScope(_))
    ));
    assert!(matches!(
        credentials::create_token(&pool, &Scope::Deployment, Role::Viewer, "").await,
        Err(credentials::TokenError::DeploymentRoleNotAdmin)
    ));

    let south = credentials::create_token(&pool, &Scope::Site(site("south")), Role::Sender, "")
        .await
        .expect("token");
    apply(
        &pool,
        "[[site]]\nid = \"north\"\nname = \"North hospital\"\ncalled_ae_titles = [\"NORTH_FX\"]\n[site.policy.operating_points]\nsuspected = 0.8\npossible = 0.5\n",
        ApplyOptions {
            prune: true,
            ..ApplyOptions::default()
        },
    )
    .await
    .expect("south retired");
    assert!(
        credentials::authenticate(&client, &south.token)
            .await
            .expect("lookup")
            .is_none(),
        "a retired site's token stops"
    );
    assert!(
        credentials::authenticate(&client, &reader.token)
            .await
            .expect("lookup")
            .is_none(),
        "a retired group's token stops"
    );

    let north = credentials::create_token(&pool, &Scope::Site(site("north")), Role::Viewer, "")
        .await
        .expect("token");
    credentials::revoke_token(&pool, &north.credential.token_id)
        .await
        .expect("revoke");
    assert!(
        credentials::authenticate(&client, &north.token)
            .await
            .expect("lookup")
            .is_none(),
        "revoked"
    );
    let listed = credentials::list_tokens(&pool, Some(&Scope::Site(site("north"))))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked);
    drop(client);
    database.drop_database().await;
}

#[tokio::test]
async fn an_earlier_releases_stow_digests_become_sender_tokens_once() {
    let Some((database, pool)) = database().await else {
        return;
    };
    // A token in today's format, whose digest an earlier sites file held.
    let token = ApiToken::from_presented(&format!("fxt_{}", "5a".repeat(32))).expect("shape");
    let legacy = format!(
        "[[site]]\nid = \"st-marys\"\nae_titles = [\"FXTRIAGE\"]\nstow_token_sha256 = [\"{}\"]\n",
        token.sha256()
    );
    let changes = apply(&pool, &legacy, ApplyOptions::default())
        .await
        .expect("applied");
    assert!(
        changes
            .iter()
            .any(|change| matches!(change, Change::AddSenderToken { .. })),
        "{changes:?}"
    );
    let again = apply(&pool, &legacy, ApplyOptions::default())
        .await
        .expect("applied");
    assert!(again.is_empty(), "{again:?}");
    let client = pool.get().await.expect("connection");
    let credential = credentials::authenticate(&client, &token)
        .await
        .expect("lookup")
        .expect("the old STOW token still works");
    assert_eq!(credential.role, Role::Sender);
    assert_eq!(credential.scope, Scope::Site(site("st-marys")));
    drop(client);
    database.drop_database().await;
}
