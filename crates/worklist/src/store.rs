//! The SQL of the worklist: studies, their instances and findings (schema in
//! crates/db/migrations/V2__worklist.sql). Writes take the caller's transaction,
//! so that one message's whole effect commits or rolls back together.

use fxtriage_core::{SiteId, Urgency, UrgencySource};
use time::OffsetDateTime;
use tokio_postgres::{Client, Row, Transaction};

use crate::error::{Doing as _, StoreError};
use crate::records::{FindingOutcome, ImageFinding, StoredInstance};
use crate::study::{StudyAiResult, WorklistState};
use crate::summary::{FindingSummary, ImageAnalysis, ImageSummary, StudyAggregate};

/// A worklist item: one study's row.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    pub site_id: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub urgency: Urgency,
    pub urgency_source: UrgencySource,
    pub arrived_at: OffsetDateTime,
    pub body_parts: Vec<String>,
    pub ai_result: StudyAiResult,
    pub probability: Option<f32>,
    pub deadline: OffsetDateTime,
    pub state: WorklistState,
    pub revision: i64,
    pub updated_at: OffsetDateTime,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<OffsetDateTime>,
    pub reported_at: Option<OffsetDateTime>,
}

impl StudyRow {
    /// The values the prioritizer computes, as stored.
    pub fn aggregate(&self) -> StudyAggregate {
        StudyAggregate {
            arrived_at: self.arrived_at,
            urgency: self.urgency,
            urgency_source: self.urgency_source,
            accession_number: self.accession_number.clone(),
            body_parts: self.body_parts.clone(),
            probability: self.probability,
            ai_result: self.ai_result,
            deadline: self.deadline,
        }
    }

    /// A `studies` row read with [`STUDY_COLUMNS`].
    pub fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            site_id: row.get("site_id"),
            study_instance_uid: row.get("study_instance_uid"),
            accession_number: row.get("accession_number"),
            urgency: parse_column(row, "urgency", |value| value.parse().ok())?,
            urgency_source: parse_column(row, "urgency_source", UrgencySource::parse)?,
            arrived_at: row.get("arrived_at"),
            body_parts: row.get("body_parts"),
            ai_result: parse_column(row, "ai_result", StudyAiResult::parse)?,
            probability: row.get("probability"),
            deadline: row.get("deadline"),
            state: parse_column(row, "state", WorklistState::parse)?,
            revision: row.get("revision"),
            updated_at: row.get("updated_at"),
            claimed_by: row.get("claimed_by"),
            claim_expires_at: row.get("claim_expires_at"),
            reported_at: row.get("reported_at"),
        })
    }
}

fn parse_column<T>(
    row: &Row,
    column: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let value: &str = row.get(column);
    parse(value).ok_or_else(|| {
        StoreError::Conflict(format!(
            "studies.{column} holds {value:?}, which this version does not know"
        ))
    })
}

/// The columns [`StudyRow::from_row`] reads.
pub const STUDY_COLUMNS: &str = "site_id, study_instance_uid, accession_number, urgency, \
    urgency_source, arrived_at, body_parts, ai_result, probability, deadline, state, revision, \
    updated_at, claimed_by, claim_expires_at, reported_at";

/// Serialises every transaction that touches one study (its instances, its
/// findings, even before the study row exists), until the transaction ends. A
/// finding and the instance it belongs to may be processed at the same time from
/// different topics; without this, each could miss the other.
pub async fn lock_study(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<(), StoreError> {
    let key = format!("{site}/{study_instance_uid}");
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await
    .doing("locking the study")?;
    Ok(())
}

pub async fn site_exists(tx: &Transaction<'_>, site: &SiteId) -> Result<bool, StoreError> {
    let row = tx
        .query_opt("SELECT 1 FROM sites WHERE site_id = $1", &[&site.as_str()])
        .await
        .doing("looking up the site")?;
    Ok(row.is_some())
}

/// Records an instance; `false` when it was recorded before (the idempotency key
/// is the site and SOP Instance UID).
pub async fn insert_instance(
    tx: &Transaction<'_>,
    instance: &StoredInstance,
) -> Result<bool, StoreError> {
    let image = &instance.image;
    let analysis = if instance.eligible {
        ImageAnalysis::Awaiting
    } else {
        ImageAnalysis::NotEligible
    };
    let inserted = tx
        .execute(
            "INSERT INTO instances (site_id, study_instance_uid, series_instance_uid, \
                 sop_instance_uid, sop_class_uid, transfer_syntax_uid, modality, body_part, \
                 view_position, laterality, accession_number, urgency, urgency_source, object_key, \
                 byte_size, sha256, received_at, received_via, eligible, not_eligible_reason, analysis, \
                 acquired_at, patient_sex, patient_age_years, manufacturer, manufacturer_model) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, $22, $23, $24, $25, $26) \
             ON CONFLICT (site_id, sop_instance_uid) DO NOTHING",
            &[
                &image.site_id.as_str(),
                &image.study_instance_uid.as_str(),
                &image.series_instance_uid.as_str(),
                &image.sop_instance_uid.as_str(),
                &instance.sop_class_uid,
                &instance.transfer_syntax_uid,
                &instance.modality,
                &instance.body_part,
                &instance.view_position,
                &instance.laterality,
                &instance.accession_number,
                &instance.urgency.as_str(),
                &instance.urgency_source.as_str(),
                &instance.object_key,
                &instance.byte_size,
                &instance.sha256,
                &instance.received_at,
                &instance.received_via,
                &instance.eligible,
                &instance.not_eligible_reason,
                &analysis.as_str(),
                &instance.acquired_at,
                &instance.patient_sex,
                &instance.patient_age_years,
                &instance.manufacturer,
                &instance.manufacturer_model,
            ],
        )
        .await
        .doing("recording the instance")?;
    Ok(inserted == 1)
}

/// Records a finding; `false` when it was recorded before (the idempotency key is
/// the site, SOP Instance UID and the model's SHA-256). A failed finding is
/// replaced by a later analysed one of the same model (the image was sent
/// again after its object went missing, say): a success is never hidden by an
/// earlier failure, and a failure never replaces a success.
pub async fn insert_finding(
    tx: &Transaction<'_>,
    finding: &ImageFinding,
) -> Result<bool, StoreError> {
    let image = &finding.image;
    let (status, probability, detections, failure_kind, failure_reason) = match &finding.outcome {
        FindingOutcome::Analysed {
            probability,
            detections,
        } => (
            "analysed",
            Some(*probability),
            serde_json::to_value(detections).unwrap_or_else(|_| serde_json::json!([])),
            "",
            "",
        ),
        FindingOutcome::Failed { kind, reason } => (
            "failed",
            None,
            serde_json::json!([]),
            kind.as_str(),
            reason.as_str(),
        ),
    };
    let inserted = tx
        .execute(
            "INSERT INTO findings (site_id, study_instance_uid, series_instance_uid, \
                 sop_instance_uid, model_name, model_version, model_sha256, status, failure_kind, \
                 failure_reason, probability, detections, image_rows, image_columns, analysed_at, \
                 timings) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (site_id, sop_instance_uid, model_sha256) DO UPDATE SET \
                 series_instance_uid = EXCLUDED.series_instance_uid, \
                 model_name = EXCLUDED.model_name, model_version = EXCLUDED.model_version, \
                 status = EXCLUDED.status, failure_kind = EXCLUDED.failure_kind, \
                 failure_reason = EXCLUDED.failure_reason, probability = EXCLUDED.probability, \
                 detections = EXCLUDED.detections, image_rows = EXCLUDED.image_rows, \
                 image_columns = EXCLUDED.image_columns, analysed_at = EXCLUDED.analysed_at, \
                 timings = EXCLUDED.timings, recorded_at = now() \
             WHERE findings.status = 'failed' AND EXCLUDED.status = 'analysed' \
               AND findings.study_instance_uid = EXCLUDED.study_instance_uid",
            &[
                &image.site_id.as_str(),
                &image.study_instance_uid.as_str(),
                &image.series_instance_uid.as_str(),
                &image.sop_instance_uid.as_str(),
                &finding.model.name,
                &finding.model.version,
                &finding.model.sha256,
                &status,
                &failure_kind,
                &failure_reason,
                &probability,
                &detections,
                &finding.image_rows,
                &finding.image_columns,
                &finding.analysed_at,
                &finding.timings,
            ],
        )
        .await
        .doing("recording the finding")?;
    Ok(inserted == 1)
}

/// The study an instance belongs to, if the instance is recorded.
pub async fn study_of_instance(
    tx: &Transaction<'_>,
    site: &SiteId,
    sop_instance_uid: &str,
) -> Result<Option<String>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT study_instance_uid FROM instances WHERE site_id = $1 AND sop_instance_uid = $2",
            &[&site.as_str(), &sop_instance_uid],
        )
        .await
        .doing("looking up the instance")?;
    Ok(row.map(|row| row.get(0)))
}

/// The study row, locked until the transaction ends.
pub async fn study_for_update(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<Option<StudyRow>, StoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {STUDY_COLUMNS} FROM studies \
                 WHERE site_id = $1 AND study_instance_uid = $2 FOR UPDATE"
            ),
            &[&site.as_str(), &study_instance_uid],
        )
        .await
        .doing("reading the study")?;
    row.as_ref().map(StudyRow::from_row).transpose()
}

/// An image of a study with the analysis state stored for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    pub summary: ImageSummary,
    pub stored_analysis: String,
}

/// Every image of a study with its findings applied.
pub async fn study_images(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<Vec<StoredImage>, StoreError> {
    let instance_rows = tx
        .query(
            "SELECT sop_instance_uid, received_at, urgency, urgency_source, accession_number, \
                 body_part, eligible, analysis \
             FROM instances WHERE site_id = $1 AND study_instance_uid = $2",
            &[&site.as_str(), &study_instance_uid],
        )
        .await
        .doing("reading the study's instances")?;
    let finding_rows = tx
        .query(
            "SELECT sop_instance_uid, model_sha256, probability, analysed_at \
             FROM findings WHERE site_id = $1 AND study_instance_uid = $2",
            &[&site.as_str(), &study_instance_uid],
        )
        .await
        .doing("reading the study's findings")?;
    let mut images = Vec::with_capacity(instance_rows.len());
    for row in &instance_rows {
        let sop_instance_uid: String = row.get("sop_instance_uid");
        let findings: Vec<FindingSummary> = finding_rows
            .iter()
            .filter(|finding| finding.get::<_, &str>("sop_instance_uid") == sop_instance_uid)
            .map(|finding| FindingSummary {
                model_sha256: finding.get("model_sha256"),
                probability: finding.get("probability"),
                analysed_at: finding.get("analysed_at"),
            })
            .collect();
        let urgency: &str = row.get("urgency");
        let urgency_source: &str = row.get("urgency_source");
        images.push(StoredImage {
            summary: ImageSummary {
                received_at: row.get("received_at"),
                urgency: urgency.parse().map_err(|_| {
                    StoreError::Conflict(format!("instances.urgency holds {urgency:?}"))
                })?,
                urgency_source: UrgencySource::parse(urgency_source).ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "instances.urgency_source holds {urgency_source:?}"
                    ))
                })?,
                accession_number: row.get("accession_number"),
                body_part: row.get("body_part"),
                analysis: ImageAnalysis::of(row.get("eligible"), &findings),
                sop_instance_uid,
            },
            stored_analysis: row.get("analysis"),
        });
    }
    Ok(images)
}

pub async fn set_instance_analysis(
    tx: &Transaction<'_>,
    site: &SiteId,
    sop_instance_uid: &str,
    analysis: ImageAnalysis,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE instances SET analysis = $3 WHERE site_id = $1 AND sop_instance_uid = $2",
        &[&site.as_str(), &sop_instance_uid, &analysis.as_str()],
    )
    .await
    .doing("updating the instance's analysis")?;
    Ok(())
}

/// Creates the study, open, at revision 1.
pub async fn insert_study(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
    study: &StudyAggregate,
) -> Result<StudyRow, StoreError> {
    let sql = format!(
        "INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency, \
             urgency_source, arrived_at, body_parts, ai_result, probability, deadline) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING {STUDY_COLUMNS}"
    );
    write_study(
        tx,
        &sql,
        "creating the study",
        site,
        study_instance_uid,
        study,
    )
    .await
}

/// Sets the prioritizer's values of the study and bumps its revision.
pub async fn update_study(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
    study: &StudyAggregate,
) -> Result<StudyRow, StoreError> {
    let sql = format!(
        "UPDATE studies SET accession_number = $3, urgency = $4, urgency_source = $5, \
             arrived_at = $6, body_parts = $7, ai_result = $8, probability = $9, \
             deadline = $10, revision = revision + 1, updated_at = now() \
         WHERE site_id = $1 AND study_instance_uid = $2 \
         RETURNING {STUDY_COLUMNS}"
    );
    write_study(
        tx,
        &sql,
        "updating the study",
        site,
        study_instance_uid,
        study,
    )
    .await
}

/// Runs `sql` (an insert or update of a study, parameters $1..$10 in the order
/// below) and reads back the row.
async fn write_study(
    tx: &Transaction<'_>,
    sql: &str,
    doing: &'static str,
    site: &SiteId,
    study_instance_uid: &str,
    study: &StudyAggregate,
) -> Result<StudyRow, StoreError> {
    let row = tx
        .query_one(
            sql,
            &[
                &site.as_str(),
                &study_instance_uid,
                &study.accession_number,
                &study.urgency.as_str(),
                &study.urgency_source.as_str(),
                &study.arrived_at,
                &study.body_parts,
                &study.ai_result.as_str(),
                &study.probability,
                &study.deadline,
            ],
        )
        .await
        .doing(doing)?;
    StudyRow::from_row(&row)
}

/// Where a worklist page starts: after the last item of the previous page. The
/// site breaks the (rare) tie of one study UID on two sites of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklistCursor {
    pub deadline: OffsetDateTime,
    pub arrived_at: OffsetDateTime,
    pub study_instance_uid: String,
    pub site_id: String,
}

impl From<&StudyRow> for WorklistCursor {
    fn from(row: &StudyRow) -> Self {
        Self {
            deadline: row.deadline,
            arrived_at: row.arrived_at,
            study_instance_uid: row.study_instance_uid.clone(),
            site_id: row.site_id.clone(),
        }
    }
}

/// The SQL of one worklist page: earliest deadline first, ties by arrival, then
/// UID (`policy::worklist_order`), as a range scan of `studies_worklist_order`.
/// Parameters: $1 site, $2 state, $3 limit, then $4..$6 the cursor when `paged`.
pub fn worklist_page_sql(paged: bool) -> String {
    let after = if paged {
        "AND (deadline, arrived_at, study_instance_uid) > ($4, $5, $6) "
    } else {
        ""
    };
    format!(
        "SELECT {STUDY_COLUMNS} FROM studies WHERE site_id = $1 AND state = $2 {after}\
         ORDER BY deadline, arrived_at, study_instance_uid LIMIT $3"
    )
}

/// One page of a site's worklist in reading order.
pub async fn worklist_page(
    client: &Client,
    site: &SiteId,
    state: WorklistState,
    after: Option<&WorklistCursor>,
    limit: i64,
) -> Result<Vec<StudyRow>, StoreError> {
    let rows = match after {
        None => {
            client
                .query(
                    &worklist_page_sql(false),
                    &[&site.as_str(), &state.as_str(), &limit],
                )
                .await
        }
        Some(cursor) => {
            client
                .query(
                    &worklist_page_sql(true),
                    &[
                        &site.as_str(),
                        &state.as_str(),
                        &limit,
                        &cursor.deadline,
                        &cursor.arrived_at,
                        &cursor.study_instance_uid,
                    ],
                )
                .await
        }
    }
    .doing("reading the worklist")?;
    rows.iter().map(StudyRow::from_row).collect()
}

/// One study, whatever its state.
pub async fn study(
    client: &Client,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<Option<StudyRow>, StoreError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {STUDY_COLUMNS} FROM studies WHERE site_id = $1 AND study_instance_uid = $2"
            ),
            &[&site.as_str(), &study_instance_uid],
        )
        .await
        .doing("reading the study")?;
    row.as_ref().map(StudyRow::from_row).transpose()
}
