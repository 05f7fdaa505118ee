//! Orders from the hospital's RIS: stored by accession number, and their
//! priority made the study's clinical urgency, whichever arrives first. When
//! the order comes first, the prioritizer finds it as it builds the study
//! ([`apply_to`]); when the study comes first, the order reprioritises it
//! ([`reprioritise`]). Both compute the deadline with the site's policy, the
//! same way.

use fxtriage_core::policy::Policy;
use fxtriage_core::{SiteId, Urgency, UrgencySource};
use fxtriage_proto::v1::ChangeKind;
use tokio_postgres::Transaction;

use crate::error::{Doing as _, StoreError};
use crate::outbox;
use crate::store::{self, StudyRow};
use crate::study::WorklistState;
use crate::summary::StudyAggregate;

/// An order as the RIS sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub site: SiteId,
    pub accession_number: String,
    pub placer_order_number: String,
    pub filler_order_number: String,
    pub study_instance_uid: Option<String>,
    pub priority: String,
    pub urgency: Option<Urgency>,
    pub order_control: String,
    pub procedure: String,
    pub control_id: String,
}

/// HL7 table 0485's priorities as clinical urgency: stat and timing-critical
/// are emergencies, ASAP is an inpatient's pace, routine and the rest are
/// outpatient; none when the order states none.
pub fn urgency_of_priority(priority: &str) -> Option<Urgency> {
    match priority.trim().to_ascii_uppercase().as_str() {
        "" => None,
        "S" | "T" => Some(Urgency::Emergency),
        "A" => Some(Urgency::Inpatient),
        _ => Some(Urgency::Outpatient),
    }
}

/// Stores `order` (a later message for the same accession number replaces it).
pub async fn upsert(tx: &Transaction<'_>, order: &Order) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO orders (site_id, accession_number, placer_order_number, filler_order_number, \
             study_instance_uid, priority, urgency, order_control, procedure, control_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (site_id, accession_number) DO UPDATE SET \
             placer_order_number = EXCLUDED.placer_order_number, \
             filler_order_number = EXCLUDED.filler_order_number, \
             study_instance_uid = COALESCE(EXCLUDED.study_instance_uid, orders.study_instance_uid), \
             priority = EXCLUDED.priority, \
             urgency = COALESCE(EXCLUDED.urgency, orders.urgency), \
             order_control = EXCLUDED.order_control, procedure = EXCLUDED.procedure, \
             control_id = EXCLUDED.control_id, updated_at = now()",
        &[
            &order.site.as_str(),
            &order.accession_number,
            &order.placer_order_number,
            &order.filler_order_number,
            &order.study_instance_uid,
            &order.priority,
            &order.urgency.map(Urgency::as_str),
            &order.order_control,
            &order.procedure,
            &order.control_id,
        ],
    )
    .await
    .doing("storing the order")?;
    Ok(())
}

/// The urgency of the order with this accession number, if it states one.
pub async fn urgency_for(
    tx: &Transaction<'_>,
    site: &SiteId,
    accession_number: &str,
) -> Result<Option<Urgency>, StoreError> {
    if accession_number.is_empty() {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            "SELECT urgency FROM orders WHERE site_id = $1 AND accession_number = $2 \
             AND urgency IS NOT NULL AND order_control NOT IN ('CA', 'OC')",
            &[&site.as_str(), &accession_number],
        )
        .await
        .doing("reading the study's order")?;
    Ok(row.and_then(|row| row.get::<_, &str>(0).parse::<Urgency>().ok()))
}

/// The study's values with the order's urgency: its source is the order and
/// its deadline the site's target for that urgency and the AI result.
pub fn apply_to(aggregate: &mut StudyAggregate, urgency: Urgency, policy: &Policy) {
    aggregate.urgency = urgency;
    aggregate.urgency_source = UrgencySource::Order;
    aggregate.deadline = aggregate.arrived_at
        + policy.study_target(
            urgency,
            aggregate.ai_result.policy_class(),
            aggregate.probability,
        );
}

/// Gives a stored, unreported study the order's urgency; the changed row (its
/// change in the worklist outbox), or `None` when nothing changed.
pub async fn reprioritise(
    tx: &Transaction<'_>,
    site: &SiteId,
    study_instance_uid: &str,
    urgency: Urgency,
    policy: &Policy,
) -> Result<Option<StudyRow>, StoreError> {
    let Some(stored) = store::study_for_update(tx, site, study_instance_uid).await? else {
        return Ok(None);
    };
    if stored.state == WorklistState::Reported {
        return Ok(None);
    }
    let before = stored.aggregate();
    let mut after = before.clone();
    apply_to(&mut after, urgency, policy);
    if after == before {
        return Ok(None);
    }
    let row = store::update_study(tx, site, study_instance_uid, &after).await?;
    let kind = if before.deadline == after.deadline {
        ChangeKind::Updated
    } else {
        ChangeKind::Reprioritised
    };
    outbox::enqueue(tx, &outbox::worklist_change(&row, kind)).await?;
    Ok(Some(row))
}
