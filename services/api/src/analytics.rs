//! Turnaround analytics: each study's timeline, and figures over any period,
//! grouped by urgency, AI result, body part, model version or site.
//!
//! The timeline of a study (every time in UTC; absent when it did not happen):
//!
//! | event | from |
//! |---|---|
//! | `acquired` | the earliest acquisition time of its images, from their datasets (ingest keeps a plausible one only: see `InstanceStored.acquired_at`) |
//! | `received` | the earliest `received_at` of its images (ingest's clock) |
//! | `first_analysed` | the earliest `analysed_at` of its analysed findings |
//! | `ai_final` | the latest `analysed_at` of its findings: when the AI result stopped changing |
//! | `listed` | when the study first appeared on the worklist (its row's creation) |
//! | `first_opened` | the first `study.read` of the study in the audit log |
//! | `claimed` | the first claim |
//! | `reported` | the report, through fxtriage or from the RIS |
//!
//! Turnaround is acquired (else received) to reported; queue wait is listed to
//! first claimed. A dataset's time that states no offset (neither in the
//! date-time nor as TimezoneOffsetFromUTC) is not used: the turnaround of such
//! a study starts at receipt. A study counts
//! in a period by when it was received. The AI result, urgency and deadline of
//! a reported study are those at report time (as the `reports` row keeps them);
//! of an unreported one, those now. Percentiles are by linear interpolation
//! between the closest ranks.
//!
//! Routes (any role of the site; the figures name no patient and no study):
//! `GET /api/v1/sites/{site}/analytics?from=&to=&by=`, and
//! `GET /api/v1/sites/{site}/monitoring?from=&to=&by=`: the AI's sensitivity,
//! specificity, PPV and NPV against the readers' recorded outcomes, per model,
//! with Wilson 95% intervals ([`accuracy`]).

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use fxtriage_core::stats::Proportion;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::{Caller, GroupCaller};
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;

/// One study's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub site_id: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub urgency: String,
    pub ai_result: String,
    pub body_parts: Vec<String>,
    /// The model ("name version") whose finding came last; empty when none.
    pub model: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub acquired: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub received: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_analysed: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ai_final: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub listed: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_opened: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub claimed: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub reported: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// The reader's outcome, when recorded.
    pub fracture: Option<String>,
    /// "before AI" or "with AI" by the site's `ai_enabled_from` day (UTC);
    /// empty when the site has none.
    pub ai_period: String,
    /// The monitoring subgroups, from the study's images (the first stated):
    /// M, F, O or empty; whole years; "Manufacturer Model". Only ever shown
    /// grouped, never per study (nor in the timelines export).
    #[serde(skip)]
    pub patient_sex: String,
    #[serde(skip)]
    pub patient_age_years: Option<i32>,
    #[serde(skip)]
    pub equipment: String,
}

/// The age bands of the monitoring, paediatric first (their names sort in
/// that order).
pub fn age_band(years: Option<i32>) -> &'static str {
    match years {
        None => "(age unknown)",
        Some(..=1) => "00-01 (infant)",
        Some(2..=11) => "02-11 (child)",
        Some(12..=17) => "12-17 (adolescent)",
        Some(18..=44) => "18-44",
        Some(45..=64) => "45-64",
        Some(65..=79) => "65-79",
        Some(_) => "80+",
    }
}

impl Timeline {
    /// Acquired (else received) to reported, in seconds.
    pub fn turnaround_seconds(&self) -> Option<f64> {
        let start = self.acquired.unwrap_or(self.received);
        self.reported
            .map(|reported| (reported - start).as_seconds_f64())
    }

    /// Listed to first claimed, in seconds; `None` before a claim or when the
    /// claim is recorded before the listing (an impossible order).
    pub fn queue_wait_seconds(&self) -> Option<f64> {
        self.claimed
            .map(|claimed| (claimed - self.listed).as_seconds_f64())
            .filter(|&seconds| seconds >= 0.0)
    }

    /// Reported before it was acquired (else received), or claimed before it
    /// was listed: a clock or a record is wrong.
    pub fn impossible_order(&self) -> bool {
        self.turnaround_seconds()
            .is_some_and(|seconds| seconds < 0.0)
            || self.claimed.is_some_and(|claimed| claimed < self.listed)
    }
}

/// The timelines of the studies of `sites` received in `from..to`.
pub async fn timelines(
    client: &tokio_postgres::Client,
    sites: &[String],
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Vec<Timeline>, tokio_postgres::Error> {
    let rows = client
        .query(
            // One pass per table over the period's studies, joined by hash (or
            // by index for a short period), not a lookup per study per table:
            // a correlated subquery per study took 12 minutes over 200,000.
            "WITH s AS MATERIALIZED ( \
                 SELECT site_id, study_instance_uid, accession_number, urgency, ai_result, \
                     deadline, body_parts, arrived_at, created_at \
                 FROM studies WHERE site_id = ANY($1) \
                     AND ($2::timestamptz IS NULL OR arrived_at >= $2) \
                     AND ($3::timestamptz IS NULL OR arrived_at < $3)), \
             i AS ( \
                 SELECT site_id, study_instance_uid, min(acquired_at) AS acquired, \
                     (array_agg(patient_sex ORDER BY received_at) \
                         FILTER (WHERE patient_sex <> ''))[1] AS patient_sex, \
                     (array_agg(patient_age_years ORDER BY received_at) \
                         FILTER (WHERE patient_age_years IS NOT NULL))[1] AS patient_age_years, \
                     (array_agg(trim(manufacturer || ' ' || manufacturer_model) ORDER BY received_at) \
                         FILTER (WHERE manufacturer <> '' OR manufacturer_model <> ''))[1] \
                         AS equipment \
                 FROM instances JOIN s USING (site_id, study_instance_uid) GROUP BY 1, 2), \
             f AS ( \
                 SELECT site_id, study_instance_uid, \
                     min(analysed_at) FILTER (WHERE status = 'analysed') AS first_analysed, \
                     max(analysed_at) AS ai_final, \
                     (array_agg(model_name || ' ' || model_version \
                         ORDER BY analysed_at DESC NULLS LAST))[1] AS model \
                 FROM findings JOIN s USING (site_id, study_instance_uid) GROUP BY 1, 2), \
             o AS ( \
                 SELECT a.site_id, a.study_instance_uid, min(a.at) AS first_opened \
                 FROM audit_log a JOIN s USING (site_id, study_instance_uid) \
                 WHERE a.action = 'study.read' GROUP BY 1, 2), \
             c AS ( \
                 SELECT site_id, study_instance_uid, min(claimed_at) AS claimed \
                 FROM claims JOIN s USING (site_id, study_instance_uid) GROUP BY 1, 2), \
             e AS ( \
                 SELECT site_id, \
                     (NULLIF(config->>'ai_enabled_from', '') || 'T00:00:00Z')::timestamptz AS ai_from \
                 FROM sites WHERE site_id = ANY($1)) \
             SELECT s.site_id, s.study_instance_uid, s.accession_number, \
                 COALESCE(r.urgency, s.urgency) AS urgency, \
                 COALESCE(r.ai_result, s.ai_result) AS ai_result, \
                 COALESCE(r.deadline, s.deadline) AS deadline, \
                 s.body_parts, s.arrived_at, s.created_at, \
                 f.first_analysed, f.ai_final, COALESCE(f.model, '') AS model, \
                 i.acquired, COALESCE(i.patient_sex, '') AS patient_sex, i.patient_age_years, \
                 COALESCE(i.equipment, '') AS equipment, \
                 o.first_opened, c.claimed, r.reported_at, r.fracture, \
                 CASE WHEN e.ai_from IS NULL THEN '' \
                     WHEN s.arrived_at < e.ai_from THEN 'before AI' ELSE 'with AI' END \
                     AS ai_period \
             FROM s \
             LEFT JOIN e USING (site_id) \
             LEFT JOIN reports r USING (site_id, study_instance_uid) \
             LEFT JOIN i USING (site_id, study_instance_uid) \
             LEFT JOIN f USING (site_id, study_instance_uid) \
             LEFT JOIN o USING (site_id, study_instance_uid) \
             LEFT JOIN c USING (site_id, study_instance_uid) \
             ORDER BY s.arrived_at, s.site_id, s.study_instance_uid",
            &[&sites, &from, &to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Timeline {
            site_id: row.get("site_id"),
            study_instance_uid: row.get("study_instance_uid"),
            accession_number: row.get("accession_number"),
            urgency: row.get("urgency"),
            ai_result: row.get("ai_result"),
            body_parts: row.get("body_parts"),
            model: row.get("model"),
            acquired: row.get("acquired"),
            received: row.get("arrived_at"),
            first_analysed: row.get("first_analysed"),
            ai_final: row.get("ai_final"),
            listed: row.get("created_at"),
            first_opened: row.get("first_opened"),
            claimed: row.get("claimed"),
            reported: row.get("reported_at"),
            deadline: row.get("deadline"),
            fracture: row.get("fracture"),
            ai_period: row.get("ai_period"),
            patient_sex: row.get("patient_sex"),
            patient_age_years: row.get("patient_age_years"),
            equipment: row.get("equipment"),
        })
        .collect())
}

/// How to group the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    All,
    Urgency,
    AiResult,
    BodyPart,
    ModelVersion,
    Site,
    /// PatientSex (M, F, O, or "(none)").
    Sex,
    /// Age bands, paediatric ones first ([`age_band`]).
    AgeBand,
    /// Manufacturer and model of the modality.
    Equipment,
}

impl GroupBy {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "all" => Some(GroupBy::All),
            "urgency" => Some(GroupBy::Urgency),
            "ai-result" => Some(GroupBy::AiResult),
            "body-part" => Some(GroupBy::BodyPart),
            "model-version" => Some(GroupBy::ModelVersion),
            "site" => Some(GroupBy::Site),
            "sex" => Some(GroupBy::Sex),
            "age-band" => Some(GroupBy::AgeBand),
            "equipment" => Some(GroupBy::Equipment),
            _ => None,
        }
    }

    /// The values a timeline counts under: a study of two body parts counts
    /// under each.
    fn keys(self, timeline: &Timeline) -> Vec<String> {
        let or_none = |value: &str| {
            if value.is_empty() {
                "(none)".to_owned()
            } else {
                value.to_owned()
            }
        };
        match self {
            GroupBy::All => vec!["all".into()],
            GroupBy::Urgency => vec![timeline.urgency.clone()],
            GroupBy::AiResult => vec![timeline.ai_result.clone()],
            GroupBy::BodyPart if timeline.body_parts.is_empty() => vec!["(none)".into()],
            GroupBy::BodyPart => timeline.body_parts.iter().map(|p| or_none(p)).collect(),
            GroupBy::ModelVersion => vec![or_none(&timeline.model)],
            GroupBy::Site => vec![timeline.site_id.clone()],
            GroupBy::Sex => vec![or_none(&timeline.patient_sex)],
            GroupBy::AgeBand => vec![age_band(timeline.patient_age_years).to_owned()],
            GroupBy::Equipment => vec![or_none(&timeline.equipment)],
        }
    }
}

/// Median, 90th and 95th percentiles and maximum of a set of durations, in
/// seconds; `None` when the set is empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub count: u64,
    pub median: f64,
    pub p90: f64,
    pub p95: f64,
    pub max: f64,
}

/// The `q`-quantile (0..=1) of sorted `values`, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower as f64)
}

pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Spread {
        count: values.len() as u64,
        median: quantile(&values, 0.5),
        p90: quantile(&values, 0.9),
        p95: quantile(&values, 0.95),
        max: values[values.len() - 1],
    })
}

/// The figures of one group.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub group: String,
    pub studies: u64,
    pub reported: u64,
    /// Acquired (else received) to reported, reported studies.
    pub turnaround_seconds: Option<Spread>,
    /// Reported by their deadline, of the reported studies.
    pub deadline_met: Proportion,
    /// Listed to first claimed, claimed studies.
    pub queue_wait_seconds: Option<Spread>,
    /// Not reported and past their deadline (their clinical target) at `now`.
    pub waiting_past_target: u64,
    /// Timelines in an impossible order (reported before acquired or
    /// received, claimed before listed): counted here and left out of the
    /// turnaround and queue wait, never silently dropped.
    pub impossible_order: u64,
}

/// The figures of `timelines` grouped by `by`, at `now`; with `before_after_ai`,
/// each group split into the studies received before the site's AI began and
/// those received after ("before AI · emergency", "with AI · emergency").
pub fn figures(
    timelines: &[Timeline],
    by: GroupBy,
    before_after_ai: bool,
    now: OffsetDateTime,
) -> Vec<Figures> {
    let mut groups: BTreeMap<String, Vec<&Timeline>> = BTreeMap::new();
    for timeline in timelines {
        for key in by.keys(timeline) {
            let key = if before_after_ai {
                let period = if timeline.ai_period.is_empty() {
                    "AI start unset"
                } else {
                    timeline.ai_period.as_str()
                };
                format!("{period} · {key}")
            } else {
                key
            };
            groups.entry(key).or_default().push(timeline);
        }
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let reported: Vec<&&Timeline> =
                members.iter().filter(|t| t.reported.is_some()).collect();
            // A report in an impossible order says nothing of the deadline.
            let judged: Vec<&&&Timeline> =
                reported.iter().filter(|t| !t.impossible_order()).collect();
            let met = judged
                .iter()
                .filter(|t| t.reported.is_some_and(|at| at <= t.deadline))
                .count() as u64;
            Figures {
                group,
                studies: members.len() as u64,
                reported: reported.len() as u64,
                turnaround_seconds: spread(
                    members
                        .iter()
                        .filter(|t| !t.impossible_order())
                        .filter_map(|t| t.turnaround_seconds())
                        .collect(),
                ),
                impossible_order: members.iter().filter(|t| t.impossible_order()).count() as u64,
                deadline_met: Proportion::new(met, judged.len() as u64),
                queue_wait_seconds: spread(
                    members
                        .iter()
                        .filter(|t| !t.impossible_order())
                        .filter_map(|t| t.queue_wait_seconds())
                        .collect(),
                ),
                waiting_past_target: members
                    .iter()
                    .filter(|t| t.reported.is_none() && t.deadline < now)
                    .count() as u64,
            }
        })
        .collect()
}

/// Sensitivity, specificity, PPV and NPV of the AI result against the
/// readers' outcomes, at one operating point.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub sensitivity: Proportion,
    pub specificity: Proportion,
    pub ppv: Proportion,
    pub npv: Proportion,
}

impl Accuracy {
    /// `cases`: (flagged by the AI, fracture per the reader).
    fn of(cases: &[(bool, bool)]) -> Self {
        let count = |flagged: bool, fracture: bool| {
            cases
                .iter()
                .filter(|&&case| case == (flagged, fracture))
                .count() as u64
        };
        let (tp, fp, fn_, tn) = (
            count(true, true),
            count(true, false),
            count(false, true),
            count(false, false),
        );
        Self {
            sensitivity: Proportion::new(tp, tp + fn_),
            specificity: Proportion::new(tn, tn + fp),
            ppv: Proportion::new(tp, tp + fp),
            npv: Proportion::new(tn, tn + fn_),
        }
    }
}

/// How the AI did on the studies whose reader recorded yes or no (equivocal
/// ones are counted and left out), at "suspected" (the AI result suspected)
/// and at "possible" (suspected or possible).
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyFigures {
    pub group: String,
    pub with_outcome: u64,
    pub equivocal: u64,
    pub at_suspected: Accuracy,
    pub at_possible: Accuracy,
}

/// The AI's accuracy against the readers' outcomes, per model and, within
/// each model, per `by` (all, body part, urgency, ...). Studies the AI did
/// not analyse, or without an outcome, are not counted.
pub fn accuracy(timelines: &[Timeline], by: GroupBy) -> Vec<(String, Vec<AccuracyFigures>)> {
    let mut models: BTreeMap<String, BTreeMap<String, Vec<&Timeline>>> = BTreeMap::new();
    for timeline in timelines {
        let analysed = matches!(
            timeline.ai_result.as_str(),
            "suspected" | "possible" | "no-finding"
        );
        if !analysed || timeline.fracture.is_none() || timeline.model.is_empty() {
            continue;
        }
        let groups = models.entry(timeline.model.clone()).or_default();
        for key in by.keys(timeline) {
            groups.entry(key).or_default().push(timeline);
        }
    }
    models
        .into_iter()
        .map(|(model, groups)| {
            let figures = groups
                .into_iter()
                .map(|(group, members)| {
                    let decided: Vec<&&Timeline> = members
                        .iter()
                        .filter(|t| matches!(t.fracture.as_deref(), Some("yes" | "no")))
                        .collect();
                    let cases = |flagged: fn(&str) -> bool| -> Vec<(bool, bool)> {
                        decided
                            .iter()
                            .map(|t| (flagged(&t.ai_result), t.fracture.as_deref() == Some("yes")))
                            .collect()
                    };
                    AccuracyFigures {
                        group,
                        with_outcome: decided.len() as u64,
                        equivocal: (members.len() - decided.len()) as u64,
                        at_suspected: Accuracy::of(&cases(|r| r == "suspected")),
                        at_possible: Accuracy::of(&cases(|r| r == "suspected" || r == "possible")),
                    }
                })
                .collect();
            (model, figures)
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ModelAccuracy {
    pub model: String,
    pub groups: Vec<AccuracyFigures>,
}

/// The population stability index above which a week's scores count as
/// drifted from the model's reference (0.25: the usual line of a large shift).
pub const DRIFT_THRESHOLD: f64 = 0.25;

/// The fewest images a week needs for its stability index to be judged: with
/// fewer, empty bins alone push the index past the threshold.
pub const DRIFT_MIN_IMAGES: u64 = 100;

/// One week of a model's scores at a site against its reference.
#[derive(Debug, Clone, Serialize)]
pub struct DriftWeek {
    pub week: String,
    pub images: u64,
    pub psi: f64,
    /// Whether the week had at least [`DRIFT_MIN_IMAGES`] images.
    pub enough_images: bool,
    /// Above the threshold, with enough images.
    pub drifted: bool,
}

/// A model's drift at a site: its registered reference and each ISO week.
#[derive(Debug, Clone, Serialize)]
pub struct ModelDrift {
    pub model: String,
    pub reference_images: i64,
    /// What the reference was measured on.
    pub reference_data: String,
    pub threshold: f64,
    pub weeks: Vec<DriftWeek>,
}

/// One week's `scores` against the `expected` shares of the reference.
pub fn drift_week(week: String, expected: &[f64], scores: &[f64]) -> DriftWeek {
    let mut counts = [0_u64; fxtriage_core::stats::SCORE_BINS];
    for (bin, share) in fxtriage_core::stats::score_distribution(scores)
        .iter()
        .enumerate()
    {
        counts[bin] = (share * scores.len() as f64).round() as u64;
    }
    drift_of_counts(week, expected, &counts)
}

/// [`drift_week`] from the scores counted per bin.
pub fn drift_of_counts(week: String, expected: &[f64], counts: &[u64]) -> DriftWeek {
    let images: u64 = counts.iter().sum();
    let actual: Vec<f64> = counts
        .iter()
        .map(|count| *count as f64 / images.max(1) as f64)
        .collect();
    let psi = fxtriage_core::stats::population_stability_index(expected, &actual);
    let enough_images = images >= DRIFT_MIN_IMAGES;
    DriftWeek {
        week,
        images,
        psi,
        enough_images,
        drifted: enough_images && psi > DRIFT_THRESHOLD,
    }
}

/// Days of scores the current drift is judged on (the admins' banner and the
/// `fxtriage_model_score_psi` metric).
pub const DRIFT_WINDOW_DAYS: i64 = 7;

/// The current drift of one model at one site: its scores of the last
/// [`DRIFT_WINDOW_DAYS`] against its registered reference.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentDrift {
    pub site: String,
    pub model: String,
    pub reference_data: String,
    #[serde(flatten)]
    pub window: DriftWeek,
}

/// The current drift of every model with a registered reference, at `site`
/// or at every site; the scores are counted per bin in the database, so that
/// a scrape moves ten numbers per model and site, not every score.
pub async fn current_drift(
    client: &tokio_postgres::Client,
    site: Option<&str>,
) -> Result<Vec<CurrentDrift>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT f.site_id, m.model_sha256, m.model_name || ' ' || m.model_version AS model, \
                 m.data, m.bins, \
                 LEAST(floor(GREATEST(LEAST(f.probability::float8, 1), 0) * 10), 9)::int AS bin, \
                 count(*) AS images \
             FROM findings f JOIN model_references m USING (model_sha256) \
             WHERE f.status = 'analysed' AND ($1::text IS NULL OR f.site_id = $1) \
                 AND f.analysed_at >= now() - make_interval(days => $2::int) \
             GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 3, 2",
            &[&site, &(DRIFT_WINDOW_DAYS as i32)],
        )
        .await?;
    // (site, model name, model SHA-256) -> (reference data, reference bins,
    // counts per bin): two builds of one name and version stay apart.
    type Counted = (String, Vec<f64>, Vec<u64>);
    let mut found: BTreeMap<(String, String, String), Counted> = BTreeMap::new();
    for row in &rows {
        let bins: serde_json::Value = row.get("bins");
        let entry = found
            .entry((
                row.get("site_id"),
                row.get("model"),
                row.get("model_sha256"),
            ))
            .or_insert_with(|| {
                (
                    row.get("data"),
                    bins.as_array()
                        .map(|bins| bins.iter().filter_map(serde_json::Value::as_f64).collect())
                        .unwrap_or_default(),
                    vec![0; fxtriage_core::stats::SCORE_BINS],
                )
            });
        let bin: i32 = row.get("bin");
        let images: i64 = row.get("images");
        entry.2[bin.clamp(0, 9) as usize] += images.max(0) as u64;
    }
    Ok(found
        .into_iter()
        .map(
            |((site, model, _), (reference_data, expected, counts))| CurrentDrift {
                site,
                model,
                reference_data,
                window: drift_of_counts(
                    format!("last {DRIFT_WINDOW_DAYS} days"),
                    &expected,
                    &counts,
                ),
            },
        )
        .collect())
}

#[derive(Debug, Serialize)]
pub struct DriftAlertsResponse {
    pub window_days: i64,
    pub threshold: f64,
    pub min_images: u64,
    /// Every model with a reference that scored images here in the window.
    pub models: Vec<CurrentDrift>,
    /// Whether any of them drifted: the admins' banner.
    pub drifted: bool,
}

/// `GET /api/v1/sites/{site}/drift-alerts`: for the site's admins.
pub async fn get_drift_alerts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<DriftAlertsResponse>> {
    caller.require_admin()?;
    let client = state.pool.get().await?;
    let models = current_drift(&client, Some(caller.site.as_str()))
        .await
        .doing("comparing the scores with the models' references")?;
    Ok(Json(DriftAlertsResponse {
        window_days: DRIFT_WINDOW_DAYS,
        threshold: DRIFT_THRESHOLD,
        min_images: DRIFT_MIN_IMAGES,
        drifted: models.iter().any(|model| model.window.drifted),
        models,
    }))
}

/// Each ISO week's scores (image probabilities) of each model with a
/// registered reference, at `site`, analysed in `from..to`, against the
/// reference.
pub async fn drift(
    client: &tokio_postgres::Client,
    site: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<ModelDrift>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.model_name || ' ' || m.model_version AS model, m.images, m.data, m.bins, \
                 to_char(f.analysed_at AT TIME ZONE 'UTC', 'IYYY-\"W\"IW') AS week, \
                 array_agg(f.probability::float8) AS scores \
             FROM findings f JOIN model_references m USING (model_sha256) \
             WHERE f.site_id = $1 AND f.status = 'analysed' \
                 AND f.analysed_at >= $2 AND f.analysed_at < $3 \
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 5",
            &[&site, &from, &to],
        )
        .await?;
    let mut models: BTreeMap<String, ModelDrift> = BTreeMap::new();
    for row in &rows {
        let model: String = row.get("model");
        let bins: serde_json::Value = row.get("bins");
        let expected: Vec<f64> = bins
            .as_array()
            .map(|bins| bins.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        let scores: Vec<f64> = row.get("scores");
        models
            .entry(model.clone())
            .or_insert_with(|| ModelDrift {
                model,
                reference_images: row.get("images"),
                reference_data: row.get("data"),
                threshold: DRIFT_THRESHOLD,
                weeks: Vec::new(),
            })
            .weeks
            .push(drift_week(row.get("week"), &expected, &scores));
    }
    Ok(models.into_values().collect())
}

#[derive(Debug, Serialize)]
pub struct MonitoringResponse {
    pub site: String,
    pub by: GroupBy,
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// What the figures are: this site's studies, against its readers'
    /// outcomes; never the model card's.
    pub data: String,
    pub models: Vec<ModelAccuracy>,
    /// The weekly score distribution of each model with a registered
    /// reference against it, over the period (default: the last 12 weeks).
    pub drift: Vec<ModelDrift>,
}

/// `GET /api/v1/sites/{site}/monitoring?from=&to=&by=`: the AI's accuracy on
/// this site's studies against its readers' outcomes, per model.
pub async fn get_monitoring(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<MonitoringResponse>> {
    let (from, to, by, _) = parse_query(query)?;
    let client = state.pool.get().await?;
    let found = timelines(&client, &[caller.site.as_str().to_owned()], from, to)
        .await
        .doing("reading the studies' timelines")?;
    let drift_to = to.unwrap_or_else(OffsetDateTime::now_utc);
    let drift_from = from.unwrap_or(drift_to - time::Duration::weeks(12));
    let drifted = drift(&client, caller.site.as_str(), drift_from, drift_to)
        .await
        .doing("comparing the scores with the models' references")?;
    Ok(Json(MonitoringResponse {
        site: caller.site.as_str().to_owned(),
        by,
        from,
        to,
        data: format!(
            "studies of site {} received in the period whose reader recorded an outcome",
            caller.site.as_str()
        ),
        models: accuracy(&found, by)
            .into_iter()
            .map(|(model, groups)| ModelAccuracy { model, groups })
            .collect(),
        drift: drifted,
    }))
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// RFC 3339; studies received at or after it.
    pub from: Option<String>,
    /// RFC 3339; studies received before it.
    pub to: Option<String>,
    pub by: Option<String>,
    /// `ai`: each group before and after the site's AI began, side by side.
    pub compare: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AnalyticsResponse {
    pub site: String,
    pub by: GroupBy,
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Whether each group is split before and after the site's AI began.
    pub before_after_ai: bool,
    pub groups: Vec<Figures>,
}

/// A reading network's figures: its sites' studies together.
#[derive(Debug, Serialize)]
pub struct GroupAnalyticsResponse {
    pub group: String,
    pub sites: Vec<String>,
    pub by: GroupBy,
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub before_after_ai: bool,
    pub groups: Vec<Figures>,
}

/// `GET /api/v1/groups/{group}/analytics`: the figures over the group's
/// sites in service (`?by=site` puts them side by side).
pub async fn get_group_analytics(
    State(state): State<AppState>,
    Extension(caller): Extension<GroupCaller>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<GroupAnalyticsResponse>> {
    let (from, to, by, before_after_ai) = parse_query(query)?;
    let sites: Vec<String> = caller
        .sites
        .iter()
        .map(|site| site.as_str().to_owned())
        .collect();
    let (at, groups) = figures_of(&state, &sites, (from, to, by, before_after_ai)).await?;
    Ok(Json(GroupAnalyticsResponse {
        group: caller.group.as_str().to_owned(),
        sites,
        by,
        from,
        to,
        at,
        before_after_ai,
        groups,
    }))
}

/// The figures of `sites` over the period of `query`, and when they were made.
async fn figures_of(
    state: &AppState,
    sites: &[String],
    (from, to, by, before_after_ai): Period,
) -> ApiResult<(OffsetDateTime, Vec<Figures>)> {
    let client = state.pool.get().await?;
    let found = timelines(&client, sites, from, to)
        .await
        .doing("reading the studies' timelines")?;
    let at = OffsetDateTime::now_utc();
    Ok((at, figures(&found, by, before_after_ai, at)))
}

fn parse_time(name: &str, value: Option<&str>) -> ApiResult<Option<OffsetDateTime>> {
    value
        .filter(|value| !value.is_empty())
        .map(|value| {
            OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                ApiError::bad_request(format!("{name} is an RFC 3339 time, not {value:?}"))
            })
        })
        .transpose()
}

type Period = (
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    GroupBy,
    bool,
);

/// The shortest period the API groups by sex, age band or equipment.
pub const SUBGROUP_MIN_DAYS: i64 = 7;

fn parse_query(query: Result<Query<AnalyticsQuery>, QueryRejection>) -> ApiResult<Period> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let from = parse_time("from", query.from.as_deref())?;
    let to = parse_time("to", query.to.as_deref())?;
    let by = match query.by.as_deref() {
        None | Some("") => GroupBy::All,
        Some(value) => GroupBy::parse(value).ok_or_else(|| {
            ApiError::bad_request(
                "by is one of all, urgency, ai-result, body-part, model-version, site, sex, age-band, equipment",
            )
        })?,
    };
    // Sex, age and equipment are only ever shown over a week or more, so that
    // a narrow window cannot single out one patient's study.
    if matches!(by, GroupBy::Sex | GroupBy::AgeBand | GroupBy::Equipment) {
        let from = from.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let to = to.unwrap_or_else(OffsetDateTime::now_utc);
        if to - from < time::Duration::days(SUBGROUP_MIN_DAYS) {
            return Err(ApiError::bad_request(format!(
                "by sex, age-band or equipment needs a period of at least {SUBGROUP_MIN_DAYS} days"
            )));
        }
    }
    let before_after_ai = match query.compare.as_deref() {
        None | Some("") => false,
        Some("ai") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "compare is `ai` or absent, not {other:?}"
            )));
        }
    };
    Ok((from, to, by, before_after_ai))
}

pub async fn get_analytics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<AnalyticsResponse>> {
    let (from, to, by, before_after_ai) = parse_query(query)?;
    let site = caller.site.as_str().to_owned();
    let (at, groups) = figures_of(
        &state,
        std::slice::from_ref(&site),
        (from, to, by, before_after_ai),
    )
    .await?;
    Ok(Json(AnalyticsResponse {
        site,
        by,
        from,
        to,
        at,
        before_after_ai,
        groups,
    }))
}

/// One day of the period: studies received that day, how many of them are
/// reported, and their turnaround's median and 90th percentile.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: String,
    pub received: u64,
    pub reported: u64,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// Turnarounds of one AI result, counted in bins.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    pub ai_result: String,
    pub counts: Vec<u64>,
}

/// What the web page plots.
#[derive(Debug, Clone, Serialize)]
pub struct Plots {
    /// The upper bounds of the turnaround bins, in hours; the last bin is
    /// everything above the last bound.
    pub bin_upper_hours: Vec<f64>,
    pub distribution: Vec<Distribution>,
    pub daily: Vec<Day>,
    /// The mean number of studies waiting (listed, not yet reported) at each
    /// hour of the day in `time_zone`, over the days of the period.
    pub queue_by_hour: Vec<f64>,
    /// Where the days (of arrival) and the hours of the day are counted: the
    /// site's `time_zone`, else UTC.
    pub time_zone: String,
}

/// The local date and hour of `at` in `zone`.
fn local(at: OffsetDateTime, zone: &jiff::tz::TimeZone) -> (String, usize) {
    let zoned = jiff::Timestamp::from_second(at.unix_timestamp())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(zone.clone());
    (zoned.date().to_string(), zoned.hour() as usize)
}

const BIN_UPPER_HOURS: [f64; 7] = [0.5, 1.0, 2.0, 4.0, 8.0, 24.0, 48.0];

/// The plots' data of `timelines` over `from..to`, days and hours in `zone`.
pub fn plots(
    timelines: &[Timeline],
    from: OffsetDateTime,
    to: OffsetDateTime,
    zone: &jiff::tz::TimeZone,
) -> Plots {
    let mut distribution: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut days: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    for timeline in timelines {
        let day = days.entry(local(timeline.received, zone).0).or_default();
        day.0 += 1;
        if timeline.impossible_order() {
            continue;
        }
        if let Some(seconds) = timeline.turnaround_seconds() {
            day.1.push(seconds);
            let hours = seconds / 3600.0;
            let bin = BIN_UPPER_HOURS
                .iter()
                .position(|&upper| hours <= upper)
                .unwrap_or(BIN_UPPER_HOURS.len());
            distribution
                .entry(timeline.ai_result.clone())
                .or_insert_with(|| vec![0; BIN_UPPER_HOURS.len() + 1])[bin] += 1;
        }
    }
    let daily = days
        .into_iter()
        .map(|(day, (received, turnarounds))| {
            let spread = spread(turnarounds);
            Day {
                day,
                received,
                reported: spread.map_or(0, |s| s.count),
                median_seconds: spread.map(|s| s.median),
                p90_seconds: spread.map(|s| s.p90),
            }
        })
        .collect();
    // Each whole UTC hour of the period: the studies waiting then, summed
    // under its local hour of the day (a day with a daylight-saving change has
    // one local hour fewer or one more; in a zone with a half-hour offset the
    // sample is at half past the local hour).
    let mut sums = [0_u64; 24];
    let mut samples = [0_u64; 24];
    let from = from.to_offset(time::UtcOffset::UTC);
    let mut at = from.replace_time(time::Time::MIDNIGHT);
    let end = to.min(OffsetDateTime::now_utc());
    while at < end {
        if at >= from {
            let waiting = timelines
                .iter()
                .filter(|t| t.listed <= at && t.reported.is_none_or(|reported| reported > at))
                .count() as u64;
            let hour = local(at, zone).1;
            sums[hour] += waiting;
            samples[hour] += 1;
        }
        at += time::Duration::HOUR;
    }
    Plots {
        bin_upper_hours: BIN_UPPER_HOURS.to_vec(),
        distribution: distribution
            .into_iter()
            .map(|(ai_result, counts)| Distribution { ai_result, counts })
            .collect(),
        daily,
        queue_by_hour: sums
            .iter()
            .zip(samples)
            .map(|(&sum, count)| {
                if count == 0 {
                    0.0
                } else {
                    sum as f64 / count as f64
                }
            })
            .collect(),
        time_zone: zone.iana_name().unwrap_or("UTC").to_owned(),
    }
}

/// `GET /api/v1/sites/{site}/analytics/plots?from=&to=`: the web page's plots
/// (default: the last 30 days).
pub async fn get_plots(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<Plots>> {
    let zone = state
        .sites
        .current()
        .site(caller.site.as_str())
        .map_or(jiff::tz::TimeZone::UTC, |site| site.zone());
    plots_of(&state, &[caller.site.as_str().to_owned()], query, &zone).await
}

/// `GET /api/v1/groups/{group}/analytics/plots?from=&to=`: the plots of a
/// reading network, its sites in service together; days and hours in their
/// time zone when they all have the same one, else in UTC.
pub async fn get_group_plots(
    State(state): State<AppState>,
    Extension(caller): Extension<GroupCaller>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<Plots>> {
    let registry = state.sites.current();
    let zones: Vec<jiff::tz::TimeZone> = caller
        .sites
        .iter()
        .map(|site| {
            registry
                .site(site.as_str())
                .map_or(jiff::tz::TimeZone::UTC, |site| site.zone())
        })
        .collect();
    let zone = match zones.split_first() {
        Some((first, rest))
            if rest
                .iter()
                .all(|zone| zone.iana_name() == first.iana_name()) =>
        {
            first.clone()
        }
        _ => jiff::tz::TimeZone::UTC,
    };
    let sites: Vec<String> = caller
        .sites
        .iter()
        .map(|site| site.as_str().to_owned())
        .collect();
    plots_of(&state, &sites, query, &zone).await
}

/// The plots of `sites` over the period of `query` (default: the last 30
/// days, at most 366).
async fn plots_of(
    state: &AppState,
    sites: &[String],
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
    zone: &jiff::tz::TimeZone,
) -> ApiResult<Json<Plots>> {
    let (from, to, _, _) = parse_query(query)?;
    let now = OffsetDateTime::now_utc();
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - time::Duration::days(30));
    if to - from > time::Duration::days(366) {
        return Err(ApiError::bad_request(
            "a period of the plots is at most 366 days",
        ));
    }
    let client = state.pool.get().await?;
    let found = timelines(&client, sites, Some(from), Some(to))
        .await
        .doing("reading the studies' timelines")?;
    Ok(Json(plots(&found, from, to, zone)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(received: OffsetDateTime, turnaround_minutes: Option<i64>, ai: &str) -> Timeline {
        Timeline {
            site_id: "demo".into(),
            study_instance_uid: "1.2".into(),
            accession_number: String::new(),
            urgency: "outpatient".into(),
            ai_result: ai.into(),
            body_parts: vec!["WRIST".into()],
            model: String::new(),
            acquired: None,
            received,
            first_analysed: None,
            ai_final: None,
            listed: received,
            first_opened: None,
            claimed: None,
            reported: turnaround_minutes.map(|m| received + time::Duration::minutes(m)),
            deadline: received + time::Duration::days(2),
            fracture: None,
            ai_period: String::new(),
            patient_sex: String::new(),
            patient_age_years: None,
            equipment: String::new(),
        }
    }

    #[test]
    fn age_bands_put_children_in_their_own_bands() {
        assert_eq!(age_band(Some(0)), "00-01 (infant)");
        assert_eq!(age_band(Some(7)), "02-11 (child)");
        let mut bands: Vec<&str> = [90, 30, 15, 7, 0, 50, 70]
            .map(|age| age_band(Some(age)))
            .to_vec();
        bands.sort();
        assert_eq!(
            bands[..3],
            ["00-01 (infant)", "02-11 (child)", "12-17 (adolescent)"]
        );
        assert_eq!(age_band(Some(17)), "12-17 (adolescent)");
        assert_eq!(age_band(Some(18)), "18-44");
        assert_eq!(age_band(Some(80)), "80+");
        assert_eq!(age_band(None), "(age unknown)");
    }

    #[test]
    fn plots_count_bins_days_and_the_queue_per_hour() {
        let day = time::macros::datetime!(2026-03-02 0:00 UTC);
        let timelines = [
            // Received 08:00, reported 20 minutes later; 10:00, after 3 hours.
            timeline(day + time::Duration::hours(8), Some(20), "suspected"),
            timeline(day + time::Duration::hours(10), Some(180), "no-finding"),
            // Received the next day at 01:30, never reported.
            timeline(
                day + time::Duration::minutes(25 * 60 + 30),
                None,
                "suspected",
            ),
        ];
        let plots = plots(
            &timelines,
            day,
            day + time::Duration::days(2),
            &jiff::tz::TimeZone::UTC,
        );
        let suspected = plots
            .distribution
            .iter()
            .find(|d| d.ai_result == "suspected")
            .unwrap();
        assert_eq!(
            suspected.counts[0], 1,
            "20 minutes: the first bin (up to 30 min)"
        );
        let no_finding = plots
            .distribution
            .iter()
            .find(|d| d.ai_result == "no-finding")
            .unwrap();
        assert_eq!(no_finding.counts[3], 1, "3 hours: the bin up to 4 h");
        assert_eq!(plots.daily.len(), 2);
        assert_eq!(plots.daily[0].day, "2026-03-02");
        assert_eq!((plots.daily[0].received, plots.daily[0].reported), (2, 2));
        assert_eq!(plots.daily[0].median_seconds, Some(100.0 * 60.0));
        assert_eq!((plots.daily[1].received, plots.daily[1].reported), (1, 0));
        // The mean over the two days of the studies waiting at each hour: at
        // 11:00 the 10:00 study on the first day and the unreported one on
        // the second; at 09:00 only the unreported one (the 08:00 study was
        // reported at 08:20); at 01:00 none (the unreported one came at 01:30).
        assert_eq!(plots.queue_by_hour[11], 1.0);
        assert_eq!(plots.queue_by_hour[9], 0.5);
        assert_eq!(plots.queue_by_hour[2], 0.5);
        assert_eq!(plots.queue_by_hour[1], 0.0);
        assert_eq!(plots.time_zone, "UTC");

        // The same studies at a site in New York (UTC-5 in early March): all
        // three arrive on the local 2 March (the last at 20:30), and the hours
        // of the day are local: 11:00 UTC is 06:00 there.
        let zone = jiff::tz::TimeZone::get("America/New_York").expect("zone");
        let local = super::plots(&timelines, day, day + time::Duration::days(2), &zone);
        assert_eq!(local.time_zone, "America/New_York");
        assert_eq!(local.daily.len(), 1, "{:?}", local.daily);
        assert_eq!(local.daily[0].day, "2026-03-02");
        assert_eq!(local.daily[0].received, 3);
        assert_eq!(local.queue_by_hour[6], plots.queue_by_hour[11]);
        assert_eq!(local.queue_by_hour[4], plots.queue_by_hour[9]);
        assert_eq!(local.queue_by_hour[20], plots.queue_by_hour[1]);
    }

    #[test]
    fn a_week_drifts_only_with_enough_images_past_the_threshold() {
        let reference = [0.1; 10];
        let spread: Vec<f64> = (0..200).map(|i| (i % 10) as f64 / 10.0 + 0.05).collect();
        let stable = drift_week("2026-W01".into(), &reference, &spread);
        assert!(stable.psi.abs() < 1e-9 && !stable.drifted && stable.enough_images);
        let shifted = drift_week("2026-W02".into(), &reference, &[0.97; 150]);
        assert!(shifted.psi > DRIFT_THRESHOLD && shifted.drifted);
        let few = drift_week("2026-W03".into(), &reference, &[0.97; 20]);
        assert!(few.psi > DRIFT_THRESHOLD && !few.drifted && !few.enough_images);
    }

    #[test]
    fn impossible_orders_stay_out_of_every_time() {
        let day = time::macros::datetime!(2026-03-02 0:00 UTC);
        let mut claimed_early = timeline(day, Some(60), "suspected");
        claimed_early.claimed = Some(day - time::Duration::hours(1));
        let reported_early = timeline(day, Some(-30), "suspected");
        let fine = timeline(day, Some(120), "suspected");
        let all = [claimed_early, reported_early, fine];
        let figures = figures(&all, GroupBy::All, false, day + time::Duration::days(1));
        assert_eq!(figures[0].impossible_order, 2);
        assert_eq!(figures[0].turnaround_seconds.unwrap().count, 1);
        assert_eq!(figures[0].turnaround_seconds.unwrap().median, 7200.0);
        assert!(figures[0].queue_wait_seconds.is_none());
        assert_eq!(figures[0].deadline_met.total, 1);
        let plots = plots(
            &all,
            day,
            day + time::Duration::days(1),
            &jiff::tz::TimeZone::UTC,
        );
        let counts = &plots.distribution[0].counts;
        assert_eq!(
            counts.iter().sum::<u64>(),
            1,
            "only the sound timeline: {counts:?}"
        );
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let values = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&values, 0.5), 25.0);
        assert_eq!(quantile(&values, 0.0), 10.0);
        assert_eq!(quantile(&values, 1.0), 40.0);
        assert!((quantile(&values, 0.9) - 37.0).abs() < 1e-9);
        let one = spread(vec![5.0]).unwrap();
        assert_eq!((one.median, one.p95, one.max), (5.0, 5.0, 5.0));
        assert!(spread(Vec::new()).is_none());
    }
}
