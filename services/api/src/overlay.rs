//! `GET /api/v1/sites/{site}/studies/{study}/instances/{sop}/overlay.png`: the
//! stored image, windowed as the model saw it (`fxtriage_dicom::pixels`), with
//! the detection boxes of its analysed findings drawn in red, as PNG.
//!
//! [`render_overlay`] is the one implementation of the drawing; the `analyze`
//! command should call it too.

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fxtriage_dicom::pixels::{GreyImage, decode_windowed};
use fxtriage_objstore::{ErrorKind as StoreErrorKind, ObjectKey};
use fxtriage_prioritizer::incoming::{Detection, DetectionBox};

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::InstancePath;

/// The colour of a detection box.
pub const BOX_COLOUR: [u8; 3] = [230, 30, 30];

/// `image` as 8-bit RGB PNG with each box outlined in [`BOX_COLOUR`]. Boxes are in
/// the image's pixel coordinates and clipped to it; the line is thicker on larger
/// images so that it stays visible when scaled down.
pub fn render_overlay(
    image: &GreyImage,
    boxes: &[DetectionBox],
) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = (image.columns as usize, image.rows as usize);
    let mut rgb: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|value| {
            let grey = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            [grey, grey, grey]
        })
        .collect();
    rgb.resize(width * height * 3, 0);
    if width > 0 && height > 0 {
        let thickness = (width.max(height) / 300).max(2);
        let clip = |value: f32, size: usize| (value.max(0.0) as usize).min(size - 1);
        for found in boxes {
            let (x0, x1) = (
                clip(found.x_min.min(found.x_max), width),
                clip(found.x_min.max(found.x_max), width),
            );
            let (y0, y1) = (
                clip(found.y_min.min(found.y_max), height),
                clip(found.y_min.max(found.y_max), height),
            );
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let on_edge = x < x0 + thickness
                        || x + thickness > x1
                        || y < y0 + thickness
                        || y + thickness > y1;
                    if on_edge {
                        let at = (y * width + x) * 3;
                        rgb[at..at + 3].copy_from_slice(&BOX_COLOUR);
                    }
                }
            }
        }
    }
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, image.columns, image.rows);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    Ok(encoded)
}

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
    let boxes: Vec<DetectionBox> = detection_rows
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut pixels).expect("png frame");
        (info.width, info.height, pixels)
    }

    #[test]
    fn boxes_are_outlined_in_red_and_clipped_to_the_image() {
        let image = GreyImage {
            rows: 40,
            columns: 60,
            pixels: vec![0.5; 40 * 60],
        };
        let boxes = [
            DetectionBox {
                x_min: 10.0,
                y_min: 5.0,
                x_max: 30.0,
                y_max: 25.0,
            },
            // Reversed and partly outside: drawn where it overlaps.
            DetectionBox {
                x_min: 100.0,
                y_min: 39.0,
                x_max: 50.0,
                y_max: -3.0,
            },
        ];
        let (width, height, rgb) = decode(&render_overlay(&image, &boxes).expect("png"));
        assert_eq!((width, height), (60, 40));
        let pixel = |x: usize, y: usize| &rgb[(y * 60 + x) * 3..(y * 60 + x) * 3 + 3];
        assert_eq!(pixel(10, 15), BOX_COLOUR, "left edge");
        assert_eq!(pixel(20, 5), BOX_COLOUR, "top edge");
        assert_eq!(pixel(20, 15), [128, 128, 128], "inside stays grey");
        assert_eq!(pixel(0, 0), [128, 128, 128], "outside stays grey");
        assert_eq!(pixel(59, 20), BOX_COLOUR, "clipped box edge");
    }
}
