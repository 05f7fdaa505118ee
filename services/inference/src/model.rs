//! A loaded model: its manifest, verified against the weights it names, and a pool
//! of ONNX Runtime sessions that run batches.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use ort::session::Session;
use ort::value::Tensor;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, ManifestError, OutputFormat};
use crate::postprocess::{self, ImageOutput};
use crate::runtime::{ExecutionProvider, RuntimeConfig, environment};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("model {path}: {message}")]
    Refused { path: PathBuf, message: String },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("inference failed: {0}")]
    Run(String),
}

pub struct Model {
    pub manifest: Manifest,
    pub directory: PathBuf,
    pub provider: ExecutionProvider,
    pool: Mutex<Vec<Session>>,
    returned: Condvar,
    /// Output dimensions after the batch dimension.
    output_shape: Vec<usize>,
    session_count: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

fn refused(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Refused {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A batch's input tensor, as [`Model::input_tensor`] builds it.
pub type InputTensor = Tensor<f32>;

/// `-1` (dynamic) matches anything.
fn dimension_matches(actual: i64, expected: usize) -> bool {
    actual < 0 || actual as usize == expected
}

impl Model {
    /// Loads and checks a model directory: the weights' hash, the input and the
    /// output must match the manifest, or the model is refused with the reason.
    pub fn load(directory: &Path, config: &RuntimeConfig) -> Result<Self, ModelError> {
        let manifest = Manifest::load(directory)?;
        let weights = directory.join(&manifest.weights.file);
        let bytes = std::fs::read(&weights)
            .map_err(|error| refused(&weights, format!("cannot read the weights: {error}")))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&manifest.weights.sha256) {
            return Err(refused(
                &weights,
                format!(
                    "sha256 is {actual} but the manifest says {}; refusing weights that are not the ones described",
                    manifest.weights.sha256
                ),
            ));
        }
        let environment = environment(&config.library)?;
        let mut sessions = Vec::with_capacity(config.sessions.max(1));
        for _ in 0..config.sessions.max(1) {
            sessions.push(
                new_session(&environment, &bytes, config)
                    .map_err(|message| refused(&weights, message))?,
            );
        }
        let output_shape = check_signature(&manifest, &sessions[0])
            .map_err(|message| refused(&weights, message))?;
        tracing::info!(
            model = %manifest.name, version = %manifest.version, provider = ?config.provider,
            sessions = sessions.len(), "model loaded"
        );
        Ok(Self {
            manifest,
            directory: directory.to_path_buf(),
            provider: config.provider,
            pool: Mutex::new(sessions),
            returned: Condvar::new(),
            output_shape,
            session_count: config.sessions.max(1),
        })
    }

    pub fn sha256(&self) -> &str {
        &self.manifest.weights.sha256
    }

    /// Sessions in the pool: batches that can run at once.
    pub fn sessions(&self) -> usize {
        self.session_count
    }

    pub fn input_size(&self) -> u32 {
        self.manifest.input.size
    }

    /// The input tensor of a batch of letterboxed, windowed images (each
    /// `size * size` values in 0..1), normalised and repeated over the channels as
    /// the manifest says.
    pub fn input_tensor(&self, images: &[Vec<f32>]) -> Result<Tensor<f32>, ModelError> {
        let input = &self.manifest.input;
        let side = input.size as usize;
        let channels = input.channels as usize;
        let mut tensor = Vec::with_capacity(images.len() * channels * side * side);
        for image in images {
            if image.len() != side * side {
                return Err(ModelError::Run(format!(
                    "an image has {} values, expected {}",
                    image.len(),
                    side * side
                )));
            }
            for _ in 0..channels {
                tensor.extend(image.iter().map(|value| (value - input.mean) / input.std));
            }
        }
        let shape = [images.len(), channels, side, side];
        Tensor::from_array((shape, tensor)).map_err(|error| ModelError::Run(error.to_string()))
    }

    /// Runs one batch of letterboxed, windowed images (see [`Model::input_tensor`]).
    /// Blocks the calling thread: call it from a blocking task.
    pub fn run_batch(&self, images: &[Vec<f32>]) -> Result<Vec<ImageOutput>, ModelError> {
        let value = self.input_tensor(images)?;
        let mut session = self.take_session();
        let outcome = (|| {
            let outputs = session
                .run(ort::inputs![self.manifest.input.name.as_str() => value])
                .map_err(|error| ModelError::Run(error.to_string()))?;
            let output = outputs
                .get(self.manifest.output.name.as_str())
                .ok_or_else(|| {
                    ModelError::Run(format!("no output named {}", self.manifest.output.name))
                })?;
            let (_, values) = output
                .try_extract_tensor::<f32>()
                .map_err(|error| ModelError::Run(error.to_string()))?;
            Ok(self.decode(values, images.len()))
        })();
        self.return_session(session);
        outcome
    }

    /// Runs a prepared input tensor and nothing else: no normalisation, no
    /// decoding of the output. What ONNX Runtime alone achieves on the model, the
    /// limit the pipeline is measured against (`fxtriage bench inference`).
    pub fn run_prepared(&self, tensor: &Tensor<f32>) -> Result<(), ModelError> {
        let mut session = self.take_session();
        let outcome = session
            .run(ort::inputs![self.manifest.input.name.as_str() => tensor])
            .map(drop)
            .map_err(|error| ModelError::Run(error.to_string()));
        self.return_session(session);
        outcome
    }

    fn take_session(&self) -> Session {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(session) = pool.pop() {
                return session;
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn return_session(&self, session: Session) {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(session);
        self.returned.notify_one();
    }

    fn decode(&self, values: &[f32], batch: usize) -> Vec<ImageOutput> {
        let per_image = values.len() / batch.max(1);
        let output = &self.manifest.output;
        values
            .chunks(per_image.max(1))
            .take(batch)
            .map(|image| match output.format {
                OutputFormat::Classifier => postprocess::classifier(image),
                OutputFormat::Heatmap => {
                    let (height, width) = (self.output_shape[1], self.output_shape[2]);
                    let stride = output.stride.unwrap_or(1) as f32;
                    postprocess::heatmap(image, height, width, stride, output.box_threshold)
                }
                OutputFormat::Yolo => {
                    let anchors = self.output_shape[1];
                    postprocess::yolo(
                        image,
                        output.classes.len(),
                        anchors,
                        output.box_threshold,
                        output.nms_iou,
                    )
                }
            })
            .collect()
    }
}

fn new_session(
    environment: &ort::environment::Environment,
    bytes: &[u8],
    config: &RuntimeConfig,
) -> Result<Session, String> {
    let mut builder = Session::builder(environment).map_err(|error| error.to_string())?;
    builder = builder
        .with_intra_threads(config.intra_threads.max(1))
        .map_err(|error| error.to_string())?
        .with_intra_op_spinning(config.spinning)
        .map_err(|error| error.to_string())?
        .with_inter_op_spinning(config.spinning)
        .map_err(|error| error.to_string())?;
    if let ExecutionProvider::Cuda { device_id } = config.provider {
        // Heuristic, not exhaustive, convolution algorithm search: the dynamic
        // batcher forms batches of every size up to max_batch, and an exhaustive
        // search runs again for each new input shape. On an H100 that made a
        // batch of 16 take 180 ms instead of 5 ms (docs/bench/).
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device_id)
            .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
            .build()
            .error_on_failure();
        builder = builder.with_execution_providers([cuda]).map_err(|error| {
            format!(
                "CUDA execution provider on device {device_id} could not be initialised: {error}"
            )
        })?;
    }
    builder
        .commit_from_memory(bytes)
        .map_err(|error| format!("ONNX Runtime refused the model: {error}"))
}

/// Checks input and output against the manifest; returns the output's dimensions
/// after the batch dimension.
fn check_signature(manifest: &Manifest, session: &Session) -> Result<Vec<usize>, String> {
    let input = &manifest.input;
    let Some(input_outlet) = session
        .inputs()
        .iter()
        .find(|outlet| outlet.name() == input.name)
    else {
        let names: Vec<&str> = session
            .inputs()
            .iter()
            .map(|outlet| outlet.name())
            .collect();
        return Err(format!(
            "the model has no input named {:?} (it has {names:?})",
            input.name
        ));
    };
    let input_shape = input_outlet
        .dtype()
        .tensor_shape()
        .map(|shape| shape.to_vec())
        .unwrap_or_default();
    let expected_input = [
        input.channels as usize,
        input.size as usize,
        input.size as usize,
    ];
    let input_ok = input_shape.len() == 4
        && input_shape[1..]
            .iter()
            .zip(expected_input)
            .all(|(actual, expected)| dimension_matches(*actual, expected));
    if !input_ok {
        return Err(format!(
            "input {:?} has shape {input_shape:?}, the manifest says [N, {}, {}, {}]",
            input.name, input.channels, input.size, input.size
        ));
    }
    let output = &manifest.output;
    let Some(output_outlet) = session
        .outputs()
        .iter()
        .find(|outlet| outlet.name() == output.name)
    else {
        let names: Vec<&str> = session
            .outputs()
            .iter()
            .map(|outlet| outlet.name())
            .collect();
        return Err(format!(
            "the model has no output named {:?} (it has {names:?})",
            output.name
        ));
    };
    let shape = output_outlet
        .dtype()
        .tensor_shape()
        .map(|shape| shape.to_vec())
        .unwrap_or_default();
    let known = |dimension: i64| usize::try_from(dimension).ok();
    match output.format {
        OutputFormat::Classifier => {
            if shape.len() != 2 {
                return Err(format!(
                    "a classifier output must be [N, classes], the model gives {shape:?}"
                ));
            }
            Ok(vec![known(shape[1]).unwrap_or(1)])
        }
        OutputFormat::Heatmap => {
            let stride = output.stride.unwrap_or(1) as usize;
            let cells = input.size as usize / stride.max(1);
            let shape_ok = shape.len() == 4
                && dimension_matches(shape[1], 1)
                && dimension_matches(shape[2], cells)
                && dimension_matches(shape[3], cells);
            if !shape_ok {
                return Err(format!(
                    "a heatmap output with stride {stride} must be [N, 1, {cells}, {cells}], the model gives {shape:?}"
                ));
            }
            Ok(vec![1, cells, cells])
        }
        OutputFormat::Yolo => {
            let rows = 4 + output.classes.len();
            let anchors = shape.get(2).copied().and_then(known);
            match anchors {
                Some(anchors) if shape.len() == 3 && dimension_matches(shape[1], rows) => {
                    Ok(vec![rows, anchors])
                }
                _ => Err(format!(
                    "a yolo output with {} classes must be [N, {rows}, anchors] with a fixed anchor count, the model gives {shape:?}",
                    output.classes.len()
                )),
            }
        }
    }
}
