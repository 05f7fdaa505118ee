//! The worklist read with filters, and the choice of the next study to claim, for
//! one site or for the sites of a group (a reading network's merged worklist).
//!
//! The order is the policy's (earliest deadline first, ties by arrival, then UID),
//! the same columns as the `studies_worklist_order` index and as
//! [`crate::store::worklist_page`], which has no filters and no claim expiry and
//! therefore cannot serve this read. Pages are keyset pages:
//! the cursor is the last item's (deadline, arrived_at, UID), so a page costs the
//! same at any depth and an item moving while a client pages is neither skipped
//! twice nor duplicated within one position.
//!
//! A claim past its expiry counts as open everywhere here, whether or not the
//! sweeper has ended it yet.

use deadpool_postgres::GenericClient;
use fxtriage_core::{SiteId, Urgency};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{Doing as _, StoreError};
use crate::store::{StudyRow, WorklistCursor};
use crate::study::{StudyAiResult, WorklistState};

pub use crate::store::STUDY_COLUMNS;

/// Which items a worklist read returns; an empty list means "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklistFilter {
    /// Never empty: the read defaults to open items.
    pub states: Vec<WorklistState>,
    pub urgencies: Vec<Urgency>,
    pub ai_results: Vec<StudyAiResult>,
    /// Upper case, as stored; an item matches when it has any of them.
    pub body_parts: Vec<String>,
}

impl Default for WorklistFilter {
    fn default() -> Self {
        Self {
            states: vec![WorklistState::Open],
            urgencies: Vec::new(),
            ai_results: Vec::new(),
            body_parts: Vec::new(),
        }
    }
}

/// SQL parameters of a query being built.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds `value`, returning its placeholder (`$n`).
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn as_refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The conditions whose union is `state`, each a range of the
/// `studies_worklist_order` index (an expired claim counts as open).
fn state_ranges(state: WorklistState) -> &'static [&'static str] {
    match state {
        WorklistState::Open => &[
            "state = 'open'",
            "state = 'claimed' AND claim_expires_at <= now()",
        ],
        WorklistState::Claimed => &["state = 'claimed' AND claim_expires_at > now()"],
        WorklistState::Reported => &["state = 'reported'"],
    }
}

/// `site_id = .. AND <filters>`, without the state.
fn filter_clause(site: &SiteId, filter: &WorklistFilter, params: &mut Params) -> String {
    let conditions = vec![format!(
        "site_id = {}",
        params.push(site.as_str().to_owned())
    )];
    filters(conditions, filter, params)
}

/// `conditions` and the filters' conditions, joined.
fn filters(mut conditions: Vec<String>, filter: &WorklistFilter, params: &mut Params) -> String {
    if !filter.urgencies.is_empty() {
        let urgencies: Vec<String> = filter
            .urgencies
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        conditions.push(format!("urgency = ANY({})", params.push(urgencies)));
    }
    if !filter.ai_results.is_empty() {
        let results: Vec<String> = filter
            .ai_results
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        conditions.push(format!("ai_result = ANY({})", params.push(results)));
    }
    if !filter.body_parts.is_empty() {
        conditions.push(format!(
            "body_parts && {}::text[]",
            params.push(filter.body_parts.clone())
        ));
    }
    conditions.join(" AND ")
}

const READING_ORDER: &str = "deadline, arrived_at, study_instance_uid, site_id";

/// A page of the worklist, as the database clock saw it at `read_at`.
#[derive(Debug, Clone)]
pub struct WorklistPage {
    pub items: Vec<StudyRow>,
    pub read_at: OffsetDateTime,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<WorklistCursor>,
}

/// One page of the worklist of `sites` (one site, or a group's) in reading order.
///
/// Each site's state range is read as its own index range scan, limited to the
/// page, and the ranges are merged (a `Merge Append`): no sort of the whole
/// worklist, however long it is, whichever the number of sites.
pub async fn worklist(
    client: &impl GenericClient,
    sites: &[SiteId],
    filter: &WorklistFilter,
    after: Option<&WorklistCursor>,
    limit: u32,
) -> Result<WorklistPage, StoreError> {
    let mut params = Params::default();
    let mut after_clause = String::new();
    if let Some(cursor) = after {
        let deadline = params.push(cursor.deadline);
        let arrived_at = params.push(cursor.arrived_at);
        let uid = params.push(cursor.study_instance_uid.clone());
        let site = params.push(cursor.site_id.clone());
        after_clause =
            format!(" AND ({READING_ORDER}) > ({deadline}, {arrived_at}, {uid}, {site})");
    }
    // One more than asked tells whether a next page exists.
    let fetch = params.push(i64::from(limit) + 1);
    let mut ranges: Vec<String> = Vec::new();
    for site in sites {
        let common = filter_clause(site, filter, &mut params);
        for range in filter.states.iter().flat_map(|state| state_ranges(*state)) {
            ranges.push(format!(
                "(SELECT {STUDY_COLUMNS} FROM studies WHERE {common}{after_clause} AND {range} \
                 ORDER BY {READING_ORDER} LIMIT {fetch})"
            ));
        }
    }
    if ranges.is_empty() {
        return Ok(WorklistPage {
            items: Vec::new(),
            read_at: database_now(client).await?,
            next: None,
        });
    }
    let sql = format!(
        "SELECT *, now() AS read_at FROM ({}) page ORDER BY {READING_ORDER} LIMIT {fetch}",
        ranges.join(" UNION ALL ")
    );
    let rows = client
        .query(&sql, &params.as_refs())
        .await
        .doing("reading the worklist")?;
    let read_at = match rows.first() {
        Some(row) => row.get("read_at"),
        None => database_now(client).await?,
    };
    let mut items = rows
        .iter()
        .map(|row| study_row(row).map(|study| as_of(study, read_at)))
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(WorklistCursor::from)
    } else {
        None
    };
    Ok(WorklistPage {
        items,
        read_at,
        next,
    })
}

/// The study to claim next under `filter` (its states ignored: open ones) among
/// `sites`, with its site, locked until the transaction ends. Rows other
/// transactions hold are skipped, so concurrent callers get different studies
/// and never wait for each other. `FOR UPDATE` admits no `UNION`: the first of
/// each site's open ranges is locked, and the earliest is the one (the others'
/// locks end with the transaction).
pub async fn lock_next_open(
    tx: &impl GenericClient,
    sites: &[SiteId],
    filter: &WorklistFilter,
) -> Result<Option<(SiteId, String)>, StoreError> {
    type Candidate = (OffsetDateTime, OffsetDateTime, String, SiteId);
    let mut first: Option<Candidate> = None;
    for site in sites {
        let mut params = Params::default();
        let common = filter_clause(site, filter, &mut params);
        for range in state_ranges(WorklistState::Open) {
            let sql = format!(
                "SELECT deadline, arrived_at, study_instance_uid FROM studies \
                 WHERE {common} AND {range} \
                 ORDER BY {READING_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED"
            );
            let row = tx
                .query_opt(&sql, &params.as_refs())
                .await
                .doing("choosing the next study")?;
            if let Some(row) = row {
                let candidate = (row.get(0), row.get(1), row.get(2), site.clone());
                if first.as_ref().is_none_or(|earliest| candidate < *earliest) {
                    first = Some(candidate);
                }
            }
        }
    }
    Ok(first.map(|(_, _, uid, site)| (site, uid)))
}

pub async fn database_now(client: &impl GenericClient) -> Result<OffsetDateTime, StoreError> {
    let row = client
        .query_one("SELECT now()", &[])
        .await
        .doing("reading the database clock")?;
    Ok(row.get(0))
}

/// The study as a reader sees it at `now`: a claim past its expiry is no claim.
pub fn as_of(mut study: StudyRow, now: OffsetDateTime) -> StudyRow {
    if claim_expired(&study, now) {
        study.state = WorklistState::Open;
        study.claimed_by = None;
        study.claim_expires_at = None;
    }
    study
}

pub fn claim_expired(study: &StudyRow, now: OffsetDateTime) -> bool {
    study.state == WorklistState::Claimed
        && study
            .claim_expires_at
            .is_some_and(|expires_at| expires_at <= now)
}

/// A `studies` row read with [`STUDY_COLUMNS`].
pub fn study_row(row: &Row) -> Result<StudyRow, StoreError> {
    StudyRow::from_row(row)
}
