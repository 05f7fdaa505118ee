//! A report signed in the hospital's RIS closes the study's worklist item, with
//! the RIS's report time as the report time (turnaround is the hospital's
//! turnaround, not the moment someone clicked in fxtriage).

use fxtriage_core::SiteId;
use fxtriage_proto::v1::ChangeKind;
use time::OffsetDateTime;
use tokio_postgres::Transaction;

use crate::error::{Doing as _, StoreError};
use crate::outbox;
use crate::store::{STUDY_COLUMNS, StudyRow, study_for_update};
use crate::study::WorklistState;

/// How a RIS report was applied.
#[derive(Debug, Clone, PartialEq)]
pub enum RisReport {
    /// The item closed.
    Closed(Box<StudyRow>),
    /// The study was reported before (in fxtriage or by an earlier message):
    /// nothing changes.
    AlreadyReported,
    /// No study of the site has this UID or accession number (yet).
    NoSuchStudy,
}

/// The study a RIS message names: by Study Instance UID when it gives one,
/// else by accession number (the most recent study with it).
pub async fn find_study(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: Option<&str>,
    accession_number: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if let Some(uid) = study_instance_uid.filter(|uid| !uid.is_empty()) {
        let row = tx
            .query_opt(
                "SELECT study_instance_uid FROM studies WHERE site_id = $1 AND study_instance_uid = $2",
                &[&site.as_str(), &uid],
            )
            .await
            .doing("finding the study by UID")?;
        if let Some(row) = row {
            return Ok(Some(row.get(0)));
        }
    }
    let Some(accession) = accession_number.filter(|accession| !accession.is_empty()) else {
        return Ok(None);
    };
    let row = tx
        .query_opt(
            "SELECT study_instance_uid FROM studies WHERE site_id = $1 AND accession_number = $2 \
             ORDER BY arrived_at DESC LIMIT 1",
            &[&site.as_str(), &accession],
        )
        .await
        .doing("finding the study by accession number")?;
    Ok(row.map(|row| row.get(0)))
}

/// What a RIS report says.
#[derive(Debug, Clone, Copy)]
pub struct RisReportFacts<'a> {
    pub reported_at: OffsetDateTime,
    /// The reader as the RIS names them.
    pub reader: &'a str,
    pub control_id: &'a str,
    pub sending_facility: &'a str,
    /// The radiologist's coded finding (yes, no, equivocal), when sent.
    pub fracture: Option<&'a str>,
    /// The service token the report came with (FHIR through the API); `None`
    /// over MLLP, where the sending facility names the RIS.
    pub token_id: Option<&'a str>,
}

/// Closes the study's item as reported at the report's time by its reader, in
/// the caller's transaction: the claim ends, a `reports` row from the RIS is
/// written, the change goes to the worklist outbox and the audit log.
pub async fn close_from_ris(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
    facts: RisReportFacts<'_>,
) -> Result<RisReport, StoreError> {
    let RisReportFacts {
        reported_at,
        reader,
        control_id,
        sending_facility,
        fracture,
        token_id,
    } = facts;
    let Some(study) = study_for_update(tx, site, study_instance_uid).await? else {
        return Ok(RisReport::NoSuchStudy);
    };
    if study.state == WorklistState::Reported {
        // The report stands; a coded finding the first report lacked is kept.
        if let Some(fracture) = fracture {
            tx.execute(
                "UPDATE reports SET fracture = $3 \
                 WHERE site_id = $1 AND study_instance_uid = $2 AND fracture IS NULL",
                &[&site.as_str(), &study_instance_uid, &fracture],
            )
            .await
            .doing("recording the RIS's finding")?;
        }
        return Ok(RisReport::AlreadyReported);
    }
    tx.execute(
        "UPDATE claims SET ended_at = now(), end_reason = 'reported' \
         WHERE site_id = $1 AND study_instance_uid = $2 AND ended_at IS NULL",
        &[&site.as_str(), &study_instance_uid],
    )
    .await
    .doing("ending the claim")?;
    tx.execute(
        "INSERT INTO reports (site_id, study_instance_uid, token_id, reader, reported_at, \
             arrived_at, deadline, urgency, ai_result, probability, source, ris_control_id, \
             fracture) \
         VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, 'ris', $10, $11)",
        &[
            &site.as_str(),
            &study_instance_uid,
            &reader,
            &reported_at,
            &study.arrived_at,
            &study.deadline,
            &study.urgency.as_str(),
            &study.ai_result.as_str(),
            &study.probability,
            &control_id,
            &fracture,
            &token_id,
        ],
    )
    .await
    .doing("recording the RIS report")?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE studies SET state = 'reported', reported_at = $3, claimed_by = NULL, \
                     claimed_at = NULL, claim_expires_at = NULL, revision = revision + 1, \
                     updated_at = now() \
                 WHERE site_id = $1 AND study_instance_uid = $2 RETURNING {STUDY_COLUMNS}"
            ),
            &[&site.as_str(), &study_instance_uid, &reported_at],
        )
        .await
        .doing("closing the worklist item")?;
    let reported = StudyRow::from_row(&row)?;
    outbox::enqueue(
        tx,
        &outbox::worklist_change(&reported, ChangeKind::Reported),
    )
    .await?;
    tx.execute(
        "INSERT INTO audit_log (site_id, token_id, actor, action, study_instance_uid, detail) \
         VALUES ($1, $5, $2, 'study.report', $3, $4)",
        &[
            &site.as_str(),
            &format!("ris:{sending_facility}"),
            &study_instance_uid,
            &serde_json::json!({
                "source": "ris",
                "control_id": control_id,
                "reader": reader,
                "fracture": fracture,
                "revision": reported.revision,
            }),
            &token_id,
        ],
    )
    .await
    .doing("writing the audit log")?;
    Ok(RisReport::Closed(Box::new(reported)))
}
