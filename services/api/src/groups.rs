//! A reading network's routes, `/api/v1/groups/{group}/...`, for a token of that
//! group (DESIGN.md section 10):
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /api/v1/groups/{group}` | viewer | the group's name and sites |
//! | `GET /api/v1/groups/{group}/worklist` | viewer | one worklist merged across the group's sites, earliest deadline first, each item with its `site_id`; the same filters and paging as a site's |
//! | `POST /api/v1/groups/{group}/worklist/next` | reader | claim the next open study of any of the group's sites (204 when none) |
//! | `GET /api/v1/groups/{group}/analytics` | viewer | the turnaround figures over the group's sites ([`crate::analytics::get_group_analytics`]) |
//!
//! A study of the group is claimed, released, reported and viewed through its
//! site's routes (`/api/v1/sites/{site}/studies/{study}/...`), which a group
//! token opens for each of its sites. Every read is in the audit log once per
//! site, with the site and the group.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Serialize;

use crate::auth::GroupCaller;
use crate::claims::claim_next_of;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::worklist::{WorklistParams, WorklistResponse, read_worklist};

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub group_id: String,
    pub name: String,
    pub sites: Vec<GroupSite>,
}

#[derive(Debug, Serialize)]
pub struct GroupSite {
    pub site_id: String,
    pub name: String,
}

/// `GET /api/v1/groups/{group}`.
pub async fn get_group(
    State(state): State<AppState>,
    Extension(caller): Extension<GroupCaller>,
) -> ApiResult<Json<GroupView>> {
    let snapshot = state.sites.current();
    let sites = caller
        .sites
        .iter()
        .map(|site| GroupSite {
            site_id: site.as_str().to_owned(),
            name: snapshot
                .site(site.as_str())
                .map(|config| config.name.clone())
                .unwrap_or_default(),
        })
        .collect();
    Ok(Json(GroupView {
        group_id: caller.group.as_str().to_owned(),
        name: snapshot
            .group_name(caller.group.as_str())
            .unwrap_or_default()
            .to_owned(),
        sites,
    }))
}

/// `GET /api/v1/groups/{group}/worklist`.
pub async fn get_group_worklist(
    State(state): State<AppState>,
    Extension(caller): Extension<GroupCaller>,
    params: Result<Query<WorklistParams>, QueryRejection>,
) -> ApiResult<Json<WorklistResponse>> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::bad_request(format!("malformed query: {}", rejection.body_text()))
    })?;
    read_worklist(&state, &caller.sites, |site| caller.on_site(site), &params).await
}

/// `POST /api/v1/groups/{group}/worklist/next`.
pub async fn post_group_claim_next(
    State(state): State<AppState>,
    Extension(caller): Extension<GroupCaller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_reader()?;
    claim_next_of(&state, &caller.sites, |site| caller.on_site(site), &body).await
}
