//! Reading networks over HTTP: a group token sees one worklist merged across its
//! group's sites in deadline order, each item labelled with its site, with the
//! site's filters and paging; claims the next study of any of them; opens its
//! sites' study routes and nothing else (404); every read is audited with the
//! site and the group. And the deployment's admin API: the registry and tokens,
//! for a deployment admin token only.

mod support;

use reqwest::StatusCode;
use support::*;

use fxtriage_core::Urgency;

impl TestApi {
    async fn group_get(&self, token: &str, group: &str, rest: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/v1/groups/{group}{rest}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    async fn group_worklist(&self, query: &str) -> serde_json::Value {
        let response = self
            .group_get(&self.network.viewer, GROUP, &format!("/worklist{query}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "group worklist{query}");
        response.json().await.expect("JSON")
    }
}

fn sites_of(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["site_id"].as_str().expect("site_id").to_owned())
        .collect()
}

/// Studies at both sites, interleaved by deadline.
async fn studies_at_both_sites(api: &TestApi) {
    let specs = [
        StudySpec::new("7.1", Urgency::Outpatient, now() - minutes(60)),
        StudySpec::new("7.2", Urgency::Emergency, now() - minutes(50)).at_site(OTHER_SITE),
        StudySpec::new("7.3", Urgency::Inpatient, now() - minutes(40)),
        StudySpec::new("7.4", Urgency::Outpatient, now() - minutes(30))
            .analysed(0.95)
            .at_site(OTHER_SITE),
        StudySpec::new("7.5", Urgency::Emergency, now() - minutes(20)).body_part("HAND"),
    ];
    for spec in &specs {
        add_study(&api.pool, spec).await;
    }
}

#[tokio::test]
async fn a_group_worklist_merges_its_sites_in_deadline_order_with_each_items_site() {
    let Some(api) = start_api().await else {
        return;
    };
    studies_at_both_sites(&api).await;
    let page = api.group_worklist("").await;
    // Emergencies (60 min) first by arrival, then the suspected outpatient
    // (120 min), the inpatient (360 min), the plain outpatient (2880 min).
    assert_eq!(uids(&page), ["7.2", "7.5", "7.4", "7.3", "7.1"]);
    assert_eq!(sites_of(&page), ["other", "demo", "other", "demo", "demo"]);

    // The same filters as a site's worklist.
    let emergencies = api.group_worklist("?urgency=emergency").await;
    assert_eq!(uids(&emergencies), ["7.2", "7.5"]);
    let hands = api.group_worklist("?body_part=hand").await;
    assert_eq!(uids(&hands), ["7.5"]);

    // Paging across sites: pages of two, nothing skipped or repeated.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = api.group_worklist(&query).await;
        seen.extend(uids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["7.2", "7.5", "7.4", "7.3", "7.1"]);

    // Each read is audited per site, with the group.
    let audited = api
        .count(
            "SELECT count(DISTINCT site_id) FROM audit_log \
             WHERE action = 'worklist.read' AND group_id = 'network'",
        )
        .await;
    assert_eq!(audited, 2, "one row per site of each read");
    api.finish().await;
}

#[tokio::test]
async fn a_group_reader_claims_the_next_study_of_any_site_and_reports_it_through_its_site() {
    let Some(api) = start_api().await else {
        return;
    };
    studies_at_both_sites(&api).await;
    let claimed = api
        .http
        .post(api.url(&format!("/api/v1/groups/{GROUP}/worklist/next")))
        .bearer_auth(&api.network.reader)
        .json(&serde_json::json!({ "reader": "dr-network" }))
        .send()
        .await
        .expect("request");
    assert_eq!(claimed.status(), StatusCode::OK);
    let claimed: serde_json::Value = claimed.json().await.expect("JSON");
    assert_eq!(claimed["study_instance_uid"], "7.2");
    assert_eq!(claimed["site_id"], "other");
    assert_eq!(claimed["claimed_by"], "dr-network");

    // The group token reports it through the other site's own route.
    let report = api
        .post(
            &api.network.reader,
            OTHER_SITE,
            "/studies/7.2/report",
            serde_json::json!({ "reader": "dr-network" }),
        )
        .await;
    assert_eq!(report.status(), StatusCode::OK);
    let audited = api
        .count(
            "SELECT count(*) FROM audit_log WHERE site_id = 'other' \
             AND group_id = 'network' AND action IN ('study.claim', 'study.report')",
        )
        .await;
    assert_eq!(
        audited, 2,
        "claim and report audited with the site and group"
    );

    // A viewer of the group may not claim: 403 naming the role it lacks.
    let viewer = api
        .http
        .post(api.url(&format!("/api/v1/groups/{GROUP}/worklist/next")))
        .bearer_auth(&api.network.viewer)
        .send()
        .await
        .expect("request");
    assert_eq!(viewer.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = viewer.json().await.expect("JSON");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("viewer") && message.contains("reader"),
        "{message}"
    );
    api.finish().await;
}

#[tokio::test]
async fn tokens_see_nothing_outside_their_scope() {
    let Some(api) = start_api().await else {
        return;
    };
    studies_at_both_sites(&api).await;
    // A site's token on the group's routes, another group, a missing site.
    for (token, path) in [
        (&api.demo.admin, format!("/api/v1/groups/{GROUP}/worklist")),
        (
            &api.network.admin,
            "/api/v1/groups/elsewhere/worklist".to_owned(),
        ),
        (
            &api.network.admin,
            "/api/v1/sites/nowhere/worklist".to_owned(),
        ),
        (
            &api.deployment_admin,
            "/api/v1/sites/demo/worklist".to_owned(),
        ),
        (
            &api.deployment_admin,
            format!("/api/v1/groups/{GROUP}/worklist"),
        ),
    ] {
        let response = api
            .http
            .get(api.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A sender token stores images; it reads no worklist.
    let sender = api.get(&api.demo.sender, SITE, "/worklist").await;
    assert_eq!(sender.status(), StatusCode::FORBIDDEN);
    // The group token opens each of its sites.
    for site in [SITE, OTHER_SITE] {
        let response = api.get(&api.network.viewer, site, "/worklist").await;
        assert_eq!(response.status(), StatusCode::OK, "{site}");
    }
    let group: serde_json::Value = api
        .group_get(&api.network.viewer, GROUP, "")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(group["name"], "Demo network");
    assert_eq!(group["sites"].as_array().map(Vec::len), Some(2));
    api.finish().await;
}

#[tokio::test]
async fn the_admin_api_applies_sites_files_and_manages_tokens_for_a_deployment_admin_only() {
    let Some(api) = start_api().await else {
        return;
    };
    let admin = |method: reqwest::Method, path: &str| {
        api.http
            .request(method, api.url(&format!("/api/v1/admin{path}")))
            .bearer_auth(&api.deployment_admin)
    };
    // Site admins do not see the admin API at all.
    let refused = api
        .http
        .get(api.url("/api/v1/admin/sites"))
        .bearer_auth(&api.demo.admin)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    let listed: serde_json::Value = admin(reqwest::Method::GET, "/sites")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["sites"].as_array().map(Vec::len), Some(2));

    // An invalid file: 422 with every error and its line; nothing applied.
    let invalid = "[[site]]\nid = \"third\"\ncalled_ae_titles = [\"T\"]\nbogus = 1\n\n[[group]]\nid = \"g\"\nsites = [\"missing\"]\n";
    let response = admin(reqwest::Method::POST, "/sites/apply")
        .body(invalid)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.expect("JSON");
    let lines: Vec<u64> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [4, 8], "{body}");

    // A dry run, then the real apply; the site's TOML applies back unchanged.
    let third =
        "[[site]]\nid = \"third\"\nname = \"Third hospital\"\ncalled_ae_titles = [\"THIRD_FX\"]\n";
    let dry: serde_json::Value = admin(reqwest::Method::POST, "/sites/apply?dry_run=true")
        .body(third)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(dry["changes"], serde_json::json!(["add site third"]));
    let applied: serde_json::Value = admin(reqwest::Method::POST, "/sites/apply")
        .body(third)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(applied["changes"], serde_json::json!(["add site third"]));
    // The change is in the new site's audit log, by the admin's token (the
    // dry run and the invalid file changed nothing and left nothing).
    let admin_id: String = api
        .pool
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT token_id FROM api_credentials \
             WHERE site_id IS NULL AND group_id IS NULL AND role = 'admin'",
            &[],
        )
        .await
        .expect("the deployment admin")
        .get(0);
    let audited = |action: &'static str| {
        let pool = api.pool.clone();
        let admin_id = admin_id.clone();
        async move {
            pool.get()
                .await
                .expect("connection")
                .query(
                    "SELECT detail FROM audit_log WHERE site_id = 'third' AND action = $1 \
                     AND token_id = $2 AND actor = $2 ORDER BY id",
                    &[&action, &admin_id],
                )
                .await
                .expect("audit")
                .iter()
                .map(|row| row.get::<_, serde_json::Value>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        audited("sites.apply").await,
        [serde_json::json!({ "change": "add site third" })]
    );
    let shown = admin(reqwest::Method::GET, "/sites/third?format=toml")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("TOML");
    let again: serde_json::Value = admin(reqwest::Method::POST, "/sites/apply")
        .body(shown)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(again["changes"], serde_json::json!([]));

    // A token for the new site; it works there (once the API sees the site) and
    // stops when revoked.
    let created: serde_json::Value = admin(reqwest::Method::POST, "/tokens")
        .json(&serde_json::json!({ "site": "third", "role": "viewer" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let token = created["token"].as_str().expect("token").to_owned();
    let token_id = created["token_id"].as_str().expect("id").to_owned();
    fxtriage_testkit::eventually(
        "the new site to be in the API's registry",
        std::time::Duration::from_secs(10),
        || async {
            let status = api.get(&token, "third", "/worklist").await.status();
            if status == StatusCode::OK {
                fxtriage_testkit::Progress::Done(())
            } else {
                fxtriage_testkit::Progress::NotYet(status.to_string())
            }
        },
    )
    .await;
    let bad_role = admin(reqwest::Method::POST, "/tokens")
        .json(&serde_json::json!({ "deployment": true, "role": "viewer" }))
        .send()
        .await
        .expect("request");
    assert_eq!(bad_role.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let revoked = admin(reqwest::Method::DELETE, &format!("/tokens/{token_id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&token, "third", "/worklist").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Creating and revoking it are in the site's audit log (never the
    // secret); revoking again changes nothing and adds nothing.
    let again = admin(reqwest::Method::DELETE, &format!("/tokens/{token_id}"))
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    let expected =
        serde_json::json!({ "token_id": token_id, "role": "viewer", "scope": "site third" });
    assert_eq!(
        audited("token.create").await,
        std::slice::from_ref(&expected)
    );
    assert_eq!(audited("token.revoke").await, [expected]);
    assert_eq!(
        api.count(&format!(
            "SELECT count(*) FROM audit_log WHERE detail::text LIKE '%{}%'",
            &token[token.len() - 12..]
        ))
        .await,
        0,
        "no part of the secret in the audit log"
    );
    api.finish().await;
}

/// A reading network's plots: its sites' studies together, days and hours in
/// the sites' time zone when they share one, else in UTC; a site's token gets
/// 404 there.
#[tokio::test]
async fn a_group_sees_the_plots_of_its_sites_in_their_time_zone() {
    let Some(api) = start_api().await else {
        return;
    };
    studies_at_both_sites(&api).await;
    let plots = |token: String| {
        let api = &api;
        async move {
            let response = api.group_get(&token, GROUP, "/analytics/plots").await;
            let status = response.status();
            (status, response.json::<serde_json::Value>().await.ok())
        }
    };
    let (status, body) = plots(api.network.viewer.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let body = body.expect("JSON");
    let received: u64 = body["daily"]
        .as_array()
        .expect("daily")
        .iter()
        .map(|day| day["received"].as_u64().expect("received"))
        .sum();
    assert_eq!(received, 5, "both sites' studies: {body}");
    assert_eq!(body["time_zone"], "UTC");
    assert_eq!(body["queue_by_hour"].as_array().map(Vec::len), Some(24));
    let (status, _) = plots(api.demo.admin.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not for a site's token");

    // Both sites in London: the group's plots are too; one in New York: UTC.
    let zoned = |demo: &str, other: &str| {
        SITES_FILE
            .replace(
                "name = \"Demo hospital\"",
                &format!("name = \"Demo hospital\"\ntime_zone = \"{demo}\""),
            )
            .replace(
                "name = \"Other hospital\"",
                &format!("name = \"Other hospital\"\ntime_zone = \"{other}\""),
            )
    };
    for (demo, other, expected) in [
        ("Europe/London", "Europe/London", "Europe/London"),
        ("Europe/London", "America/New_York", "UTC"),
    ] {
        fxtriage_sites::store::apply_text(&api.pool, &zoned(demo, other), Default::default())
            .await
            .expect("sites file");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, body) = plots(api.network.viewer.clone()).await;
            let body = body.expect("JSON");
            if body["time_zone"] == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{demo} and {other}: {}, not {expected}",
                body["time_zone"]
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    api.finish().await;
}

/// A reading network's analytics: its sites' studies together, side by side
/// with `by=site`; a site's token gets 404 there.
#[tokio::test]
async fn a_group_sees_the_turnaround_figures_of_its_sites() {
    let Some(api) = start_api().await else {
        return;
    };
    studies_at_both_sites(&api).await;
    let response = api
        .group_get(&api.network.viewer, GROUP, "/analytics?by=site")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let figures: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(figures["group"], GROUP);
    assert_eq!(
        figures["sites"],
        serde_json::json!([SITE, OTHER_SITE]),
        "{figures}"
    );
    let groups = figures["groups"].as_array().expect("groups");
    let studies = |site: &str| {
        groups
            .iter()
            .find(|group| group["group"] == site)
            .map(|group| group["studies"].clone())
    };
    assert_eq!(studies(SITE), Some(serde_json::json!(3)), "{figures}");
    assert_eq!(studies(OTHER_SITE), Some(serde_json::json!(2)), "{figures}");
    let all: serde_json::Value = api
        .group_get(&api.network.viewer, GROUP, "/analytics")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(all["groups"][0]["studies"], 5, "{all}");
    let site_token = api.group_get(&api.demo.admin, GROUP, "/analytics").await;
    assert_eq!(
        site_token.status(),
        StatusCode::NOT_FOUND,
        "a site's token does not learn that the group exists"
    );
    let bad = api
        .group_get(&api.network.viewer, GROUP, "/analytics?by=colour")
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    api.finish().await;
}
