//! Validation gives each kind of bad input its own typed, specific rejection, and
//! routes eligible and not-eligible instances as the site's rules say.

use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_dicom::{
    Eligibility, ImageLimits, RejectionKind, RoutingRules, inspect_bytes, sop_class, validate,
};

fn check(instance: &SyntheticInstance) -> Result<Eligibility, RejectionKind> {
    let bytes = instance.to_part10();
    let info = inspect_bytes(&bytes).map_err(|rejection| rejection.kind)?;
    validate(
        &info,
        bytes.len() as u64,
        &RoutingRules::default(),
        &ImageLimits::default(),
    )
    .map(|(_, eligibility)| eligibility)
    .map_err(|rejection| rejection.kind)
}

#[test]
fn a_wrist_radiograph_is_eligible_and_described() {
    let instance = SyntheticInstance {
        requested_priority: "STAT".into(),
        ..SyntheticInstance::wrist()
    };
    let bytes = instance.to_part10();
    let info = inspect_bytes(&bytes).expect("parses");
    assert_eq!(
        info.study_instance_uid.as_deref(),
        Some(instance.study_instance_uid.as_str())
    );
    assert_eq!(
        info.sop_class_uid.as_deref(),
        Some(sop_class::DX_FOR_PRESENTATION)
    );
    assert_eq!(
        (info.rows, info.columns, info.bits_stored),
        (Some(256), Some(256), Some(12))
    );
    assert_eq!(info.body_part, "WRIST");
    assert_eq!(info.laterality, "L");
    assert_eq!(info.requested_priority, "STAT");
    assert_eq!(info.transfer_syntax_uid, "1.2.840.10008.1.2.1");
    assert_eq!(check(&instance), Ok(Eligibility::Eligible));
}

#[test]
fn a_chest_or_ct_is_stored_but_not_analysed() {
    let chest = SyntheticInstance {
        body_part: "CHEST".into(),
        ..SyntheticInstance::wrist()
    };
    assert!(
        matches!(check(&chest), Ok(Eligibility::NotEligible { reason }) if reason.contains("CHEST"))
    );
    let no_body_part = SyntheticInstance {
        body_part: String::new(),
        ..SyntheticInstance::wrist()
    };
    assert!(matches!(
        check(&no_body_part),
        Ok(Eligibility::NotEligible { .. })
    ));
    let wrong_modality = SyntheticInstance {
        modality: "MG".into(),
        ..SyntheticInstance::wrist()
    };
    assert!(
        matches!(check(&wrong_modality), Ok(Eligibility::NotEligible { reason }) if reason.contains("MG"))
    );
}

#[test]
fn a_sop_class_outside_the_rules_is_rejected() {
    let ct = SyntheticInstance {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        ..SyntheticInstance::wrist()
    };
    assert_eq!(check(&ct), Err(RejectionKind::SopClassNotAccepted));
}

#[test]
fn malformed_uids_are_rejected() {
    let bad = SyntheticInstance {
        study_instance_uid: "1.2.abc".into(),
        ..SyntheticInstance::wrist()
    };
    assert_eq!(check(&bad), Err(RejectionKind::MalformedUid));
}

#[test]
fn oversized_images_and_odd_depths_are_rejected() {
    let limits = ImageLimits {
        max_dimension: 200,
        ..ImageLimits::default()
    };
    let bytes = SyntheticInstance::wrist().to_part10();
    let info = inspect_bytes(&bytes).expect("parses");
    let rejection = validate(&info, bytes.len() as u64, &RoutingRules::default(), &limits)
        .expect_err("too large");
    assert_eq!(rejection.kind, RejectionKind::ImageTooLarge);
    assert!(
        rejection.message.contains("256x256"),
        "{}",
        rejection.message
    );

    let limits = ImageLimits {
        max_instance_bytes: 1000,
        ..ImageLimits::default()
    };
    let rejection = validate(&info, bytes.len() as u64, &RoutingRules::default(), &limits)
        .expect_err("too many bytes");
    assert_eq!(rejection.kind, RejectionKind::InstanceTooLarge);

    let deep = SyntheticInstance {
        bits_stored: 16,
        ..SyntheticInstance::wrist()
    };
    assert_eq!(check(&deep), Ok(Eligibility::Eligible));
}

#[test]
fn truncated_and_non_dicom_input_is_rejected_without_panicking() {
    let bytes = SyntheticInstance::wrist().to_part10();
    let truncated = &bytes[..bytes.len() - 1000];
    let rejection = inspect_bytes(truncated).expect_err("truncated");
    assert_eq!(rejection.kind, RejectionKind::Unreadable, "{rejection}");

    let rejection = inspect_bytes(b"this is a text file, not an image").expect_err("not DICOM");
    assert!(
        matches!(
            rejection.kind,
            RejectionKind::NotDicom | RejectionKind::Unreadable
        ),
        "{rejection}"
    );

    for cut in [0, 10, 132, 200, 400] {
        assert!(inspect_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}
