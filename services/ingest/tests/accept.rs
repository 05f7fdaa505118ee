//! The ingest pipeline shared by every channel: store first, then announce; refuse
//! into quarantine with a reason; report a retryable failure when a dependency is down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fxtriage_bus::{Bus, InProcessBus, KafkaBus, KafkaConfig};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::{IngestError, Ingestor, InstanceSource, Sender, Sites, quarantine};
use fxtriage_objstore::{LocalDirStore, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::{InstanceStored, Urgency, UrgencySource};

const SITES: &str = r#"
    [[site]]
    id = "st-marys"
    ae_titles = ["FXTRIAGE"]
    [site.urgency.ae_titles]
    ED_DR1 = "emergency"
"#;

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    bus: Arc<InProcessBus>,
    ingestor: Ingestor,
    sites: Sites,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().to_path_buf()));
    let bus = Arc::new(InProcessBus::default());
    let ingestor = Ingestor::new(
        Arc::clone(&store),
        bus.clone() as Arc<dyn Bus>,
        &fxtriage_proto::Namespace::none(),
    );
    Harness {
        _dir: dir,
        store,
        bus,
        ingestor,
        sites: Sites::from_toml(SITES).expect("sites"),
    }
}

fn modality(calling: &str) -> Sender {
    Sender::Dimse {
        calling_ae_title: calling.into(),
        called_ae_title: "FXTRIAGE".into(),
        peer: None,
    }
}

async fn next_event(bus: &InProcessBus) -> InstanceStored {
    let consumer = bus
        .subscribe("test", &[topics::INSTANCES])
        .await
        .expect("subscribe");
    let message = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("an event")
        .expect("next");
    consumer.ack(&message).expect("ack");
    InstanceStored::decode(message.payload.as_slice()).expect("an InstanceStored")
}

#[tokio::test]
async fn a_valid_instance_is_stored_byte_for_byte_then_announced() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let instance = SyntheticInstance::wrist();
    let bytes = Bytes::from(instance.to_part10());

    let stored = h
        .ingestor
        .accept(
            site,
            InstanceSource::Memory(bytes.clone()),
            &modality("ED_DR1"),
        )
        .await
        .expect("accepted");
    let expected_key = format!(
        "st-marys/{}/{}/{}.dcm",
        instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
    );
    assert_eq!(stored.object_key.as_str(), expected_key);
    assert_eq!(
        h.store.get(&stored.object_key).await.expect("stored"),
        bytes,
        "stored unchanged"
    );

    let event = next_event(&h.bus).await;
    assert_eq!(event, stored.event);
    assert_eq!(
        event.object_key, expected_key,
        "the event carries the key, not the pixels"
    );
    assert_eq!(event.byte_size, bytes.len() as u64);
    assert!(event.eligible);
    assert_eq!(event.body_part, "WRIST");
    assert_eq!(
        event.urgency(),
        Urgency::Emergency,
        "ED_DR1 maps to emergency for this site"
    );
    assert_eq!(event.urgency_source(), UrgencySource::AeTitle);
    assert_eq!(event.received_via, "dimse");
    assert_eq!(event.sha256.len(), 64);
}

#[tokio::test]
async fn a_not_eligible_instance_is_stored_and_flagged() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let chest = SyntheticInstance {
        body_part: "CHEST".into(),
        ..SyntheticInstance::wrist()
    };
    let source = InstanceSource::Memory(Bytes::from(chest.to_part10()));
    h.ingestor
        .accept(site, source, &modality("CR1"))
        .await
        .expect("accepted");
    let event = next_event(&h.bus).await;
    assert!(!event.eligible);
    assert!(
        event.not_eligible_reason.contains("CHEST"),
        "{}",
        event.not_eligible_reason
    );
    assert_eq!(event.urgency(), Urgency::Outpatient);
    assert_eq!(event.urgency_source(), UrgencySource::Default);
}

#[tokio::test]
async fn a_corrupt_instance_is_quarantined_with_its_reason_and_never_announced() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let bytes = SyntheticInstance::wrist().to_part10();
    let truncated = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);

    let error = h
        .ingestor
        .accept(
            site,
            InstanceSource::Memory(truncated.clone()),
            &modality("CR1"),
        )
        .await
        .expect_err("rejected");
    assert!(
        !error.is_retryable(),
        "the same bytes will never be accepted"
    );
    let IngestError::Rejected {
        rejection,
        quarantine_key,
        ..
    } = error
    else {
        panic!("not a rejection: {error}")
    };
    assert_eq!(rejection.kind, fxtriage_dicom::RejectionKind::Unreadable);
    assert!(
        quarantine_key.as_str().starts_with("quarantine/st-marys/"),
        "{quarantine_key}"
    );
    assert_eq!(h.store.get(&quarantine_key).await.expect("kept"), truncated);

    let records = quarantine::list(h.store.as_ref(), None)
        .await
        .expect("list");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "unreadable");
    assert!(
        records[0].reason.contains("truncated"),
        "{}",
        records[0].reason
    );
    assert_eq!(records[0].object_key, quarantine_key.as_str());
    assert!(
        matches!(&records[0].sender, Sender::Dimse { calling_ae_title, .. } if calling_ae_title == "CR1")
    );

    let consumer = h
        .bus
        .subscribe("test", &[topics::INSTANCES])
        .await
        .expect("subscribe");
    let nothing = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    assert!(
        nothing.is_err(),
        "a rejected instance never enters the pipeline"
    );
    let none_stored = h.store.list("st-marys/").await.expect("list");
    assert!(none_stored.is_empty(), "{none_stored:?}");
}

#[tokio::test]
async fn resending_the_same_instance_is_idempotent() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let bytes = Bytes::from(SyntheticInstance::wrist().to_part10());
    let first = h
        .ingestor
        .accept(
            site,
            InstanceSource::Memory(bytes.clone()),
            &modality("CR1"),
        )
        .await
        .expect("first");
    let second = h
        .ingestor
        .accept(site, InstanceSource::Memory(bytes), &modality("CR1"))
        .await
        .expect("second");
    assert_eq!(first.object_key, second.object_key);
    assert_eq!(
        h.store.list("st-marys/").await.expect("list").len(),
        1,
        "one object, overwritten"
    );
}

#[tokio::test]
async fn a_bus_that_cannot_confirm_gives_a_retryable_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().to_path_buf()));
    // A real Kafka client pointed at a port where nothing listens.
    let mut config = KafkaConfig::new("127.0.0.1:1", "ingest-test");
    config.delivery_timeout = Duration::from_secs(2);
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::connect(config).expect("client"));
    let ingestor = Ingestor::new(Arc::clone(&store), bus, &fxtriage_proto::Namespace::none());
    let sites = Sites::from_toml(SITES).expect("sites");
    let site = sites.site("st-marys").expect("site");
    let bytes = Bytes::from(SyntheticInstance::wrist().to_part10());

    let error = ingestor
        .accept(site, InstanceSource::Memory(bytes), &modality("CR1"))
        .await
        .expect_err("no broker");
    assert!(error.is_retryable(), "{error}");
    assert!(
        matches!(error, IngestError::Unavailable { stage: "bus", .. }),
        "{error}"
    );
    let left = store.list("st-marys/").await.expect("list");
    assert!(left.is_empty(), "nothing half-done stays visible: {left:?}");
}

/// A wrist radiograph stating AcquisitionDateTime `value`.
fn acquired(value: &str) -> Bytes {
    let mut dataset = SyntheticInstance::wrist().dataset();
    dataset.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::ACQUISITION_DATE_TIME,
        dicom_core::VR::DT,
        dicom_core::value::PrimitiveValue::from(value),
    ));
    Bytes::from(fxtriage_dicom::synthetic::part10(dataset))
}

#[tokio::test]
async fn the_acquisition_time_is_announced_when_it_is_plausible() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let format = time::macros::format_description!(
        "[year][month][day][hour][minute][second][offset_hour sign:mandatory][offset_minute]"
    );
    for (value, expected) in [
        (
            hour_ago.format(&format).expect("format"),
            Some(hour_ago.unix_timestamp()),
        ),
        // Years before: a wrong clock, not this image's acquisition.
        ("20010101120000+0000".to_owned(), None),
    ] {
        h.ingestor
            .accept(
                site,
                InstanceSource::Memory(acquired(&value)),
                &modality("ED_DR1"),
            )
            .await
            .expect("accepted");
        let event = next_event(&h.bus).await;
        assert_eq!(
            event.acquired_at.map(|at| at.seconds),
            expected,
            "AcquisitionDateTime {value}"
        );
    }
}

#[tokio::test]
async fn an_acquisition_time_without_an_offset_is_placed_in_the_sites_time_zone() {
    let h = harness();
    let mut site = h.sites.site("st-marys").expect("site").as_ref().clone();
    // An hour ago, as the clock on a modality in Kolkata shows it (UTC+05:30,
    // no daylight saving), with no offset in the dataset.
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let kolkata = hour_ago.to_offset(time::macros::offset!(+5:30));
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    let local = kolkata.format(&format).expect("format");
    for (zone, expected) in [
        (None, None),
        (Some("Asia/Kolkata"), Some(hour_ago.unix_timestamp())),
    ] {
        site.time_zone = zone.map(str::to_owned);
        h.ingestor
            .accept(
                &site,
                InstanceSource::Memory(acquired(&local)),
                &modality("ED_DR1"),
            )
            .await
            .expect("accepted");
        let event = next_event(&h.bus).await;
        assert_eq!(
            event.acquired_at.map(|at| at.seconds),
            expected,
            "AcquisitionDateTime {local} at a site in {zone:?}"
        );
    }
}

/// A wrist radiograph stating PatientSex, PatientAge and the equipment.
fn with_patient(sex: &str, age: &str, manufacturer: &str, model: &str) -> Bytes {
    let mut dataset = SyntheticInstance::wrist().dataset();
    for (tag, vr, value) in [
        (
            dicom_dictionary_std::tags::PATIENT_SEX,
            dicom_core::VR::CS,
            sex,
        ),
        (
            dicom_dictionary_std::tags::PATIENT_AGE,
            dicom_core::VR::AS,
            age,
        ),
        (
            dicom_dictionary_std::tags::MANUFACTURER,
            dicom_core::VR::LO,
            manufacturer,
        ),
        (
            dicom_dictionary_std::tags::MANUFACTURER_MODEL_NAME,
            dicom_core::VR::LO,
            model,
        ),
    ] {
        dataset.put(dicom_core::DataElement::new(
            tag,
            vr,
            dicom_core::value::PrimitiveValue::from(value),
        ));
    }
    Bytes::from(fxtriage_dicom::synthetic::part10(dataset))
}

/// The monitoring's subgroups travel with the event: the sex as one of the
/// three codes, the age in whole years (an infant's months are 0 years, not
/// "unknown"), the equipment; anything else is left empty.
#[tokio::test]
async fn the_monitoring_subgroups_are_announced() {
    let h = harness();
    let site = h.sites.site("st-marys").expect("site");
    for ((sex, age, manufacturer, model), expected) in [
        (
            ("F", "008Y", "ACME", "DR-1"),
            ("F", Some(8), "ACME", "DR-1"),
        ),
        (("M", "006M", "", ""), ("M", Some(0), "", "")),
        (("X", "", "ACME", ""), ("", None, "ACME", "")),
    ] {
        h.ingestor
            .accept(
                site,
                InstanceSource::Memory(with_patient(sex, age, manufacturer, model)),
                &modality("ED_DR1"),
            )
            .await
            .expect("accepted");
        let event = next_event(&h.bus).await;
        assert_eq!(
            (
                event.patient_sex.as_str(),
                event.patient_age_years,
                event.manufacturer.as_str(),
                event.manufacturer_model.as_str()
            ),
            expected,
            "{sex} {age} {manufacturer} {model}"
        );
    }
}
