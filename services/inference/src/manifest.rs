//! A model is a directory: `model.onnx` plus `manifest.toml`, which says what the
//! model is for, what input it takes, how to read its output and at which
//! operating points it was measured. See models/fxtriage-demo/manifest.toml.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub intended_use: String,
    #[serde(default)]
    pub trained_on: String,
    pub weights: Weights,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub operating_points: OperatingPoints,
    #[serde(default)]
    pub evaluation: Option<toml::Value>,
    /// The images the model is meant for; an image outside is not scored.
    #[serde(default)]
    pub scope: Scope,
}

/// The intended use as the service enforces it: body parts (BodyPartExamined),
/// views (ViewPosition) and patient ages the model was made and measured for.
/// An empty list or an absent bound allows any. An image outside gets a
/// finding "not analysed" of kind [`OUTSIDE_INTENDED_USE`] with the reason,
/// never a score: its study keeps its clinical priority. An image whose age
/// is unknown is outside a model with age bounds.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub body_parts: Vec<String>,
    #[serde(default)]
    pub views: Vec<String>,
    #[serde(default)]
    pub min_age_years: Option<f64>,
    #[serde(default)]
    pub max_age_years: Option<f64>,
}

/// The failure kind of an image outside the model's intended use.
pub const OUTSIDE_INTENDED_USE: &str = "outside-intended-use";

impl Scope {
    /// Whether the model's intended use bounds the patient's age.
    pub fn bounds_age(&self) -> bool {
        self.min_age_years.is_some() || self.max_age_years.is_some()
    }

    /// Why an image of `body_part`, `view` and `age` (years) is outside the
    /// intended use; `None` when it is inside.
    pub fn refusal(&self, body_part: &str, view: &str, age: Option<f64>) -> Option<String> {
        let listed = |values: &[String], value: &str| {
            values.is_empty() || values.iter().any(|v| v.eq_ignore_ascii_case(value.trim()))
        };
        let shown = |value: &str| {
            if value.trim().is_empty() {
                "(none)".to_owned()
            } else {
                value.trim().to_owned()
            }
        };
        if !listed(&self.body_parts, body_part) {
            return Some(format!(
                "body part {} is outside the model's intended use ({})",
                shown(body_part),
                self.body_parts.join(", ")
            ));
        }
        if !listed(&self.views, view) {
            return Some(format!(
                "view {} is outside the model's intended use ({})",
                shown(view),
                self.views.join(", ")
            ));
        }
        if self.bounds_age() {
            let range = format!(
                "{}-{} years",
                self.min_age_years.map_or("0".into(), |v| v.to_string()),
                self.max_age_years.map_or("any".into(), |v| v.to_string())
            );
            let Some(age) = age else {
                return Some(format!(
                    "the patient's age is unknown; the model's intended use is {range}"
                ));
            };
            if self.min_age_years.is_some_and(|min| age < min)
                || self.max_age_years.is_some_and(|max| age > max)
            {
                // The age itself is patient data: the reason, which is logged,
                // names only the range.
                return Some(format!(
                    "the patient's age is outside the model's intended use ({range})"
                ));
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// Side of the square input, in pixels.
    pub size: u32,
    pub channels: u32,
    /// Normalisation of the windowed 0..1 image: (x - mean) / std.
    #[serde(default)]
    pub mean: f32,
    #[serde(default = "one")]
    pub std: f32,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `prob[N, 1]`: a probability per image.
    Classifier,
    /// `heatmap[N, 1, H, W]`: a coarse fracture probability per cell; boxes are
    /// the connected regions at or above `box_threshold`.
    Heatmap,
    /// `[N, 4 + C, A]`: A anchors of (cx, cy, w, h, class scores...), decoded
    /// with non-maximum suppression.
    Yolo,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub format: OutputFormat,
    /// Heatmap cell size in input pixels.
    #[serde(default)]
    pub stride: Option<u32>,
    /// Heatmap cells or YOLO boxes at or above this score become detections.
    #[serde(default = "half")]
    pub box_threshold: f32,
    /// YOLO non-maximum suppression IoU.
    #[serde(default = "iou_default")]
    pub nms_iou: f32,
    pub classes: Vec<String>,
}

fn half() -> f32 {
    0.5
}

fn iou_default() -> f32 {
    0.45
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoint {
    pub threshold: f32,
    /// Measured where the threshold was chosen (see the model card).
    pub sensitivity: f32,
    pub specificity: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoints {
    pub suspected: OperatingPoint,
    pub possible: OperatingPoint,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    pub fn load(directory: &Path) -> Result<Self, ManifestError> {
        let path = directory.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|error| ManifestError::Invalid {
            path: path.clone(),
            message: error.to_string(),
        })?;
        manifest
            .validate()
            .map_err(|message| ManifestError::Invalid { path, message })?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.input.size == 0 || self.input.channels == 0 || self.input.std == 0.0 {
            return Err("input size, channels and std must be positive".into());
        }
        if self.output.classes.is_empty() {
            return Err("output.classes must name at least one class".into());
        }
        if self.output.format == OutputFormat::Heatmap && self.output.stride.unwrap_or(0) == 0 {
            return Err("a heatmap output needs a positive output.stride".into());
        }
        let points = self.operating_points;
        if points.possible.threshold > points.suspected.threshold {
            return Err("the possible threshold must not exceed the suspected threshold".into());
        }
        if let (Some(min), Some(max)) = (self.scope.min_age_years, self.scope.max_age_years)
            && min > max
        {
            return Err("scope.min_age_years must not exceed scope.max_age_years".into());
        }
        if self.weights.sha256.len() != 64
            || !self.weights.sha256.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err("weights.sha256 must be 64 hex digits".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_scope_allows_every_image() {
        assert_eq!(Scope::default().refusal("", "", None), None);
        assert_eq!(Scope::default().refusal("SKULL", "LAT", Some(3.0)), None);
    }

    #[test]
    fn body_parts_views_and_ages_outside_the_scope_are_refused_with_the_reason() {
        let scope = Scope {
            body_parts: vec!["WRIST".into(), "HAND".into()],
            views: vec!["PA".into(), "LAT".into()],
            min_age_years: Some(18.0),
            max_age_years: None,
        };
        assert_eq!(
            scope.refusal("wrist", "PA", Some(40.0)),
            None,
            "case does not matter"
        );
        let why = scope.refusal("HIP", "PA", Some(40.0)).unwrap();
        assert!(
            why.contains("body part HIP") && why.contains("WRIST, HAND"),
            "{why}"
        );
        let why = scope.refusal("", "PA", Some(40.0)).unwrap();
        assert!(why.contains("body part (none)"), "{why}");
        let why = scope.refusal("HAND", "AP", Some(40.0)).unwrap();
        assert!(why.contains("view AP"), "{why}");
        let why = scope.refusal("HAND", "LAT", Some(12.0)).unwrap();
        assert!(
            why.contains("age is outside") && why.contains("18-any"),
            "{why}"
        );
        assert!(
            !why.contains("12"),
            "the patient's age is not in the reason: {why}"
        );
        let why = scope.refusal("HAND", "LAT", None).unwrap();
        assert!(why.contains("age is unknown"), "{why}");
    }

    #[test]
    fn a_scope_with_crossed_ages_is_refused_at_load() {
        let directory = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/testdata/heatmap/manifest.toml");
        let mut text = std::fs::read_to_string(source).unwrap();
        text.push_str("\n[scope]\nmin_age_years = 60\nmax_age_years = 18\n");
        std::fs::write(directory.path().join("manifest.toml"), text).unwrap();
        let error = Manifest::load(directory.path()).unwrap_err().to_string();
        assert!(error.contains("min_age_years"), "{error}");
    }
}
