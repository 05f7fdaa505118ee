//! ONNX Runtime, loaded dynamically from the shared library of the `onnxruntime`
//! (CPU) or `onnxruntime-gpu` (CUDA) wheel, so that nothing is downloaded at build
//! time. The execution provider is chosen by configuration; when CUDA is asked
//! for and cannot be initialised, start-up fails with the reason, never falling
//! back to the CPU silently.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

/// Where to run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda { device_id: i32 },
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "cpu" => Ok(ExecutionProvider::Cpu),
            "cuda" => Ok(ExecutionProvider::Cuda { device_id: 0 }),
            other => match other.strip_prefix("cuda:").map(str::parse::<i32>) {
                Some(Ok(device_id)) if device_id >= 0 => Ok(ExecutionProvider::Cuda { device_id }),
                _ => Err(format!(
                    "unknown execution provider {other:?} (expected cpu, cuda or cuda:N)"
                )),
            },
        }
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecutionProvider::Cpu => f.write_str("cpu"),
            ExecutionProvider::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// libonnxruntime.so (ORT_DYLIB_PATH).
    pub library: PathBuf,
    pub provider: ExecutionProvider,
    /// Sessions in the pool, each able to run one batch at a time.
    pub sessions: usize,
    /// Threads each session uses within an operator.
    pub intra_threads: usize,
    /// Whether ONNX Runtime's idle threads spin (busy-wait) for the next
    /// operator instead of sleeping. Spinning saves microseconds per operator
    /// at the price of whole cores while a session waits for its next batch,
    /// cores that decoding and the other services need; off by default.
    pub spinning: bool,
}

impl RuntimeConfig {
    /// A pool sized to the machine: one session per two cores on CPU (each with two
    /// threads), two sessions on a GPU (one batch in flight while the next is prepared).
    pub fn sized_to_hardware(library: PathBuf, provider: ExecutionProvider) -> Self {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        match provider {
            ExecutionProvider::Cpu => Self {
                library,
                provider,
                sessions: (cores / 2).max(1),
                intra_threads: 2.min(cores),
                spinning: false,
            },
            ExecutionProvider::Cuda { .. } => Self {
                library,
                provider,
                sessions: 2,
                intra_threads: 1,
                spinning: false,
            },
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("ONNX Runtime: {0}")]
pub struct RuntimeError(pub String);

static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// The process's one ONNX Runtime environment, loaded from `library` on first use.
pub fn environment(library: &Path) -> Result<Environment, RuntimeError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "the shared library {} does not exist (set ORT_DYLIB_PATH)",
                library.display()
            ));
        }
        let builder = ort::init_from(library)
            .map_err(|error| format!("cannot load {}: {error}", library.display()))?;
        let environment = builder
            .with_name("fxtriage")
            .with_telemetry(false)
            .build()
            .map_err(|error| format!("cannot create the environment: {error}"))?;
        Ok((library.to_path_buf(), environment))
    });
    match loaded {
        Ok((loaded_from, environment)) if loaded_from == library => Ok(environment.clone()),
        Ok((loaded_from, _)) => Err(RuntimeError(format!(
            "already loaded from {}; one library per process",
            loaded_from.display()
        ))),
        Err(message) => Err(RuntimeError(message.clone())),
    }
}
