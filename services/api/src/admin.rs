//! The deployment's administration, `/api/v1/admin/...`, for a deployment admin
//! token (`fxtriage tokens create --deployment --role admin`): the same
//! operations as `fxtriage sites` and `fxtriage tokens`.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/admin/sites` | every site and group, with `retired` |
//! | `GET /api/v1/admin/sites/{site}` | one site as JSON; `?format=toml` as a sites file that applies back unchanged |
//! | `POST /api/v1/admin/sites/apply` | apply a sites file (TOML body); `?dry_run=true`, `?prune=true`; the changes, or 422 with every error and its line |
//! | `GET /api/v1/admin/tokens` | every token (never a secret) |
//! | `POST /api/v1/admin/tokens` | `{"site": ..}` or `{"group": ..}` or `{"deployment": true}`, `"role"`, `"description"`: the new token, shown once (201) |
//! | `DELETE /api/v1/admin/tokens/{token_id}` | revoke (204) |

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use fxtriage_core::{GroupId, SiteId};
use fxtriage_sites::credentials::{self, Role, Scope, TokenError};
use fxtriage_sites::store::{self as registry, ApplyError, ApplyOptions};

use crate::auth::AdminCaller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn registry_error(error: fxtriage_sites::RegistryError) -> ApiError {
    tracing::warn!(%error, "the site registry is unavailable");
    ApiError::unavailable("the site registry cannot be read now; retry later")
}

/// `GET /api/v1/admin/sites`.
pub async fn get_sites(
    State(state): State<AppState>,
    Extension(_admin): Extension<AdminCaller>,
) -> ApiResult<Json<serde_json::Value>> {
    let client = state.pool.get().await?;
    let current = registry::load(&client).await.map_err(registry_error)?;
    let sites: Vec<serde_json::Value> = current
        .sites
        .values()
        .map(|record| {
            let mut value = serde_json::to_value(&record.config).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("retired".into(), record.retired.into());
            }
            value
        })
        .collect();
    let groups: Vec<serde_json::Value> = current
        .groups
        .values()
        .map(|record| {
            let mut value = serde_json::to_value(&record.config).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("retired".into(), record.retired.into());
            }
            value
        })
        .collect();
    Ok(Json(serde_json::json!({
        "revision": current.revision,
        "sites": sites,
        "groups": groups,
    })))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    format: Option<String>,
}

/// `GET /api/v1/admin/sites/{site}`.
pub async fn get_site(
    State(state): State<AppState>,
    Extension(_admin): Extension<AdminCaller>,
    Path(site): Path<String>,
    params: Result<Query<ShowParams>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let client = state.pool.get().await?;
    let current = registry::load(&client).await.map_err(registry_error)?;
    let record = current
        .sites
        .iter()
        .find(|(id, _)| id.as_str() == site)
        .map(|(_, record)| record)
        .ok_or_else(ApiError::not_found)?;
    match params.format.as_deref() {
        None | Some("json") => Ok(Json(&record.config).into_response()),
        Some("toml") => {
            let text = fxtriage_sites::file::to_toml(std::slice::from_ref(&record.config), &[]);
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/toml; charset=utf-8"),
            );
            Ok(response)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?}: give json or toml"
        ))),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyParams {
    dry_run: Option<bool>,
    prune: Option<bool>,
}

/// `POST /api/v1/admin/sites/apply`.
pub async fn post_apply(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminCaller>,
    params: Result<Query<ApplyParams>, QueryRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    let Query(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the sites file must be UTF-8 TOML"))?;
    let options = ApplyOptions {
        prune: params.prune.unwrap_or(false),
        dry_run: params.dry_run.unwrap_or(false),
    };
    match registry::apply_text_by(&state.pool, text, options, &admin.changer()).await {
        Ok(changes) => {
            tracing::info!(token_id = %admin.token_id, changes = changes.len(), dry_run = options.dry_run, "sites file applied by the admin API");
            let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
            Ok(
                Json(serde_json::json!({ "dry_run": options.dry_run, "changes": changes }))
                    .into_response(),
            )
        }
        Err(ApplyError::Invalid(invalid)) => {
            let errors: Vec<serde_json::Value> = invalid
                .errors
                .iter()
                .map(|error| serde_json::json!({ "line": error.line, "message": error.message }))
                .collect();
            Err(ApiError::unprocessable(invalid.to_string())
                .with_detail(serde_json::json!({ "errors": errors })))
        }
        Err(ApplyError::Registry(fxtriage_sites::RegistryError::Conflict(message))) => {
            Err(ApiError::conflict(message))
        }
        Err(ApplyError::Registry(error)) => Err(registry_error(error)),
    }
}

/// `GET /api/v1/admin/tokens`.
pub async fn get_tokens(
    State(state): State<AppState>,
    Extension(_admin): Extension<AdminCaller>,
) -> ApiResult<Json<serde_json::Value>> {
    let tokens = credentials::list_tokens(&state.pool, None)
        .await
        .map_err(token_error)?;
    Ok(Json(serde_json::json!({ "tokens": tokens })))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    site: Option<String>,
    group: Option<String>,
    #[serde(default)]
    deployment: bool,
    role: String,
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/admin/tokens`.
pub async fn post_token(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminCaller>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: NewToken = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))?;
    let scope = match (&request.site, &request.group, request.deployment) {
        (Some(site), None, false) => Scope::Site(
            SiteId::parse(site.clone())
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        (None, Some(group), false) => Scope::Group(
            GroupId::parse(group.clone())
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
        ),
        (None, None, true) => Scope::Deployment,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"site\", \"group\" or \"deployment\": true",
            ));
        }
    };
    let role: Role = request.role.parse().map_err(ApiError::bad_request)?;
    let created = credentials::create_token_by(
        &state.pool,
        &scope,
        role,
        &request.description,
        &admin.changer(),
    )
    .await
    .map_err(token_error)?;
    tracing::info!(token_id = %created.credential.token_id, by = %admin.token_id, %scope, %role, "token created by the admin API");
    let body = serde_json::json!({
        "token_id": created.credential.token_id,
        "token": created.token.reveal(),
        "role": role.as_str(),
        "scope": scope.to_string(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/v1/admin/tokens/{token_id}`.
pub async fn delete_token(
    State(state): State<AppState>,
    Extension(admin): Extension<AdminCaller>,
    Path(token_id): Path<String>,
) -> ApiResult<StatusCode> {
    credentials::revoke_token_by(&state.pool, &token_id, &admin.changer())
        .await
        .map_err(token_error)?;
    tracing::info!(%token_id, by = %admin.token_id, "token revoked by the admin API");
    Ok(StatusCode::NO_CONTENT)
}

fn token_error(error: TokenError) -> ApiError {
    match error {
        TokenError::UnknownScope(_)
        | TokenError::DeploymentRoleNotAdmin
        | TokenError::InvalidOidcMapping => ApiError::unprocessable(error.to_string()),
        TokenError::UnknownToken(_) => ApiError::not_found(),
        TokenError::Registry(error) => registry_error(error),
    }
}
