//! The radiologist's outcome on a report, and the safety net built on it: the
//! discrepancy list (reported "no fracture" where the AI suspected one) with
//! its second look, against the real PostgreSQL.

mod support;

use fxtriage_core::Urgency;
use reqwest::StatusCode;
use support::*;

async fn report_with(api: &TestApi, study: &str, body: serde_json::Value) -> serde_json::Value {
    let response = api
        .post(
            &api.demo.reader,
            SITE,
            &format!("/studies/{study}/report"),
            body,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "report of {study}");
    response.json().await.expect("JSON")
}

async fn discrepancies(api: &TestApi, token: &str, query: &str) -> serde_json::Value {
    let response = api
        .get(token, SITE, &format!("/discrepancies{query}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

fn studies_of(list: &serde_json::Value) -> Vec<String> {
    list["discrepancies"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["study_instance_uid"].as_str().expect("uid").to_owned())
        .collect()
}

async fn review(api: &TestApi, study: &str, body: serde_json::Value) -> reqwest::Response {
    api.post(
        &api.demo.reader,
        SITE,
        &format!("/studies/{study}/discrepancy-review"),
        body,
    )
    .await
}

#[tokio::test]
async fn a_report_of_no_fracture_where_the_ai_suspected_one_is_listed_for_a_second_look() {
    let Some(api) = start_api().await else {
        return;
    };
    let arrived = now() - minutes(30);
    // Suspected, possible, no finding; one suspected study reported as a
    // fracture and one reported without an outcome.
    // Two children (8 and 9 years, one from each of two modalities), adults of
    // 30 and 70, and one whose dataset states neither sex nor age.
    for (study, probability, patient) in [
        ("1.21.1", 0.95, Some(("F", 8, "ACME DR-1"))),
        ("1.21.2", 0.5, Some(("M", 70, "ACME DR-1"))),
        ("1.21.3", 0.05, Some(("F", 30, "OTHER X"))),
        ("1.21.4", 0.9, Some(("M", 9, "OTHER X"))),
        ("1.21.5", 0.9, None),
    ] {
        let mut spec = StudySpec::new(study, Urgency::Outpatient, arrived).analysed(probability);
        if let Some((sex, age, equipment)) = patient {
            spec = spec.patient(sex, age, equipment);
        }
        add_study(&api.pool, &spec).await;
    }

    // An outcome that is not one of the three is refused, and nothing is reported.
    let refused = api
        .post(
            &api.demo.reader,
            SITE,
            "/studies/1.21.1/report",
            serde_json::json!({ "reader": "dr-a", "fracture": "maybe" }),
        )
        .await;
    expect_error(refused, StatusCode::BAD_REQUEST, "bad-request").await;
    assert_eq!(api.count("SELECT count(*) FROM reports").await, 0);

    let reported = report_with(
        &api,
        "1.21.1",
        serde_json::json!({ "reader": "dr-a", "fracture": "no" }),
    )
    .await;
    assert_eq!(reported["report"]["fracture"], "no");
    report_with(
        &api,
        "1.21.2",
        serde_json::json!({ "reader": "dr-a", "fracture": "no" }),
    )
    .await;
    report_with(
        &api,
        "1.21.3",
        serde_json::json!({ "reader": "dr-a", "fracture": "no" }),
    )
    .await;
    report_with(
        &api,
        "1.21.4",
        serde_json::json!({ "reader": "dr-b", "fracture": "yes" }),
    )
    .await;
    let without = report_with(&api, "1.21.5", serde_json::json!({ "reader": "dr-b" })).await;
    assert!(
        without["report"]["fracture"].is_null(),
        "the outcome is optional: {without}"
    );
    assert_eq!(
        api.count("SELECT count(*) FROM reports WHERE fracture = 'no' AND ai_result = 'suspected'")
            .await,
        1
    );

    // The AI against the readers' outcomes: four studies with yes or no.
    let monitoring = api.get(&api.demo.viewer, SITE, "/monitoring").await;
    assert_eq!(monitoring.status(), StatusCode::OK);
    let monitoring: serde_json::Value = monitoring.json().await.expect("JSON");
    let model = &monitoring["models"][0];
    assert_eq!(model["model"], "fxtriage-demo 1.0.0", "{monitoring}");
    let all = &model["groups"][0];
    assert_eq!(all["with_outcome"], 4, "{all}");
    let at_suspected = &all["at_suspected"];
    assert_eq!(at_suspected["sensitivity"]["successes"], 1);
    assert_eq!(at_suspected["sensitivity"]["total"], 1);
    assert_eq!(at_suspected["specificity"]["successes"], 2);
    assert_eq!(at_suspected["specificity"]["total"], 3);
    assert_eq!(at_suspected["ppv"]["total"], 2);
    assert_eq!(all["at_possible"]["specificity"]["successes"], 1, "{all}");

    // The same by subgroup: the two children (a fracture found, and one
    // suspected that the reader ruled out) in their own band; by sex and by
    // equipment as the datasets state them.
    let by = |query: &'static str| {
        let api = &api;
        async move {
            let monitoring: serde_json::Value = api
                .get(&api.demo.viewer, SITE, &format!("/monitoring?by={query}"))
                .await
                .json()
                .await
                .expect("JSON");
            monitoring["models"][0]["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .map(|group| {
                    (
                        group["group"].as_str().expect("name").to_owned(),
                        group.clone(),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        }
    };
    let bands = by("age-band").await;
    let children = &bands["02-11 (child)"];
    assert_eq!(children["with_outcome"], 2, "{bands:?}");
    assert_eq!(children["at_suspected"]["sensitivity"]["successes"], 1);
    assert_eq!(children["at_suspected"]["sensitivity"]["total"], 1);
    assert_eq!(children["at_suspected"]["specificity"]["successes"], 0);
    assert_eq!(children["at_suspected"]["specificity"]["total"], 1);
    assert_eq!(bands["18-44"]["with_outcome"], 1);
    assert_eq!(bands["65-79"]["with_outcome"], 1);
    assert!(
        !bands.contains_key("(age unknown)"),
        "1.21.5 has no outcome: {bands:?}"
    );
    let sexes = by("sex").await;
    assert_eq!(sexes["F"]["with_outcome"], 2, "{sexes:?}");
    assert_eq!(sexes["M"]["with_outcome"], 2, "{sexes:?}");
    let narrow = api
        .get(
            &api.demo.viewer,
            SITE,
            "/monitoring?by=sex&from=2026-03-01T10:00:00Z&to=2026-03-01T10:00:01Z",
        )
        .await;
    expect_error(narrow, StatusCode::BAD_REQUEST, "bad-request").await;
    let equipment = by("equipment").await;
    assert_eq!(equipment["ACME DR-1"]["with_outcome"], 2, "{equipment:?}");
    assert_eq!(
        equipment["OTHER X"]["at_suspected"]["sensitivity"]["successes"],
        1
    );

    // The drift: no reference registered, no drift figures; then a reference
    // whose scores all fell in the lowest bin, against this week's five
    // (0.05; 0.5; 0.9, 0.9, kept as REAL just under 0.9, so in the bin below;
    // 0.95): a large shift.
    assert_eq!(
        monitoring["drift"].as_array().unwrap().len(),
        0,
        "{monitoring}"
    );
    let sha = monitoring_model_sha(&api).await;
    let client = api.pool.get().await.expect("client");
    client
        .execute(
            "INSERT INTO model_references (model_sha256, model_name, model_version, images, bins, data) \
             VALUES ($1, 'fxtriage-demo', '1.0.0', 1000, '[1,0,0,0,0,0,0,0,0,0]', 'test data')",
            &[&sha],
        )
        .await
        .expect("reference");
    let monitoring: serde_json::Value = api
        .get(&api.demo.viewer, SITE, "/monitoring")
        .await
        .json()
        .await
        .expect("JSON");
    let drift = &monitoring["drift"][0];
    assert_eq!(drift["model"], "fxtriage-demo 1.0.0", "{monitoring}");
    assert_eq!(drift["reference_data"], "test data");
    let week = &drift["weeks"][0];
    assert_eq!(week["images"], 5, "{drift}");
    let floor = 0.0001_f64;
    let by_hand = (0.2 - 1.0) * (0.2_f64 / 1.0).ln()
        + 2.0 * (0.2 - floor) * (0.2 / floor).ln()
        + (0.4 - floor) * (0.4 / floor).ln();
    assert!(
        (week["psi"].as_f64().unwrap() - by_hand).abs() < 1e-9,
        "{week} vs {by_hand}"
    );
    assert_eq!(
        week["drifted"], false,
        "five images are too few to judge, whatever the index"
    );
    assert_eq!(week["enough_images"], false);

    // The admins' banner and the metric judge the last 7 days: five images are
    // too few; with 120 more scoring 0.95 the scores have drifted.
    let alerts = |token: &str| {
        let api = &api;
        let token = token.to_owned();
        async move { api.get(&token, SITE, "/drift-alerts").await }
    };
    let answer: serde_json::Value = alerts(&api.demo.admin).await.json().await.expect("JSON");
    assert_eq!(answer["drifted"], false, "{answer}");
    assert_eq!(answer["models"][0]["images"], 5, "{answer}");
    client
        .execute(
            "INSERT INTO findings (site_id, study_instance_uid, series_instance_uid, \
                 sop_instance_uid, model_name, model_version, model_sha256, status, \
                 probability, analysed_at) \
             SELECT 'demo', '1.22.' || n, '1.22.' || n || '.1', '1.22.' || n || '.1.1', \
                 'fxtriage-demo', '1.0.0', $1, 'analysed', 0.95, now() - interval '1 hour' \
             FROM generate_series(1, 120) n",
            &[&sha],
        )
        .await
        .expect("findings");
    let answer: serde_json::Value = alerts(&api.demo.admin).await.json().await.expect("JSON");
    assert_eq!(answer["drifted"], true, "{answer}");
    let model = &answer["models"][0];
    assert_eq!(model["model"], "fxtriage-demo 1.0.0");
    assert_eq!(model["images"], 125);
    assert!(model["psi"].as_f64().unwrap() > 0.25, "{model}");
    expect_error(
        alerts(&api.demo.reader).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        alerts(&api.other.admin).await.status(),
        StatusCode::NOT_FOUND
    );
    let metrics = scrape(&api).await;
    assert!(
        metrics.contains(
            "fxtriage_model_score_drifted{site=\"demo\",model=\"fxtriage-demo 1.0.0\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("fxtriage_model_score_psi{site=\"demo\""));
    // A model no longer measured (its reference withdrawn) does not stay drifted.
    client
        .execute("DELETE FROM model_references", &[])
        .await
        .expect("reference withdrawn");
    let metrics = scrape(&api).await;
    assert!(
        metrics.contains(
            "fxtriage_model_score_drifted{site=\"demo\",model=\"fxtriage-demo 1.0.0\"} 0"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("fxtriage_model_score_psi{site=\"demo\",model=\"fxtriage-demo 1.0.0\"} NaN"),
        "{metrics}"
    );
    drop(client);

    // Readers and admins see the list; viewers do not; another site's reader
    // does not learn that the site exists.
    let viewer = api.get(&api.demo.viewer, SITE, "/discrepancies").await;
    expect_error(viewer, StatusCode::FORBIDDEN, "forbidden").await;
    let other = api.get(&api.other.reader, SITE, "/discrepancies").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    let list = discrepancies(&api, &api.demo.reader, "").await;
    assert_eq!(studies_of(&list), ["1.21.1"], "suspected only: {list}");
    assert_eq!(list["discrepancies"][0]["ai_result"], "suspected");
    assert_eq!(list["discrepancies"][0]["reader"], "dr-a");
    assert!(list["discrepancies"][0]["review"].is_null());
    let with_possible = discrepancies(&api, &api.demo.admin, "?include=possible").await;
    let mut listed = studies_of(&with_possible);
    listed.sort();
    assert_eq!(listed, ["1.21.1", "1.21.2"], "{with_possible}");
    assert_eq!(with_possible["weeks"].as_array().unwrap().len(), 1);
    assert_eq!(with_possible["weeks"][0]["discrepancies"], 2);
    assert_eq!(with_possible["weeks"][0]["reviewed"], 0);
    let bad_query = api
        .get(&api.demo.reader, SITE, "/discrepancies?include=all")
        .await;
    expect_error(bad_query, StatusCode::BAD_REQUEST, "bad-request").await;

    // Only a discrepancy can be reviewed, with one of the conclusions.
    let not_one = review(
        &api,
        "1.21.3",
        serde_json::json!({ "conclusion": "no-fracture" }),
    )
    .await;
    assert_eq!(not_one.status(), StatusCode::NOT_FOUND);
    let bad = review(&api, "1.21.1", serde_json::json!({ "conclusion": "fine" })).await;
    expect_error(bad, StatusCode::BAD_REQUEST, "bad-request").await;

    let body = serde_json::json!({
        "reviewer": "dr-c",
        "conclusion": "fracture-confirmed",
        "note": "undisplaced fracture of the radial styloid on the lateral view",
    });
    let reviewed = review(&api, "1.21.1", body.clone()).await;
    assert_eq!(reviewed.status(), StatusCode::OK);
    let reviewed: serde_json::Value = reviewed.json().await.expect("JSON");
    assert_eq!(reviewed["reviewer"], "dr-c");
    assert_eq!(reviewed["conclusion"], "fracture-confirmed");
    // A retry answers the same review; another look by someone else conflicts.
    let again = review(&api, "1.21.1", body).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: serde_json::Value = again.json().await.expect("JSON");
    assert_eq!(again["reviewed_at"], reviewed["reviewed_at"]);
    let other_look = review(
        &api,
        "1.21.1",
        serde_json::json!({ "reviewer": "dr-d", "conclusion": "no-fracture" }),
    )
    .await;
    expect_error(other_look, StatusCode::CONFLICT, "conflict").await;

    // The unreviewed one comes first; the week counts the confirmation.
    let after = discrepancies(&api, &api.demo.reader, "?include=possible").await;
    assert_eq!(studies_of(&after), ["1.21.2", "1.21.1"], "{after}");
    assert_eq!(after["discrepancies"][1]["review"]["reviewer"], "dr-c");
    assert_eq!(after["weeks"][0]["reviewed"], 1);
    assert_eq!(after["weeks"][0]["confirmed"], 1);

    // In the audit log: who reviewed and what they concluded, not the note.
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE action = 'discrepancy.review' \
             AND actor = 'dr-c' AND study_instance_uid = '1.21.1' \
             AND detail->>'conclusion' = 'fracture-confirmed' \
             AND detail->>'with_note' = 'true' AND detail::text NOT LIKE '%styloid%'"
        )
        .await,
        1
    );
    assert_eq!(
        api.count("SELECT count(*) FROM audit_log WHERE action = 'discrepancies.read'")
            .await,
        3
    );
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE action = 'study.report' \
             AND detail->>'fracture' = 'no'"
        )
        .await,
        3
    );
    // A site that asks for it lists possible ones by default (the sites file's
    // `[site.second_look] include_possible`); `?include=suspected` still narrows.
    let mut demo = fxtriage_sites::SiteConfig::new(site_id(SITE), "Demo hospital");
    demo.second_look.include_possible = true;
    fxtriage_sites::store::put_sites(&api.pool, vec![demo])
        .await
        .expect("the site's setting");
    fxtriage_testkit::eventually(
        "the API to follow the site's setting",
        std::time::Duration::from_secs(10),
        || async {
            let list = discrepancies(&api, &api.demo.reader, "").await;
            if studies_of(&list).len() == 2 {
                fxtriage_testkit::Progress::Done(())
            } else {
                fxtriage_testkit::Progress::NotYet(list.to_string())
            }
        },
    )
    .await;
    let narrowed = discrepancies(&api, &api.demo.reader, "?include=suspected").await;
    assert_eq!(studies_of(&narrowed), ["1.21.1"], "{narrowed}");

    api.finish().await;
}

/// What `/metrics` serves.
async fn scrape(api: &TestApi) -> String {
    api.http
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The SHA-256 of the model whose findings the test studies carry.
async fn monitoring_model_sha(api: &TestApi) -> String {
    let client = api.pool.get().await.expect("client");
    client
        .query_one("SELECT DISTINCT model_sha256 FROM findings", &[])
        .await
        .expect("one model")
        .get(0)
}
