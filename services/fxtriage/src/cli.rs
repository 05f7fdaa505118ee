//! The command line. Every flag also reads an `FXTRIAGE_*` environment variable;
//! nothing deeper in the code reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fxtriage_telemetry::{LogFormat, TelemetryConfig};

use crate::infra::{BusArgs, StoreArgs};

#[derive(Debug, Parser)]
#[command(
    name = "fxtriage",
    version,
    about = "Fracture triage for radiology worklists: ingest X-ray studies, detect likely fractures, read them first.",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Log format on stderr: json or pretty.
    #[arg(
        long,
        env = "FXTRIAGE_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter, e.g. "info" or "info,fxtriage_bus=debug".
    #[arg(long, env = "FXTRIAGE_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces); no export when unset.
    #[arg(long, env = "FXTRIAGE_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    pub fn config(&self, service_name: &str) -> TelemetryConfig {
        TelemetryConfig {
            service_name: service_name.to_owned(),
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive DICOM (C-STORE, STOW-RS), validate, store and publish it.
    Ingest(IngestArgs),
    /// Analyse stored images with the fracture detection model.
    Inference(ServiceArgs<8082>),
    /// Aggregate findings per study and keep the worklists in PostgreSQL.
    Prioritizer(ServiceArgs<8083>),
    /// Serve the worklist HTTP API and web page.
    Api(ServiceArgs<8080>),
    /// Run every service in one process with the in-process bus and a local data directory.
    Standalone(StandaloneArgs),
    /// Apply pending database schema migrations and exit.
    Migrate(MigrateArgs),
}

impl Command {
    pub fn service_name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "fxtriage-ingest",
            Command::Inference(_) => "fxtriage-inference",
            Command::Prioritizer(_) => "fxtriage-prioritizer",
            Command::Api(_) => "fxtriage-api",
            Command::Standalone(_) => "fxtriage-standalone",
            Command::Migrate(_) => "fxtriage-migrate",
        }
    }
}

/// Options every service shares; `PORT` is the service's default health port.
#[derive(Debug, Args)]
pub struct ServiceArgs<const PORT: u16> {
    /// Address of /health/live and /health/ready. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT)))]
    pub health_address: SocketAddr,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// HTTP address: STOW-RS under /dicomweb, /health/live, /health/ready.
    #[arg(
        long,
        env = "FXTRIAGE_INGEST_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub http_address: SocketAddr,
    /// DIMSE C-STORE SCP address.
    #[arg(long, env = "FXTRIAGE_DIMSE_ADDR", default_value = "127.0.0.1:11112")]
    pub dimse_address: SocketAddr,
    /// Most concurrent DIMSE associations.
    #[arg(long, env = "FXTRIAGE_DIMSE_MAX_ASSOCIATIONS", default_value_t = 32)]
    pub max_associations: usize,
    /// Sites file (TOML): AE titles, STOW tokens, routing rules, urgency mapping.
    #[arg(long, env = "FXTRIAGE_SITES")]
    pub sites: PathBuf,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Directory for the object store, the database cluster and state.
    #[arg(long, env = "FXTRIAGE_DATA_DIR", default_value = "fxtriage-data")]
    pub data_dir: PathBuf,
    /// HTTP address of the API, the web page and the health endpoints.
    #[arg(long, env = "FXTRIAGE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_address: SocketAddr,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/fxtriage.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL")]
    pub database_url: String,
}
