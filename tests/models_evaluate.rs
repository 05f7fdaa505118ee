//! `fxtriage models evaluate`: the demo model measured through the service's
//! pipeline on synthetic datasets from `fxtriage samples`, in both layouts
//! (DICOM with labels.csv; PNG with YOLO labels), with the files that cannot
//! be used reported one by one, the figures recomputed here from the per-image
//! results, and the model card's measured section written.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{repository_path, succeeded};

fn fxtriage(arguments: &[&str], library: &str) -> Output {
    Command::new(fxtriage_testkit::fxtriage_bin())
        .args(arguments)
        .env("ORT_DYLIB_PATH", library)
        .output()
        .expect("run fxtriage")
}

fn samples(out: &Path, layout: &str, library: &str) {
    succeeded(&fxtriage(
        &[
            "samples",
            "--out",
            out.to_str().unwrap(),
            "--studies",
            "30",
            "--seed",
            "7",
            "--layout",
            layout,
        ],
        library,
    ));
}

fn evaluate(dataset: &Path, extra: &[&str], library: &str) -> Value {
    let demo = repository_path("models/fxtriage-demo");
    let mut arguments = vec![
        "models",
        "evaluate",
        demo.to_str().unwrap(),
        "--dataset",
        dataset.to_str().unwrap(),
        "--format",
        "json",
    ];
    arguments.extend_from_slice(extra);
    serde_json::from_str(&succeeded(&fxtriage(&arguments, library))).expect("JSON")
}

/// The reasons files were left out, by file.
fn excluded(evaluation: &Value) -> BTreeMap<String, String> {
    evaluation["dataset"]["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|left_out| {
            (
                left_out["file"].as_str().unwrap().to_owned(),
                left_out["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Sensitivity and specificity at `threshold` recomputed from the per-image
/// results, per study (highest probability; positive when any image is).
fn recount(evaluation: &Value, threshold: f64) -> (u64, u64, u64, u64) {
    let mut studies: BTreeMap<String, (f64, bool)> = BTreeMap::new();
    for result in evaluation["results"].as_array().unwrap() {
        let study = studies
            .entry(result["study"].as_str().unwrap().to_owned())
            .or_insert((0.0, false));
        study.0 = study.0.max(result["probability"].as_f64().unwrap());
        study.1 |= result["fracture"].as_bool().unwrap();
    }
    let (mut tp, mut positives, mut tn, mut negatives) = (0, 0, 0, 0);
    for (probability, fracture) in studies.values() {
        if *fracture {
            positives += 1;
            tp += u64::from(*probability >= threshold);
        } else {
            negatives += 1;
            tn += u64::from(*probability < threshold);
        }
    }
    (tp, positives, tn, negatives)
}

fn check_figures(evaluation: &Value, studies: u64, positive_studies: u64) {
    let figures = &evaluation["studies"];
    assert_eq!(figures["cases"], studies, "{figures}");
    assert_eq!(figures["positives"], positive_studies, "{figures}");
    let auc = figures["auc"]["value"].as_f64().unwrap();
    // The demo model separates its synthetic fractures well (AUC 0.987 on its
    // own held-out set); a broken decode or preprocess does not.
    assert!(auc > 0.85, "study AUC {auc}");
    match (
        figures["auc"]["lower"].as_f64(),
        figures["auc"]["upper"].as_f64(),
    ) {
        (Some(lower), Some(upper)) => {
            assert!(lower <= auc && auc <= upper && lower < upper, "{figures}");
        }
        // Perfect separation: DeLong's variance is 0, and no interval is claimed.
        _ => assert_eq!(auc, 1.0, "{figures}"),
    }
    for point in figures["operating_points"].as_array().unwrap() {
        let threshold = point["threshold"].as_f64().unwrap();
        let (tp, positives, tn, negatives) = recount(evaluation, threshold);
        assert_eq!(point["sensitivity"]["successes"], tp, "{point}");
        assert_eq!(point["sensitivity"]["total"], positives, "{point}");
        assert_eq!(point["specificity"]["successes"], tn, "{point}");
        assert_eq!(point["specificity"]["total"], negatives, "{point}");
        let sensitivity = &point["sensitivity"];
        assert!(sensitivity["lower"].as_f64().unwrap() <= sensitivity["value"].as_f64().unwrap());
    }
}

fn subgroup_values(evaluation: &Value, attribute: &str) -> Vec<String> {
    evaluation["subgroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|group| group["attribute"] == attribute)
        .map(|group| group["value"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dicom_with_labels_csv_is_measured_and_every_unusable_file_reported() {
    let Some(library) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let dataset = directory.path().join("dicom");
    samples(&dataset, "table", &library);
    // Four files that cannot be used, each for its own reason.
    std::fs::write(dataset.join("broken.dcm"), b"not a DICOM file at all").unwrap();
    std::fs::copy(
        dataset.join("study-001-1.dcm"),
        dataset.join("unlisted.dcm"),
    )
    .unwrap();
    let mut labels = std::fs::read_to_string(dataset.join("labels.csv")).unwrap();
    labels.push_str("broken.dcm,broken,no,F,40\n");
    labels.push_str("study-002-1.dcm,unlabelled,,M,30\n");
    labels.push_str("gone.dcm,gone,yes,M,30\n");
    // A JPEG picture of a fractured image, through the picture path.
    let jpeg = fxtriage_testkit::stack::tool("dcmj2pnm", "dcmtk");
    if jpeg {
        let status = Command::new("dcmj2pnm")
            .args(["--write-jpeg", "--min-max-window"])
            .arg(dataset.join("study-000-1.dcm"))
            .arg(dataset.join("picture-000.jpg"))
            .status()
            .expect("dcmj2pnm");
        assert!(status.success());
        labels.push_str("picture-000.jpg,picture,yes,F,8\n");
    }
    // The unlabelled row is removed from the rows of its study: study-002-1 is
    // labelled once, as missing.
    let labels: String = labels
        .lines()
        .filter(|line| !line.starts_with("study-002-1.dcm,2.25"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dataset.join("labels.csv"), labels).unwrap();
    let card = directory.path().join("MODEL_CARD.md");
    std::fs::write(&card, "# A model card\n\nWritten by hand.\n").unwrap();
    let reference = directory.path().join("reference.json");

    let evaluation = evaluate(
        &dataset,
        &[
            "--reference",
            reference.to_str().unwrap(),
            "--card",
            card.to_str().unwrap(),
            "--data-description",
            "synthetic radiographs from fxtriage samples (seed 7); not patients",
        ],
        &library,
    );

    // 30 studies, every second of two images: 45 images, and the JPEG.
    let images = 45 + u64::from(jpeg);
    let left_out = excluded(&evaluation);
    assert_eq!(
        left_out.get("broken.dcm").map(String::as_str),
        Some("unreadable"),
        "{left_out:?}"
    );
    assert_eq!(
        left_out.get("study-002-1.dcm").map(String::as_str),
        Some("no-label"),
        "{left_out:?}"
    );
    assert_eq!(
        left_out.get("gone.dcm").map(String::as_str),
        Some("label-without-image"),
        "{left_out:?}"
    );
    assert_eq!(
        left_out.get("unlisted.dcm").map(String::as_str),
        Some("no-label"),
        "{left_out:?}"
    );
    assert_eq!(left_out.len(), 4, "{left_out:?}");
    let summary = &evaluation["dataset"];
    assert_eq!(summary["images_evaluated"], images - 1, "{summary}");
    assert_eq!(summary["images_excluded"], 4);
    assert_eq!(summary["excluded_by_reason"]["no-label"], 2);
    assert_eq!(evaluation["model"]["name"], "fxtriage-demo");

    // Studies 0, 3, ..., 27 have a fracture (10); study 2 lost its only image;
    // the JPEG is a study of its own, with a fracture.
    check_figures(&evaluation, 29 + u64::from(jpeg), 10 + u64::from(jpeg));
    if jpeg {
        let picture = evaluation["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|result| result["file"] == "picture-000.jpg")
            .expect("the JPEG is analysed");
        assert!(picture["probability"].as_f64().unwrap() > 0.0);
    }
    // Body part and view came from the DICOM headers (labels.csv has neither);
    // sex and age from labels.csv, with paediatric bands.
    let parts = subgroup_values(&evaluation, "body part");
    assert!(
        parts.contains(&"WRIST".to_owned()) && parts.contains(&"HIP".to_owned()),
        "{parts:?}"
    );
    let bands = subgroup_values(&evaluation, "age band");
    assert!(
        bands.contains(&"5-11".to_owned()) && bands.contains(&"12-17".to_owned()),
        "{bands:?}"
    );
    assert_eq!(subgroup_values(&evaluation, "sex"), ["F", "M"]);

    // The reference score distribution: the evaluated images' probabilities
    // in ten bins.
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(reference["model_name"], "fxtriage-demo");
    assert_eq!(reference["images"], images - 1);
    let bins: Vec<f64> = reference["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect();
    assert_eq!(bins.len(), 10);
    let in_last_bin = evaluation["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["probability"].as_f64().unwrap() >= 0.9)
        .count() as f64;
    assert!(
        (bins[9] - in_last_bin / (images - 1) as f64).abs() < 1e-9,
        "{bins:?}"
    );
    assert!((bins.iter().sum::<f64>() - 1.0).abs() < 1e-9);

    let card = std::fs::read_to_string(&card).unwrap();
    assert!(
        card.starts_with("# A model card\n\nWritten by hand.\n"),
        "{card}"
    );
    assert!(
        card.contains("<!-- fxtriage models evaluate: begin -->"),
        "{card}"
    );
    assert!(card.contains("synthetic radiographs from fxtriage samples (seed 7); not patients"));
    assert!(card.contains("| suspected |"), "{card}");
    assert!(card.contains("fxtriage-demo 0.1.0"), "{card}");
}

#[test]
fn yolo_pictures_are_measured_with_boxes_and_agree_with_the_dicom_path() {
    let Some(library) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let yolo = directory.path().join("yolo");
    samples(&yolo, "yolo", &library);
    let dicom = directory.path().join("dicom");
    samples(&dicom, "table", &library);
    // A label without its image, an image without its label, and a label that
    // does not fit its image (study 4 is negative: no fracture lost).
    std::fs::write(yolo.join("labels/orphan.txt"), "0 0.5 0.5 0.1 0.1\n").unwrap();
    std::fs::copy(
        yolo.join("images/study-001-1.png"),
        yolo.join("images/nolabel.png"),
    )
    .unwrap();
    std::fs::write(yolo.join("labels/study-004-1.txt"), "0 1.7 0.5 0.2 0.2\n").unwrap();

    let evaluation = evaluate(&yolo, &[], &library);
    let left_out = excluded(&evaluation);
    assert_eq!(
        left_out.get("labels/orphan.txt").map(String::as_str),
        Some("label-without-image"),
        "{left_out:?}"
    );
    assert_eq!(
        left_out.get("images/nolabel.png").map(String::as_str),
        Some("no-label"),
        "{left_out:?}"
    );
    assert_eq!(
        left_out.get("images/study-004-1.png").map(String::as_str),
        Some("label-mismatch"),
        "{left_out:?}"
    );
    assert_eq!(left_out.len(), 3, "{left_out:?}");
    assert!(
        evaluation["dataset"]["fracture_classes"]
            .as_str()
            .unwrap()
            .starts_with("0 ("),
        "the fracture class is found by its name; the marker class is not one: {}",
        evaluation["dataset"]["fracture_classes"]
    );
    // Study 4 had one image: 29 studies, 10 with a fracture (the marker boxes
    // of class 1 on every picture make none positive).
    check_figures(&evaluation, 29, 10);
    let boxes = &evaluation["boxes"];
    assert_eq!(
        boxes["recall"]["total"], 10,
        "one box per fractured image: {boxes}"
    );
    assert!(
        boxes["recall"]["successes"].as_u64().unwrap() >= 5,
        "the heatmap's boxes overlap most fractures: {boxes}"
    );
    assert_eq!(subgroup_values(&evaluation, "view"), ["PA"]);

    // The same images through DICOM and through 8-bit PNG get nearly the same
    // probability: the picture path is the service's pipeline.
    let dicom_evaluation = evaluate(&dicom, &[], &library);
    let by_name = |evaluation: &Value, extension: &str| -> BTreeMap<String, f64> {
        evaluation["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| {
                let file = result["file"].as_str().unwrap();
                let name = file
                    .trim_start_matches("images/")
                    .trim_end_matches(extension)
                    .to_owned();
                (name, result["probability"].as_f64().unwrap())
            })
            .collect()
    };
    let pictures = by_name(&evaluation, ".png");
    let files = by_name(&dicom_evaluation, ".dcm");
    let mut differences = Vec::new();
    for (name, probability) in &pictures {
        let through_dicom = files[name];
        assert!(
            (probability - through_dicom).abs() < 0.1,
            "{name}: {probability} as PNG, {through_dicom} as DICOM"
        );
        differences.push((probability - through_dicom).abs());
    }
    assert_eq!(differences.len(), 44);
    differences.sort_by(f64::total_cmp);
    assert!(
        differences[22] < 0.01,
        "median difference {}",
        differences[22]
    );
}

#[test]
fn a_directory_in_no_known_layout_is_refused_with_the_layouts_named() {
    let Some(library) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let demo = repository_path("models/fxtriage-demo");
    let output = fxtriage(
        &[
            "models",
            "evaluate",
            demo.to_str().unwrap(),
            "--dataset",
            directory.path().to_str().unwrap(),
        ],
        &library,
    );
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("neither labels.csv nor images/ with labels/"),
        "{said}"
    );

    // Every labelled file unreadable: nothing to measure is an error, with why.
    std::fs::write(directory.path().join("a.dcm"), b"garbage").unwrap();
    std::fs::write(
        directory.path().join("labels.csv"),
        "file,fracture\na.dcm,yes\n",
    )
    .unwrap();
    let output = fxtriage(
        &[
            "models",
            "evaluate",
            demo.to_str().unwrap(),
            "--dataset",
            directory.path().to_str().unwrap(),
        ],
        &library,
    );
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("no image of") && said.contains("unreadable"),
        "{said}"
    );
}

#[test]
fn images_outside_the_manifests_intended_use_are_left_out_with_the_reason() {
    let Some(library) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    // The demo model with a manifest claiming wrists only.
    let model = directory.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for file in ["model.onnx", "manifest.toml"] {
        std::fs::copy(
            repository_path("models/fxtriage-demo").join(file),
            model.join(file),
        )
        .unwrap();
    }
    let mut manifest = std::fs::read_to_string(model.join("manifest.toml")).unwrap();
    manifest.push_str("\n[scope]\nbody_parts = [\"WRIST\"]\n");
    std::fs::write(model.join("manifest.toml"), manifest).unwrap();
    let dataset = directory.path().join("table");
    samples(&dataset, "table", &library);

    let output = fxtriage(
        &[
            "models",
            "evaluate",
            model.to_str().unwrap(),
            "--dataset",
            dataset.to_str().unwrap(),
            "--format",
            "json",
        ],
        &library,
    );
    let evaluation: Value = serde_json::from_str(&succeeded(&output)).expect("JSON");
    // Studies 0, 7, 14, 21, 28 are wrists: 5 studies, 7 images (odd ones have two).
    assert_eq!(
        evaluation["dataset"]["images_evaluated"], 7,
        "{}",
        evaluation["dataset"]
    );
    assert_eq!(
        evaluation["dataset"]["excluded_by_reason"]["outside-intended-use"],
        38
    );
    let left_out = excluded(&evaluation);
    assert_eq!(left_out["study-001-1.dcm"], "outside-intended-use");
    assert!(
        evaluation["dataset"]["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("body part ANKLE")),
        "the reason names the body part"
    );
    assert_eq!(subgroup_values(&evaluation, "body part"), ["WRIST"]);
}
