//! `GET /api/v1/sites/{site}/studies/{study}`: the worklist item with its images,
//! each with its findings and detections (boxes in the image's original pixel
//! coordinates: x along columns, y along rows) and the URL of its overlay.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use fxtriage_worklist::store;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::StudyPath;
use crate::views::{WorklistItem, rfc3339};
use fxtriage_worklist::query::{as_of, database_now};

#[derive(Debug, Serialize)]
pub struct StudyDetail {
    pub study: WorklistItem,
    pub instances: Vec<InstanceDetail>,
}

#[derive(Debug, Serialize)]
pub struct InstanceDetail {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    pub body_part: String,
    pub view_position: String,
    pub laterality: String,
    pub received_at: String,
    pub eligible: bool,
    pub not_eligible_reason: String,
    /// `not-eligible`, `awaiting`, `analysed` or `failed`.
    pub analysis: String,
    pub findings: Vec<FindingDetail>,
    pub overlay_url: String,
}

#[derive(Debug, Serialize)]
pub struct FindingDetail {
    pub model_name: String,
    pub model_version: String,
    pub model_sha256: String,
    /// `analysed` or `failed`.
    pub status: String,
    pub failure_kind: String,
    pub failure_reason: String,
    pub probability: Option<f32>,
    /// `[{"class", "score", "box": {"x_min", "y_min", "x_max", "y_max"}}]`.
    pub detections: serde_json::Value,
    pub image_rows: Option<i32>,
    pub image_columns: Option<i32>,
    pub analysed_at: Option<String>,
}

pub async fn get_study(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<StudyDetail>> {
    let study_uid = StudyPath::parse(path)?.study;
    let site = caller.site.as_str();
    let client = state.pool.get().await?;
    let now = database_now(&client).await?;
    let study = store::study(&client, &caller.site, &study_uid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let instance_rows = client
        .query(
            "SELECT sop_instance_uid, series_instance_uid, sop_class_uid, modality, body_part, \
                 view_position, laterality, received_at, eligible, not_eligible_reason, analysis \
             FROM instances WHERE site_id = $1 AND study_instance_uid = $2 \
             ORDER BY series_instance_uid, received_at, sop_instance_uid",
            &[&site, &study_uid],
        )
        .await
        .doing("reading the study's instances")?;
    let finding_rows = client
        .query(
            "SELECT sop_instance_uid, model_name, model_version, model_sha256, status, \
                 failure_kind, failure_reason, probability, detections, image_rows, \
                 image_columns, analysed_at \
             FROM findings WHERE site_id = $1 AND study_instance_uid = $2 \
             ORDER BY recorded_at, model_sha256",
            &[&site, &study_uid],
        )
        .await
        .doing("reading the study's findings")?;
    audit::record(
        &client,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::caller(&caller),
            action: action::STUDY_READ,
            study_instance_uid: Some(&study_uid),
            sop_instance_uid: None,
            detail: serde_json::json!({}),
        },
    )
    .await?;

    let instances = instance_rows
        .iter()
        .map(|row| {
            let sop: String = row.get("sop_instance_uid");
            let findings = finding_rows
                .iter()
                .filter(|finding| finding.get::<_, &str>("sop_instance_uid") == sop)
                .map(|finding| FindingDetail {
                    model_name: finding.get("model_name"),
                    model_version: finding.get("model_version"),
                    model_sha256: finding.get("model_sha256"),
                    status: finding.get("status"),
                    failure_kind: finding.get("failure_kind"),
                    failure_reason: finding.get("failure_reason"),
                    probability: finding.get("probability"),
                    detections: finding.get("detections"),
                    image_rows: finding.get("image_rows"),
                    image_columns: finding.get("image_columns"),
                    analysed_at: finding
                        .get::<_, Option<OffsetDateTime>>("analysed_at")
                        .map(rfc3339),
                })
                .collect();
            InstanceDetail {
                overlay_url: format!(
                    "/api/v1/sites/{site}/studies/{study_uid}/instances/{sop}/overlay.png"
                ),
                series_instance_uid: row.get("series_instance_uid"),
                sop_class_uid: row.get("sop_class_uid"),
                modality: row.get("modality"),
                body_part: row.get("body_part"),
                view_position: row.get("view_position"),
                laterality: row.get("laterality"),
                received_at: rfc3339(row.get("received_at")),
                eligible: row.get("eligible"),
                not_eligible_reason: row.get("not_eligible_reason"),
                analysis: row.get("analysis"),
                findings,
                sop_instance_uid: sop,
            }
        })
        .collect();
    Ok(Json(StudyDetail {
        study: WorklistItem::new(&as_of(study, now), now),
        instances,
    }))
}
