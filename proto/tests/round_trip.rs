//! Every message survives encode/decode unchanged, and the wire numbers that other
//! services depend on have not moved.

use fxtriage_proto::Message;
use fxtriage_proto::v1::{
    AiResult, BoundingBox, ChangeKind, Detection, Finding, FindingStatus, InstanceRef,
    InstanceStored, ModelIdentity, StageTimings, Urgency, UrgencySource, WorklistChange,
    WorklistState,
};

fn instance_ref() -> InstanceRef {
    InstanceRef {
        site_id: "st-marys".into(),
        study_instance_uid: "1.2.826.0.1.3680043.8.498.1".into(),
        series_instance_uid: "1.2.826.0.1.3680043.8.498.1.1".into(),
        sop_instance_uid: "1.2.826.0.1.3680043.8.498.1.1.1".into(),
    }
}

fn timestamp(seconds: i64) -> fxtriage_proto::Timestamp {
    fxtriage_proto::Timestamp {
        seconds,
        nanos: 123_000_000,
    }
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("decodes what it encoded");
    assert_eq!(&decoded, message);
    bytes
}

#[test]
fn instance_stored_round_trips() {
    let message = InstanceStored {
        instance: Some(instance_ref()),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.4.70".into(),
        modality: "DX".into(),
        body_part: "WRIST".into(),
        view_position: "PA".into(),
        laterality: "L".into(),
        accession_number: "ACC0001".into(),
        urgency: Urgency::Emergency as i32,
        urgency_source: UrgencySource::Dataset as i32,
        object_key: "st-marys/1.2/1.2.1/1.2.1.1.dcm".into(),
        byte_size: 7_340_032,
        sha256: "ab".repeat(32),
        received_at: Some(timestamp(1_800_000_000)),
        eligible: true,
        not_eligible_reason: String::new(),
        received_via: "dimse".into(),
        sender: "MODALITY1".into(),
        expected_instances: 2,
        acquired_at: Some(timestamp(1_700_000_000)),
        patient_sex: "F".into(),
        patient_age_years: Some(0),
        manufacturer: "ACME".into(),
        manufacturer_model: "DR-1".into(),
    };
    round_trip(&message);
    // An age of zero (an infant) is present, not absent.
    let without_age = InstanceStored {
        patient_age_years: None,
        ..message.clone()
    };
    assert_ne!(
        round_trip(&without_age),
        round_trip(&message),
        "a stated age of 0 years is kept"
    );
    assert_eq!(message.urgency(), Urgency::Emergency);
}

#[test]
fn finding_round_trips() {
    let message = Finding {
        instance: Some(instance_ref()),
        status: FindingStatus::Analysed as i32,
        failure_reason: String::new(),
        failure_kind: String::new(),
        probability: 0.87,
        detections: vec![Detection {
            r#box: Some(BoundingBox {
                x_min: 10.5,
                y_min: 20.0,
                x_max: 300.0,
                y_max: 410.25,
            }),
            class_name: "fracture".into(),
            score: 0.91,
        }],
        model: Some(ModelIdentity {
            name: "fxtriage-demo".into(),
            version: "0.1.0".into(),
            sha256: "cd".repeat(32),
        }),
        timings: Some(StageTimings {
            fetch_us: 1,
            decode_us: 2,
            preprocess_us: 3,
            queue_us: 4,
            decode_wait_us: 8,
            inference_us: 5,
            postprocess_us: 6,
            batch_size: 8,
        }),
        analysed_at: Some(timestamp(1_800_000_100)),
        image_rows: 1955,
        image_columns: 1841,
    };
    round_trip(&message);

    let failed = Finding {
        instance: Some(instance_ref()),
        status: FindingStatus::Failed as i32,
        failure_reason: "unsupported transfer syntax 1.2.840.10008.1.2.4.51".into(),
        failure_kind: "unsupported-transfer-syntax".into(),
        ..Default::default()
    };
    round_trip(&failed);
    assert_eq!(failed.status(), FindingStatus::Failed);
}

#[test]
fn worklist_change_round_trips() {
    let message = WorklistChange {
        site_id: "st-marys".into(),
        study_instance_uid: "1.2.3".into(),
        kind: ChangeKind::Reprioritised as i32,
        state: WorklistState::Open as i32,
        urgency: Urgency::Outpatient as i32,
        ai_result: AiResult::Suspected as i32,
        probability: 0.93,
        has_probability: true,
        arrived_at: Some(timestamp(1_800_000_000)),
        deadline: Some(timestamp(1_800_003_600)),
        revision: 3,
        changed_at: Some(timestamp(1_800_000_200)),
        accession_number: "ACC0001".into(),
    };
    round_trip(&message);
}

/// Hand-encoded bytes pin the field numbers: if someone renumbers a field, an
/// older producer's bytes no longer decode to the same values and this fails.
#[test]
fn field_numbers_are_stable() {
    // InstanceStored: field 4 (modality) = "DX", field 9 (urgency) = 1, field 12 (byte_size) = 300.
    let bytes = [0x22, 0x02, b'D', b'X', 0x48, 0x01, 0x60, 0xAC, 0x02];
    let instance = InstanceStored::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(instance.modality, "DX");
    assert_eq!(instance.urgency(), Urgency::Emergency);
    assert_eq!(instance.byte_size, 300);

    // Finding: field 2 (status) = 2 (FAILED), field 3 (failure_reason) = "x".
    let bytes = [0x10, 0x02, 0x1A, 0x01, b'x'];
    let finding = Finding::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(finding.status(), FindingStatus::Failed);
    assert_eq!(finding.failure_reason, "x");

    // WorklistChange: field 3 (kind) = 5 (REPORTED), field 11 (revision) = 7.
    let bytes = [0x18, 0x05, 0x58, 0x07];
    let change = WorklistChange::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(change.kind(), ChangeKind::Reported);
    assert_eq!(change.revision, 7);
}

#[test]
fn garbage_is_a_decode_error_not_a_panic() {
    let garbage = [0xFF_u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    assert!(InstanceStored::decode(garbage.as_slice()).is_err());
    assert!(Finding::decode(garbage.as_slice()).is_err());
}
