//! The worklist store against the real PostgreSQL: aggregation, ordering,
//! idempotent replays, findings before their instances, and the worklist read.

mod support;

use fxtriage_core::Urgency;
use fxtriage_prioritizer::apply::{Applied, apply_finding, apply_instance};
use fxtriage_prioritizer::incoming::{ImageFinding, StoredInstance};
use fxtriage_prioritizer::policy::{AiResult, Policy};
use fxtriage_prioritizer::study::{StudyAiResult, WorklistState};
use fxtriage_prioritizer::worklist_store::{WorklistCursor, worklist_page, worklist_page_sql};
use fxtriage_prioritizer::{ErrorKind, StoreError};
use fxtriage_proto::v1::ChangeKind;
use support::*;

fn target(urgency: Urgency, ai_result: AiResult) -> std::time::Duration {
    Policy::default().target(urgency, ai_result)
}

/// The scenario of the issue: outpatient studies arrive, then an emergency study
/// whose image shows a suspected fracture: it is read first.
#[tokio::test]
async fn an_emergency_with_a_suspected_fracture_is_read_before_waiting_outpatients() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let outpatients = [
        instance("1.2.1", "1.2.1.1.1", Urgency::Outpatient, T0),
        instance("1.2.2", "1.2.2.1.1", Urgency::Outpatient, T0 + minutes(5)),
        instance("1.2.3", "1.2.3.1.1", Urgency::Outpatient, T0 + minutes(10)),
    ];
    for image in &outpatients {
        store_instance(&db.pool, image).await;
    }
    store_finding(&db.pool, &analysed(&outpatients[0], 0.05)).await;
    store_finding(&db.pool, &analysed(&outpatients[1], 0.10)).await;

    let emergency = instance("1.2.9", "1.2.9.1.1", Urgency::Emergency, T0 + minutes(20));
    let added = store_instance(&db.pool, &emergency).await;
    assert!(
        matches!(&added, Applied::Changed(change) if change.kind == ChangeKind::Added as i32),
        "{added:?}"
    );
    let awaiting = study_row(&db.pool, "1.2.9").await.expect("study");
    assert_eq!(awaiting.ai_result, StudyAiResult::AwaitingAnalysis);
    assert_eq!(
        awaiting.deadline,
        T0 + minutes(20) + target(Urgency::Emergency, AiResult::NotAnalysed),
        "at clinical priority until analysed"
    );

    let reprioritised = store_finding(&db.pool, &analysed(&emergency, 0.93)).await;
    assert!(
        matches!(&reprioritised, Applied::Changed(change) if change.kind == ChangeKind::Reprioritised as i32 && change.revision == 2),
        "{reprioritised:?}"
    );

    let worklist = open_worklist(&db.pool, SITE).await;
    let order: Vec<&str> = worklist
        .iter()
        .map(|study| study.study_instance_uid.as_str())
        .collect();
    assert_eq!(order, ["1.2.9", "1.2.1", "1.2.2", "1.2.3"]);
    let first = &worklist[0];
    assert_eq!(first.ai_result, StudyAiResult::Suspected);
    assert_eq!(first.probability, Some(0.93));
    assert_eq!(
        first.deadline,
        T0 + minutes(20) + target(Urgency::Emergency, AiResult::Suspected)
    );
    assert_eq!(first.revision, 2);
    db.finish().await;
}

/// Earliest deadline first ages every study: a routine study that waited past its
/// target is read before an urgent study that just arrived.
#[tokio::test]
async fn a_routine_study_that_waited_past_its_target_outranks_new_arrivals() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let routine = instance("1.3.1", "1.3.1.1.1", Urgency::Outpatient, T0);
    store_instance(&db.pool, &routine).await;
    store_finding(&db.pool, &analysed(&routine, 0.01)).await;
    let two_days_later = T0 + minutes(49 * 60);
    store_instance(
        &db.pool,
        &instance("1.3.2", "1.3.2.1.1", Urgency::Emergency, two_days_later),
    )
    .await;
    let order: Vec<String> = open_worklist(&db.pool, SITE)
        .await
        .into_iter()
        .map(|study| study.study_instance_uid)
        .collect();
    assert_eq!(order, ["1.3.1", "1.3.2"]);
    db.finish().await;
}

/// Exactly-once effect: replaying every instance and finding, in the same order
/// or reversed, leaves every row as it was and writes no further worklist change.
#[tokio::test]
async fn replaying_every_instance_and_finding_changes_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let images = [
        instance("1.4.1", "1.4.1.1.1", Urgency::Outpatient, T0),
        instance("1.4.1", "1.4.1.1.2", Urgency::Inpatient, T0 + minutes(1)),
        instance("1.4.2", "1.4.2.1.1", Urgency::Emergency, T0 + minutes(2)),
        instance("1.4.3", "1.4.3.1.1", Urgency::Inpatient, T0 + minutes(3)),
    ];
    let findings = [
        analysed(&images[0], 0.2),
        analysed(&images[1], 0.55),
        analysed(&images[2], 0.81),
        failed(
            &images[3],
            "unsupported-transfer-syntax",
            "12-bit lossy JPEG is not supported",
        ),
    ];
    for image in &images {
        store_instance(&db.pool, image).await;
    }
    for finding in &findings {
        store_finding(&db.pool, finding).await;
    }
    let before = snapshot(&db.pool).await;
    let changes_before = count(&db.pool, "SELECT count(*) FROM worklist_outbox").await;

    for _ in 0..2 {
        for image in &images {
            assert_eq!(store_instance(&db.pool, image).await, Applied::Duplicate);
        }
        for finding in findings.iter().rev() {
            assert_eq!(store_finding(&db.pool, finding).await, Applied::Duplicate);
        }
        for image in images.iter().rev() {
            assert_eq!(store_instance(&db.pool, image).await, Applied::Duplicate);
        }
    }

    assert_eq!(snapshot(&db.pool).await, before, "every row is unchanged");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM worklist_outbox").await,
        changes_before,
        "no further worklist change"
    );
    db.finish().await;
}

/// Findings and instances travel on different topics, so a finding can be
/// processed first: it is kept and counts as soon as its instance arrives.
#[tokio::test]
async fn a_finding_that_overtakes_its_instance_is_applied_when_the_instance_arrives() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance("1.5.1", "1.5.1.1.1", Urgency::Inpatient, T0);
    assert_eq!(
        store_finding(&db.pool, &analysed(&image, 0.75)).await,
        Applied::Recorded,
        "recorded, nothing to show yet"
    );
    assert!(study_row(&db.pool, "1.5.1").await.is_none());
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM worklist_outbox").await,
        0
    );

    let added = store_instance(&db.pool, &image).await;
    let Applied::Changed(change) = added else {
        panic!("the instance adds the study: {added:?}");
    };
    assert_eq!(change.kind, ChangeKind::Added as i32);
    assert_eq!(change.revision, 1);
    assert!(change.has_probability);
    let study = study_row(&db.pool, "1.5.1").await.expect("study");
    assert_eq!(study.ai_result, StudyAiResult::Suspected);
    assert_eq!(study.probability, Some(0.75));
    assert_eq!(
        study.deadline,
        T0 + target(Urgency::Inpatient, AiResult::Suspected)
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM instances WHERE analysis = 'analysed'"
        )
        .await,
        1
    );
    db.finish().await;
}

/// A study whose images could not be analysed keeps its clinical priority.
#[tokio::test]
async fn failed_findings_keep_the_clinical_priority() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance("1.6.1", "1.6.1.1.1", Urgency::Emergency, T0);
    store_instance(&db.pool, &image).await;
    let applied = store_finding(
        &db.pool,
        &failed(
            &image,
            "decode-failed",
            "JPEG 2000 decode failed: truncated codestream",
        ),
    )
    .await;
    assert!(
        matches!(&applied, Applied::Changed(change) if change.kind == ChangeKind::Updated as i32),
        "awaiting becomes not analysed without moving: {applied:?}"
    );
    let study = study_row(&db.pool, "1.6.1").await.expect("study");
    assert_eq!(study.ai_result, StudyAiResult::NotAnalysed);
    assert_eq!(study.probability, None);
    assert_eq!(
        study.deadline,
        T0 + target(Urgency::Emergency, AiResult::NotAnalysed)
    );
    let (status, reason): (String, String) = {
        let client = db.pool.get().await.expect("connection");
        let row = client
            .query_one("SELECT status, failure_reason FROM findings", &[])
            .await
            .expect("finding");
        (row.get(0), row.get(1))
    };
    assert_eq!(status, "failed");
    assert!(reason.contains("JPEG 2000"));
    db.finish().await;
}

/// An image whose analysis failed (its object missing after an ambiguous
/// publish during a broker outage, say) and was then sent again and analysed:
/// the analysis replaces the failure, once; a failure never replaces an
/// analysis, and replaying either changes nothing.
#[tokio::test]
async fn an_analysis_after_a_failure_replaces_it_and_never_the_reverse() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance("1.6.2", "1.6.2.1.1", Urgency::Inpatient, T0);
    store_instance(&db.pool, &image).await;
    let failure = failed(&image, "object-missing", "the stored object is gone");
    store_finding(&db.pool, &failure).await;
    assert_eq!(
        study_row(&db.pool, "1.6.2").await.expect("study").ai_result,
        StudyAiResult::NotAnalysed
    );
    let analysis = analysed(&image, 0.88);
    let applied = store_finding(&db.pool, &analysis).await;
    assert!(
        matches!(&applied, Applied::Changed(change) if change.has_probability),
        "the analysis counts: {applied:?}"
    );
    let study = study_row(&db.pool, "1.6.2").await.expect("study");
    assert_eq!(study.ai_result, StudyAiResult::Suspected);
    assert_eq!(study.probability, Some(0.88));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM instances WHERE analysis = 'analysed'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM findings WHERE status = 'analysed' AND failure_reason = ''"
        )
        .await,
        1,
        "one finding, the analysis, with no failure left on it"
    );
    let before = snapshot(&db.pool).await;
    assert_eq!(store_finding(&db.pool, &failure).await, Applied::Duplicate);
    assert_eq!(store_finding(&db.pool, &analysis).await, Applied::Duplicate);
    assert_eq!(snapshot(&db.pool).await, before, "every row is unchanged");
    db.finish().await;
}

/// The study probability is the maximum over analysed eligible images; failed and
/// not-eligible images do not count; detections are kept per image.
#[tokio::test]
async fn the_study_probability_is_the_maximum_over_its_analysed_images() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let study = "1.7.1";
    let low = instance(study, "1.7.1.1.1", Urgency::Outpatient, T0);
    let high = instance(study, "1.7.1.1.2", Urgency::Outpatient, T0 + minutes(1));
    let broken = instance(study, "1.7.1.1.3", Urgency::Outpatient, T0 + minutes(2));
    let mut lateral = instance(study, "1.7.1.1.4", Urgency::Outpatient, T0 + minutes(3));
    lateral.eligible = false;
    lateral.not_eligible_reason = "body part SKULL is not routed to the model".into();
    lateral.body_part = "SKULL".into();
    for image in [&low, &high, &broken, &lateral] {
        store_instance(&db.pool, image).await;
    }
    store_finding(&db.pool, &analysed(&low, 0.3)).await;
    let awaiting = study_row(&db.pool, study).await.expect("study");
    assert_eq!(
        awaiting.ai_result,
        StudyAiResult::AwaitingAnalysis,
        "no conclusion while eligible images wait"
    );
    assert_eq!(awaiting.probability, Some(0.3));

    store_finding(&db.pool, &analysed(&high, 0.52)).await;
    store_finding(&db.pool, &failed(&broken, "decode-failed", "truncated")).await;
    let settled = study_row(&db.pool, study).await.expect("study");
    assert_eq!(settled.probability, Some(0.52));
    assert_eq!(settled.ai_result, StudyAiResult::Possible);
    assert_eq!(
        settled.deadline,
        T0 + target(Urgency::Outpatient, AiResult::Possible)
    );
    assert_eq!(settled.body_parts, ["SKULL", "WRIST"]);

    let client = db.pool.get().await.expect("connection");
    let analyses: Vec<(String, String)> = client
        .query(
            "SELECT sop_instance_uid, analysis FROM instances ORDER BY sop_instance_uid",
            &[],
        )
        .await
        .expect("instances")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("1.7.1.1.1", "analysed"),
        ("1.7.1.1.2", "analysed"),
        ("1.7.1.1.3", "failed"),
        ("1.7.1.1.4", "not-eligible"),
    ];
    assert_eq!(
        analyses,
        expected.map(|(sop, analysis)| (sop.to_owned(), analysis.to_owned()))
    );
    let detections: serde_json::Value = client
        .query_one(
            "SELECT detections FROM findings WHERE sop_instance_uid = '1.7.1.1.2'",
            &[],
        )
        .await
        .expect("finding")
        .get(0);
    assert_eq!(
        detections,
        serde_json::json!([{
            "class": "fracture",
            "score": 0.52_f32,
            "box": {"x_min": 100.0, "y_min": 120.5, "x_max": 340.0, "y_max": 400.25}
        }])
    );
    drop(client);
    db.finish().await;
}

/// A later image with a higher urgency raises the study; an earlier one moves its arrival.
#[tokio::test]
async fn the_study_takes_the_highest_urgency_and_the_earliest_arrival_of_its_images() {
    let Some(db) = fresh_database().await else {
        return;
    };
    store_instance(
        &db.pool,
        &instance("1.8.1", "1.8.1.1.1", Urgency::Outpatient, T0 + minutes(10)),
    )
    .await;
    let raised = store_instance(
        &db.pool,
        &instance("1.8.1", "1.8.1.1.2", Urgency::Emergency, T0),
    )
    .await;
    assert!(
        matches!(&raised, Applied::Changed(change) if change.kind == ChangeKind::Reprioritised as i32),
        "{raised:?}"
    );
    let study = study_row(&db.pool, "1.8.1").await.expect("study");
    assert_eq!(study.urgency, Urgency::Emergency);
    assert_eq!(study.arrived_at, T0);
    assert_eq!(
        study.deadline,
        T0 + target(Urgency::Emergency, AiResult::NotAnalysed)
    );
    // A third image that changes nothing visible writes no change.
    let unchanged = store_instance(
        &db.pool,
        &instance("1.8.1", "1.8.1.1.3", Urgency::Inpatient, T0 + minutes(20)),
    )
    .await;
    assert_eq!(unchanged, Applied::Recorded);
    assert_eq!(
        study_row(&db.pool, "1.8.1").await.expect("study").revision,
        2
    );
    db.finish().await;
}

/// Once reported, a study's worklist values stay as they were reported.
#[tokio::test]
async fn a_reported_study_is_not_reprioritised() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance("1.9.1", "1.9.1.1.1", Urgency::Outpatient, T0);
    store_instance(&db.pool, &image).await;
    {
        let client = db.pool.get().await.expect("connection");
        client
            .execute(
                "UPDATE studies SET state = 'reported', reported_at = now(), revision = revision + 1",
                &[],
            )
            .await
            .expect("report");
    }
    let before = study_row(&db.pool, "1.9.1").await.expect("study");
    assert_eq!(
        store_finding(&db.pool, &analysed(&image, 0.99)).await,
        Applied::Recorded
    );
    assert_eq!(study_row(&db.pool, "1.9.1").await.expect("study"), before);
    assert_eq!(before.state, WorklistState::Reported);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM findings").await,
        1,
        "the finding is kept for the study's detail"
    );
    db.finish().await;
}

#[tokio::test]
async fn events_for_an_unknown_site_are_refused_and_leave_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance_at("nowhere", "1.10.1", "1.10.1.1.1", Urgency::Emergency, T0);
    let stored = StoredInstance::from_proto(&image).expect("valid");
    let error = apply_instance(&db.pool, &Policy::default(), &stored)
        .await
        .expect_err("unknown site");
    assert!(matches!(error, StoreError::UnknownSite(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Permanent);
    let finding = ImageFinding::from_proto(&analysed(&image, 0.5)).expect("valid");
    let error = apply_finding(&db.pool, &Policy::default(), &finding)
        .await
        .expect_err("unknown site");
    assert!(error.to_string().contains("nowhere"), "{error}");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM instances").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM findings").await, 0);
    db.finish().await;
}

#[tokio::test]
async fn a_finding_naming_another_study_than_its_instance_is_refused() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let image = instance("1.11.1", "1.11.1.1.1", Urgency::Outpatient, T0);
    store_instance(&db.pool, &image).await;
    let mut wrong = analysed(&image, 0.9);
    if let Some(reference) = wrong.instance.as_mut() {
        reference.study_instance_uid = "1.11.2".into();
    }
    let finding = ImageFinding::from_proto(&wrong).expect("valid on its own");
    let error = apply_finding(&db.pool, &Policy::default(), &finding)
        .await
        .expect_err("conflict");
    assert_eq!(error.kind(), ErrorKind::Permanent);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM findings").await, 0);
    db.finish().await;
}

/// A site removed from the registry (retired) keeps its worklist, and messages
/// already announced for it are still applied, never refused as an unknown site.
#[tokio::test]
async fn messages_of_a_retired_site_are_still_applied() {
    let Some(db) = fresh_database().await else {
        return;
    };
    fxtriage_sites::store::apply_text(
        &db.pool,
        "[[site]]\nid = \"elsewhere\"\n",
        fxtriage_sites::ApplyOptions {
            prune: true,
            ..Default::default()
        },
    )
    .await
    .expect("demo retired");
    assert!(registry(&db.pool).await.current().site(SITE).is_none());
    let image = instance("1.13.1", "1.13.1.1.1", Urgency::Inpatient, T0);
    apply_instance(
        &db.pool,
        &Policy::default(),
        &StoredInstance::from_proto(&image).expect("valid"),
    )
    .await
    .expect("applied, not refused");
    assert!(study_row(&db.pool, "1.13.1").await.is_some());
    db.finish().await;
}

/// Sites may have their own operating points and targets.
#[tokio::test]
async fn each_site_is_prioritised_by_its_own_policy() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mut strict = fxtriage_sites::SiteConfig::new(site(SITE), "Strict hospital");
    strict.policy.operating_points.suspected = 0.95;
    strict.policy.operating_points.possible = 0.9;
    fxtriage_sites::store::put_sites(&db.pool, vec![strict])
        .await
        .expect("the site's policy");
    let image = instance("1.12.1", "1.12.1.1.1", Urgency::Inpatient, T0);
    let policy = &registry(&db.pool).await.current().policy(&site(SITE));
    apply_instance(
        &db.pool,
        policy,
        &StoredInstance::from_proto(&image).expect("valid"),
    )
    .await
    .expect("instance");
    apply_finding(
        &db.pool,
        policy,
        &ImageFinding::from_proto(&analysed(&image, 0.8)).expect("valid"),
    )
    .await
    .expect("finding");
    let study = study_row(&db.pool, "1.12.1").await.expect("study");
    assert_eq!(
        study.ai_result,
        StudyAiResult::NoFinding,
        "0.8 is below 0.9 here"
    );
    db.finish().await;
}

/// The continuous site option from a sites file: of two suspected studies, the
/// likelier is due first even when it arrived a few minutes later; in the class
/// mode the earlier arrival would be.
#[tokio::test]
async fn the_continuous_target_mode_orders_suspected_studies_by_probability() {
    let Some(db) = fresh_database().await else {
        return;
    };
    fxtriage_sites::store::apply_text(
        &db.pool,
        &format!("[[site]]\nid = \"{SITE}\"\n[site.policy]\ntarget_mode = \"continuous\"\n"),
        fxtriage_sites::ApplyOptions::default(),
    )
    .await
    .expect("the site's policy");
    let policy = &registry(&db.pool).await.current().policy(&site(SITE));
    assert_eq!(
        policy.target_mode,
        fxtriage_core::policy::TargetMode::Continuous
    );
    for (study, arrival, probability) in [("1.20.1", 0, 0.71), ("1.20.2", 5, 0.99)] {
        let image = instance(
            study,
            &format!("{study}.1.1"),
            Urgency::Outpatient,
            T0 + minutes(arrival),
        );
        apply_instance(
            &db.pool,
            policy,
            &StoredInstance::from_proto(&image).expect("valid"),
        )
        .await
        .expect("instance");
        apply_finding(
            &db.pool,
            policy,
            &ImageFinding::from_proto(&analysed(&image, probability)).expect("valid"),
        )
        .await
        .expect("finding");
    }
    let borderline = study_row(&db.pool, "1.20.1").await.expect("study");
    let likely = study_row(&db.pool, "1.20.2").await.expect("study");
    assert_eq!(borderline.ai_result, StudyAiResult::Suspected);
    assert_eq!(likely.ai_result, StudyAiResult::Suspected);
    assert!(
        likely.deadline < borderline.deadline,
        "0.99 due {} before 0.71 due {}",
        likely.deadline,
        borderline.deadline
    );
    assert!(
        borderline.deadline
            < T0 + Policy::default().target(Urgency::Outpatient, AiResult::Suspected),
        "never later than the class target"
    );
    db.finish().await;
}

/// Instances and findings of one study processed at the same time (as from two
/// topics, or two prioritizers) never miss each other.
#[tokio::test]
async fn concurrent_instances_and_findings_of_one_study_all_count() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let study = "1.13.1";
    let images: Vec<_> = (1..=12)
        .map(|index| {
            instance(
                study,
                &format!("{study}.1.{index}"),
                Urgency::Outpatient,
                T0 + minutes(index),
            )
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, image) in images.iter().enumerate() {
        let pool = db.pool.clone();
        let finding = analysed(image, 0.05 * index as f32);
        tasks.spawn(async move { store_finding(&pool, &finding).await });
        let pool = db.pool.clone();
        let image = image.clone();
        tasks.spawn(async move { store_instance(&pool, &image).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let row = study_row(&db.pool, study).await.expect("study");
    assert_eq!(row.probability, Some(0.05 * 11.0));
    assert_eq!(row.ai_result, StudyAiResult::Possible);
    assert_eq!(row.arrived_at, T0 + minutes(1));
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM instances WHERE analysis = 'analysed'"
        )
        .await,
        12
    );
    db.finish().await;
}

/// The worklist read walks the index in reading order: no sort, and pages follow
/// one another without gaps or repeats.
#[tokio::test]
async fn the_worklist_read_is_an_index_scan_in_reading_order() {
    let Some(db) = fresh_database().await else {
        return;
    };
    for index in 0..25_i64 {
        let urgency =
            [Urgency::Emergency, Urgency::Inpatient, Urgency::Outpatient][(index % 3) as usize];
        store_instance(
            &db.pool,
            &instance(
                &format!("1.14.{index}"),
                &format!("1.14.{index}.1.1"),
                urgency,
                T0 + minutes(index * 7),
            ),
        )
        .await;
    }
    let client = db.pool.get().await.expect("connection");
    client
        .batch_execute("ANALYZE studies; SET enable_seqscan = off")
        .await
        .expect("settings");
    for paged in [false, true] {
        let explain = format!("EXPLAIN {}", worklist_page_sql(paged))
            .replace("$1", "'demo'")
            .replace("$2", "'open'")
            .replace("$3", "50")
            .replace("$4", "'2026-01-05 09:00+00'")
            .replace("$5", "'2026-01-05 08:00+00'")
            .replace("$6", "'1.14.3'");
        let plan: Vec<String> = client
            .query(&explain, &[])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using studies_worklist_order"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "the index gives the order: {plan}");
    }

    let everything = worklist_page(&client, &site(SITE), WorklistState::Open, None, 100)
        .await
        .expect("read");
    assert_eq!(everything.len(), 25);
    let mut paged = Vec::new();
    let mut cursor: Option<WorklistCursor> = None;
    loop {
        let page = worklist_page(
            &client,
            &site(SITE),
            WorklistState::Open,
            cursor.as_ref(),
            4,
        )
        .await
        .expect("page");
        let Some(last) = page.last() else {
            break;
        };
        cursor = Some(WorklistCursor::from(last));
        paged.extend(page);
    }
    assert_eq!(paged, everything);
    let deadlines: Vec<_> = everything.iter().map(|study| study.deadline).collect();
    assert!(deadlines.is_sorted(), "earliest deadline first");
    drop(client);
    db.finish().await;
}
