//! Quarantine: a rejected object is kept, unchanged, under
//! `quarantine/{site}/{date}/{id}.dcm` with a JSON record of the reason, the
//! sender and the time beside it (`{id}.json`). It never enters the pipeline.

use bytes::Bytes;
use fxtriage_core::SiteId;
use fxtriage_dicom::Rejection;
use fxtriage_objstore::{ObjectKey, ObjectStore, ObjectStoreError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Sender;
use crate::accept::InstanceSource;

pub const PREFIX: &str = "quarantine/";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineRecord {
    pub site: String,
    /// Kebab-case rejection kind, e.g. "unsupported-bit-depth".
    pub kind: String,
    pub reason: String,
    pub sender: Sender,
    /// RFC 3339.
    pub received_at: String,
    pub byte_size: u64,
    pub sha256: String,
    /// Key of the quarantined bytes.
    pub object_key: String,
}

/// Stores the rejected bytes and their record; returns the key of the bytes.
pub async fn quarantine(
    store: &dyn ObjectStore,
    site: &SiteId,
    source: &InstanceSource,
    sha256: &str,
    rejection: &Rejection,
    sender: &Sender,
) -> Result<ObjectKey, ObjectStoreError> {
    let now = OffsetDateTime::now_utc();
    let date = format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let id = uuid::Uuid::new_v4();
    let base = format!("{PREFIX}{site}/{date}/{id}");
    let object_key = ObjectKey::parse(&format!("{base}.dcm"))?;
    let record_key = ObjectKey::parse(&format!("{base}.json"))?;
    source.put_into(store, &object_key).await?;
    let record = QuarantineRecord {
        site: site.to_string(),
        kind: rejection.kind.as_str().to_owned(),
        reason: rejection.message.clone(),
        sender: sender.clone(),
        received_at: now.format(&Rfc3339).unwrap_or_default(),
        byte_size: source.len(),
        sha256: sha256.to_owned(),
        object_key: object_key.to_string(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record of strings always serialises");
    store.put(&record_key, Bytes::from(json)).await?;
    Ok(object_key)
}

/// Records a refusal whose bytes are not kept (an instance over the site's size
/// limit: keeping it would defeat the limit). The record has no object key.
pub async fn record_refusal(
    store: &dyn ObjectStore,
    site: &SiteId,
    rejection: &Rejection,
    sender: &Sender,
    byte_size: u64,
) -> Result<ObjectKey, ObjectStoreError> {
    let now = OffsetDateTime::now_utc();
    let date = format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let record_key = ObjectKey::parse(&format!(
        "{PREFIX}{site}/{date}/{}.json",
        uuid::Uuid::new_v4()
    ))?;
    let record = QuarantineRecord {
        site: site.to_string(),
        kind: rejection.kind.as_str().to_owned(),
        reason: format!("{} (bytes not kept)", rejection.message),
        sender: sender.clone(),
        received_at: now.format(&Rfc3339).unwrap_or_default(),
        byte_size,
        sha256: String::new(),
        object_key: String::new(),
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record of strings always serialises");
    store.put(&record_key, Bytes::from(json)).await?;
    Ok(record_key)
}

/// Every quarantine record, of one site or of all, oldest first.
pub async fn list(
    store: &dyn ObjectStore,
    site: Option<&SiteId>,
) -> Result<Vec<QuarantineRecord>, ObjectStoreError> {
    let prefix = match site {
        Some(site) => format!("{PREFIX}{site}/"),
        None => PREFIX.to_owned(),
    };
    let mut records = Vec::new();
    for meta in store.list(&prefix).await? {
        if !meta.key.as_str().ends_with(".json") {
            continue;
        }
        let bytes = store.get(&meta.key).await?;
        match serde_json::from_slice::<QuarantineRecord>(&bytes) {
            Ok(record) => records.push(record),
            Err(error) => tracing::warn!(key = %meta.key, %error, "unreadable quarantine record"),
        }
    }
    records.sort_by(|a, b| a.received_at.cmp(&b.received_at));
    Ok(records)
}
