//! The safety net for missed fractures: the site's reported studies whose
//! report says no fracture while the AI result at report time was suspected
//! (and, when asked, possible), as a list of their own for a second look, with
//! who reviewed each and what they concluded.
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /api/v1/sites/{site}/discrepancies[?include=suspected\|possible]` | reader or admin | the list, unreviewed first, and counts per ISO week (without `include`: the site's `second_look.include_possible`) |
//! | `POST /api/v1/sites/{site}/studies/{study}/discrepancy-review` | reader or admin | record the second look: `{"conclusion": "fracture-confirmed" \| "no-fracture" \| "equivocal", "note"?, "reviewer"?}` |
//!
//! A discrepancy exists only where the reader recorded an outcome
//! ([`crate::reports`]); a report without one is never counted as "no
//! fracture". Each study is reviewed once: the same reviewer again answers the
//! stored review, anyone else gets a conflict. Every read and review is in the
//! audit log.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::StudyPath;
use crate::views::{parse_body, rfc3339};

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscrepanciesQuery {
    /// `possible`: also the studies the AI called possible.
    pub include: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Review {
    pub reviewer: String,
    pub reviewed_at: String,
    pub conclusion: String,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct Discrepancy {
    pub study_instance_uid: String,
    pub accession_number: String,
    pub body_parts: Vec<String>,
    pub urgency: String,
    /// The AI result and probability when the study was reported.
    pub ai_result: String,
    pub probability: Option<f32>,
    pub reader: String,
    pub reported_at: String,
    pub review: Option<Review>,
}

/// Per ISO week of the report: discrepancies, how many were reviewed, and how
/// many of those confirmed a fracture.
#[derive(Debug, Serialize)]
pub struct Week {
    pub week: String,
    pub discrepancies: i64,
    pub reviewed: i64,
    pub confirmed: i64,
}

#[derive(Debug, Serialize)]
pub struct DiscrepanciesResponse {
    /// The AI results counted: suspected, and possible when asked.
    pub ai_results: Vec<&'static str>,
    pub discrepancies: Vec<Discrepancy>,
    pub weeks: Vec<Week>,
}

/// The AI results a query counts: the site's setting (`[site.second_look]
/// include_possible`) unless the query says `suspected` or `possible`.
fn ai_results(
    query: &DiscrepanciesQuery,
    site_includes_possible: bool,
) -> ApiResult<Vec<&'static str>> {
    match query.include.as_deref() {
        None | Some("") if site_includes_possible => Ok(vec!["suspected", "possible"]),
        None | Some("") | Some("suspected") => Ok(vec!["suspected"]),
        Some("possible") => Ok(vec!["suspected", "possible"]),
        Some(other) => Err(ApiError::bad_request(format!(
            "include is `suspected`, `possible` or absent (the site's setting), not {other:?}"
        ))),
    }
}

fn review_of(row: &Row) -> Option<Review> {
    let reviewer: Option<String> = row.get("reviewer");
    Some(Review {
        reviewer: reviewer?,
        reviewed_at: rfc3339(row.get::<_, OffsetDateTime>("reviewed_at")),
        conclusion: row.get("conclusion"),
        note: row.get("note"),
    })
}

pub async fn get_discrepancies(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<DiscrepanciesQuery>, QueryRejection>,
) -> ApiResult<Json<DiscrepanciesResponse>> {
    caller.require_reader()?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let site_includes_possible = state
        .sites
        .current()
        .site(caller.site.as_str())
        .is_some_and(|site| site.second_look.include_possible);
    let included = ai_results(&query, site_includes_possible)?;
    let included_owned: Vec<String> = included.iter().map(|&r| r.to_owned()).collect();
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT r.study_instance_uid, s.accession_number, s.body_parts, r.urgency, \
                 r.ai_result, r.probability, r.reader, r.reported_at, \
                 v.reviewer, v.reviewed_at, v.conclusion, v.note \
             FROM reports r \
             JOIN studies s USING (site_id, study_instance_uid) \
             LEFT JOIN discrepancy_reviews v USING (site_id, study_instance_uid) \
             WHERE r.site_id = $1 AND r.fracture = 'no' AND r.ai_result = ANY($2) \
             ORDER BY (v.reviewer IS NULL) DESC, r.reported_at DESC, r.study_instance_uid \
             LIMIT 1000",
            &[&caller.site.as_str(), &included_owned],
        )
        .await
        .doing("listing the discrepancies")?;
    let discrepancies = rows
        .iter()
        .map(|row| Discrepancy {
            study_instance_uid: row.get("study_instance_uid"),
            accession_number: row.get("accession_number"),
            body_parts: row.get("body_parts"),
            urgency: row.get("urgency"),
            ai_result: row.get("ai_result"),
            probability: row.get("probability"),
            reader: row.get("reader"),
            reported_at: rfc3339(row.get::<_, OffsetDateTime>("reported_at")),
            review: review_of(row),
        })
        .collect();
    let weeks = client
        .query(
            "SELECT to_char(r.reported_at AT TIME ZONE 'UTC', 'IYYY-\"W\"IW') AS week, \
                 count(*) AS discrepancies, count(v.reviewer) AS reviewed, \
                 count(*) FILTER (WHERE v.conclusion = 'fracture-confirmed') AS confirmed \
             FROM reports r \
             LEFT JOIN discrepancy_reviews v USING (site_id, study_instance_uid) \
             WHERE r.site_id = $1 AND r.fracture = 'no' AND r.ai_result = ANY($2) \
             GROUP BY 1 ORDER BY 1",
            &[&caller.site.as_str(), &included_owned],
        )
        .await
        .doing("counting the discrepancies per week")?
        .iter()
        .map(|row| Week {
            week: row.get("week"),
            discrepancies: row.get("discrepancies"),
            reviewed: row.get("reviewed"),
            confirmed: row.get("confirmed"),
        })
        .collect();
    audit::record(
        &client,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::caller(&caller),
            action: action::DISCREPANCIES_READ,
            study_instance_uid: None,
            sop_instance_uid: None,
            detail: serde_json::json!({ "ai_results": included }),
        },
    )
    .await?;
    Ok(Json(DiscrepanciesResponse {
        ai_results: included,
        discrepancies,
        weeks,
    }))
}

/// The body of a review.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Who looked again (a radiologist's login); the token id when absent.
    pub reviewer: Option<String>,
    pub conclusion: Option<String>,
    #[serde(default)]
    pub note: String,
}

const CONCLUSIONS: [&str; 3] = ["fracture-confirmed", "no-fracture", "equivocal"];
const MAX_NOTE_CHARS: usize = 2000;

pub async fn post_review(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> ApiResult<Json<Review>> {
    caller.require_reader()?;
    let study_uid = StudyPath::parse(path)?.study;
    let request: ReviewBody = parse_body(&body)?;
    let reviewer = caller.reader_name(request.reviewer.as_deref())?;
    let conclusion = request
        .conclusion
        .as_deref()
        .filter(|conclusion| CONCLUSIONS.contains(conclusion))
        .ok_or_else(|| {
            ApiError::bad_request(format!("conclusion is one of {}", CONCLUSIONS.join(", ")))
        })?
        .to_owned();
    let note = request.note.trim().to_owned();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::bad_request(format!(
            "a note is at most {MAX_NOTE_CHARS} characters"
        )));
    }

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    // The study must be a discrepancy: reported with no fracture while the AI
    // suspected one (or called it possible).
    let report = tx
        .query_opt(
            "SELECT ai_result FROM reports WHERE site_id = $1 AND study_instance_uid = $2 \
                 AND fracture = 'no' AND ai_result IN ('suspected', 'possible') FOR UPDATE",
            &[&caller.site.as_str(), &study_uid],
        )
        .await
        .doing("reading the report")?;
    let Some(report) = report else {
        return Err(ApiError::not_found().with_detail(serde_json::json!({
            "why": "the study is not reported as no fracture with an AI result of suspected or possible"
        })));
    };
    let ai_result: String = report.get("ai_result");
    let existing = tx
        .query_opt(
            "SELECT reviewer, reviewed_at, conclusion, note FROM discrepancy_reviews \
             WHERE site_id = $1 AND study_instance_uid = $2",
            &[&caller.site.as_str(), &study_uid],
        )
        .await
        .doing("reading the review")?;
    if let Some(existing) = existing.as_ref().and_then(review_of) {
        if existing.reviewer == reviewer
            && existing.conclusion == conclusion
            && existing.note == note
        {
            return Ok(Json(existing));
        }
        return Err(
            ApiError::conflict("the discrepancy was reviewed").with_detail(serde_json::json!({
                "reviewer": existing.reviewer,
                "reviewed_at": existing.reviewed_at,
            })),
        );
    }
    let row = tx
        .query_one(
            "INSERT INTO discrepancy_reviews (site_id, study_instance_uid, token_id, reviewer, \
                 conclusion, note) VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING reviewer, reviewed_at, conclusion, note",
            &[
                &caller.site.as_str(),
                &study_uid,
                &caller.token_id,
                &reviewer,
                &conclusion,
                &note,
            ],
        )
        .await
        .doing("recording the review")?;
    let review = review_of(&row).ok_or_else(ApiError::internal)?;
    audit::record(
        &tx,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::reader(&caller, &reviewer),
            action: action::DISCREPANCY_REVIEW,
            study_instance_uid: Some(&study_uid),
            sop_instance_uid: None,
            // The note is free text about a patient's study: it stays in the
            // review row, not in the audit detail.
            detail: serde_json::json!({
                "conclusion": conclusion,
                "ai_result": ai_result,
                "with_note": !note.is_empty(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(review))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_is_counted_when_asked_or_when_the_site_says_so() {
        let query = |include: Option<&str>| DiscrepanciesQuery {
            include: include.map(str::to_owned),
        };
        assert_eq!(ai_results(&query(None), false).unwrap(), ["suspected"]);
        assert_eq!(
            ai_results(&query(Some("possible")), false).unwrap(),
            ["suspected", "possible"]
        );
        assert_eq!(
            ai_results(&query(Some("all")), false).unwrap_err().status,
            400
        );
        // The site's setting decides when the query does not; the query overrides it.
        assert_eq!(
            ai_results(&query(None), true).unwrap(),
            ["suspected", "possible"]
        );
        assert_eq!(
            ai_results(&query(Some("suspected")), true).unwrap(),
            ["suspected"]
        );
    }
}
