//! `GET /api/v1/sites/{site}/studies/{study}/instances/{sop}/overlay.png`: the
//! stored image, windowed as the model saw it (`fxtriage_dicom::pixels`), with
//! the detection boxes of its analysed findings drawn in red, as PNG.
//!
//! The drawing is `fxtriage_dicom::overlay::render_overlay`, which `fxtriage
//! analyze` uses too.

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fxtriage_core::{BoundingBox, Detection};
use fxtriage_dicom::overlay::render_overlay;
use fxtriage_dicom::pixels::decode_windowed;
use fxtriage_objstore::{ErrorKind as StoreErrorKind, ObjectKey};

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::InstancePath;

pub async fn get_overlay(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let InstancePath { study, sop } = InstancePath::parse(path)?;
    let site = caller.site.as_str();
    let client = state.pool.get().await?;
    let object_key: String = client
        .query_opt(
            "SELECT object_key FROM instances \
             WHERE site_id = $1 AND study_instance_uid = $2 AND sop_instance_uid = $3",
            &[&site, &study, &sop],
        )
        .await
        .doing("looking up the instance")?
        .ok_or_else(ApiError::not_found)?
        .get(0);
    let detection_rows = client
        .query(
            "SELECT detections FROM findings \
             WHERE site_id = $1 AND sop_instance_uid = $2 AND status = 'analysed' \
             ORDER BY recorded_at",
            &[&site, &sop],
        )
        .await
        .doing("reading the instance's detections")?;
    let boxes: Vec<BoundingBox> = detection_rows
        .iter()
        .filter_map(|row| {
            serde_json::from_value::<Vec<Detection>>(row.get("detections"))
                .inspect_err(|error| tracing::warn!(%error, "unreadable detections skipped"))
                .ok()
        })
        .flatten()
        .map(|detection| detection.bounding_box)
        .collect();
    // No pooled connection is held while the image is fetched and rendered.
    drop(client);

    let key = ObjectKey::parse(&object_key).map_err(|error| {
        tracing::error!(%error, "instances.object_key is not a valid key");
        ApiError::internal()
    })?;
    let bytes = state
        .store
        .get(&key)
        .await
        .map_err(|error| match error.kind() {
            StoreErrorKind::NotFound => {
                ApiError::unprocessable("the instance's image is no longer in the object store")
            }
            StoreErrorKind::Transient => {
                tracing::warn!(%error, "object store unavailable");
                ApiError::unavailable("the object store is unavailable; retry later")
            }
            StoreErrorKind::Permanent => {
                tracing::error!(%error, "object store refused a read");
                ApiError::internal()
            }
        })?;

    let _permit = state
        .overlay_permits
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    let rendered = tokio::task::spawn_blocking(move || {
        let (image, _window) = decode_windowed(&bytes).map_err(|error| {
            ApiError::unprocessable(format!("cannot render the image: {error}"))
        })?;
        render_overlay(&image, &boxes).map_err(|error| {
            tracing::error!(%error, "PNG encoding failed");
            ApiError::internal()
        })
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "overlay rendering task failed");
        ApiError::internal()
    })??;

    let client = state.pool.get().await?;
    audit::record(
        &client,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::caller(&caller),
            action: action::OVERLAY_READ,
            study_instance_uid: Some(&study),
            sop_instance_uid: Some(&sop),
            detail: serde_json::json!({}),
        },
    )
    .await?;
    let mut response = rendered.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    // A patient's image: never kept by shared caches.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
