//! `fxtriage inference` and `fxtriage analyze`: the model options they share, the
//! service wiring, and the local analysis with an optional overlay image.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use fxtriage_inference::analyse::{Analysis, analyse};
use fxtriage_inference::{BatchConfig, Batcher, ExecutionProvider, Model, RuntimeConfig};
use tokio_util::sync::CancellationToken;

use crate::infra::{BusArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory: model.onnx and manifest.toml.
    #[arg(
        long,
        env = "FXTRIAGE_MODEL_DIR",
        default_value = "models/fxtriage-demo"
    )]
    pub model: PathBuf,
    /// Execution provider: cpu, cuda or cuda:N. CUDA that cannot start is an error, never a silent CPU fallback.
    #[arg(long, env = "FXTRIAGE_EXECUTION_PROVIDER", default_value = "cpu")]
    pub provider: ExecutionProvider,
    /// The ONNX Runtime shared library (libonnxruntime.so).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: PathBuf,
    /// Sessions in the pool (default: sized to the hardware).
    #[arg(long, env = "FXTRIAGE_MODEL_SESSIONS")]
    pub sessions: Option<usize>,
    /// Largest batch.
    #[arg(long, env = "FXTRIAGE_MAX_BATCH", default_value_t = 8)]
    pub max_batch: usize,
    /// Longest an image waits for others to fill its batch, in milliseconds.
    #[arg(long, env = "FXTRIAGE_MAX_WAIT_MS", default_value_t = 10)]
    pub max_wait_ms: u64,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<(Arc<Model>, BatchConfig)> {
        let mut runtime = RuntimeConfig::sized_to_hardware(self.ort_library.clone(), self.provider);
        if let Some(sessions) = self.sessions {
            runtime.sessions = sessions.max(1);
        }
        let model = Model::load(&self.model, &runtime)
            .with_context(|| format!("cannot use the model in {}", self.model.display()))?;
        let batch = BatchConfig {
            max_batch: self.max_batch.max(1),
            max_wait: Duration::from_millis(self.max_wait_ms),
            queue_capacity: self.max_batch.max(1) * 4,
            concurrent_batches: runtime.sessions,
            pad_to_max_batch: matches!(self.provider, ExecutionProvider::Cuda { .. }),
        };
        Ok((Arc::new(model), batch))
    }
}

#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// Address of /health/live and /health/ready. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value = "127.0.0.1:8082")]
    pub health_address: SocketAddr,
    /// Images in flight at once (fetch, decode, inference, publish).
    #[arg(long, env = "FXTRIAGE_MAX_IN_FLIGHT", default_value_t = 32)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run_inference(args: InferenceArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (model, batch) = args.model.load()?;
    let store = args.store.connect().await?;
    let bus = args.bus.connect("fxtriage-inference").await?;
    let config = fxtriage_inference::Config {
        health_address: args.health_address,
        batch,
        max_in_flight: args.max_in_flight,
        namespace: args.bus.namespace.clone(),
    };
    fxtriage_inference::run(config, bus, store, model, shutdown).await
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// DICOM files to analyse.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write each image with its boxes drawn as a PNG here (a file for one input, a directory for several).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[allow(clippy::print_stdout)]
pub async fn run_analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    let (model, batch) = args.model.load()?;
    let manifest = model.manifest.clone();
    let batcher = Batcher::start(Arc::clone(&model), batch);
    let points = manifest.operating_points;
    println!(
        "model {} {} ({}); {}",
        manifest.name,
        manifest.version,
        model.sha256(),
        manifest.intended_use.trim()
    );
    let mut failures = 0;
    for (index, file) in args.files.iter().enumerate() {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        match analyse(
            bytes,
            &batcher,
            model.input_size(),
            &manifest.output.classes,
        )
        .await
        {
            Ok(analysis) => {
                let class = if analysis.probability >= points.suspected.threshold {
                    "suspected"
                } else if analysis.probability >= points.possible.threshold {
                    "possible"
                } else {
                    "no finding"
                };
                println!(
                    "{}: probability {:.3} ({class}); {}x{}; decode {} ms, preprocess {} ms, inference {} ms (batch of {})",
                    file.display(),
                    analysis.probability,
                    analysis.columns,
                    analysis.rows,
                    analysis.decode_us / 1000,
                    analysis.preprocess_us / 1000,
                    analysis.timing.inference_us / 1000,
                    analysis.timing.batch_size
                );
                for found in &analysis.detections {
                    println!(
                        "  {} {:.3} at x {:.0}-{:.0}, y {:.0}-{:.0}",
                        found.class_name,
                        found.score,
                        found.x_min,
                        found.x_max,
                        found.y_min,
                        found.y_max
                    );
                }
                if let Some(overlay) = &args.overlay {
                    let path = if args.files.len() == 1 {
                        overlay.clone()
                    } else {
                        std::fs::create_dir_all(overlay)?;
                        overlay.join(format!("{index:03}.png"))
                    };
                    write_overlay(&analysis, &path)?;
                    println!("  overlay: {}", path.display());
                }
            }
            Err(error) => {
                failures += 1;
                println!(
                    "{}: not analysed ({}): {error}",
                    file.display(),
                    error.kind()
                );
            }
        }
    }
    anyhow::ensure!(
        failures == 0,
        "{failures} of {} files could not be analysed",
        args.files.len()
    );
    Ok(())
}

/// The windowed image with each box drawn in red, as PNG (the API's renderer).
pub fn write_overlay(analysis: &Analysis, path: &std::path::Path) -> anyhow::Result<()> {
    let boxes: Vec<fxtriage_prioritizer::incoming::DetectionBox> = analysis
        .detections
        .iter()
        .map(|found| fxtriage_prioritizer::incoming::DetectionBox {
            x_min: found.x_min,
            y_min: found.y_min,
            x_max: found.x_max,
            y_max: found.y_max,
        })
        .collect();
    let png = fxtriage_api::overlay::render_overlay(&analysis.image, &boxes)?;
    std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
