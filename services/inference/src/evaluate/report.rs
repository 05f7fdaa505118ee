//! An evaluation as a terminal table, and as the measured section of a model
//! card (Markdown).

use std::fmt::Write as _;

use super::{Evaluation, Figures};

fn auc_text(figures: &Figures) -> String {
    figures
        .auc
        .map(|auc| auc.display())
        .unwrap_or_else(|| "n/a (one class only)".into())
}

fn figures_lines(out: &mut String, title: &str, figures: &Figures) {
    let _ = writeln!(
        out,
        "{title}: {} ({} with a fracture); AUC {}",
        figures.cases,
        figures.positives,
        auc_text(figures)
    );
    for point in &figures.operating_points {
        let _ = writeln!(
            out,
            "  {:<9} >= {:.4}: sensitivity {}  specificity {}  (manifest: {:.3} / {:.3})",
            point.name,
            point.threshold,
            point.sensitivity.display(),
            point.specificity.display(),
            point.manifest_sensitivity,
            point.manifest_specificity,
        );
        let _ = writeln!(
            out,
            "  {:<9}             PPV {}  NPV {}",
            "",
            point.ppv.display(),
            point.npv.display()
        );
    }
    if let Some(calibration) = &figures.calibration {
        let _ = writeln!(
            out,
            "  calibration: Brier {:.4}, expected calibration error {:.4}",
            calibration.brier, calibration.expected_calibration_error
        );
    }
}

/// The evaluation for a terminal: the model, the dataset and what was left
/// out, the figures per study and per image, the subgroups, the boxes.
pub fn table(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    let model = &evaluation.model;
    let dataset = &evaluation.dataset;
    let _ = writeln!(
        out,
        "model {} {} ({})\n  {}",
        model.name, model.version, model.sha256, model.intended_use
    );
    let _ = writeln!(
        out,
        "dataset {} ({:?} layout): {} images listed, {} evaluated in {} studies, {} left out",
        dataset.path,
        dataset.layout,
        dataset.images_listed,
        dataset.images_evaluated,
        dataset.studies,
        dataset.images_excluded
    );
    if let Some(classes) = &dataset.fracture_classes {
        let _ = writeln!(out, "  fracture classes: {classes}");
    }
    for (reason, count) in &dataset.excluded_by_reason {
        let _ = writeln!(out, "  left out, {reason}: {count}");
    }
    for left_out in &dataset.excluded {
        let _ = writeln!(
            out,
            "    {}: {} ({})",
            left_out.file, left_out.reason, left_out.detail
        );
    }
    figures_lines(&mut out, "studies", &evaluation.studies);
    figures_lines(&mut out, "images", &evaluation.images);
    if !evaluation.subgroups.is_empty() {
        let _ = writeln!(
            out,
            "subgroups (studies; sensitivity and specificity at the suspected threshold):"
        );
        for group in &evaluation.subgroups {
            let suspected = &group.figures.operating_points[0];
            let _ = writeln!(
                out,
                "  {:<9} {:<10} n {:>5} (+{:>4})  AUC {:<24} sens {:<30} spec {}",
                group.attribute,
                group.value,
                group.figures.cases,
                group.figures.positives,
                auc_text(&group.figures),
                suspected.sensitivity.display(),
                suspected.specificity.display(),
            );
        }
    }
    if let Some(boxes) = &evaluation.boxes {
        let _ = writeln!(
            out,
            "boxes: recall at IoU {:.2} {}; {} detections on {} images without a fracture",
            boxes.iou_threshold,
            boxes.recall.display(),
            boxes.detections_on_images_without_fracture,
            boxes.images_without_fracture
        );
    }
    out
}

/// The model card's measured section: what was measured through the product's
/// own pipeline, on which data, when. `data` says what the data is (where it
/// came from, and whether it is synthetic); it is printed with every figure.
pub fn card_section(evaluation: &Evaluation, data: &str, date: &str) -> String {
    let mut out = String::new();
    let model = &evaluation.model;
    let dataset = &evaluation.dataset;
    let _ = writeln!(out, "## Measured through the fxtriage pipeline\n");
    let _ = writeln!(
        out,
        "Written by `fxtriage models evaluate` on {date}: model {} {} (weights sha256 `{}`), \
         through the same decoding, preprocessing, inference and postprocessing as the service.\n",
        model.name, model.version, model.sha256
    );
    let _ = writeln!(out, "**Data:** {data}\n");
    let _ = writeln!(
        out,
        "{} images listed ({:?} layout), {} evaluated in {} studies, {} left out{}.\n",
        dataset.images_listed,
        dataset.layout,
        dataset.images_evaluated,
        dataset.studies,
        dataset.images_excluded,
        if dataset.excluded_by_reason.is_empty() {
            String::new()
        } else {
            let reasons: Vec<String> = dataset
                .excluded_by_reason
                .iter()
                .map(|(reason, count)| format!("{count} {reason}"))
                .collect();
            format!(" ({})", reasons.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "These figures describe this model on this data only; they are no \
         evidence of performance on other patients, sites or equipment.\n"
    );
    let _ = writeln!(
        out,
        "| unit | n | with fracture | AUC (95% CI, DeLong) |\n|---|---|---|---|"
    );
    for (unit, figures) in [
        ("study", &evaluation.studies),
        ("image", &evaluation.images),
    ] {
        let _ = writeln!(
            out,
            "| {unit} | {} | {} | {} |",
            figures.cases,
            figures.positives,
            auc_text(figures)
        );
    }
    let _ = writeln!(
        out,
        "\nAt the manifest's operating points (95% Wilson intervals; the manifest's own \
         figures are per image, on the data it names):\n"
    );
    let _ = writeln!(
        out,
        "| unit | operating point | threshold | sensitivity | specificity | PPV | NPV | manifest sensitivity / specificity |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for (unit, figures) in [
        ("study", &evaluation.studies),
        ("image", &evaluation.images),
    ] {
        for point in &figures.operating_points {
            let _ = writeln!(
                out,
                "| {unit} | {} | {:.4} | {} | {} | {} | {} | {:.3} / {:.3} |",
                point.name,
                point.threshold,
                point.sensitivity.display(),
                point.specificity.display(),
                point.ppv.display(),
                point.npv.display(),
                point.manifest_sensitivity,
                point.manifest_specificity
            );
        }
    }
    if !evaluation.subgroups.is_empty() {
        let _ = writeln!(
            out,
            "\nSubgroups (studies; at the suspected threshold):\n\n\
             | subgroup | n | with fracture | AUC | sensitivity | specificity |\n|---|---|---|---|---|---|"
        );
        for group in &evaluation.subgroups {
            let suspected = &group.figures.operating_points[0];
            let _ = writeln!(
                out,
                "| {}: {} | {} | {} | {} | {} | {} |",
                group.attribute,
                group.value,
                group.figures.cases,
                group.figures.positives,
                auc_text(&group.figures),
                suspected.sensitivity.display(),
                suspected.specificity.display()
            );
        }
    }
    if let Some(boxes) = &evaluation.boxes {
        let _ = writeln!(
            out,
            "\nBoxes: recall at IoU {:.2} {}; {} detections on {} images without a fracture.",
            boxes.iou_threshold,
            boxes.recall.display(),
            boxes.detections_on_images_without_fracture,
            boxes.images_without_fracture
        );
    }
    if let Some(calibration) = &evaluation.studies.calibration {
        let _ = writeln!(
            out,
            "\nCalibration (studies): Brier score {:.4}, expected calibration error {:.4} over {} bins.",
            calibration.brier,
            calibration.expected_calibration_error,
            calibration.bins.len()
        );
    }
    out
}
