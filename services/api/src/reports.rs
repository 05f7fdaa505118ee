//! `POST /api/v1/sites/{site}/studies/{study}/report`: the study is read. Its
//! worklist item closes, and a `reports` row keeps the report time with the
//! study's class at that moment, from which PostgreSQL derives the turnaround and
//! whether the deadline was met.
//!
//! The body may say whether the reader found a fracture (`"fracture": "yes" |
//! "no" | "equivocal"`): optional, never required to report. It is what the AI
//! monitoring and the discrepancy list ([`crate::discrepancies`]) compare the
//! model's result with.
//!
//! A reader may report a study they claimed or an open one (a RIS that reports
//! directly); a study claimed by someone else needs an admin token. Reporting
//! again as the same reader answers the stored report (a client's retry is
//! harmless); as anyone else it is a conflict.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use bytes::Bytes;
use fxtriage_proto::v1::ChangeKind;
use fxtriage_worklist::outbox;
use fxtriage_worklist::store::study_for_update;
use fxtriage_worklist::study::WorklistState;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::claims::{end_claim, expire_claim};
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::StudyPath;
use crate::views::{WorklistItem, parse_body, rfc3339};
use fxtriage_worklist::query::{STUDY_COLUMNS, claim_expired, database_now, study_row};

#[derive(Debug, Serialize)]
pub struct ReportResponse {
    pub study: WorklistItem,
    pub report: ReportSummary,
}

/// Whether the reader found a fracture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FractureOutcome {
    Yes,
    No,
    Equivocal,
}

impl FractureOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FractureOutcome::Yes => "yes",
            FractureOutcome::No => "no",
            FractureOutcome::Equivocal => "equivocal",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "yes" => Some(FractureOutcome::Yes),
            "no" => Some(FractureOutcome::No),
            "equivocal" => Some(FractureOutcome::Equivocal),
            _ => None,
        }
    }
}

/// The body of a report.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// Who reads (see [`crate::views::ReaderBody`]).
    pub reader: Option<String>,
    /// Whether they found a fracture; not recorded when absent.
    pub fracture: Option<FractureOutcome>,
}

#[derive(Debug, Serialize)]
pub struct ReportSummary {
    pub reader: String,
    /// The reader's outcome, when they gave one.
    pub fracture: Option<FractureOutcome>,
    pub reported_at: String,
    /// From arrival to report.
    pub turnaround_seconds: f64,
    pub met_deadline: bool,
}

impl ReportSummary {
    fn from_row(row: &Row) -> Self {
        let reported_at: OffsetDateTime = row.get("reported_at");
        Self {
            reader: row.get("reader"),
            fracture: row
                .get::<_, Option<String>>("fracture")
                .as_deref()
                .and_then(FractureOutcome::parse),
            reported_at: rfc3339(reported_at),
            turnaround_seconds: row.get("turnaround_seconds"),
            met_deadline: row.get("met_deadline"),
        }
    }
}

const REPORT_COLUMNS: &str = "reader, fracture, reported_at, \
    EXTRACT(EPOCH FROM turnaround)::float8 AS turnaround_seconds, met_deadline";

pub async fn post_report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> ApiResult<Json<ReportResponse>> {
    caller.require_reader()?;
    let study_uid = StudyPath::parse(path)?.study;
    let request: ReportBody = parse_body(&body)?;
    let reader = caller.reader_name(request.reader.as_deref())?;

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let now = database_now(&tx).await?;
    let study = study_for_update(&tx, &caller.site, &study_uid)
        .await?
        .ok_or_else(ApiError::not_found)?;

    if study.state == WorklistState::Reported {
        let stored = tx
            .query_one(
                &format!(
                    "SELECT {REPORT_COLUMNS} FROM reports \
                     WHERE site_id = $1 AND study_instance_uid = $2"
                ),
                &[&caller.site.as_str(), &study_uid],
            )
            .await
            .doing("reading the report")?;
        let report = ReportSummary::from_row(&stored);
        if report.reader != reader {
            return Err(ApiError::conflict("the study is already reported")
                .with_detail(serde_json::json!({ "reported_at": report.reported_at })));
        }
        return Ok(Json(ReportResponse {
            study: WorklistItem::new(&study, now),
            report,
        }));
    }

    let study = if claim_expired(&study, now) {
        expire_claim(&tx, &caller.site, study).await?
    } else {
        study
    };
    if study.state == WorklistState::Claimed {
        let own = study.claimed_by.as_deref() == Some(reader.as_str());
        if !own && !caller.role.can_override_claims() {
            return Err(
                ApiError::conflict("the study is claimed by another reader").with_detail(
                    serde_json::json!({
                        "claimed_by": study.claimed_by,
                        "claim_expires_at": study.claim_expires_at.map(rfc3339),
                    }),
                ),
            );
        }
        end_claim(&tx, &caller.site, &study_uid, "reported").await?;
    }

    let stored = tx
        .query_one(
            &format!(
                "INSERT INTO reports (site_id, study_instance_uid, token_id, reader, arrived_at, \
                     deadline, urgency, ai_result, probability, fracture) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {REPORT_COLUMNS}"
            ),
            &[
                &caller.site.as_str(),
                &study_uid,
                &caller.token_id,
                &reader,
                &study.arrived_at,
                &study.deadline,
                &study.urgency.as_str(),
                &study.ai_result.as_str(),
                &study.probability,
                &request.fracture.map(FractureOutcome::as_str),
            ],
        )
        .await
        .doing("recording the report")?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE studies SET state = 'reported', reported_at = now(), claimed_by = NULL, \
                     claimed_at = NULL, claim_expires_at = NULL, revision = revision + 1, \
                     updated_at = now() \
                 WHERE site_id = $1 AND study_instance_uid = $2 RETURNING {STUDY_COLUMNS}"
            ),
            &[&caller.site.as_str(), &study_uid],
        )
        .await
        .doing("closing the worklist item")?;
    let reported = study_row(&row)?;
    let report = ReportSummary::from_row(&stored);
    outbox::enqueue(
        &tx,
        &outbox::worklist_change(&reported, ChangeKind::Reported),
    )
    .await?;
    audit::record(
        &tx,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::reader(&caller, &reader),
            action: action::STUDY_REPORT,
            study_instance_uid: Some(&study_uid),
            sop_instance_uid: None,
            detail: serde_json::json!({
                "turnaround_seconds": report.turnaround_seconds,
                "met_deadline": report.met_deadline,
                "fracture": report.fracture,
                "revision": reported.revision,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    state.publish_soon(&caller.site, &study_uid);
    Ok(Json(ReportResponse {
        study: WorklistItem::new(&reported, now),
        report,
    }))
}
