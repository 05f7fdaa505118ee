//! Turnaround analytics against the real PostgreSQL: each study's timeline from
//! the worklist, the audit log, the claims and the reports, and the figures
//! over a period grouped by urgency, through the API and the library the
//! `fxtriage analytics` command uses.

mod support;

use fxtriage_api::analytics::{self, GroupBy};
use fxtriage_core::Urgency;
use reqwest::StatusCode;
use support::*;

/// Within a minute: the reports happen "now", a little after the test computed it.
fn about(actual: f64, expected_minutes: f64) -> bool {
    (actual - expected_minutes * 60.0).abs() < 60.0
}

#[tokio::test]
async fn timelines_and_turnaround_figures_per_urgency_over_a_period() {
    let Some(api) = start_api().await else {
        return;
    };
    let start = now();
    // Two suspected emergencies received 40 and 10 minutes ago, reported now,
    // the second acquired 20 minutes ago: turnarounds of about 40 and 20
    // minutes (from acquisition when the dataset states it), against a
    // 30-minute target counted from receipt.
    add_study(
        &api.pool,
        &StudySpec::new("1.31.1", Urgency::Emergency, start - minutes(40)).analysed(0.95),
    )
    .await;
    add_study(
        &api.pool,
        &StudySpec::new("1.31.2", Urgency::Emergency, start - minutes(10))
            .analysed(0.9)
            .acquired(start - minutes(20)),
    )
    .await;
    // An outpatient claimed and not reported; an emergency awaiting the AI
    // for five hours, past any target.
    add_study(
        &api.pool,
        &StudySpec::new("1.31.3", Urgency::Outpatient, start - minutes(20)).analysed(0.05),
    )
    .await;
    add_study(
        &api.pool,
        &StudySpec::new("1.31.4", Urgency::Emergency, start - minutes(300)),
    )
    .await;

    let opened = api.get(&api.demo.viewer, SITE, "/studies/1.31.1").await;
    assert_eq!(opened.status(), StatusCode::OK);
    assert_eq!(api.claim("1.31.1", "dr-a").await.status(), StatusCode::OK);
    assert_eq!(
        api.report(&api.demo.reader, "1.31.1", "dr-a")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.report(&api.demo.reader, "1.31.2", "dr-a")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(api.claim("1.31.3", "dr-b").await.status(), StatusCode::OK);

    // The timelines, as the command reads them.
    let client = api.pool.get().await.expect("client");
    let timelines = analytics::timelines(&client, &[SITE.to_owned()], None, None)
        .await
        .expect("timelines");
    assert_eq!(timelines.len(), 4);
    let first = timelines
        .iter()
        .find(|t| t.study_instance_uid == "1.31.1")
        .expect("1.31.1");
    assert!(first.first_analysed.is_some() && first.ai_final.is_some());
    assert_eq!(first.model, "fxtriage-demo 1.0.0");
    assert_eq!(first.ai_result, "suspected");
    let opened_at = first.first_opened.expect("opened");
    let claimed_at = first.claimed.expect("claimed");
    let reported_at = first.reported.expect("reported");
    assert!(
        first.listed <= opened_at && opened_at <= claimed_at && claimed_at <= reported_at,
        "{first:?}"
    );
    assert!(
        about(first.turnaround_seconds().unwrap(), 40.0),
        "{first:?}"
    );
    assert_eq!(
        first.acquired, None,
        "its dataset states no acquisition time"
    );
    let second = timelines
        .iter()
        .find(|t| t.study_instance_uid == "1.31.2")
        .expect("1.31.2");
    assert!(second.acquired.is_some_and(|at| at < second.received));
    assert!(
        about(second.turnaround_seconds().unwrap(), 20.0),
        "from the acquisition: {second:?}"
    );
    let waiting = timelines
        .iter()
        .find(|t| t.study_instance_uid == "1.31.4")
        .expect("1.31.4");
    assert!(waiting.first_analysed.is_none() && waiting.reported.is_none());
    assert_eq!(waiting.ai_result, "awaiting-analysis");

    // The figures per urgency, through the API.
    let response = api
        .get(&api.demo.viewer, SITE, "/analytics?by=urgency")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{body}");
    let emergency = &groups[0];
    assert_eq!(emergency["group"], "emergency");
    assert_eq!(emergency["studies"], 3);
    assert_eq!(emergency["reported"], 2);
    let turnaround = &emergency["turnaround_seconds"];
    assert!(
        about(turnaround["median"].as_f64().unwrap(), 30.0),
        "{turnaround}"
    );
    assert!(
        about(turnaround["max"].as_f64().unwrap(), 40.0),
        "{turnaround}"
    );
    assert!(
        about(turnaround["p90"].as_f64().unwrap(), 38.0),
        "{turnaround}"
    );
    assert_eq!(emergency["deadline_met"]["successes"], 1, "{emergency}");
    assert_eq!(emergency["deadline_met"]["total"], 2);
    assert_eq!(
        emergency["waiting_past_target"], 1,
        "the study awaiting the AI"
    );
    assert_eq!(emergency["queue_wait_seconds"]["count"], 1, "one claim");
    let outpatient = &groups[1];
    assert_eq!(outpatient["group"], "outpatient");
    assert_eq!(outpatient["reported"], 0);
    assert!(outpatient["turnaround_seconds"].is_null());
    assert_eq!(outpatient["queue_wait_seconds"]["count"], 1);
    assert_eq!(outpatient["waiting_past_target"], 0);

    // A period counts the studies received in it.
    let from = (start - minutes(15))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // The time in the query, its "+" encoded.
    let recent = api
        .get(
            &api.demo.viewer,
            SITE,
            &format!("/analytics?from={}", from.replace('+', "%2B")),
        )
        .await;
    let recent: serde_json::Value = recent.json().await.expect("JSON");
    assert_eq!(recent["groups"][0]["studies"], 1, "{recent}");
    let in_range = analytics::figures(
        &analytics::timelines(
            &client,
            &[SITE.to_owned()],
            Some(start - minutes(25)),
            Some(start - minutes(5)),
        )
        .await
        .expect("timelines"),
        GroupBy::All,
        false,
        start,
    );
    assert_eq!(in_range[0].studies, 2, "received 20 and 10 minutes ago");

    let bad = api
        .get(&api.demo.viewer, SITE, "/analytics?by=colour")
        .await;
    expect_error(bad, StatusCode::BAD_REQUEST, "bad-request").await;
    let bad = api
        .get(&api.demo.viewer, SITE, "/analytics?from=yesterday")
        .await;
    expect_error(bad, StatusCode::BAD_REQUEST, "bad-request").await;
    // Another site's token does not see this site's figures.
    let other = api.get(&api.other.viewer, SITE, "/analytics").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    drop(client);
    api.finish().await;
}
