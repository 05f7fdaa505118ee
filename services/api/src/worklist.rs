//! `GET /api/v1/sites/{site}/worklist`: the site's worklist in reading order.
//!
//! Query parameters, each optional, lists comma-separated:
//! - `state`: `open` (default), `claimed`, `reported`, or `all`;
//! - `urgency`: `emergency`, `inpatient`, `outpatient`;
//! - `ai_result`: `awaiting-analysis`, `suspected`, `possible`, `no-finding`, `not-analysed`;
//! - `body_part`: BodyPartExamined values such as `WRIST` (case-insensitive);
//! - `limit`: items per page, 1 to 500, default 50;
//! - `cursor`: the `next_cursor` of the previous page.
//!
//! Answer: `{"items": [...], "next_cursor": "..." | null, "read_at": "..."}`. The
//! cursor is opaque; it is valid with the same filters.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use fxtriage_core::{SiteId, Urgency};
use fxtriage_worklist::store::WorklistCursor;
use fxtriage_worklist::study::{StudyAiResult, WorklistState};
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{self, Actor, AuditEntry, action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::{WorklistItem, rfc3339};
use fxtriage_worklist::query::{WorklistFilter, worklist};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistParams {
    pub state: Option<String>,
    pub urgency: Option<String>,
    pub ai_result: Option<String>,
    pub body_part: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WorklistResponse {
    pub items: Vec<WorklistItem>,
    pub next_cursor: Option<String>,
    pub read_at: String,
}

pub async fn get_worklist(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<WorklistParams>, QueryRejection>,
) -> ApiResult<Json<WorklistResponse>> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::bad_request(format!("malformed query: {}", rejection.body_text()))
    })?;
    let sites = [caller.site.clone()];
    read_worklist(&state, &sites, |_| caller.clone(), &params).await
}

/// One page of the worklist of `sites` for `params`, each site's read in the
/// audit log (by the caller `caller_on` gives for it).
pub(crate) async fn read_worklist(
    state: &AppState,
    sites: &[SiteId],
    caller_on: impl Fn(&SiteId) -> Caller,
    params: &WorklistParams,
) -> ApiResult<Json<WorklistResponse>> {
    let filter = parse_filter(
        params.state.as_deref(),
        params.urgency.as_deref(),
        params.ai_result.as_deref(),
        params.body_part.as_deref(),
    )?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE_SIZE}")))?,
    };
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;

    let client = state.pool.get().await?;
    let page = worklist(&client, sites, &filter, after.as_ref(), limit).await?;
    for site in sites {
        let caller = caller_on(site);
        let items = page
            .items
            .iter()
            .filter(|item| item.site_id == site.as_str())
            .count();
        audit::record(
            &client,
            &AuditEntry {
                site,
                actor: Actor::caller(&caller),
                action: action::WORKLIST_READ,
                study_instance_uid: None,
                sop_instance_uid: None,
                detail: serde_json::json!({ "items": items }),
            },
        )
        .await?;
    }
    Ok(Json(WorklistResponse {
        items: page
            .items
            .iter()
            .map(|study| WorklistItem::new(study, page.read_at))
            .collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
        read_at: rfc3339(page.read_at),
    }))
}

/// The filters from their comma-separated query values.
pub fn parse_filter(
    states: Option<&str>,
    urgencies: Option<&str>,
    ai_results: Option<&str>,
    body_parts: Option<&str>,
) -> ApiResult<WorklistFilter> {
    let mut filter = WorklistFilter::default();
    if let Some(states) = states {
        filter.states = if states.trim() == "all" {
            WorklistState::ALL.to_vec()
        } else {
            words(states, "state", WorklistState::parse)?
        };
    }
    if let Some(urgencies) = urgencies {
        filter.urgencies = words(urgencies, "urgency", |word| word.parse::<Urgency>().ok())?;
    }
    if let Some(results) = ai_results {
        filter.ai_results = words(results, "ai_result", StudyAiResult::parse)?;
    }
    if let Some(parts) = body_parts {
        filter.body_parts = words(parts, "body_part", |word| {
            let valid = !word.is_empty()
                && word.len() <= 16
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_');
            valid.then(|| word.to_ascii_uppercase())
        })?;
    }
    Ok(filter)
}

fn words<T: PartialEq>(
    list: &str,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> ApiResult<Vec<T>> {
    let mut parsed = Vec::new();
    for word in list.split(',').map(str::trim) {
        let value = parse(word).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: {word:?} is not a known value"))
        })?;
        if !parsed.contains(&value) {
            parsed.push(value);
        }
    }
    Ok(parsed)
}

/// `<deadline µs>.<arrived_at µs>.<StudyInstanceUID>` in hex: opaque to clients,
/// exact (PostgreSQL keeps microseconds).
fn encode_cursor(cursor: &WorklistCursor) -> String {
    let micros = |at: OffsetDateTime| at.unix_timestamp_nanos() / 1000;
    hex::encode(format!(
        "{}_{}_{}_{}",
        micros(cursor.deadline),
        micros(cursor.arrived_at),
        cursor.study_instance_uid,
        cursor.site_id
    ))
}

fn decode_cursor(text: &str) -> ApiResult<WorklistCursor> {
    let invalid = || ApiError::bad_request("cursor is not one this API returned");
    let bytes = hex::decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(4, '_');
    let mut time = || -> ApiResult<OffsetDateTime> {
        let micros: i128 = parts
            .next()
            .and_then(|part| part.parse().ok())
            .ok_or_else(invalid)?;
        OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| invalid())
    };
    let deadline = time()?;
    let arrived_at = time()?;
    let study_instance_uid = parts.next().ok_or_else(invalid)?.to_owned();
    if study_instance_uid.is_empty()
        || !study_instance_uid
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(invalid());
    }
    let site_id = SiteId::parse(parts.next().ok_or_else(invalid)?).map_err(|_| invalid())?;
    Ok(WorklistCursor {
        deadline,
        arrived_at,
        study_instance_uid,
        site_id: site_id.as_str().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_cursor_decodes_to_what_was_encoded() {
        let cursor = WorklistCursor {
            deadline: datetime!(2026-01-05 09:00:00.123456 UTC),
            arrived_at: datetime!(2026-01-05 08:00:00 UTC),
            study_instance_uid: "1.2.840.99".into(),
            site_id: "st-marys".into(),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&cursor)).expect("decodes"),
            cursor
        );
        for bad in [
            "",
            "zz",
            &hex::encode("1_2"),
            &hex::encode("a_b_1.2"),
            &hex::encode("1_2_x"),
            &hex::encode("1_2_1.2"),
            &hex::encode("1_2_1.2_Bad Site"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_parse_lists_and_refuse_unknown_words() {
        let filter = parse_filter(
            Some("open,claimed"),
            Some("emergency"),
            Some("suspected,possible"),
            Some("wrist, hand"),
        )
        .expect("valid");
        assert_eq!(filter.states, [WorklistState::Open, WorklistState::Claimed]);
        assert_eq!(filter.urgencies, [Urgency::Emergency]);
        assert_eq!(
            filter.ai_results,
            [StudyAiResult::Suspected, StudyAiResult::Possible]
        );
        assert_eq!(filter.body_parts, ["WRIST", "HAND"]);
        assert_eq!(
            parse_filter(Some("all"), None, None, None)
                .expect("all")
                .states
                .len(),
            3
        );
        assert_eq!(
            parse_filter(None, None, None, None).expect("default"),
            WorklistFilter::default()
        );
        for (state, urgency, ai, part) in [
            (Some("closed"), None, None, None),
            (Some(""), None, None, None),
            (None, Some("stat"), None, None),
            (None, None, Some("fracture"), None),
            (None, None, None, Some("WRIST;DROP")),
        ] {
            let error = parse_filter(state, urgency, ai, part).expect_err("refused");
            assert_eq!(error.status, 400);
        }
    }
}
