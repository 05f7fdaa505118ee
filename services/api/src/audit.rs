//! The audit log: who read which study, who claimed, released and reported it.
//! Rows are written in the transaction of the change they record, so a change
//! without its audit row (or the reverse) cannot be committed. A read whose audit
//! row cannot be written fails: nothing is shown that is not accounted for.

use deadpool_postgres::GenericClient;
use fxtriage_core::{GroupId, SiteId};
use fxtriage_worklist::StoreError;

use crate::auth::Caller;
use crate::error::Doing as _;

/// The `audit_log.action` words.
pub mod action {
    pub const WORKLIST_READ: &str = "worklist.read";
    pub const STUDY_READ: &str = "study.read";
    pub const OVERLAY_READ: &str = "overlay.read";
    pub const EVENTS_SUBSCRIBE: &str = "events.subscribe";
    pub const STUDY_CLAIM: &str = "study.claim";
    pub const STUDY_RELEASE: &str = "study.release";
    pub const STUDY_REPORT: &str = "study.report";
    pub const CLAIM_EXPIRE: &str = "claim.expire";
    pub const DISCREPANCIES_READ: &str = "discrepancies.read";
    pub const DISCREPANCY_REVIEW: &str = "discrepancy.review";
}

/// Who acted: a token (and the reader it named, and the group it is a token of),
/// or the system.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Token {
        token_id: &'a str,
        actor: &'a str,
        group: Option<&'a GroupId>,
    },
    System,
}

impl<'a> Actor<'a> {
    /// The caller, named as the signed-in person, else its token id.
    pub fn caller(caller: &'a Caller) -> Self {
        Actor::Token {
            token_id: &caller.token_id,
            actor: caller.actor(),
            group: caller.group.as_ref(),
        }
    }

    /// The caller acting for `reader`.
    pub fn reader(caller: &'a Caller, reader: &'a str) -> Self {
        Actor::Token {
            token_id: &caller.token_id,
            actor: reader,
            group: caller.group.as_ref(),
        }
    }
}

/// One audit row.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub site: &'a SiteId,
    pub actor: Actor<'a>,
    pub action: &'static str,
    pub study_instance_uid: Option<&'a str>,
    pub sop_instance_uid: Option<&'a str>,
    pub detail: serde_json::Value,
}

pub async fn record(client: &impl GenericClient, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
    let (token_id, actor, group) = match entry.actor {
        Actor::Token {
            token_id,
            actor,
            group,
        } => (Some(token_id), actor, group.map(GroupId::as_str)),
        Actor::System => (None, "system", None),
    };
    client
        .execute(
            "INSERT INTO audit_log (site_id, token_id, actor, action, study_instance_uid, \
                 sop_instance_uid, detail, group_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &entry.site.as_str(),
                &token_id,
                &actor,
                &entry.action,
                &entry.study_instance_uid,
                &entry.sop_instance_uid,
                &entry.detail,
                &group,
            ],
        )
        .await
        .doing("writing the audit log")?;
    Ok(())
}
