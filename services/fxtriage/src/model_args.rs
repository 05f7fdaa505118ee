//! The model options that `inference`, `analyze`, `standalone` and `bench
//! inference` share, and the loading of the model they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use fxtriage_inference::{BatchConfig, ExecutionProvider, Model, RuntimeConfig};

/// The model to run and how: its directory, the execution provider, the ONNX
/// Runtime shared library and the batching. The library is `--ort-library` /
/// `ORT_DYLIB_PATH` when given; otherwise it is looked for (see
/// [`crate::ort_library`]) next to the binary, then in the local stack's tools
/// directory (`FXTRIAGE_TOOLS_DIR`, else `$XDG_CACHE_HOME/fxtriage/tools`, else
/// `~/.cache/fxtriage/tools`), then in python3's `onnxruntime` package.
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
    /// The ONNX Runtime shared library (libonnxruntime.so) [default: the first found, see --help].
    ///
    /// Without it, the first of these that exists: next to this binary
    /// (libonnxruntime.so, then the newest libonnxruntime.so.*); in the local
    /// stack's tools directory, where `infra/local/stack up` puts it
    /// ($FXTRIAGE_TOOLS_DIR, else ${XDG_CACHE_HOME:-~/.cache}/fxtriage/tools,
    /// then onnxruntime-*/libonnxruntime.so.*, newest version); in python3's
    /// site-packages after `pip install onnxruntime`
    /// (onnxruntime/capi/libonnxruntime.so*).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    /// Sessions in the pool (default: sized to the hardware).
    #[arg(long, env = "FXTRIAGE_MODEL_SESSIONS")]
    pub sessions: Option<usize>,
    /// Threads each session uses within an operator (default: sized to the hardware).
    #[arg(long, env = "FXTRIAGE_INTRA_THREADS")]
    pub intra_threads: Option<usize>,
    /// Let ONNX Runtime's idle threads spin between operators (lower latency per batch, whole cores burnt while idle).
    #[arg(long, env = "FXTRIAGE_ORT_SPINNING")]
    pub ort_spinning: bool,
    /// Largest batch.
    #[arg(long, env = "FXTRIAGE_MAX_BATCH", default_value_t = 8)]
    pub max_batch: usize,
    /// Longest an image waits for others to fill its batch, in milliseconds.
    #[arg(long, env = "FXTRIAGE_MAX_WAIT_MS", default_value_t = 10)]
    pub max_wait_ms: u64,
}

/// The local stack's tools directory, as `infra/local/stack` computes it
/// (`TOOLS`); an empty variable counts as unset, as in the script.
fn tools_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    set("FXTRIAGE_TOOLS_DIR").map(PathBuf::from).or_else(|| {
        set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|cache| cache.join("fxtriage").join("tools"))
    })
}

impl ModelArgs {
    /// The ONNX Runtime library: the one given (an empty value counts as not
    /// given), or the first found.
    pub fn ort_library(&self) -> anyhow::Result<PathBuf> {
        if let Some(given) = self
            .ort_library
            .as_ref()
            .filter(|path| !path.as_os_str().is_empty())
        {
            return Ok(given.clone());
        }
        let found = crate::ort_library::find(
            crate::ort_library::binary_dir().as_deref(),
            tools_dir().as_deref(),
            crate::ort_library::python_site_packages,
        )?;
        tracing::info!(library = %found.display(), "ONNX Runtime library found (no --ort-library given)");
        Ok(found)
    }

    pub fn load(&self) -> anyhow::Result<(Arc<Model>, BatchConfig)> {
        let mut runtime = RuntimeConfig::sized_to_hardware(self.ort_library()?, self.provider);
        if let Some(sessions) = self.sessions {
            runtime.sessions = sessions.max(1);
        }
        if let Some(threads) = self.intra_threads {
            runtime.intra_threads = threads.max(1);
        }
        runtime.spinning = self.ort_spinning;
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
