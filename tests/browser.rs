//! The radiologists' web page, in headless Chromium, against `fxtriage
//! standalone` with sample studies sent over C-STORE: a reader signs in with the
//! site's token, sees the worklist in the API's own order, sees a change made
//! elsewhere arrive live, opens the first study with its overlay, claims and
//! reports it, and sees it leave the list. A reader of a reading network (a
//! group of two sites) signs in with the group's token, sees the merged worklist
//! with each study's site, kept live from both sites' streams, claims the next
//! study and reports it through its own site. Screenshots are left in
//! `target/test-artifacts/` (worklist.png, study.png, group-login.png,
//! group-worklist.png, group-study.png).

mod support;
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fxtriage_testkit::FreshDatabase;
use fxtriage_testkit::oidc::{Provider, SigningKey};
use serde_json::{Value, json};
use support::{Service, free_loopback_port, repository_path, stack_env, wait_for_status};
use webdriver::{Browser, artifacts_dir, browser_installed};

const STUDIES: usize = 8;
const READER: &str = "dr-browser";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_signs_in_opens_the_first_study_and_reports_it_in_the_browser() {
    if !browser_installed() {
        return;
    }
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let app = StandaloneApp::start(environment, directory.path(), None).await;
    app.send_samples(STUDIES).await;
    let api_order = app.open_worklist().await;
    assert_eq!(api_order.len(), STUDIES);
    let artifacts = artifacts_dir();

    let browser = Browser::launch(directory.path()).await;
    browser.goto(&format!("{}/", app.http)).await;
    browser
        .wait_for(
            "the form offers tokens only (no identity provider configured)",
            "return document.getElementById('login-form').dataset.offers === 'token' \
                 && document.getElementById('sso').hidden;",
            json!([]),
        )
        .await;
    browser.type_into("#login-site", &app.site).await;
    browser.type_into("#login-token", "not-a-token").await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "a refused token explained",
            "const error = document.getElementById('login-error'); \
             return !error.hidden && error.textContent.includes('not valid');",
            json!([]),
        )
        .await;
    browser.type_into("#login-token", &app.token).await;
    browser.type_into("#login-reader", READER).await;
    browser.click("#login-submit").await;

    // The worklist, in the API's order, kept live by the event stream.
    browser
        .wait_for(
            "every study on the worklist",
            "return document.querySelectorAll('#worklist-rows tr').length === arguments[0];",
            json!([STUDIES]),
        )
        .await;
    browser
        .wait_for(
            "the live indicator",
            "return document.getElementById('live-status').dataset.state === 'live';",
            json!([]),
        )
        .await;
    let page_rows = browser
        .script(
            "return [...document.querySelectorAll('#worklist-rows tr')].map(row => ({ \
                 study: row.dataset.study, \
                 position: row.cells[0].textContent, \
                 accession: row.querySelector('a.accession').textContent, \
                 ai: row.cells[3].textContent }));",
            json!([]),
        )
        .await;
    let page_order: Vec<&str> = page_rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["study"].as_str().expect("study"))
        .collect();
    let api_studies: Vec<&str> = api_order
        .iter()
        .map(|item| item["study_instance_uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(
        page_order, api_studies,
        "the page keeps the API's reading order"
    );
    for (index, (row, item)) in page_rows
        .as_array()
        .expect("rows")
        .iter()
        .zip(&api_order)
        .enumerate()
    {
        assert_eq!(row["position"], (index + 1).to_string());
        assert_eq!(row["accession"], item["accession_number"]);
        if let Some(probability) = item["probability"].as_f64() {
            let shown = format!("{probability:.2}");
            assert!(
                row["ai"].as_str().expect("text").contains(&shown),
                "row {} shows the probability {shown}: {row}",
                index + 1
            );
        }
    }

    // A claim made elsewhere (another reader, through the API) shows up by itself.
    let last = api_studies[STUDIES - 1];
    app.post(
        &format!("studies/{last}/claim"),
        json!({ "reader": "dr-elsewhere" }),
    )
    .await;
    browser
        .wait_for(
            "another reader's claim, live",
            "const row = document.querySelector(`#worklist-rows tr[data-study=\"${arguments[0]}\"]`); \
             return row !== null && row.querySelector('.holder').textContent === 'Claimed by dr-elsewhere';",
            json!([last]),
        )
        .await;
    browser.screenshot(&artifacts.join("worklist.png")).await;

    // The first study: its overlay loads, then claim and report.
    let first = api_studies[0];
    let instances = app.get(&format!("studies/{first}")).await["instances"]
        .as_array()
        .expect("instances")
        .len();
    assert!(instances > 0, "the first study has images");
    browser
        .click("#worklist-rows tr:first-child a.accession")
        .await;
    browser
        .wait_for(
            "every overlay image loaded",
            "const images = [...document.querySelectorAll('#images img.overlay')]; \
             return !document.getElementById('study-view').hidden && \
                 images.length === arguments[0] && \
                 images.every(image => image.complete && image.naturalWidth > 0);",
            json!([instances]),
        )
        .await;
    let title = browser
        .script(
            "return document.getElementById('study-title').textContent;",
            json!([]),
        )
        .await;
    assert!(
        title.as_str().expect("title").contains(
            api_order[0]["accession_number"]
                .as_str()
                .expect("accession")
        ),
        "{title}"
    );

    browser.click("#claim-button").await;
    browser
        .wait_for(
            "the study claimed by this reader",
            "return document.getElementById('study-state').textContent === 'Claimed by you';",
            json!([]),
        )
        .await;
    assert_eq!(
        app.get(&format!("studies/{first}")).await["study"]["claimed_by"],
        READER
    );
    browser.screenshot(&artifacts.join("study.png")).await;

    // Reported as "no fracture" although the AI suspected one: a discrepancy.
    assert_eq!(
        api_order[0]["ai_result"], "suspected",
        "the first study in reading order is a suspected fracture"
    );
    browser.click("input[name=\"outcome\"][value=\"no\"]").await;
    browser.click("#report-button").await;
    browser
        .wait_for(
            "the study reported",
            "return document.getElementById('study-state').textContent === 'Reported' && \
                 document.getElementById('study-message').textContent.startsWith('Reported.');",
            json!([]),
        )
        .await;
    assert_eq!(
        app.get(&format!("studies/{first}")).await["study"]["state"],
        "reported"
    );

    browser.click("#back-to-worklist").await;
    browser
        .wait_for(
            "the reported study gone from the worklist",
            "const rows = [...document.querySelectorAll('#worklist-rows tr')]; \
             return !document.getElementById('worklist-view').hidden && \
                 rows.length === arguments[0] && \
                 rows.every(row => row.dataset.study !== arguments[1]);",
            json!([STUDIES - 1, first]),
        )
        .await;

    // The second look: the study is listed under the worklist, and a second
    // reader's conclusion is recorded from the page.
    browser
        .wait_for(
            "the discrepancy listed for a second look",
            "const row = document.querySelector(`#discrepancies-rows tr[data-study=\"${arguments[0]}\"]`); \
             return !document.getElementById('discrepancies').hidden && row !== null && \
                 row.dataset.reviewed === 'no';",
            json!([first]),
        )
        .await;
    browser
        .script(
            "const row = document.querySelector(`#discrepancies-rows tr[data-study=\"${arguments[0]}\"]`); \
             row.querySelector('select').value = 'fracture-confirmed'; \
             row.querySelector('input').value = 'seen on the second look'; \
             row.querySelector('button').click(); return true;",
            json!([first]),
        )
        .await;
    browser
        .wait_for(
            "the second look recorded",
            "const row = document.querySelector(`#discrepancies-rows tr[data-study=\"${arguments[0]}\"]`); \
             return row !== null && row.dataset.reviewed === 'yes' && \
                 row.textContent.includes('Fracture confirmed, by ' + arguments[1]);",
            json!([first, READER]),
        )
        .await;
    let listed = app.get("discrepancies").await;
    assert_eq!(listed["discrepancies"][0]["study_instance_uid"], first);
    assert_eq!(
        listed["discrepancies"][0]["review"]["conclusion"],
        "fracture-confirmed"
    );
    browser
        .script(
            "document.getElementById('discrepancies').scrollIntoView(); return true;",
            json!([]),
        )
        .await;
    browser.screenshot(&artifacts.join("second-look.png")).await;

    // The turnaround plots, drawn in the page from the site's figures: the
    // reported study is a bar of its AI result and a point of today.
    browser
        .wait_for(
            "the turnaround plots",
            "const charts = document.querySelectorAll('#analytics-charts svg'); \
             return !document.getElementById('analytics').hidden && charts.length === 3 && \
                 charts[0].querySelectorAll('rect[data-series=\"suspected\"]').length > 0 && \
                 charts[1].querySelectorAll('circle[data-series=\"median\"]').length === 1 && \
                 charts[2].querySelectorAll('rect[data-hour]').length === 24;",
            json!([]),
        )
        .await;
    let plots = app.get("analytics/plots").await;
    assert_eq!(plots["daily"].as_array().expect("days").len(), 1, "{plots}");
    assert_eq!(plots["daily"][0]["reported"], 1, "{plots}");
    browser
        .script(
            "document.getElementById('analytics').scrollIntoView(); return true;",
            json!([]),
        )
        .await;
    browser.screenshot(&artifacts.join("analytics.png")).await;

    browser.quit().await;
    app.stop().await;
}

/// The sites file of the group test: a second site and a network of both.
const NETWORK_SITES: &str = r#"
[[site]]
id = "north"
name = "North hospital"
called_ae_titles = ["NORTH_FX"]

[[group]]
id = "network"
name = "The network"
sites = ["demo", "north"]
"#;
/// A site whose PACS is away: its admin sees the results not delivered, with
/// the reason, and sends one again; a reader of the site sees no such panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_undelivered_results_and_sends_one_again() {
    if !browser_installed() {
        return;
    }
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let sites_file = directory.path().join("sites.toml");
    // Nothing listens on the PACS's port.
    let away = free_loopback_port();
    std::fs::write(
        &sites_file,
        format!(
            "[[site]]\nid = \"north\"\ncalled_ae_titles = [\"NORTH_FX\"]\n\
             [[site.destinations.dicom]]\nname = \"pacs\"\nae_title = \"NORTH_PACS\"\n\
             host = \"127.0.0.1\"\nport = {away}\nobjects = [\"sr\"]\n"
        ),
    )
    .expect("sites file");
    let app = StandaloneApp::start(environment, directory.path(), Some(&sites_file)).await;
    let admin = app.create_token(&["--site", "north", "--role", "admin"]);
    let reader = app.create_token(&["--site", "north", "--role", "reader"]);
    app.send_samples_to("NORTH_FX", "samples-north", 2).await;
    app.wait_until_settled(
        &admin,
        "sites/north/worklist?state=open,claimed&limit=100",
        2,
    )
    .await;
    // The API: failed deliveries for the site's admin, 403 for its reader.
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let listed = app
            .api_get(&admin, "sites/north/deliveries?failed=true")
            .await;
        let failed = listed["deliveries"].as_array().expect("deliveries").clone();
        if failed.len() == 2 {
            break failed;
        }
        assert!(Instant::now() < deadline, "deliveries: {listed}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(failed.iter().all(|delivery| {
        delivery["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("NORTH_PACS@127.0.0.1"))
    }));
    let refused = app
        .client
        .get(format!("{}/api/v1/sites/north/deliveries", app.http))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);

    // A registered reference whose scores all fell in the lowest bin, and a
    // week of 120 more images scoring 0.95: the model's scores have drifted,
    // and the site's admin is told on the page (its reader is not).
    let client = app.database.connect().await;
    let sha: String = client
        .query_one("SELECT DISTINCT model_sha256 FROM findings", &[])
        .await
        .expect("the model's findings")
        .get(0);
    client
        .execute(
            "INSERT INTO model_references (model_sha256, model_name, model_version, images, bins, data) \
             SELECT $1, model_name, model_version, 1000, '[1,0,0,0,0,0,0,0,0,0]', 'its test data' \
             FROM findings WHERE model_sha256 = $1 LIMIT 1",
            &[&sha],
        )
        .await
        .expect("reference");
    client
        .execute(
            "INSERT INTO findings (site_id, study_instance_uid, series_instance_uid, \
                 sop_instance_uid, model_name, model_version, model_sha256, status, \
                 probability, analysed_at) \
             SELECT 'north', '1.23.' || n, '1.23.' || n || '.1', '1.23.' || n || '.1.1', \
                 model_name, model_version, $1, 'analysed', 0.95, now() - interval '1 hour' \
             FROM (SELECT model_name, model_version FROM findings WHERE model_sha256 = $1 LIMIT 1) m, \
                 generate_series(1, 120) n",
            &[&sha],
        )
        .await
        .expect("findings");
    drop(client);

    let browser = Browser::launch(directory.path()).await;
    browser.goto(&format!("{}/", app.http)).await;
    browser.type_into("#login-site", "north").await;
    browser.type_into("#login-token", &admin).await;
    browser.type_into("#login-reader", READER).await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "the undelivered results, with why",
            "const rows = document.querySelectorAll('#deliveries-rows tr'); \
             return !document.getElementById('deliveries').hidden && rows.length === 2 \
               && [...rows].every(row => row.textContent.includes('NORTH_PACS@127.0.0.1'));",
            json!([]),
        )
        .await;
    browser
        .click("#deliveries-rows tr:first-child button")
        .await;
    browser
        .wait_for(
            "the delivery sent again",
            "const message = document.getElementById('deliveries-message'); \
             return !message.hidden && message.textContent.includes('is being sent again');",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the drift banner for the admin",
            "const banner = document.getElementById('drift-banner'); \
             return !banner.hidden && banner.textContent.includes('drifted') \
               && banner.textContent.includes('its test data');",
            json!([]),
        )
        .await;
    browser
        .screenshot(&artifacts_dir().join("deliveries.png"))
        .await;
    browser.click("#sign-out").await;
    browser.type_into("#login-site", "north").await;
    browser.type_into("#login-token", &reader).await;
    browser.type_into("#login-reader", READER).await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "the worklist of the reader",
            "return document.querySelectorAll('#worklist-rows tr').length === 2;",
            json!([]),
        )
        .await;
    let hidden = browser
        .script(
            "return document.getElementById('deliveries').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true), "a reader sees no deliveries panel");
    let banner = browser
        .script(
            "return document.getElementById('drift-banner').hidden;",
            json!([]),
        )
        .await;
    assert_eq!(banner, json!(true), "nor the drift banner");
    browser.quit().await;
    app.stop().await;
}

const DEMO_STUDIES: usize = 3;
const NORTH_STUDIES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_reading_network_reads_the_merged_worklist_in_the_browser() {
    if !browser_installed() {
        return;
    }
    let Some(environment) = stack_env() else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let sites_file = directory.path().join("sites.toml");
    std::fs::write(&sites_file, NETWORK_SITES).expect("sites file");
    let app = StandaloneApp::start(environment, directory.path(), Some(&sites_file)).await;
    let group_token = app.create_token(&["--group", "network", "--role", "reader"]);
    let north_token = app.create_token(&["--site", "north", "--role", "reader"]);
    app.send_samples_to("FXTRIAGE", "samples-demo", DEMO_STUDIES)
        .await;
    app.send_samples_to("NORTH_FX", "samples-north", NORTH_STUDIES)
        .await;
    let total = DEMO_STUDIES + NORTH_STUDIES;
    let group_worklist = "groups/network/worklist?state=open,claimed&limit=100";
    app.wait_until_settled(&group_token, group_worklist, total)
        .await;
    let api_order = app.api_get(&group_token, group_worklist).await["items"]
        .as_array()
        .expect("items")
        .clone();
    let artifacts = artifacts_dir();

    let browser = Browser::launch(directory.path()).await;
    browser.goto(&format!("{}/", app.http)).await;
    browser.click("#login-scope-group").await;
    browser
        .wait_for(
            "the id field asking for a group",
            "return document.getElementById('login-site-label').textContent === 'Group id';",
            json!([]),
        )
        .await;
    browser.type_into("#login-site", "network").await;
    browser.type_into("#login-token", &app.token).await;
    browser.click("#login-submit").await;
    browser
        .wait_for(
            "a site's token refused for the group",
            "const error = document.getElementById('login-error'); \
             return !error.hidden && error.textContent.includes('does not belong to group');",
            json!([]),
        )
        .await;
    browser.screenshot(&artifacts.join("group-login.png")).await;
    browser.type_into("#login-token", &group_token).await;
    browser.type_into("#login-reader", READER).await;
    browser.click("#login-submit").await;

    browser
        .wait_for(
            "every study of both sites on the worklist",
            "return document.querySelectorAll('#worklist-rows tr').length === arguments[0];",
            json!([total]),
        )
        .await;
    browser
        .wait_for(
            "both sites' streams live",
            "return document.getElementById('live-status').dataset.state === 'live';",
            json!([]),
        )
        .await;
    let header = browser
        .script(
            "return [document.getElementById('session-scope').textContent, \
                     document.getElementById('session-site').textContent, \
                     document.getElementById('col-site').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(header, json!(["Group", "The network", false]));
    let page_rows = browser
        .script(
            "return [...document.querySelectorAll('#worklist-rows tr')].map(row => ({ \
                 study: row.dataset.study, site: row.dataset.site, \
                 site_name: row.querySelector('td.site').textContent, \
                 href: row.querySelector('a.accession').getAttribute('href') }));",
            json!([]),
        )
        .await;
    let page_rows = page_rows.as_array().expect("rows");
    for (row, item) in page_rows.iter().zip(&api_order) {
        let site = item["site_id"].as_str().expect("site_id");
        let study = item["study_instance_uid"].as_str().expect("uid");
        assert_eq!(row["study"], study, "the page keeps the API's order");
        assert_eq!(row["site"], site);
        let name = if site == "north" {
            "North hospital"
        } else {
            "Demo site"
        };
        assert_eq!(row["site_name"], name);
        assert_eq!(row["href"], format!("#/sites/{site}/study/{study}"));
    }
    let sites: std::collections::BTreeSet<&str> = api_order
        .iter()
        .map(|item| item["site_id"].as_str().expect("site_id"))
        .collect();
    assert_eq!(sites, ["demo", "north"].into(), "both sites merged");

    // The network's plots: both sites' studies, drawn in the page.
    let plots = app
        .api_get(&group_token, "groups/network/analytics/plots")
        .await;
    let received: u64 = plots["daily"]
        .as_array()
        .expect("days")
        .iter()
        .map(|day| day["received"].as_u64().expect("received"))
        .sum();
    assert_eq!(received, total as u64, "every study of both sites: {plots}");
    browser
        .wait_for(
            "the network's turnaround plots",
            "const charts = document.querySelectorAll('#analytics-charts svg'); \
             return !document.getElementById('analytics').hidden && charts.length === 3 && \
                 charts[2].querySelectorAll('rect[data-hour]').length === 24;",
            json!([]),
        )
        .await;

    // A claim made at the north site by someone else shows up by itself.
    let north_study = api_order
        .iter()
        .rev()
        .find(|item| item["site_id"] == "north")
        .expect("a north study")["study_instance_uid"]
        .as_str()
        .expect("uid")
        .to_owned();
    app.api_post(
        &north_token,
        &format!("sites/north/studies/{north_study}/claim"),
        json!({ "reader": "dr-north" }),
    )
    .await;
    browser
        .wait_for(
            "the north reader's claim, live",
            "const row = document.querySelector(`#worklist-rows tr[data-study=\"${arguments[0]}\"]`); \
             return row !== null && row.querySelector('.holder').textContent === 'Claimed by dr-north';",
            json!([north_study]),
        )
        .await;
    browser
        .screenshot(&artifacts.join("group-worklist.png"))
        .await;

    // Claim next: the most urgent open study of either site, opened through its site.
    let first = &api_order[0];
    let (first_site, first_study) = (
        first["site_id"].as_str().expect("site"),
        first["study_instance_uid"].as_str().expect("uid"),
    );
    let first_token = if first_site == "north" {
        &north_token
    } else {
        &app.token
    };
    let instances = app
        .api_get(
            first_token,
            &format!("sites/{first_site}/studies/{first_study}"),
        )
        .await["instances"]
        .as_array()
        .expect("instances")
        .len();
    browser.click("#claim-next").await;
    browser
        .wait_for(
            "the claimed study with every overlay",
            "const images = [...document.querySelectorAll('#images img.overlay')]; \
             return location.hash === arguments[0] && \
                 !document.getElementById('study-view').hidden && \
                 document.getElementById('study-state').textContent === 'Claimed by you' && \
                 images.length === arguments[1] && \
                 images.every(image => image.complete && image.naturalWidth > 0);",
            json!([
                format!("#/sites/{first_site}/study/{first_study}"),
                instances
            ]),
        )
        .await;
    let claimed = app
        .api_get(
            first_token,
            &format!("sites/{first_site}/studies/{first_study}"),
        )
        .await;
    assert_eq!(claimed["study"]["claimed_by"], READER);
    browser.screenshot(&artifacts.join("group-study.png")).await;

    browser.click("#report-button").await;
    browser
        .wait_for(
            "the study reported",
            "return document.getElementById('study-state').textContent === 'Reported' && \
                 document.getElementById('study-message').textContent.startsWith('Reported.');",
            json!([]),
        )
        .await;
    browser.click("#back-to-worklist").await;
    browser
        .wait_for(
            "the reported study gone from the merged worklist",
            "const rows = [...document.querySelectorAll('#worklist-rows tr')]; \
             return !document.getElementById('worklist-view').hidden && \
                 rows.length === arguments[0] && \
                 rows.every(row => row.dataset.study !== arguments[1]);",
            json!([total - 1, first_study]),
        )
        .await;

    // Reloaded, the tab is still signed in to the group; signed out, the form
    // offers the group again.
    browser.goto(&format!("{}/", app.http)).await;
    browser
        .wait_for(
            "the merged worklist after a reload",
            "return document.querySelectorAll('#worklist-rows td.site').length === arguments[0] &&                  document.getElementById('session-site').textContent === 'The network' &&                  document.getElementById('live-status').dataset.state === 'live';",
            json!([total - 1]),
        )
        .await;
    browser.click("#sign-out").await;
    browser
        .wait_for(
            "the sign-in form for the group",
            "return !document.getElementById('login-view').hidden &&                  document.getElementById('login-scope-group').checked &&                  document.getElementById('login-site').value === 'network' &&                  document.getElementById('login-site-label').textContent === 'Group id';",
            json!([]),
        )
        .await;

    browser.quit().await;
    app.stop().await;
}

/// `fxtriage standalone` on free loopback ports, with a fresh database on the
/// local stack's PostgreSQL and the test model.
/// Single sign-on in the page: with an identity provider configured, the
/// sign-in form offers it; the person is sent to the provider (a small one the
/// test starts, which signs in its one person at once and exchanges a code
/// only with the PKCE verifier of its challenge) and comes back signed in,
/// with no code left in the address, acting in their own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_identity_provider_in_the_browser() {
    if !browser_installed() {
        return;
    }
    let Some(environment) = stack_env() else {
        return;
    };
    let provider = Provider::start(
        SigningKey::generate("browser-key"),
        &[],
        json!({ "sub": "u-3003", "preferred_username": "carol", "groups": ["radiologists"] }),
    )
    .await;
    let directory = tempfile::tempdir().expect("tempdir");
    let app = StandaloneApp::start_with(
        environment,
        directory.path(),
        None,
        &[
            "--oidc-issuer",
            &provider.url,
            "--oidc-audience",
            "fxtriage-web",
        ],
    )
    .await;
    // The deployment maps the provider's group to a role, as an operator does.
    app.create_token(&[
        "--site",
        &app.site,
        "--role",
        "reader",
        "--oidc-claim",
        "groups=radiologists",
    ]);
    app.send_samples(2).await;

    let browser = Browser::launch(directory.path()).await;
    browser.goto(&format!("{}/", app.http)).await;
    browser
        .wait_for(
            "the provider's sign-in offered",
            "return document.getElementById('login-form').dataset.offers === 'provider-and-token' \
                 && !document.getElementById('sso').hidden;",
            json!([]),
        )
        .await;
    browser.type_into("#login-site", &app.site).await;
    browser
        .screenshot(&artifacts_dir().join("sso-login.png"))
        .await;
    browser.click("#login-sso").await;
    browser
        .wait_for(
            "back from the provider, on the worklist",
            "return document.querySelectorAll('#worklist-rows tr').length === arguments[0];",
            json!([2]),
        )
        .await;
    assert_eq!(provider.exchanged(), 1, "{:?}", provider.refused());
    assert!(provider.refused().is_empty(), "{:?}", provider.refused());
    let address = browser
        .script("return location.search + '|' + location.hash;", json!([]))
        .await;
    assert_eq!(address, "|#/", "the code is not left in the address");
    let stored = browser
        .script(
            "return sessionStorage.getItem('fxtriage.sign-in') === null \
                 && sessionStorage.getItem('fxtriage.token').split('.').length === 3;",
            json!([]),
        )
        .await;
    assert_eq!(stored, true, "the verifier is forgotten, the ID token kept");
    browser
        .screenshot(&artifacts_dir().join("sso-worklist.png"))
        .await;
    browser.quit().await;

    // The worklist was read in the person's own name.
    let client = app.database.connect().await;
    let reads: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE actor = 'oidc:carol (u-3003)' \
             AND action = 'worklist.read'",
            &[],
        )
        .await
        .expect("audit")
        .get(0);
    assert!(reads >= 1, "worklist reads by the person: {reads}");
    app.stop().await;
}

struct StandaloneApp {
    service: Service,
    database: FreshDatabase,
    /// `http://127.0.0.1:<port>`
    http: String,
    dimse: u16,
    site: String,
    token: String,
    directory: PathBuf,
    client: reqwest::Client,
}

impl StandaloneApp {
    async fn start(
        environment: Vec<(String, String)>,
        directory: &Path,
        sites_file: Option<&Path>,
    ) -> Self {
        Self::start_with(environment, directory, sites_file, &[]).await
    }

    /// Also with `extra` arguments to `standalone`.
    async fn start_with(
        mut environment: Vec<(String, String)>,
        directory: &Path,
        sites_file: Option<&Path>,
        extra: &[&str],
    ) -> Self {
        let database = FreshDatabase::create_on(
            &support::setting(&environment, "FXTRIAGE_DATABASE_URL"),
            "fxtriage_browser",
        )
        .await;
        environment.retain(|(key, _)| {
            !key.starts_with("FXTRIAGE_KAFKA")
                && !key.starts_with("FXTRIAGE_S3")
                && key != "FXTRIAGE_DATABASE_URL"
        });
        environment.push(("FXTRIAGE_DATABASE_URL".into(), database.url.clone()));

        let (http, dimse, stow) = (
            free_loopback_port(),
            free_loopback_port(),
            free_loopback_port(),
        );
        let data = directory.join("data");
        let mut arguments: Vec<String> = [
            "standalone",
            "--data-dir",
            &data.display().to_string(),
            "--model",
            &repository_path("models/testdata/heatmap")
                .display()
                .to_string(),
            "--http-address",
            &format!("127.0.0.1:{http}"),
            "--dimse-address",
            &format!("127.0.0.1:{dimse}"),
            "--stow-address",
            &format!("127.0.0.1:{stow}"),
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(sites_file) = sites_file {
            arguments.extend(["--sites".to_owned(), sites_file.display().to_string()]);
        }
        arguments.extend(extra.iter().map(|argument| (*argument).to_owned()));
        let service = Service::start("standalone", &arguments, &environment, directory);
        wait_for_status(&format!("http://127.0.0.1:{http}/health/ready"), 200).await;
        let description: Value = serde_json::from_slice(
            &std::fs::read(data.join("standalone.json")).expect("standalone.json"),
        )
        .expect("json");
        Self {
            service,
            database,
            http: description["http"].as_str().expect("http").to_owned(),
            dimse,
            site: description["site"].as_str().expect("site").to_owned(),
            token: description["token"].as_str().expect("token").to_owned(),
            directory: directory.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// Sends `count` sample studies over C-STORE and waits until each is on the
    /// worklist with its AI result.
    async fn send_samples(&self, count: usize) {
        self.send_samples_to("FXTRIAGE", "samples", count).await;
        let worklist = format!("sites/{}/worklist?state=open,claimed&limit=100", self.site);
        self.wait_until_settled(&self.token, &worklist, count).await;
    }

    /// Writes `count` sample studies to `folder` and sends them over C-STORE to
    /// the called AE title `ae_title` (which names the site).
    async fn send_samples_to(&self, ae_title: &str, folder: &str, count: usize) {
        let samples = self.directory.join(folder);
        let written = Command::new(fxtriage_testkit::fxtriage_bin())
            .args([
                "samples",
                "--studies",
                &count.to_string(),
                "--out",
                &samples.display().to_string(),
            ])
            .output()
            .expect("samples");
        assert!(
            written.status.success(),
            "{}",
            String::from_utf8_lossy(&written.stderr)
        );
        let sent = Command::new("dcmsend")
            .args([
                "-aec",
                ae_title,
                "127.0.0.1",
                &self.dimse.to_string(),
                "+sd",
                "+sp",
                "*.dcm",
                &samples.display().to_string(),
            ])
            .output()
            .expect("dcmsend (dcmtk)");
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
    }

    /// Waits until the worklist at `path` (under `/api/v1/`) holds `count`
    /// studies, each with its AI result.
    async fn wait_until_settled(&self, token: &str, path: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let items = self.api_get(token, path).await["items"]
                .as_array()
                .expect("items")
                .clone();
            let settled = items
                .iter()
                .all(|item| item["ai_result"] != "awaiting-analysis");
            if items.len() == count && settled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} studies settled:\n{}",
                items.len(),
                self.service.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `fxtriage tokens create ARGS` on the app's database: the new token.
    fn create_token(&self, arguments: &[&str]) -> String {
        support::create_token(&self.database.url, arguments)
    }

    /// The worklist as the page asks for it: open and claimed studies, in order.
    async fn open_worklist(&self) -> Vec<Value> {
        self.get("worklist?state=open,claimed&limit=100").await["items"]
            .as_array()
            .expect("items")
            .clone()
    }

    /// GET `/api/v1/sites/{site}/{path}` with the site's token.
    async fn get(&self, path: &str) -> Value {
        self.api_get(&self.token, &format!("sites/{}/{path}", self.site))
            .await
    }

    /// POST `/api/v1/sites/{site}/{path}` with the site's token.
    async fn post(&self, path: &str, body: Value) -> Value {
        self.api_post(&self.token, &format!("sites/{}/{path}", self.site), body)
            .await
    }

    /// GET `/api/v1/{path}` with `token`.
    async fn api_get(&self, token: &str, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1/{path}", self.http))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// POST `/api/v1/{path}` with `token`.
    async fn api_post(&self, token: &str, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/api/v1/{path}", self.http))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert!(
            response.status().is_success(),
            "POST {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    async fn stop(self) {
        self.service.stop().await;
        self.database.drop_database().await;
    }
}
