//! What happens to every incoming instance, whatever the channel (C-STORE,
//! STOW-RS, import): parse and validate it; quarantine it with the reason if it is
//! refused; otherwise store the original bytes at `{site}/{study}/{series}/{sop}.dcm`,
//! then publish `InstanceStored`, and only then report success to the sender.
//!
//! Re-sending an instance overwrites the same object with the same bytes and
//! publishes the event again; the prioritizer's idempotency makes that harmless.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use fxtriage_bus::{Bus, Record};
use fxtriage_core::InstanceKey;
use fxtriage_dicom::{
    Eligibility, InstanceInfo, Rejection, RejectionKind, ValidatedUids, inspect_bytes,
    inspect_file, validate,
};
use fxtriage_objstore::{ObjectKey, ObjectStore, ObjectStoreError};
use fxtriage_proto::Message as _;
use fxtriage_proto::Namespace;
use fxtriage_proto::v1::{InstanceRef, InstanceStored};
use fxtriage_telemetry::metrics::names;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::Sender;
use crate::quarantine::quarantine;
use crate::sites::SiteConfig;
use crate::urgency::{clinical_urgency, to_proto};

/// The bytes of one instance: in memory (STOW-RS, small imports) or in a file
/// (C-STORE streams to a temporary file; large imports).
#[derive(Debug, Clone)]
pub enum InstanceSource {
    Memory(Bytes),
    File { path: PathBuf, len: u64 },
}

impl InstanceSource {
    pub fn len(&self) -> u64 {
        match self {
            InstanceSource::Memory(bytes) => bytes.len() as u64,
            InstanceSource::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) async fn put_into(
        &self,
        store: &dyn ObjectStore,
        key: &ObjectKey,
    ) -> Result<(), ObjectStoreError> {
        match self {
            InstanceSource::Memory(bytes) => store.put(key, bytes.clone()).await,
            InstanceSource::File { path, .. } => store.put_file(key, path).await,
        }
    }

    /// Parses the instance and hashes its bytes (CPU work, off the async threads).
    /// Parsing reads the whole data set, pixel data included, into memory (a
    /// second copy of an instance held in memory); that happens one per core at
    /// a time ([`PARSES`]), so memory stays bounded however many arrive.
    async fn inspect(&self) -> (Result<InstanceInfo, Rejection>, String) {
        let _parsing = PARSES.acquire().await.ok();
        let source = self.clone();
        let outcome = tokio::task::spawn_blocking(move || match &source {
            InstanceSource::Memory(bytes) => {
                (inspect_bytes(bytes), hex::encode(Sha256::digest(bytes)))
            }
            InstanceSource::File { path, .. } => (inspect_file(path), file_sha256(path)),
        })
        .await;
        outcome.unwrap_or_else(|error| {
            (
                Err(Rejection::new(
                    RejectionKind::Unreadable,
                    format!("parser failed: {error}"),
                )),
                String::new(),
            )
        })
    }
}

/// Instances parsed at once: one per core. Each parse holds its instance's data
/// set in memory while it runs; more at once would only share the same cores.
static PARSES: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
    )
});

fn file_sha256(path: &std::path::Path) -> String {
    let mut hasher = Sha256::new();
    match std::fs::File::open(path).and_then(|mut file| std::io::copy(&mut file, &mut hasher)) {
        Ok(_) => hex::encode(hasher.finalize()),
        Err(_) => String::new(),
    }
}

/// An instance stored and announced.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object_key: ObjectKey,
    pub event: InstanceStored,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Refused for good; the sender must not retry the same bytes.
    #[error("rejected ({rejection}); quarantined as {quarantine_key}")]
    Rejected {
        rejection: Rejection,
        quarantine_key: ObjectKey,
        sop_class_uid: Option<String>,
        sop_instance_uid: Option<String>,
    },
    /// Not stored or not announced because a dependency failed; the sender should retry.
    #[error("temporarily unable to store the instance: {stage}: {message}")]
    Unavailable {
        stage: &'static str,
        message: String,
    },
}

impl IngestError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, IngestError::Unavailable { .. })
    }
}

/// The ingest pipeline shared by every channel.
#[derive(Debug, Clone)]
pub struct Ingestor {
    store: Arc<dyn ObjectStore>,
    bus: Arc<dyn Bus>,
    /// Where `InstanceStored` goes: the instances topic of the deployment's namespace.
    instances_topic: String,
}

impl Ingestor {
    pub fn new(store: Arc<dyn ObjectStore>, bus: Arc<dyn Bus>, namespace: &Namespace) -> Self {
        Self {
            store,
            bus,
            instances_topic: namespace.instances_topic(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Accepts one instance for `site`; see the module documentation for the order of steps.
    pub async fn accept(
        &self,
        site: &SiteConfig,
        source: InstanceSource,
        sender: &Sender,
    ) -> Result<Stored, IngestError> {
        let span = tracing::info_span!("ingest.accept", site = %site.id, via = sender.channel(), sop_instance_uid = tracing::field::Empty);
        let bytes = source.len();
        let outcome = self
            .accept_in_span(site, source, sender, &span)
            .instrument(span.clone())
            .await;
        let channel = sender.channel();
        let (label, reason) = match &outcome {
            Ok(_) => {
                metrics::counter!(names::INGEST_BYTES, "channel" => channel).increment(bytes);
                ("stored", "")
            }
            Err(IngestError::Rejected { rejection, .. }) => ("refused", rejection.kind.as_str()),
            Err(IngestError::Unavailable { stage, .. }) => ("unavailable", *stage),
        };
        metrics::counter!(
            names::INGEST_INSTANCES,
            "site" => site.id.to_string(),
            "channel" => channel,
            "outcome" => label,
            "reason" => reason,
        )
        .increment(1);
        outcome
    }

    async fn accept_in_span(
        &self,
        site: &SiteConfig,
        source: InstanceSource,
        sender: &Sender,
        span: &tracing::Span,
    ) -> Result<Stored, IngestError> {
        let (inspected, sha256) = source.inspect().await;
        let checked = inspected.and_then(|info| {
            let (uids, eligibility) = validate(&info, source.len(), &site.routing, &site.limits)?;
            Ok((info, uids, eligibility))
        });
        let (info, uids, eligibility) = match checked {
            Ok(checked) => checked,
            Err(rejection) => {
                return Err(self.reject(site, &source, &sha256, rejection, sender).await);
            }
        };
        span.record("sop_instance_uid", uids.sop_instance.as_str());

        let instance_key = InstanceKey {
            site: site.id.clone(),
            study: uids.study_instance.clone(),
            series: uids.series_instance.clone(),
            sop: uids.sop_instance.clone(),
        };
        let object_key = ObjectKey::parse(&instance_key.object_key()).map_err(|error| {
            IngestError::Unavailable {
                stage: "object key",
                message: error.to_string(),
            }
        })?;
        let storing = Instant::now();
        source
            .put_into(self.store.as_ref(), &object_key)
            .await
            .map_err(|error| IngestError::Unavailable {
                stage: "object store",
                message: error.to_string(),
            })?;
        metrics::histogram!(names::INGEST_STORE_SECONDS).record(storing.elapsed());

        let event = instance_stored(
            site,
            &info,
            &uids,
            &eligibility,
            &object_key,
            &source,
            sha256,
            sender,
        );
        let record = Record::new(uids.study_instance.as_str(), event.encode_to_vec());
        let publishing = Instant::now();
        let published = self.bus.produce(&self.instances_topic, record).await;
        metrics::histogram!(names::INGEST_PUBLISH_SECONDS).record(publishing.elapsed());
        if let Err(error) = published {
            // Unannounced, the object must not look stored (an import would skip it as a
            // duplicate); the sender retries and stores it again.
            if let Err(cleanup) = self.store.delete(&object_key).await {
                tracing::warn!(key = %object_key, error = %cleanup, "could not remove an unannounced object");
            }
            return Err(IngestError::Unavailable {
                stage: "bus",
                message: error.to_string(),
            });
        }
        tracing::info!(key = %object_key, %eligibility, "instance stored and announced");
        Ok(Stored { object_key, event })
    }

    /// Records, in quarantine, an instance refused for its size before it was kept.
    pub async fn record_oversize_refusal(
        &self,
        site: &SiteConfig,
        sender: &Sender,
        message: String,
        byte_size: u64,
    ) {
        let rejection = Rejection::new(RejectionKind::InstanceTooLarge, message);
        match crate::quarantine::record_refusal(
            self.store.as_ref(),
            &site.id,
            &rejection,
            sender,
            byte_size,
        )
        .await
        {
            Ok(key) => {
                tracing::warn!(reason = %rejection, record = %key, "oversize instance refused; recorded in quarantine")
            }
            Err(error) => {
                tracing::error!(%error, reason = %rejection, "could not record an oversize refusal in quarantine")
            }
        }
    }

    async fn reject(
        &self,
        site: &SiteConfig,
        source: &InstanceSource,
        sha256: &str,
        rejection: Rejection,
        sender: &Sender,
    ) -> IngestError {
        match quarantine(
            self.store.as_ref(),
            &site.id,
            source,
            sha256,
            &rejection,
            sender,
        )
        .await
        {
            Ok(quarantine_key) => {
                tracing::warn!(reason = %rejection, %quarantine_key, "instance rejected and quarantined");
                IngestError::Rejected {
                    rejection,
                    quarantine_key,
                    sop_class_uid: None,
                    sop_instance_uid: None,
                }
            }
            Err(error) => IngestError::Unavailable {
                stage: "quarantine",
                message: error.to_string(),
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn instance_stored(
    site: &SiteConfig,
    info: &InstanceInfo,
    uids: &ValidatedUids,
    eligibility: &Eligibility,
    object_key: &ObjectKey,
    source: &InstanceSource,
    sha256: String,
    sender: &Sender,
) -> InstanceStored {
    let (urgency, urgency_source) =
        clinical_urgency(info, sender.calling_ae_title(), &site.urgency);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let (eligible, not_eligible_reason) = match eligibility {
        Eligibility::Eligible => (true, String::new()),
        Eligibility::NotEligible { reason } => (false, reason.clone()),
    };
    InstanceStored {
        instance: Some(InstanceRef {
            site_id: site.id.to_string(),
            study_instance_uid: uids.study_instance.to_string(),
            series_instance_uid: uids.series_instance.to_string(),
            sop_instance_uid: uids.sop_instance.to_string(),
        }),
        sop_class_uid: uids.sop_class.to_string(),
        transfer_syntax_uid: info.transfer_syntax_uid.clone(),
        modality: info.modality.clone(),
        body_part: info.body_part.clone(),
        view_position: info.view_position.clone(),
        laterality: info.laterality.clone(),
        accession_number: info.accession_number.clone(),
        urgency: to_proto(urgency) as i32,
        urgency_source: urgency_source as i32,
        object_key: object_key.to_string(),
        byte_size: source.len(),
        sha256,
        received_at: Some(fxtriage_proto::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        eligible,
        not_eligible_reason,
        received_via: sender.channel().to_owned(),
        sender: sender.to_string(),
        expected_instances: 0,
        acquired_at: plausible_acquisition(
            info.acquired_at
                .or_else(|| in_site_zone(info.acquired_local, site.time_zone.as_deref())),
            now,
        )
        .map(|at| fxtriage_proto::Timestamp {
            seconds: at.unix_timestamp(),
            nanos: at.nanosecond() as i32,
        }),
        patient_sex: match info.patient_sex.as_str() {
            sex @ ("M" | "F" | "O") => sex.to_owned(),
            _ => String::new(),
        },
        patient_age_years: fxtriage_dicom::age_in_years(&info.patient_age)
            .filter(|age| (0.0..=150.0).contains(age))
            .map(|age| age.floor() as u32),
        manufacturer: info.manufacturer.chars().take(64).collect(),
        manufacturer_model: info.manufacturer_model.chars().take(64).collect(),
    }
}

/// A local acquisition time (the dataset stated no offset) placed in the
/// site's time zone; `None` when the site names none. In a daylight-saving
/// change, a time that did not exist is moved forward, and one that occurred
/// twice is the earlier (jiff's "compatible" rule, as RFC 5545).
fn in_site_zone(
    local: Option<time::PrimitiveDateTime>,
    zone: Option<&str>,
) -> Option<time::OffsetDateTime> {
    let (local, zone) = (local?, zone?);
    let zone = jiff::tz::TimeZone::get(zone).ok()?;
    let civil = jiff::civil::DateTime::new(
        i16::try_from(local.year()).ok()?,
        local.month() as i8,
        local.day() as i8,
        local.hour() as i8,
        local.minute() as i8,
        local.second() as i8,
        i32::try_from(local.nanosecond()).ok()?,
    )
    .ok()?;
    let instant = zone.to_timestamp(civil).ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(instant.as_nanosecond()).ok()
}

/// The acquisition time when it is plausible for an image received at `now`
/// (since the epoch): not more than 14 hours after it (a clock or offset
/// set wrong by up to the widest time zone), not more than 30 days before;
/// never later than `now`.
fn plausible_acquisition(
    acquired: Option<time::OffsetDateTime>,
    now: std::time::Duration,
) -> Option<time::OffsetDateTime> {
    let received = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64).ok()?;
    let acquired = acquired?;
    let plausible = acquired <= received + time::Duration::hours(14)
        && acquired >= received - time::Duration::days(30);
    plausible.then(|| acquired.min(received))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_local_time_is_placed_in_the_sites_zone_across_daylight_saving() {
        let london = Some("Europe/London");
        let at = |local| in_site_zone(Some(local), london);
        // Summer time (UTC+1), winter (UTC+0).
        assert_eq!(
            at(datetime!(2026-07-01 8:30)),
            Some(datetime!(2026-07-01 7:30 UTC))
        );
        assert_eq!(
            at(datetime!(2026-11-30 10:15)),
            Some(datetime!(2026-11-30 10:15 UTC))
        );
        // 01:30 on 29 March 2026 never happened in London (clocks went from
        // 01:00 to 02:00): moved forward, to 02:30 BST.
        assert_eq!(
            at(datetime!(2026-03-29 1:30)),
            Some(datetime!(2026-03-29 1:30 UTC))
        );
        // 01:30 on 25 October 2026 happened twice: the earlier, in BST.
        assert_eq!(
            at(datetime!(2026-10-25 1:30)),
            Some(datetime!(2026-10-25 0:30 UTC))
        );
        // Elsewhere, and fractions of a second kept.
        assert_eq!(
            in_site_zone(Some(datetime!(2026-11-30 9:00:00.25)), Some("Asia/Kolkata")),
            Some(datetime!(2026-11-30 3:30:00.25 UTC))
        );
        // No zone named, no local time, or a zone that is not one: no time.
        assert_eq!(in_site_zone(Some(datetime!(2026-11-30 10:15)), None), None);
        assert_eq!(in_site_zone(None, london), None);
        assert_eq!(
            in_site_zone(Some(datetime!(2026-11-30 10:15)), Some("Mars/Olympus")),
            None
        );
    }
}
