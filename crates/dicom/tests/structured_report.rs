//! The AI result as a DICOM SR: valid by two independent validators (dcmtk's
//! dsrdump, dicom3tools' dciodvfy), with the content a PACS user reads, and UIDs
//! that stay the same for the same result and change with it.

use std::process::Command;

use fxtriage_core::policy::AiResult;
use fxtriage_core::{BoundingBox, Detection};
use fxtriage_dicom::sr::{Algorithm, ImageResult, StudyContext, StudyReport};
use fxtriage_dicom::synthetic::{SyntheticInstance, part10};

fn report() -> StudyReport {
    let source = SyntheticInstance::wrist();
    let context = StudyContext::from_dataset(&source.dataset());
    let second = format!("{}.2", source.series_instance_uid);
    StudyReport {
        context,
        algorithm: Algorithm {
            name: "fxtriage-heatmap".into(),
            version: "0.3.0".into(),
            sha256: "ab".repeat(32),
        },
        result: AiResult::Suspected,
        not_analysed_reason: None,
        probability: Some(0.91),
        images: vec![
            ImageResult {
                series_instance_uid: source.series_instance_uid.clone(),
                sop_class_uid: source.sop_class_uid.clone(),
                sop_instance_uid: source.sop_instance_uid.clone(),
                frame: 1,
                probability: Some(0.91),
                detections: vec![Detection {
                    class_name: "fracture".into(),
                    score: 0.91,
                    bounding_box: BoundingBox {
                        x_min: 40.0,
                        y_min: 60.5,
                        x_max: 120.0,
                        y_max: 140.0,
                    },
                }],
            },
            ImageResult {
                series_instance_uid: source.series_instance_uid.clone(),
                sop_class_uid: source.sop_class_uid.clone(),
                sop_instance_uid: second,
                frame: 1,
                probability: Some(0.12),
                detections: Vec::new(),
            },
        ],
        supersedes: None,
        content_date: "20261130".into(),
        content_time: "101500".into(),
    }
}

fn write(report: &StudyReport, directory: &std::path::Path) -> std::path::PathBuf {
    let path = directory.join(format!("{}.dcm", report.sop_instance_uid()));
    std::fs::write(&path, part10(report.dataset())).expect("write SR");
    path
}

fn run(program: &str, arguments: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_same_result_has_the_same_uids_and_a_changed_one_new_ones() {
    let first = report();
    assert_eq!(first.sop_instance_uid(), first.clone().sop_instance_uid());
    assert!(first.sop_instance_uid().starts_with("2.25."));
    assert!(first.sop_instance_uid().len() <= 64);
    let mut changed = first.clone();
    // Content date and time say when it was made, not what it says.
    changed.content_time = "235959".into();
    assert_eq!(changed.sop_instance_uid(), first.sop_instance_uid());
    changed.images[0].detections[0].bounding_box.x_max = 121.0;
    assert_ne!(
        changed.sop_instance_uid(),
        first.sop_instance_uid(),
        "a moved region"
    );
    let mut other_model = first.clone();
    other_model.algorithm.sha256 = "cd".repeat(32);
    assert_ne!(
        other_model.sop_instance_uid(),
        first.sop_instance_uid(),
        "another model"
    );
    assert_eq!(
        other_model.series_instance_uid(),
        first.series_instance_uid(),
        "one series per study"
    );
}

#[test]
fn the_report_is_valid_for_dsrdump_and_dciodvfy() {
    if !fxtriage_testkit::stack::tool("dsrdump", "dcmtk")
        || !fxtriage_testkit::stack::tool("dciodvfy", "dicom3tools")
    {
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let mut cases = vec![report()];
    let mut not_analysed = cases[0].clone();
    not_analysed.result = AiResult::NotAnalysed;
    not_analysed.probability = None;
    not_analysed.not_analysed_reason =
        Some("unsupported transfer syntax 1.2.840.10008.1.2.4.51".into());
    for image in &mut not_analysed.images {
        image.probability = None;
        image.detections.clear();
    }
    cases.push(not_analysed);
    let mut revision = cases[0].clone();
    revision.supersedes = Some(cases[0].sop_instance_uid());
    revision.probability = Some(0.95);
    cases.push(revision);

    for case in &cases {
        let path = write(case, directory.path());
        let path = path.to_str().expect("utf-8 path");
        let (valid, dump) = run("dsrdump", &["-Ee", "-Ec", "-Ev", path]);
        assert!(valid, "dsrdump refuses the SR:\n{dump}");
        assert!(dump.contains("Imaging Measurement Report"), "{dump}");
        assert!(dump.contains("Comprehensive SR"), "{dump}");
        let (_, verdict) = run("dciodvfy", &[path]);
        let errors: Vec<&str> = verdict
            .lines()
            .filter(|line| line.starts_with("Error"))
            .collect();
        assert!(errors.is_empty(), "dciodvfy: {errors:#?}\n{verdict}");
    }

    // What a PACS user reads: the algorithm, the result, the region on its image.
    let path = write(&cases[0], directory.path());
    let (_, dump) = run(
        "dsrdump",
        &["+Pl", "+Pu", "+Pt", path.to_str().expect("utf-8")],
    );
    for expected in [
        "fxtriage-heatmap 0.3.0",
        &format!("sha256:{}", "ab".repeat(32)),
        "Fracture suspected",
        "Fracture of bone",
        "POLYLINE",
        "40/60.5,120/60.5,120/140,40/140,40/60.5",
        "TID 1500 (DCMR)",
        &cases[0].images[0].sop_instance_uid,
        "0.9100",
        "not a diagnosis",
    ] {
        assert!(
            dump.contains(expected),
            "dsrdump shows no {expected:?}:\n{dump}"
        );
    }
    let path = write(&cases[1], directory.path());
    let (_, dump) = run("dsrdump", &["+Pl", path.to_str().expect("utf-8")]);
    assert!(dump.contains("Not analysed"), "{dump}");
    assert!(dump.contains("unsupported transfer syntax"), "{dump}");
    assert!(
        !dump.contains("POLYLINE"),
        "no region when nothing was analysed"
    );
    let path = write(&cases[2], directory.path());
    let (_, dump) = run("dcmdump", &[path.to_str().expect("utf-8")]);
    assert!(dump.contains("PredecessorDocumentsSequence"), "{dump}");
    assert!(
        dump.contains(&cases[0].sop_instance_uid()),
        "the revision names the one it supersedes"
    );
}

#[test]
fn the_secondary_capture_is_valid_for_dciodvfy() {
    use fxtriage_dicom::capture::Capture;
    if !fxtriage_testkit::stack::tool("dciodvfy", "dicom3tools")
        || !fxtriage_testkit::stack::tool("dcmdump", "dcmtk")
    {
        return;
    }
    let (source, fracture) = SyntheticInstance::radiograph(3, true, "WRIST");
    let [x_min, y_min, x_max, y_max] = fracture.expect("a fracture box");
    let (image, _) = fxtriage_dicom::pixels::decode_windowed(&source.to_part10()).expect("decode");
    let capture = Capture {
        context: StudyContext::from_dataset(&source.dataset()),
        algorithm: Algorithm {
            name: "fxtriage-heatmap".into(),
            version: "0.3.0".into(),
            sha256: "ab".repeat(32),
        },
        result: AiResult::Suspected,
        source_series_instance_uid: source.series_instance_uid.clone(),
        source_sop_class_uid: source.sop_class_uid.clone(),
        source_sop_instance_uid: source.sop_instance_uid.clone(),
        probability: 0.87,
        detections: vec![Detection {
            class_name: "fracture".into(),
            score: 0.87,
            bounding_box: BoundingBox {
                x_min,
                y_min,
                x_max,
                y_max,
            },
        }],
        content_date: "20261130".into(),
        content_time: "101500".into(),
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("sc.dcm");
    std::fs::write(&path, part10(capture.dataset(&image))).expect("write SC");
    let path = path.to_str().expect("utf-8");
    let (_, verdict) = run("dciodvfy", &[path]);
    let errors: Vec<&str> = verdict
        .lines()
        .filter(|line| line.starts_with("Error"))
        .collect();
    assert!(errors.is_empty(), "dciodvfy: {errors:#?}\n{verdict}");
    let (parsed, dump) = run("dcmdump", &[path]);
    assert!(parsed, "{dump}");
    for expected in [
        "(0028,0301) CS [YES]",
        "(0008,0064) CS [WSD]",
        "AI TRIAGE AID - NOT A DIAGNOSIS",
        &source.sop_instance_uid,
    ] {
        assert!(
            dump.contains(expected),
            "dcmdump shows no {expected:?}:\n{dump}"
        );
    }
}
