//! Claims: one reader at a time per study, for a limited time.
//!
//! A claim is taken on the study row locked `FOR UPDATE`, so concurrent claims of
//! one study are serialised and exactly one wins; the others get 409 with the
//! current holder. "Give me the next study" locks the first open study with
//! `FOR UPDATE SKIP LOCKED`, so concurrent readers get different studies without
//! waiting for each other. Claiming again as the same reader renews the claim.
//!
//! A claim ends when its reader releases or reports the study, or when it expires
//! (`Config::claim_ttl` after it was taken or renewed). An expired claim counts as
//! open at once everywhere; the sweeper ([`run_sweeper`]) then ends it in the
//! database, and a claim or report that meets one ends it first.
//!
//! Every change bumps the study's revision and writes, in its transaction, a
//! `WorklistChange` to the prioritizer's outbox and a row to the audit log.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use deadpool_postgres::Transaction;
use fxtriage_core::SiteId;
use fxtriage_proto::v1::ChangeKind;
use fxtriage_worklist::StoreError;
use fxtriage_worklist::outbox;
use fxtriage_worklist::store::{StudyRow, study_for_update};
use fxtriage_worklist::study::WorklistState;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::study_path::StudyPath;
use crate::views::{ReaderBody, WorklistItem, parse_body, rfc3339};
use fxtriage_worklist::query::{
    STUDY_COLUMNS, WorklistFilter, claim_expired, database_now, lock_next_open, study_row,
};

/// `POST /api/v1/sites/{site}/studies/{study}/claim`, body `{"reader": ".."}` or none.
pub async fn post_claim(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_reader()?;
    let study_uid = StudyPath::parse(path)?.study;
    let request: ReaderBody = parse_body(&body)?;
    let reader = caller.reader_name(request.reader.as_deref())?;

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let now = database_now(&tx).await?;
    let study = study_for_update(&tx, &caller.site, &study_uid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let claimed = claim_locked(&tx, state.config.claim_ttl, &caller, &reader, study, now).await?;
    tx.commit().await?;
    state.publish_soon(&caller.site, &study_uid);
    Ok(Json(WorklistItem::new(&claimed, now)).into_response())
}

/// `POST /api/v1/sites/{site}/worklist/next`: claims the first open study in
/// reading order (optionally within `urgency`, `ai_result`, `body_part` like the
/// worklist's filters, as JSON lists) and returns it; 204 when none is open.
pub async fn post_claim_next(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_reader()?;
    let sites = [caller.site.clone()];
    claim_next_of(&state, &sites, |_| caller.clone(), &body).await
}

/// Claims, for the caller that `caller_on` gives for the site chosen, the first
/// open study in reading order among `sites`.
pub(crate) async fn claim_next_of(
    state: &AppState,
    sites: &[SiteId],
    caller_on: impl Fn(&SiteId) -> Caller,
    body: &Bytes,
) -> ApiResult<Response> {
    let request: ClaimNextBody = parse_body(body)?;
    let filter = request.filter()?;

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let now = database_now(&tx).await?;
    let Some((site, study_uid)) = lock_next_open(&tx, sites, &filter).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let caller = caller_on(&site);
    let reader = caller.reader_name(request.reader.as_deref())?;
    let study = study_for_update(&tx, &site, &study_uid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let claimed = claim_locked(&tx, state.config.claim_ttl, &caller, &reader, study, now).await?;
    tx.commit().await?;
    state.publish_soon(&site, &study_uid);
    Ok(Json(WorklistItem::new(&claimed, now)).into_response())
}

/// `POST /api/v1/sites/{site}/studies/{study}/release`: ends the reader's claim;
/// an admin may end anyone's.
pub async fn post_release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_reader()?;
    let study_uid = StudyPath::parse(path)?.study;
    let request: ReaderBody = parse_body(&body)?;
    let reader = caller.reader_name(request.reader.as_deref())?;

    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let now = database_now(&tx).await?;
    let study = study_for_update(&tx, &caller.site, &study_uid)
        .await?
        .ok_or_else(ApiError::not_found)?;
    match study.state {
        WorklistState::Reported => {
            return Err(ApiError::conflict("the study is already reported"));
        }
        WorklistState::Open => return Err(ApiError::conflict("the study is not claimed")),
        WorklistState::Claimed if claim_expired(&study, now) => {
            return Err(ApiError::conflict(
                "the study is not claimed (the claim expired)",
            ));
        }
        WorklistState::Claimed => {}
    }
    let holder = study.claimed_by.clone().unwrap_or_default();
    if holder != reader && !caller.role.can_override_claims() {
        return Err(claimed_by_another(&study));
    }
    end_claim(&tx, &caller.site, &study_uid, "released").await?;
    let released = set_open(&tx, &caller.site, &study_uid).await?;
    outbox::enqueue(
        &tx,
        &outbox::worklist_change(&released, ChangeKind::Released),
    )
    .await?;
    audit::record(
        &tx,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::reader(&caller, &reader),
            action: action::STUDY_RELEASE,
            study_instance_uid: Some(&study_uid),
            sop_instance_uid: None,
            detail: serde_json::json!({ "claimed_by": holder, "revision": released.revision }),
        },
    )
    .await?;
    tx.commit().await?;
    state.publish_soon(&caller.site, &study_uid);
    Ok(Json(WorklistItem::new(&released, now)).into_response())
}

/// The body of claim-next: the reader and the worklist filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNextBody {
    pub reader: Option<String>,
    #[serde(default)]
    pub urgency: Vec<String>,
    #[serde(default)]
    pub ai_result: Vec<String>,
    #[serde(default)]
    pub body_part: Vec<String>,
}

impl ClaimNextBody {
    fn filter(&self) -> ApiResult<WorklistFilter> {
        let list = |values: &[String]| (!values.is_empty()).then(|| values.join(","));
        let (urgency, ai_result, body_part) = (
            list(&self.urgency),
            list(&self.ai_result),
            list(&self.body_part),
        );
        crate::worklist::parse_filter(
            None,
            urgency.as_deref(),
            ai_result.as_deref(),
            body_part.as_deref(),
        )
    }
}

fn claimed_by_another(study: &StudyRow) -> ApiError {
    ApiError::conflict("the study is claimed by another reader").with_detail(serde_json::json!({
        "claimed_by": study.claimed_by,
        "claim_expires_at": study.claim_expires_at.map(rfc3339),
    }))
}

/// Claims (or renews) `study`, locked by the caller's transaction, for `reader`.
async fn claim_locked(
    tx: &Transaction<'_>,
    ttl: Duration,
    caller: &Caller,
    reader: &str,
    study: StudyRow,
    now: OffsetDateTime,
) -> ApiResult<StudyRow> {
    if study.state == WorklistState::Reported {
        return Err(ApiError::conflict("the study is already reported"));
    }
    let study = if claim_expired(&study, now) {
        expire_claim(tx, &caller.site, study).await?
    } else {
        study
    };
    let renewal = study.state == WorklistState::Claimed;
    if renewal {
        if study.claimed_by.as_deref() != Some(reader) {
            return Err(claimed_by_another(&study));
        }
        tx.execute(
            "UPDATE claims SET expires_at = now() + $3 * interval '1 second' \
             WHERE site_id = $1 AND study_instance_uid = $2 AND ended_at IS NULL",
            &[
                &caller.site.as_str(),
                &study.study_instance_uid,
                &ttl.as_secs_f64(),
            ],
        )
        .await
        .doing("renewing the claim")?;
    } else {
        tx.execute(
            "INSERT INTO claims (site_id, study_instance_uid, token_id, reader, expires_at) \
             VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second')",
            &[
                &caller.site.as_str(),
                &study.study_instance_uid,
                &caller.token_id,
                &reader,
                &ttl.as_secs_f64(),
            ],
        )
        .await
        .doing("recording the claim")?;
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE studies SET state = 'claimed', claimed_by = $3, \
                     claimed_at = CASE WHEN state = 'claimed' THEN claimed_at ELSE now() END, \
                     claim_expires_at = now() + $4 * interval '1 second', \
                     revision = revision + 1, updated_at = now() \
                 WHERE site_id = $1 AND study_instance_uid = $2 RETURNING {STUDY_COLUMNS}"
            ),
            &[
                &caller.site.as_str(),
                &study.study_instance_uid,
                &reader,
                &ttl.as_secs_f64(),
            ],
        )
        .await
        .doing("claiming the study")?;
    let claimed = study_row(&row)?;
    outbox::enqueue(tx, &outbox::worklist_change(&claimed, ChangeKind::Claimed)).await?;
    audit::record(
        tx,
        &AuditEntry {
            site: &caller.site,
            actor: Actor::reader(caller, reader),
            action: action::STUDY_CLAIM,
            study_instance_uid: Some(&claimed.study_instance_uid),
            sop_instance_uid: None,
            detail: serde_json::json!({
                "renewal": renewal,
                "expires_at": claimed.claim_expires_at.map(rfc3339),
                "revision": claimed.revision,
            }),
        },
    )
    .await?;
    Ok(claimed)
}

/// Ends the active claim of a study, if any, for `reason`.
pub(crate) async fn end_claim(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE claims SET ended_at = now(), end_reason = $3 \
         WHERE site_id = $1 AND study_instance_uid = $2 AND ended_at IS NULL",
        &[&site.as_str(), &study_instance_uid, &reason],
    )
    .await
    .doing("ending the claim")?;
    Ok(())
}

/// The study back on the open worklist, without claim.
async fn set_open(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<StudyRow, StoreError> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE studies SET state = 'open', claimed_by = NULL, claimed_at = NULL, \
                     claim_expires_at = NULL, revision = revision + 1, updated_at = now() \
                 WHERE site_id = $1 AND study_instance_uid = $2 RETURNING {STUDY_COLUMNS}"
            ),
            &[&site.as_str(), &study_instance_uid],
        )
        .await
        .doing("reopening the study")?;
    study_row(&row)
}

/// Ends the expired claim of `study` (locked by the caller): open again, a
/// `Released` change, and a `claim.expire` audit row by the system.
pub(crate) async fn expire_claim(
    tx: &Transaction<'_>,
    site: &SiteId,
    study: StudyRow,
) -> Result<StudyRow, StoreError> {
    end_claim(tx, site, &study.study_instance_uid, "expired").await?;
    let reopened = set_open(tx, site, &study.study_instance_uid).await?;
    outbox::enqueue(
        tx,
        &outbox::worklist_change(&reopened, ChangeKind::Released),
    )
    .await?;
    audit::record(
        tx,
        &AuditEntry {
            site,
            actor: Actor::System,
            action: action::CLAIM_EXPIRE,
            study_instance_uid: Some(&study.study_instance_uid),
            sop_instance_uid: None,
            detail: serde_json::json!({
                "claimed_by": study.claimed_by,
                "expired_at": study.claim_expires_at.map(rfc3339),
                "revision": reopened.revision,
            }),
        },
    )
    .await?;
    Ok(reopened)
}

/// How many expired claims one sweep transaction ends at most.
const SWEEP_BATCH: i64 = 100;

/// Ends expired claims every `interval` until `shutdown`.
pub async fn run_sweeper(state: AppState, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        match sweep_expired_claims(&state).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "ended expired claims"),
            Err(error) => tracing::warn!(%error, "could not end expired claims; will retry"),
        }
    }
}

/// Ends every claim past its expiry; returns how many. Several API processes may
/// sweep at once: each takes rows the others do not hold.
pub async fn sweep_expired_claims(state: &AppState) -> Result<usize, StoreError> {
    let mut expired = 0;
    loop {
        let mut client = state.pool.get().await?;
        let tx = client
            .transaction()
            .await
            .doing("starting to end expired claims")?;
        let rows = tx
            .query(
                "SELECT site_id, study_instance_uid FROM studies \
                 WHERE state = 'claimed' AND claim_expires_at <= now() \
                 ORDER BY claim_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&SWEEP_BATCH],
            )
            .await
            .doing("finding expired claims")?;
        // Site by site: each site's audit rows take that site's chain lock
        // until the commit (migration V11), and taking them in one order in
        // every transaction keeps two sweepers from waiting on each other.
        let mut expiring: Vec<(String, String)> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        expiring.sort();
        let mut touched = Vec::with_capacity(expiring.len());
        for (site_id, study_uid) in expiring {
            let site = SiteId::parse(site_id)
                .map_err(|error| StoreError::Conflict(format!("studies.site_id: {error}")))?;
            if let Some(study) = study_for_update(&tx, &site, &study_uid).await? {
                expire_claim(&tx, &site, study).await?;
                touched.push((site, study_uid));
            }
        }
        tx.commit().await.doing("committing the ended claims")?;
        expired += touched.len();
        state.metrics.claims_expired(touched.len());
        for (site, study_uid) in &touched {
            state.publish_soon(site, study_uid);
        }
        if rows.len() < SWEEP_BATCH as usize {
            return Ok(expired);
        }
    }
}
