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
        if self.weights.sha256.len() != 64
            || !self.weights.sha256.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err("weights.sha256 must be 64 hex digits".into());
        }
        Ok(())
    }
}
