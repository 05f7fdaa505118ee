//! The reading flow against the real PostgreSQL: the worklist in policy order with
//! filters and pages, claims (one reader at a time, expiring, `SKIP LOCKED` for
//! "next"), release, report with turnaround, the audit log, the outbox, the study
//! detail, the overlay image and the event stream.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use fxtriage_core::Urgency;
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1 as proto;
use reqwest::StatusCode;
use support::*;

/// Four studies whose deadlines order them D, C, B, A.
async fn four_studies(api: &TestApi) {
    let now = now();
    for spec in [
        // Outpatient, no finding: two days.
        StudySpec::new("1.6.1", Urgency::Outpatient, now - minutes(60)).analysed(0.05),
        // Outpatient, suspected fracture: two hours.
        StudySpec::new("1.6.2", Urgency::Outpatient, now - minutes(50))
            .analysed(0.9)
            .body_part("HAND"),
        // Emergency, awaiting analysis: one hour.
        StudySpec::new("1.6.3", Urgency::Emergency, now - minutes(10)),
        // Inpatient, awaiting analysis for 400 minutes: past its six hours.
        StudySpec::new("1.6.4", Urgency::Inpatient, now - minutes(400)),
    ] {
        add_study(&api.pool, &spec).await;
    }
}

#[tokio::test]
async fn the_worklist_is_read_earliest_deadline_first_with_waiting_times() {
    let Some(api) = start_api().await else {
        return;
    };
    four_studies(&api).await;
    let page = api.worklist("").await;
    assert_eq!(uids(&page), ["1.6.4", "1.6.3", "1.6.2", "1.6.1"]);
    assert!(page["next_cursor"].is_null());
    let items = page["items"].as_array().expect("items");

    let overdue = &items[0];
    assert_eq!(overdue["urgency"], "inpatient");
    assert_eq!(overdue["ai_result"], "awaiting-analysis");
    assert!(overdue["probability"].is_null());
    assert_eq!(overdue["accession_number"], "ACC164");
    assert_eq!(overdue["state"], "open");
    assert!(overdue["claimed_by"].is_null());
    assert_eq!(overdue["revision"], 1);
    assert_eq!(overdue["overdue"], true);
    let waited = overdue["waited_seconds"].as_i64().expect("waited");
    assert!((400 * 60..400 * 60 + 60).contains(&waited), "{waited}");
    let to_deadline = overdue["seconds_to_deadline"]
        .as_i64()
        .expect("to deadline");
    assert!(
        (-40 * 60 - 60..=-40 * 60).contains(&to_deadline),
        "{to_deadline}"
    );

    let suspected = &items[2];
    assert_eq!(suspected["ai_result"], "suspected");
    assert_eq!(suspected["probability"], 0.9);
    assert_eq!(suspected["body_parts"], serde_json::json!(["HAND"]));
    assert_eq!(suspected["revision"], 2, "added, then reprioritised");
    assert_eq!(suspected["overdue"], false);
    assert!(
        suspected["arrived_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    api.finish().await;
}

#[tokio::test]
async fn filters_select_by_state_urgency_ai_result_and_body_part() {
    let Some(api) = start_api().await else {
        return;
    };
    four_studies(&api).await;
    assert_eq!(api.claim("1.6.3", "dr-a").await.status(), StatusCode::OK);
    let reported = api
        .post(
            &api.demo.reader,
            SITE,
            "/studies/1.6.1/report",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(reported.status(), StatusCode::OK);

    assert_eq!(api.worklist_order("").await, ["1.6.4", "1.6.2"]);
    assert_eq!(api.worklist_order("?state=open").await, ["1.6.4", "1.6.2"]);
    assert_eq!(api.worklist_order("?state=claimed").await, ["1.6.3"]);
    assert_eq!(api.worklist_order("?state=reported").await, ["1.6.1"]);
    assert_eq!(
        api.worklist_order("?state=open,claimed").await,
        ["1.6.4", "1.6.3", "1.6.2"]
    );
    assert_eq!(
        api.worklist_order("?state=all").await,
        ["1.6.4", "1.6.3", "1.6.2", "1.6.1"]
    );
    assert_eq!(
        api.worklist_order("?state=all&urgency=outpatient").await,
        ["1.6.2", "1.6.1"]
    );
    assert_eq!(
        api.worklist_order("?state=all&urgency=emergency,inpatient")
            .await,
        ["1.6.4", "1.6.3"]
    );
    assert_eq!(
        api.worklist_order("?state=all&ai_result=suspected,no-finding")
            .await,
        ["1.6.2", "1.6.1"]
    );
    assert_eq!(
        api.worklist_order("?ai_result=awaiting-analysis").await,
        ["1.6.4"]
    );
    assert_eq!(
        api.worklist_order("?state=all&body_part=hand").await,
        ["1.6.2"]
    );
    assert_eq!(
        api.worklist_order("?state=all&body_part=wrist&urgency=outpatient")
            .await,
        ["1.6.1"]
    );
    let claimed = api.worklist("?state=claimed").await;
    assert_eq!(claimed["items"][0]["claimed_by"], "dr-a");
    assert!(claimed["items"][0]["claim_expires_at"].is_string());
    api.finish().await;
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let Some(api) = start_api().await else {
        return;
    };
    let start = now() - minutes(100);
    // Two pairs arrive at the same instant with the same class: ties by UID.
    for (index, offset) in [0, 5, 5, 10, 20, 20, 30].into_iter().enumerate() {
        add_study(
            &api.pool,
            &StudySpec::new(
                &format!("1.7.{}", 9 - index),
                Urgency::Outpatient,
                start + minutes(offset),
            ),
        )
        .await;
    }
    let everything = api.worklist_order("?limit=500").await;
    assert_eq!(everything.len(), 7);
    let mut paged = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = api.worklist(&query).await;
        pages += 1;
        let items = uids(&page);
        assert!(items.len() <= 3);
        paged.extend(items);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, everything);
    assert_eq!(
        &everything[1..3],
        ["1.7.7", "1.7.8"],
        "same deadline: by UID"
    );
    api.finish().await;
}

#[tokio::test]
async fn of_ten_concurrent_claims_of_one_study_exactly_one_wins() {
    let Some(api) = start_api().await else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.8.1", Urgency::Emergency, now()),
    )
    .await;
    let claims = (0..10).map(|index| {
        let api = &api;
        async move {
            let reader = format!("dr-{index}");
            let response = api.claim("1.8.1", &reader).await;
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("JSON");
            (reader, status, body)
        }
    });
    let outcomes = futures::future::join_all(claims).await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, status, _)| *status == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let (winner, _, claimed) = winners[0];
    assert_eq!(claimed["state"], "claimed");
    assert_eq!(&claimed["claimed_by"], winner.as_str());
    for (_, status, body) in outcomes.iter().filter(|(reader, ..)| reader != winner) {
        assert_eq!(*status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "conflict");
        assert_eq!(&body["claimed_by"], winner.as_str(), "{body}");
    }
    assert_eq!(api.count("SELECT count(*) FROM claims").await, 1);
    assert_eq!(
        api.count("SELECT count(*) FROM audit_log WHERE action = 'study.claim'")
            .await,
        1
    );
    // The winner renews by claiming again; the study stays theirs.
    let renewed = api.claim("1.8.1", winner).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(api.count("SELECT count(*) FROM claims").await, 1);
    api.finish().await;
}

#[tokio::test]
async fn concurrent_claim_next_gives_every_reader_a_different_study() {
    let Some(api) = start_api().await else {
        return;
    };
    let start = now() - minutes(30);
    for index in 0..8 {
        add_study(
            &api.pool,
            &StudySpec::new(
                &format!("1.9.{}", index + 1),
                Urgency::Inpatient,
                start + minutes(index),
            ),
        )
        .await;
    }
    let next = |reader: String| {
        let api = &api;
        async move {
            let response = api
                .post(
                    &api.demo.reader,
                    SITE,
                    "/worklist/next",
                    serde_json::json!({ "reader": reader }),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["claimed_by"], reader.as_str());
            body["study_instance_uid"].as_str().expect("uid").to_owned()
        }
    };
    let claimed: Vec<String> =
        futures::future::join_all((0..8).map(|index| next(format!("dr-{index}")))).await;
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(distinct.len(), 8, "{claimed:?}");
    assert_eq!(
        api.count("SELECT count(*) FROM studies WHERE state = 'claimed'")
            .await,
        8
    );
    let none_left = api
        .post(
            &api.demo.reader,
            SITE,
            "/worklist/next",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(none_left.status(), StatusCode::NO_CONTENT);
    api.finish().await;
}

#[tokio::test]
async fn claim_next_takes_the_first_study_in_reading_order_within_the_filters() {
    let Some(api) = start_api().await else {
        return;
    };
    four_studies(&api).await;
    let next = |body: serde_json::Value| {
        let api = &api;
        async move {
            let response = api
                .post(&api.demo.reader, SITE, "/worklist/next", body)
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let claimed: serde_json::Value = response.json().await.expect("JSON");
            claimed["study_instance_uid"]
                .as_str()
                .expect("uid")
                .to_owned()
        }
    };
    assert_eq!(
        next(serde_json::json!({ "ai_result": ["suspected"] })).await,
        "1.6.2"
    );
    assert_eq!(next(serde_json::json!({})).await, "1.6.4");
    assert_eq!(
        next(serde_json::json!({ "urgency": ["emergency"] })).await,
        "1.6.3"
    );
    let claimed = api.worklist_order("?state=claimed").await;
    assert_eq!(claimed, ["1.6.4", "1.6.3", "1.6.2"]);
    api.finish().await;
}

#[tokio::test]
async fn release_reopens_the_study_and_only_its_reader_or_an_admin_may_release() {
    let Some(api) = start_api().await else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.10.1", Urgency::Emergency, now()),
    )
    .await;
    assert_eq!(api.claim("1.10.1", "dr-a").await.status(), StatusCode::OK);
    let by_another = api.release(&api.demo.reader, "1.10.1", "dr-b").await;
    expect_error(by_another, StatusCode::CONFLICT, "conflict").await;
    let released = api.release(&api.demo.reader, "1.10.1", "dr-a").await;
    assert_eq!(released.status(), StatusCode::OK);
    let body: serde_json::Value = released.json().await.expect("JSON");
    assert_eq!(body["state"], "open");
    assert!(body["claimed_by"].is_null());
    assert_eq!(api.worklist_order("").await, ["1.10.1"]);
    let again = api.release(&api.demo.reader, "1.10.1", "dr-a").await;
    expect_error(again, StatusCode::CONFLICT, "conflict").await;

    assert_eq!(api.claim("1.10.1", "dr-b").await.status(), StatusCode::OK);
    let forced = api
        .release(&api.demo.admin, "1.10.1", "head-of-department")
        .await;
    assert_eq!(forced.status(), StatusCode::OK);
    assert_eq!(
        api.count("SELECT count(*) FROM claims WHERE end_reason = 'released'")
            .await,
        2
    );
    assert_eq!(
        api.count("SELECT count(*) FROM claims WHERE ended_at IS NULL")
            .await,
        0
    );
    let response = api
        .post(
            &api.demo.reader,
            SITE,
            "/studies/1.10.2/release",
            serde_json::json!({}),
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not-found").await;
    api.finish().await;
}

#[tokio::test]
async fn a_report_closes_the_item_and_records_its_turnaround() {
    let Some(api) = start_api().await else {
        return;
    };
    let arrived = now() - minutes(20);
    add_study(
        &api.pool,
        &StudySpec::new("1.11.1", Urgency::Emergency, arrived).analysed(0.95),
    )
    .await;
    add_study(
        &api.pool,
        &StudySpec::new("1.11.2", Urgency::Outpatient, arrived),
    )
    .await;
    add_study(
        &api.pool,
        &StudySpec::new("1.11.3", Urgency::Outpatient, arrived),
    )
    .await;

    assert_eq!(api.claim("1.11.1", "dr-a").await.status(), StatusCode::OK);
    let by_another = api.report(&api.demo.reader, "1.11.1", "dr-b").await;
    expect_error(by_another, StatusCode::CONFLICT, "conflict").await;
    let reported = api.report(&api.demo.reader, "1.11.1", "dr-a").await;
    assert_eq!(reported.status(), StatusCode::OK);
    let body: serde_json::Value = reported.json().await.expect("JSON");
    assert_eq!(body["study"]["state"], "reported");
    assert!(body["study"]["claimed_by"].is_null());
    assert_eq!(body["report"]["reader"], "dr-a");
    assert_eq!(
        body["report"]["met_deadline"], true,
        "30 minutes for a suspected emergency"
    );
    let turnaround = body["report"]["turnaround_seconds"]
        .as_f64()
        .expect("turnaround");
    assert!(
        (20.0 * 60.0..22.0 * 60.0).contains(&turnaround),
        "{turnaround}"
    );

    // A retry by the same reader answers the same report; anyone else conflicts.
    let retried = api.report(&api.demo.reader, "1.11.1", "dr-a").await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: serde_json::Value = retried.json().await.expect("JSON");
    assert_eq!(
        retried["report"]["reported_at"],
        body["report"]["reported_at"]
    );
    let late = api.report(&api.demo.admin, "1.11.1", "dr-c").await;
    expect_error(late, StatusCode::CONFLICT, "conflict").await;
    let claim_reported = api.claim("1.11.1", "dr-a").await;
    expect_error(claim_reported, StatusCode::CONFLICT, "conflict").await;

    // An open study may be reported directly; an admin may report a claimed one.
    assert_eq!(
        api.report(&api.demo.reader, "1.11.2", "dr-b")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(api.claim("1.11.3", "dr-a").await.status(), StatusCode::OK);
    assert_eq!(
        api.report(&api.demo.admin, "1.11.3", "dr-c").await.status(),
        StatusCode::OK
    );

    assert!(
        api.worklist_order("").await.is_empty(),
        "nothing open is left"
    );
    assert_eq!(
        api.worklist_order("?state=reported").await,
        ["1.11.1", "1.11.2", "1.11.3"]
    );
    assert_eq!(api.count("SELECT count(*) FROM reports").await, 3);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM reports WHERE study_instance_uid = '1.11.1' \
             AND reader = 'dr-a' AND urgency = 'emergency' AND ai_result = 'suspected' \
             AND turnaround BETWEEN interval '20 minutes' AND interval '22 minutes' AND met_deadline"
        )
        .await,
        1
    );
    assert_eq!(
        api.count("SELECT count(*) FROM claims WHERE end_reason = 'reported'")
            .await,
        2
    );
    assert_eq!(
        api.count(
            "SELECT count(*) FROM studies WHERE state = 'reported' AND reported_at IS NOT NULL"
        )
        .await,
        3
    );
    api.finish().await;
}

#[tokio::test]
async fn an_expired_claim_counts_as_open_and_the_sweeper_ends_it() {
    let Some(api) = start_api_with(|config| {
        config.claim_ttl = Duration::from_secs(1);
        config.claim_sweep_interval = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.12.1", Urgency::Emergency, now()),
    )
    .await;
    let claimed = api.claim("1.12.1", "dr-a").await;
    assert_eq!(claimed.status(), StatusCode::OK);
    expect_error(
        api.claim("1.12.1", "dr-b").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(api.worklist_order("").await.is_empty());

    eventually(
        Duration::from_secs(10),
        "the expired claim is ended",
        || async {
            api.count(
                "SELECT count(*) FROM claims WHERE end_reason = 'expired' AND ended_at IS NOT NULL",
            )
            .await
                == 1
        },
    )
    .await;
    assert_eq!(api.worklist_order("").await, ["1.12.1"]);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE action = 'claim.expire' \
             AND token_id IS NULL AND actor = 'system' AND study_instance_uid = '1.12.1'"
        )
        .await,
        1
    );
    let second = api.claim("1.12.1", "dr-b").await;
    assert_eq!(second.status(), StatusCode::OK);
    let body: serde_json::Value = second.json().await.expect("JSON");
    assert_eq!(body["claimed_by"], "dr-b");
    // Claimed, released by expiry, claimed again.
    assert_eq!(body["revision"], 4);
    api.finish().await;
}

#[tokio::test]
async fn an_expired_claim_is_open_before_the_sweeper_runs() {
    let Some(api) = start_api_with(|config| {
        config.claim_ttl = Duration::from_secs(1);
        config.claim_sweep_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.12.2", Urgency::Emergency, now()),
    )
    .await;
    assert_eq!(api.claim("1.12.2", "dr-a").await.status(), StatusCode::OK);
    // The claim lapses after its one second, with no sweep in between.
    let page =
        fxtriage_testkit::eventually("the claim to expire", Duration::from_secs(30), || async {
            let page = api.worklist("").await;
            // Open again: listed (the default filter shows open items) without a claim.
            if uids(&page) == ["1.12.2"] && page["items"][0]["claimed_by"].is_null() {
                fxtriage_testkit::Progress::Done(page)
            } else {
                fxtriage_testkit::Progress::NotYet(page.to_string())
            }
        })
        .await;
    assert_eq!(uids(&page), ["1.12.2"]);
    let next = api
        .post(
            &api.demo.reader,
            SITE,
            "/worklist/next",
            serde_json::json!({ "reader": "dr-b" }),
        )
        .await;
    assert_eq!(next.status(), StatusCode::OK);
    let body: serde_json::Value = next.json().await.expect("JSON");
    assert_eq!(body["claimed_by"], "dr-b");
    assert_eq!(
        api.count("SELECT count(*) FROM claims WHERE end_reason = 'expired'")
            .await,
        1
    );
    api.finish().await;
}

/// action, token_id, actor, study, SOP instance.
type AuditRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn every_study_read_and_change_is_in_the_audit_log() {
    let Some(api) = start_api().await else {
        return;
    };
    let spec = StudySpec::new("1.13.1", Urgency::Emergency, now()).analysed(0.8);
    add_study(&api.pool, &spec).await;
    store_image(api.store.as_ref(), &spec).await;
    let reader = &api.demo.reader;
    api.get(reader, SITE, "/worklist").await;
    api.get(reader, SITE, "/studies/1.13.1").await;
    api.get(
        reader,
        SITE,
        &format!("/studies/1.13.1/instances/{}/overlay.png", spec.sop()),
    )
    .await;
    assert_eq!(api.claim("1.13.1", "dr-a").await.status(), StatusCode::OK);
    let body = serde_json::json!({ "reader": "dr-a" });
    api.post(reader, SITE, "/studies/1.13.1/release", body.clone())
        .await;
    api.post(reader, SITE, "/studies/1.13.1/claim", body.clone())
        .await;
    api.post(reader, SITE, "/studies/1.13.1/report", body).await;

    let client = api.pool.get().await.expect("connection");
    let rows = client
        .query(
            "SELECT action, token_id, actor, study_instance_uid, sop_instance_uid \
             FROM audit_log WHERE site_id = 'demo' \
             AND action NOT IN ('sites.apply', 'token.create') ORDER BY id",
            &[],
        )
        .await
        .expect("audit");
    let audit: Vec<AuditRow> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    let token = Some(api.demo.reader_id.clone());
    let study = Some("1.13.1".to_owned());
    assert_eq!(
        audit,
        [
            (
                "worklist.read".into(),
                token.clone(),
                api.demo.reader_id.clone(),
                None,
                None
            ),
            (
                "study.read".into(),
                token.clone(),
                api.demo.reader_id.clone(),
                study.clone(),
                None
            ),
            (
                "overlay.read".into(),
                token.clone(),
                api.demo.reader_id.clone(),
                study.clone(),
                Some(spec.sop())
            ),
            (
                "study.claim".into(),
                token.clone(),
                "dr-a".into(),
                study.clone(),
                None
            ),
            (
                "study.release".into(),
                token.clone(),
                "dr-a".into(),
                study.clone(),
                None
            ),
            (
                "study.claim".into(),
                token.clone(),
                "dr-a".into(),
                study.clone(),
                None
            ),
            (
                "study.report".into(),
                token.clone(),
                "dr-a".into(),
                study.clone(),
                None
            ),
        ]
    );
    api.finish().await;
}

#[tokio::test]
async fn claims_and_reports_are_published_as_worklist_changes_through_the_outbox() {
    let Some(api) = start_api().await else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.14.1", Urgency::Emergency, now()),
    )
    .await;
    assert_eq!(api.claim("1.14.1", "dr-a").await.status(), StatusCode::OK);
    let reported = api
        .post(
            &api.demo.reader,
            SITE,
            "/studies/1.14.1/report",
            serde_json::json!({ "reader": "dr-a" }),
        )
        .await;
    assert_eq!(reported.status(), StatusCode::OK);
    eventually(Duration::from_secs(10), "the outbox is empty", || async {
        api.count("SELECT count(*) FROM worklist_outbox").await == 0
    })
    .await;

    let consumer = api
        .bus
        .subscribe("test-reader", &[topics::WORKLIST])
        .await
        .expect("subscribe");
    let mut changes = Vec::new();
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
        let message = next.expect("consume");
        consumer.ack(&message).expect("ack");
        changes.push(proto::WorklistChange::decode(message.payload.as_slice()).expect("change"));
    }
    consumer.close().await.expect("close");
    let seen: Vec<(i32, i32, u64)> = changes
        .iter()
        .filter(|change| change.study_instance_uid == "1.14.1")
        .map(|change| (change.kind, change.state, change.revision))
        .collect();
    assert_eq!(
        seen,
        [
            (
                proto::ChangeKind::Added as i32,
                proto::WorklistState::Open as i32,
                1
            ),
            (
                proto::ChangeKind::Claimed as i32,
                proto::WorklistState::Claimed as i32,
                2
            ),
            (
                proto::ChangeKind::Reported as i32,
                proto::WorklistState::Reported as i32,
                3
            ),
        ]
    );
    api.finish().await;
}

#[tokio::test]
async fn the_study_detail_lists_instances_findings_and_detections() {
    let Some(api) = start_api().await else {
        return;
    };
    let spec = StudySpec::new("1.15.1", Urgency::Inpatient, now()).analysed(0.75);
    add_study(&api.pool, &spec).await;
    let response = api.get(&api.demo.viewer, SITE, "/studies/1.15.1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let detail: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(detail["study"]["study_instance_uid"], "1.15.1");
    assert_eq!(detail["study"]["ai_result"], "suspected");
    let instances = detail["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1);
    let instance = &instances[0];
    assert_eq!(instance["sop_instance_uid"], spec.sop());
    assert_eq!(instance["analysis"], "analysed");
    assert_eq!(instance["body_part"], "WRIST");
    assert_eq!(
        instance["overlay_url"],
        format!(
            "/api/v1/sites/demo/studies/1.15.1/instances/{}/overlay.png",
            spec.sop()
        )
    );
    let finding = &instance["findings"][0];
    assert_eq!(finding["status"], "analysed");
    assert_eq!(finding["model_name"], "fxtriage-demo");
    assert_eq!(finding["image_rows"], 256);
    assert_eq!(
        finding["detections"],
        serde_json::json!([{
            "class": "fracture",
            "score": 0.75_f32 as f64,
            "box": { "x_min": 40.0, "y_min": 60.0, "x_max": 120.0, "y_max": 180.0 }
        }])
    );
    let missing = api.get(&api.demo.viewer, SITE, "/studies/1.15.2").await;
    expect_error(missing, StatusCode::NOT_FOUND, "not-found").await;
    api.finish().await;
}

#[tokio::test]
async fn the_overlay_is_a_png_of_the_image_with_the_boxes_in_red() {
    let Some(api) = start_api().await else {
        return;
    };
    let spec = StudySpec::new("1.16.1", Urgency::Emergency, now()).analysed(0.9);
    add_study(&api.pool, &spec).await;
    store_image(api.store.as_ref(), &spec).await;
    let path = format!("/studies/1.16.1/instances/{}/overlay.png", spec.sop());
    let response = api.get(&api.demo.viewer, SITE, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    let bytes = response.bytes().await.expect("body");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut rgb = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut rgb).expect("frame");
    assert_eq!((info.width, info.height), (256, 256));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixel = |x: usize, y: usize| rgb[(y * 256 + x) * 3..(y * 256 + x) * 3 + 3].to_vec();
    let red = fxtriage_dicom::overlay::BOX_COLOUR.to_vec();
    assert_eq!(pixel(40, 120), red, "left edge of the box");
    assert_eq!(pixel(80, 60), red, "top edge");
    assert_eq!(pixel(120, 100), red, "right edge");
    let inside = pixel(80, 120);
    assert_ne!(inside, red, "inside is the image");
    assert_eq!(inside[0], inside[1], "grey");
    let outside = pixel(200, 20);
    assert_eq!(outside[0], outside[2], "grey");

    // An instance whose object is gone, and one that does not exist.
    let gone = StudySpec::new("1.16.2", Urgency::Emergency, now()).analysed(0.9);
    add_study(&api.pool, &gone).await;
    let response = api
        .get(
            &api.demo.viewer,
            SITE,
            &format!("/studies/1.16.2/instances/{}/overlay.png", gone.sop()),
        )
        .await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let response = api
        .get(
            &api.demo.viewer,
            SITE,
            "/studies/1.16.1/instances/1.16.1.9.9/overlay.png",
        )
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not-found").await;
    api.finish().await;
}

/// Server-Sent Events read from a response, one `(event, data)` at a time.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn next(&mut self, limit: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, data));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn an_event_stream_receives_its_sites_changes_and_no_other() {
    let Some(api) = start_api().await else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.17.1", Urgency::Emergency, now()),
    )
    .await;
    add_study(
        &api.pool,
        &StudySpec::new("1.17.2", Urgency::Emergency, now()).at_site(OTHER_SITE),
    )
    .await;
    let response = api.get(&api.demo.viewer, SITE, "/events").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    let mut events = EventStream {
        response,
        buffer: String::new(),
    };
    let (kind, _) = events.next(Duration::from_secs(5)).await.expect("ready");
    assert_eq!(kind, "ready");
    // A poison message on the worklist topic first: skipped, and the changes
    // after it still reach the stream.
    api.bus
        .produce(
            &fxtriage_proto::Namespace::none().worklist_topic(),
            fxtriage_bus::Record::new("1.17.1", b"\xff\xffnot a WorklistChange".to_vec()),
        )
        .await
        .expect("produce the poison message");

    let other = api
        .post(
            &api.other.reader,
            OTHER_SITE,
            "/studies/1.17.2/claim",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(api.claim("1.17.1", "dr-a").await.status(), StatusCode::OK);

    let mut received = Vec::new();
    let claimed = loop {
        let (kind, data) = events
            .next(Duration::from_secs(10))
            .await
            .expect("a worklist change within 10 s");
        assert_eq!(kind, "worklist-change");
        let change: serde_json::Value = serde_json::from_str(&data).expect("JSON");
        received.push(change.clone());
        if change["kind"] == "claimed" {
            break change;
        }
    };
    assert_eq!(claimed["study_instance_uid"], "1.17.1");
    assert_eq!(claimed["state"], "claimed");
    assert_eq!(claimed["revision"], 2);
    while let Some((_, data)) = events.next(Duration::from_millis(500)).await {
        received.push(serde_json::from_str(&data).expect("JSON"));
    }
    assert!(
        received
            .iter()
            .all(|change| change["study_instance_uid"] == "1.17.1"),
        "only the demo site's study: {received:?}"
    );
    api.finish().await;
}
