//! `fxtriage models evaluate`: a model run over a labelled dataset through the
//! service's own decode, preprocess, batching and postprocessing
//! ([`crate::analyse`]), and the figures a model card reports: the AUC with
//! DeLong's interval, sensitivity, specificity, PPV and NPV at each operating
//! point with Wilson intervals, per subgroup, box recall at an IoU threshold,
//! and calibration. The unit is the study (its highest probability; positive
//! when any image is), and the image too.

pub mod dataset;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use fxtriage_core::stats::{self, Auc, Calibration, Proportion};
use fxtriage_dicom::picture;
use fxtriage_dicom::pixels::{ModelImage, PixelError, decode_for_input};
use serde::Serialize;

use crate::analyse::{Analysis, analyse_decoded};
use crate::batcher::Batcher;
use crate::manifest::{Manifest, OperatingPoint};
use crate::model::Model;

pub use dataset::{
    Attributes, Case, Dataset, DatasetError, DatasetOptions, Excluded, Layout, load,
};
pub use report::{card_section, table};

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// A detection matches a ground-truth box at this intersection over union.
    pub iou_threshold: f32,
    /// Images analysed at once (decoding is bounded by [`crate::analyse::DECODERS`]).
    pub concurrency: usize,
    /// Equal-width bins of the calibration.
    pub calibration_bins: usize,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            iou_threshold: 0.3,
            concurrency: 16,
            calibration_bins: 10,
        }
    }
}

/// One image's result.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub file: String,
    pub study: String,
    pub fracture: bool,
    pub probability: f64,
    /// Ground-truth boxes, and those of them a detection matched.
    pub boxes: usize,
    pub boxes_found: usize,
    pub detections: usize,
    #[serde(skip)]
    pub attributes: Attributes,
}

/// Sensitivity, specificity, PPV and NPV at one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct AtThreshold {
    pub name: String,
    pub threshold: f64,
    pub sensitivity: Proportion,
    pub specificity: Proportion,
    pub ppv: Proportion,
    pub npv: Proportion,
    /// What the manifest says was measured where the threshold was chosen.
    pub manifest_sensitivity: f64,
    pub manifest_specificity: f64,
}

/// The figures of one set of cases.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub cases: u64,
    pub positives: u64,
    pub auc: Option<Auc>,
    pub operating_points: Vec<AtThreshold>,
    pub calibration: Option<Calibration>,
}

/// A subgroup's figures (at the study level).
#[derive(Debug, Clone, Serialize)]
pub struct Subgroup {
    pub attribute: String,
    pub value: String,
    pub figures: Figures,
}

/// Box recall: the ground-truth fracture boxes a detection overlaps at the
/// IoU threshold, and the detections on images without a fracture.
#[derive(Debug, Clone, Serialize)]
pub struct BoxFigures {
    pub iou_threshold: f32,
    pub recall: Proportion,
    pub images_without_fracture: u64,
    pub detections_on_images_without_fracture: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub intended_use: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub path: String,
    pub layout: Layout,
    /// Images listed (labelled or not), evaluated, and left out.
    pub images_listed: u64,
    pub images_evaluated: u64,
    pub images_excluded: u64,
    /// Left out, by reason.
    pub excluded_by_reason: BTreeMap<String, u64>,
    pub excluded: Vec<Excluded>,
    pub studies: u64,
    pub fracture_classes: Option<String>,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub model: ModelSummary,
    pub dataset: DatasetSummary,
    pub studies: Figures,
    pub images: Figures,
    pub subgroups: Vec<Subgroup>,
    pub boxes: Option<BoxFigures>,
    /// The distribution of the image probabilities: the model's reference for
    /// the drift monitoring (`fxtriage models register-reference`).
    pub score_distribution: Vec<f64>,
    pub results: Vec<ImageResult>,
}

/// Decodes one file for the model: DICOM by its signature or extension, else
/// PNG or JPEG by their signatures.
fn decode_file(bytes: &[u8], input_size: u32) -> Result<ModelImage, PixelError> {
    // A picture by its signature; anything else goes to the DICOM reader,
    // which says what is wrong with it when it is not DICOM either.
    if is_dicom(bytes) || picture::sniff(bytes).is_none() {
        return decode_for_input(bytes, input_size).map(|(image, _window)| image);
    }
    let image = picture::decode_picture(bytes)?;
    Ok(ModelImage {
        original_rows: image.rows,
        original_columns: image.columns,
        image,
        level: 0,
    })
}

fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() > 132 && &bytes[128..132] == b"DICM"
}

/// The DICOM header's attributes fill what the labels left empty.
fn complete_attributes(case: &Case, bytes: &[u8]) -> Attributes {
    let mut attributes = case.attributes.clone();
    if !is_dicom(bytes) {
        return attributes;
    }
    if let Ok(info) = fxtriage_dicom::inspect_bytes(bytes) {
        if attributes.body_part.is_empty() {
            attributes.body_part = info.body_part;
        }
        if attributes.view.is_empty() {
            attributes.view = info.view_position;
        }
        if attributes.sex.is_empty() {
            attributes.sex = info.patient_sex;
        }
        if attributes.age.is_none() {
            attributes.age = fxtriage_dicom::age_in_years(&info.patient_age);
        }
    }
    attributes
}

/// Intersection over union of two boxes (x_min, y_min, x_max, y_max).
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - intersection;
    if union <= 0.0 {
        0.0
    } else {
        intersection / union
    }
}

/// The ground-truth boxes (normalised) that some detection (pixels) overlaps
/// at `threshold`; each detection matches at most one box, best first.
fn boxes_found(case: &Case, analysis: &Analysis, threshold: f32) -> usize {
    let (columns, rows) = (analysis.columns as f32, analysis.rows as f32);
    let detections: Vec<[f32; 4]> = analysis
        .detections
        .iter()
        .map(|found| {
            let b = found.bounding_box;
            [
                b.x_min / columns,
                b.y_min / rows,
                b.x_max / columns,
                b.y_max / rows,
            ]
        })
        .collect();
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (t, truth) in case.boxes.iter().enumerate() {
        for (d, detection) in detections.iter().enumerate() {
            let overlap = iou(*truth, *detection);
            if overlap >= threshold {
                pairs.push((overlap, t, d));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut truth_used = vec![false; case.boxes.len()];
    let mut detection_used = vec![false; detections.len()];
    let mut found = 0;
    for (_, t, d) in pairs {
        if !truth_used[t] && !detection_used[d] {
            truth_used[t] = true;
            detection_used[d] = true;
            found += 1;
        }
    }
    found
}

/// An image analysed (with its subgroup attributes completed), or why not.
type Outcome = Result<(Analysis, Attributes), Excluded>;

/// Runs `model` over `dataset` and measures it.
pub async fn evaluate(
    model: &Arc<Model>,
    batcher: &Batcher,
    dataset: Dataset,
    options: &EvaluateOptions,
    progress: impl Fn(usize) + Send + Sync,
) -> Evaluation {
    let manifest = &model.manifest;
    let input_size = model.input_size();
    let classes = &manifest.output.classes;
    let listed = dataset.cases.len() + dataset.excluded.len();
    let mut excluded = dataset.excluded.clone();
    let outcomes: Vec<(Case, Outcome)> = futures::stream::iter(dataset.cases.iter().cloned())
        .map(|case| async move {
            let outcome = match tokio::fs::read(&case.path).await {
                Err(error) => Err(Excluded {
                    file: case.file.clone(),
                    reason: "unreadable".into(),
                    detail: error.to_string(),
                }),
                Ok(bytes) => {
                    let attributes = complete_attributes(&case, &bytes);
                    // As the service does: an image outside the model's
                    // intended use is not scored.
                    if let Some(reason) = manifest.scope.refusal(
                        &attributes.body_part,
                        &attributes.view,
                        attributes.age,
                    ) {
                        let file = case.file.clone();
                        return (
                            case,
                            Err(Excluded {
                                file,
                                reason: crate::manifest::OUTSIDE_INTENDED_USE.into(),
                                detail: reason,
                            }),
                        );
                    }
                    analyse_decoded(
                        move || decode_file(&bytes, input_size),
                        batcher,
                        input_size,
                        classes,
                    )
                    .await
                    .map(|analysis| (analysis, attributes))
                    .map_err(|error| Excluded {
                        file: case.file.clone(),
                        reason: error.kind().to_owned(),
                        detail: error.to_string(),
                    })
                }
            };
            (case, outcome)
        })
        .buffered(options.concurrency.max(1))
        .enumerate()
        .map(|(index, outcome)| {
            progress(index + 1);
            outcome
        })
        .collect()
        .await;
    let mut results = Vec::new();
    let mut box_total = 0;
    let mut box_found = 0;
    let mut negative_images = 0;
    let mut negative_detections = 0;
    for (case, outcome) in outcomes {
        match outcome {
            Err(left_out) => excluded.push(left_out),
            Ok((analysis, attributes)) => {
                let found = boxes_found(&case, &analysis, options.iou_threshold);
                box_total += case.boxes.len() as u64;
                box_found += found as u64;
                if !case.fracture {
                    negative_images += 1;
                    negative_detections += analysis.detections.len() as u64;
                }
                results.push(ImageResult {
                    file: case.file.clone(),
                    study: case.study.clone(),
                    fracture: case.fracture,
                    probability: f64::from(analysis.probability),
                    boxes: case.boxes.len(),
                    boxes_found: found,
                    detections: analysis.detections.len(),
                    attributes,
                });
            }
        }
    }
    let points = operating_points(manifest);
    let image_cases: Vec<(f64, bool, &Attributes)> = results
        .iter()
        .map(|r| (r.probability, r.fracture, &r.attributes))
        .collect();
    let study_cases = by_study(&results);
    let subgroups = subgroups(&study_cases, &points, options.calibration_bins);
    let mut excluded_by_reason = BTreeMap::new();
    for left_out in &excluded {
        *excluded_by_reason
            .entry(left_out.reason.clone())
            .or_insert(0) += 1;
    }
    Evaluation {
        model: ModelSummary {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            sha256: model.sha256().to_owned(),
            intended_use: manifest.intended_use.trim().to_owned(),
        },
        dataset: DatasetSummary {
            path: dataset.root.display().to_string(),
            layout: dataset.layout,
            images_listed: listed as u64,
            images_evaluated: results.len() as u64,
            images_excluded: excluded.len() as u64,
            excluded_by_reason,
            excluded,
            studies: study_cases.len() as u64,
            fracture_classes: dataset.fracture_classes.map(|(classes, source)| {
                let list: Vec<String> = classes.iter().map(u32::to_string).collect();
                format!("{} ({source})", list.join(", "))
            }),
        },
        studies: figures(&study_cases, &points, options.calibration_bins),
        images: figures(&image_cases, &points, options.calibration_bins),
        subgroups,
        score_distribution: stats::score_distribution(
            &results.iter().map(|r| r.probability).collect::<Vec<_>>(),
        ),
        boxes: (box_total > 0).then(|| BoxFigures {
            iou_threshold: options.iou_threshold,
            recall: Proportion::new(box_found, box_total),
            images_without_fracture: negative_images,
            detections_on_images_without_fracture: negative_detections,
        }),
        results,
    }
}

fn operating_points(manifest: &Manifest) -> Vec<(String, OperatingPoint)> {
    vec![
        ("suspected".into(), manifest.operating_points.suspected),
        ("possible".into(), manifest.operating_points.possible),
    ]
}

/// One case per study: the highest probability of its images, positive when
/// any image is; the attributes of its first image.
fn by_study(results: &[ImageResult]) -> Vec<(f64, bool, &Attributes)> {
    let mut studies: BTreeMap<&str, (f64, bool, &Attributes)> = BTreeMap::new();
    for result in results {
        studies
            .entry(&result.study)
            .and_modify(|study| {
                study.0 = study.0.max(result.probability);
                study.1 |= result.fracture;
            })
            .or_insert((result.probability, result.fracture, &result.attributes));
    }
    studies.into_values().collect()
}

/// The figures of `cases` (probability, positive).
fn figures(
    cases: &[(f64, bool, &Attributes)],
    points: &[(String, OperatingPoint)],
    bins: usize,
) -> Figures {
    let positives: Vec<f64> = cases.iter().filter(|c| c.1).map(|c| c.0).collect();
    let negatives: Vec<f64> = cases.iter().filter(|c| !c.1).map(|c| c.0).collect();
    let operating_points = points
        .iter()
        .map(|(name, point)| {
            let threshold = f64::from(point.threshold);
            let flagged = |p: f64| p >= threshold;
            let tp = positives.iter().filter(|&&p| flagged(p)).count() as u64;
            let fp = negatives.iter().filter(|&&p| flagged(p)).count() as u64;
            let fn_ = positives.len() as u64 - tp;
            let tn = negatives.len() as u64 - fp;
            AtThreshold {
                name: name.clone(),
                threshold,
                sensitivity: Proportion::new(tp, tp + fn_),
                specificity: Proportion::new(tn, tn + fp),
                ppv: Proportion::new(tp, tp + fp),
                npv: Proportion::new(tn, tn + fn_),
                manifest_sensitivity: f64::from(point.sensitivity),
                manifest_specificity: f64::from(point.specificity),
            }
        })
        .collect();
    let pairs: Vec<(f64, bool)> = cases.iter().map(|c| (c.0, c.1)).collect();
    Figures {
        cases: cases.len() as u64,
        positives: positives.len() as u64,
        auc: stats::auc(&positives, &negatives),
        operating_points,
        calibration: stats::calibration(&pairs, bins),
    }
}

/// The age bands, youngest first (the paediatric ones: 0-4, 5-11, 12-17),
/// each with the age it starts at.
const AGE_BANDS: [(f64, &str); 7] = [
    (0.0, "0-4"),
    (5.0, "5-11"),
    (12.0, "12-17"),
    (18.0, "18-39"),
    (40.0, "40-64"),
    (65.0, "65-79"),
    (80.0, "80+"),
];

/// The age band of `age` (years), or "unknown".
pub fn age_band(age: Option<f64>) -> &'static str {
    let Some(age) = age.filter(|age| *age >= 0.0) else {
        return "unknown";
    };
    AGE_BANDS
        .iter()
        .rev()
        .find(|(start, _)| age >= *start)
        .map_or("unknown", |(_, band)| band)
}

/// Where a subgroup's value sorts: age bands youngest first, other values
/// alphabetically, "unknown" last.
fn value_order(value: &str) -> (usize, &str) {
    match AGE_BANDS.iter().position(|(_, band)| *band == value) {
        Some(position) => (position, ""),
        None if value == "unknown" => (usize::MAX, value),
        None => (0, value),
    }
}

/// Figures per value of each attribute, for the attributes with more than one
/// known value or any known value.
fn subgroups(
    cases: &[(f64, bool, &Attributes)],
    points: &[(String, OperatingPoint)],
    bins: usize,
) -> Vec<Subgroup> {
    type Key = fn(&Attributes) -> String;
    let attributes: [(&str, Key); 4] = [
        ("body part", |a| a.body_part.clone()),
        ("view", |a| a.view.clone()),
        ("sex", |a| a.sex.clone()),
        ("age band", |a| age_band(a.age).to_owned()),
    ];
    let mut subgroups = Vec::new();
    for (attribute, key) in attributes {
        let mut groups: BTreeMap<String, Vec<(f64, bool, &Attributes)>> = BTreeMap::new();
        for case in cases {
            let value = key(case.2);
            let value = if value.is_empty() {
                "unknown".to_owned()
            } else {
                value
            };
            groups.entry(value).or_default().push(*case);
        }
        if groups.keys().all(|value| value == "unknown") {
            continue;
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| value_order(&a.0).cmp(&value_order(&b.0)));
        for (value, members) in groups {
            subgroups.push(Subgroup {
                attribute: attribute.to_owned(),
                value,
                figures: figures(&members, points, bins),
            });
        }
    }
    subgroups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]), 0.0);
        let half = iou([0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]);
        assert!((half - 1.0 / 3.0).abs() < 1e-6, "{half}");
    }

    #[test]
    fn studies_take_their_highest_probability_and_any_positive() {
        let none = Attributes::default();
        let result = |study: &str, fracture, probability| ImageResult {
            file: String::new(),
            study: study.into(),
            fracture,
            probability,
            boxes: 0,
            boxes_found: 0,
            detections: 0,
            attributes: none.clone(),
        };
        let results = [
            result("a", false, 0.2),
            result("a", true, 0.7),
            result("b", false, 0.4),
        ];
        let studies = by_study(&results);
        assert_eq!(studies.len(), 2);
        assert_eq!((studies[0].0, studies[0].1), (0.7, true));
        assert_eq!((studies[1].0, studies[1].1), (0.4, false));
    }

    #[test]
    fn paediatric_ages_have_their_own_bands() {
        assert_eq!(age_band(Some(0.5)), "0-4");
        assert_eq!(age_band(Some(11.9)), "5-11");
        assert_eq!(age_band(Some(17.0)), "12-17");
        assert_eq!(age_band(Some(90.0)), "80+");
        assert_eq!(age_band(None), "unknown");
        let mut values = ["unknown", "18-39", "5-11", "0-4"];
        values.sort_by(|a, b| value_order(a).cmp(&value_order(b)));
        assert_eq!(values, ["0-4", "5-11", "18-39", "unknown"]);
    }
}
