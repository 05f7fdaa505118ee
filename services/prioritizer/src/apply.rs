//! Applying one message to the worklist, exactly once in effect.
//!
//! Each message is applied in one transaction that (1) locks its study, (2)
//! records the instance or finding under its natural key — site + SOP Instance
//! UID for an instance, site + SOP Instance UID + model SHA-256 for a finding —
//! which is the idempotency key: a key already present means the message was
//! applied before, and nothing else happens; (3) recomputes the study from all its
//! images ([`crate::aggregate`]); (4) when a visible value changed, updates the
//! study, bumps its revision and writes the `WorklistChange` to the outbox. The
//! consumer acknowledges the message only after the commit.
//!
//! A finding may overtake its instance (they travel on different topics): it is
//! recorded and changes nothing until the instance arrives, whose recomputation
//! then includes it. A reported study is never reprioritised: its images and
//! findings are still recorded, its worklist values stay as reported.

use deadpool_postgres::Pool;
use fxtriage_core::SiteId;
use fxtriage_proto::v1::{ChangeKind, WorklistChange};
use tokio_postgres::Transaction;

use crate::aggregate::aggregate;
use crate::error::{Doing as _, StoreError};
use crate::incoming::{ImageFinding, StoredInstance};
use crate::outbox;
use crate::policy::Policy;
use crate::study::WorklistState;
use crate::worklist_store as store;

/// What applying a message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Applied before: nothing changed.
    Duplicate,
    /// Recorded, but the worklist item did not change (a finding waiting for its
    /// instance, a reported study, an image that changes no visible value).
    Recorded,
    /// Recorded and the worklist item changed; the change is in the outbox.
    Changed(WorklistChange),
}

pub async fn apply_instance(
    pool: &Pool,
    policy: &Policy,
    instance: &StoredInstance,
) -> Result<Applied, StoreError> {
    let image = &instance.image;
    let mut client = pool.get().await?;
    let tx = client.transaction().await.doing("starting a transaction")?;
    store::lock_study(&tx, &image.site_id, image.study_instance_uid.as_str()).await?;
    if !store::site_exists(&tx, &image.site_id).await? {
        return Err(StoreError::UnknownSite(image.site_id.clone()));
    }
    if !store::insert_instance(&tx, instance).await? {
        return Ok(Applied::Duplicate);
    }
    let applied = reaggregate(
        &tx,
        policy,
        &image.site_id,
        image.study_instance_uid.as_str(),
    )
    .await?;
    tx.commit().await.doing("committing the instance")?;
    Ok(applied)
}

pub async fn apply_finding(
    pool: &Pool,
    policy: &Policy,
    finding: &ImageFinding,
) -> Result<Applied, StoreError> {
    let image = &finding.image;
    let mut client = pool.get().await?;
    let tx = client.transaction().await.doing("starting a transaction")?;
    store::lock_study(&tx, &image.site_id, image.study_instance_uid.as_str()).await?;
    if !store::site_exists(&tx, &image.site_id).await? {
        return Err(StoreError::UnknownSite(image.site_id.clone()));
    }
    if !store::insert_finding(&tx, finding).await? {
        return Ok(Applied::Duplicate);
    }
    let instance_study =
        store::study_of_instance(&tx, &image.site_id, image.sop_instance_uid.as_str()).await?;
    let applied = match instance_study {
        None => Applied::Recorded,
        Some(study) if study != image.study_instance_uid.as_str() => {
            return Err(StoreError::Conflict(format!(
                "the finding for instance {} of site {} names study {}, but the instance belongs to study {study}",
                image.sop_instance_uid, image.site_id, image.study_instance_uid
            )));
        }
        Some(study) => reaggregate(&tx, policy, &image.site_id, &study).await?,
    };
    tx.commit().await.doing("committing the finding")?;
    Ok(applied)
}

/// Recomputes the study from its images and stores what changed.
async fn reaggregate(
    tx: &Transaction<'_>,
    policy: &Policy,
    site: &SiteId,
    study_instance_uid: &str,
) -> Result<Applied, StoreError> {
    let current = store::study_for_update(tx, site, study_instance_uid).await?;
    let images = store::study_images(tx, site, study_instance_uid).await?;
    for image in &images {
        if image.summary.analysis.as_str() != image.stored_analysis {
            store::set_instance_analysis(
                tx,
                site,
                &image.summary.sop_instance_uid,
                image.summary.analysis,
            )
            .await?;
        }
    }
    if current
        .as_ref()
        .is_some_and(|study| study.state == WorklistState::Reported)
    {
        return Ok(Applied::Recorded);
    }
    let summaries: Vec<_> = images.into_iter().map(|image| image.summary).collect();
    let Some(mut computed) = aggregate(&summaries, policy) else {
        return Ok(Applied::Recorded);
    };
    // The hospital's order, when it came first, sets the clinical urgency.
    if let Some(urgency) =
        fxtriage_worklist::orders::urgency_for(tx, site, &computed.accession_number).await?
    {
        fxtriage_worklist::orders::apply_to(&mut computed, urgency, policy);
    }
    let (row, kind) = match current {
        None => (
            store::insert_study(tx, site, study_instance_uid, &computed).await?,
            ChangeKind::Added,
        ),
        Some(stored) => {
            let before = stored.aggregate();
            if before == computed {
                return Ok(Applied::Recorded);
            }
            // The deadline alone decides the item's place on the worklist.
            let kind = if before.deadline != computed.deadline {
                ChangeKind::Reprioritised
            } else {
                ChangeKind::Updated
            };
            (
                store::update_study(tx, site, study_instance_uid, &computed).await?,
                kind,
            )
        }
    };
    let change = outbox::worklist_change(&row, kind);
    outbox::enqueue(tx, &change).await?;
    tracing::debug!(
        site = %site,
        study = study_instance_uid,
        kind = kind.as_str_name(),
        revision = row.revision,
        ai_result = %row.ai_result,
        "worklist item changed"
    );
    Ok(Applied::Changed(change))
}
