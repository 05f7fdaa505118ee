//! The sites' DICOM TLS settings are checked against the ingest's TLS listener
//! at start and again when the site registry changes while ingest runs (on
//! the real PostgreSQL of the local stack): a site that starts to name client
//! certificates, on a listener that verifies none, is reported by name; when
//! the setting is removed again the report clears.

use std::time::Duration;

use fxtriage_ingest::dimse::watch_tls_settings;
use fxtriage_testkit::{FreshDatabase, Progress};
use tokio_util::sync::CancellationToken;

const PLAIN: &str = "[[site]]\nid = \"north\"\ncalled_ae_titles = [\"NORTH_FX\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_setting_the_listener_cannot_meet_is_reported_when_the_registry_changes() {
    let Some(database) = FreshDatabase::create("fxt_ingest_tls_watch").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    fxtriage_sites::store::apply_text(&pool, PLAIN, Default::default())
        .await
        .expect("sites");
    let shutdown = CancellationToken::new();
    let sites = fxtriage_sites::SiteRegistry::load_and_follow(&pool, &shutdown)
        .await
        .expect("registry");
    // A TLS listener without a client CA: it verifies no client certificate.
    let outcome = watch_tls_settings(sites, Some(false), shutdown.clone());
    assert_eq!(*outcome.borrow(), Ok(Vec::new()), "nothing unmet at start");

    let wait_for = |expected_error: Option<&'static str>| {
        let outcome = outcome.clone();
        fxtriage_testkit::poll_until(Duration::from_secs(30), move || {
            let now = outcome.borrow().clone();
            async move {
                match (&now, expected_error) {
                    (Err(errors), Some(site)) if errors.contains(site) => Progress::Done(()),
                    (Ok(_), None) => Progress::Done(()),
                    _ => Progress::NotYet(format!("{now:?}")),
                }
            }
        })
    };
    let named = format!("{PLAIN}[site.dicom_tls]\nclient_names = [\"cr-ed1.north.example\"]\n");
    fxtriage_sites::store::apply_text(&pool, &named, Default::default())
        .await
        .expect("sites");
    wait_for(Some("site north"))
        .await
        .expect("the new setting is reported with its site");
    fxtriage_sites::store::apply_text(&pool, PLAIN, Default::default())
        .await
        .expect("sites");
    wait_for(None).await.expect("the report clears");

    shutdown.cancel();
    drop(pool);
    database.drop_database().await;
}
