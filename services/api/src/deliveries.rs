//! A site's result deliveries (to its PACS, RIS and FHIR server), for the
//! site's admins: `GET /api/v1/sites/{site}/deliveries[?failed=true&limit=N]`
//! lists them newest first (no payloads: they hold patient data), and
//! `POST /api/v1/sites/{site}/deliveries/{id}/retry` sends a dead or waiting
//! one again now (audited). A delivery of another site is not found.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fxtriage_worklist::deliveries::{self, Listed};

use crate::audit::{self, Actor, AuditEntry};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only deliveries that failed: dead, or waiting after a failed attempt.
    #[serde(default)]
    pub failed: bool,
    pub limit: Option<i64>,
}

#[derive(Debug, serde::Serialize)]
pub struct DeliveriesResponse {
    pub deliveries: Vec<Listed>,
}

fn storage_error(error: &(dyn std::error::Error + Send + Sync)) -> ApiError {
    tracing::error!(%error, "reading the deliveries failed");
    ApiError::internal()
}

pub async fn get_deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> ApiResult<Json<DeliveriesResponse>> {
    caller.require_admin()?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit is 1 to 1000"));
    }
    let listed = deliveries::list(&state.pool, Some(caller.site.as_str()), query.failed, limit)
        .await
        .map_err(|error| storage_error(error.as_ref()))?;
    Ok(Json(DeliveriesResponse { deliveries: listed }))
}

pub async fn post_retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, i64)>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
    let Path((_, delivery_id)) =
        path.map_err(|_| ApiError::bad_request("a delivery id is a number"))?;
    let client = state.pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT state, study_instance_uid FROM deliveries WHERE delivery_id = $1 AND site_id = $2",
            &[&delivery_id, &caller.site.as_str()],
        )
        .await?
    else {
        return Err(ApiError::not_found());
    };
    let state_before: String = row.get(0);
    let study: String = row.get(1);
    if state_before == "sent" {
        return Err(ApiError::conflict("the delivery was sent"));
    }
    if state_before == "superseded" {
        return Err(ApiError::conflict(
            "a newer result replaced this one: the newer one is sent instead",
        ));
    }
    let retried = deliveries::retry(&state.pool, delivery_id)
        .await
        .map_err(|error| storage_error(error.as_ref()))?;
    if !retried {
        return Err(ApiError::conflict("the delivery was sent meanwhile"));
    }
    audit::record(
        &client,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::caller(&caller),
            action: "delivery.retry",
            study_instance_uid: Some(&study),
            sop_instance_uid: None,
            detail: serde_json::json!({ "delivery_id": delivery_id, "state_before": state_before }),
        },
    )
    .await?;
    Ok(Json(
        serde_json::json!({ "delivery_id": delivery_id, "state": "pending" }),
    ))
}
