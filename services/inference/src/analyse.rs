//! One image through the whole pipeline: decode and window (crates/dicom),
//! letterbox, batch inference, boxes mapped back to original pixel coordinates.
//! Shared by the consumer and `fxtriage analyze`.

use std::sync::LazyLock;
use std::time::Instant;

use fxtriage_core::BoundingBox;
use fxtriage_dicom::pixels::{ModelImage, PixelError, decode_for_input, letterbox_model};

use tokio::sync::Semaphore;

use crate::batcher::{BatchTiming, Batcher};
use crate::model::ModelError;

/// Detections are in the original image's pixel coordinates.
pub use fxtriage_core::Detection;

#[derive(Debug, Clone)]
pub struct Analysis {
    pub probability: f32,
    pub detections: Vec<Detection>,
    /// The original image's size.
    pub rows: u32,
    pub columns: u32,
    /// The resolution level decoded (JPEG 2000: each level halves both sides;
    /// 0 for full resolution).
    pub resolution_level: u32,
    /// Waiting for one of the decoders ([`DECODERS`]).
    pub decode_wait_us: u64,
    pub decode_us: u64,
    pub preprocess_us: u64,
    pub timing: BatchTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The image itself is the problem: analysing it again cannot help.
    #[error(transparent)]
    Pixels(#[from] PixelError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl AnalysisError {
    /// Machine-readable kind, as in `Finding.failure_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnalysisError::Pixels(error) => error.kind.as_str(),
            AnalysisError::Model(_) => "inference-failed",
        }
    }
}

/// Images decoded and preprocessed at once: one per core. Decoding a radiograph
/// is CPU-bound; running more at once only slows each of them down and holds
/// more decoded images in memory (on a 16-core H100 machine with 64 images in
/// flight, the median decode took 74 ms without this limit and 48 ms with it,
/// at the same throughput). Images in flight beyond this wait here, in order.
pub static DECODERS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
    )
});

/// Analyses the Part 10 file `bytes`.
pub async fn analyse(
    bytes: Vec<u8>,
    batcher: &Batcher,
    input_size: u32,
    class_names: &[String],
) -> Result<Analysis, AnalysisError> {
    analyse_decoded(
        move || decode_for_input(&bytes, input_size).map(|(image, _window)| image),
        batcher,
        input_size,
        class_names,
    )
    .await
}

/// Analyses the image `decode` returns (run on a blocking thread, holding one
/// of the [`DECODERS`]): the same letterbox, batching and mapping of boxes as
/// for a Part 10 file. `fxtriage models evaluate` decodes PNG and JPEG
/// pictures this way.
pub async fn analyse_decoded(
    decode: impl FnOnce() -> Result<ModelImage, PixelError> + Send + 'static,
    batcher: &Batcher,
    input_size: u32,
    class_names: &[String],
) -> Result<Analysis, AnalysisError> {
    let waiting = Instant::now();
    let slot = DECODERS
        .acquire()
        .await
        .map_err(|_| ModelError::Run("the decoders are closed".into()))?;
    let decode_wait = waiting.elapsed();
    let prepared = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let image = decode()?;
        let decoded = Instant::now();
        let (input, transform) = letterbox_model(&image, input_size);
        Ok::<_, PixelError>((
            image.level,
            input,
            transform,
            decoded - started,
            decoded.elapsed(),
        ))
    })
    .await
    .map_err(|error| ModelError::Run(format!("the preprocessing task failed: {error}")))?;
    drop(slot);
    let (resolution_level, input, transform, decode_time, preprocess_time) = prepared?;
    let (output, timing) = batcher.infer(input).await?;
    let detections = output
        .boxes
        .iter()
        .map(|found| {
            let (x_min, y_min) = transform.to_original(found.x_min, found.y_min);
            let (x_max, y_max) = transform.to_original(found.x_max, found.y_max);
            Detection {
                bounding_box: BoundingBox {
                    x_min,
                    y_min,
                    x_max,
                    y_max,
                },
                class_name: class_names
                    .get(found.class_index)
                    .cloned()
                    .unwrap_or_else(|| format!("class-{}", found.class_index)),
                score: found.score,
            }
        })
        .collect();
    Ok(Analysis {
        probability: output.probability,
        detections,
        rows: transform.original_rows,
        columns: transform.original_columns,
        resolution_level,
        decode_wait_us: decode_wait.as_micros() as u64,
        decode_us: decode_time.as_micros() as u64,
        preprocess_us: preprocess_time.as_micros() as u64,
        timing,
    })
}
