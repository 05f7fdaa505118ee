//! The model options that `inference`, `analyze`, `standalone` and `bench
//! inference` share, and the loading of the model they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use fxtriage_inference::{BatchConfig, ExecutionProvider, Model, RuntimeConfig};

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
