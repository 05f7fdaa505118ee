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

// Parsed once per run: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive DICOM (C-STORE, STOW-RS), validate, store and publish it.
    Ingest(IngestArgs),
    /// Analyse stored images with the fracture detection model.
    Inference(crate::analyze::InferenceArgs),
    /// Run the model on local DICOM files and print probability, boxes and timings.
    Analyze(crate::analyze::AnalyzeArgs),
    /// Aggregate findings per study and keep the worklists in PostgreSQL.
    Prioritizer(PrioritizerArgs),
    /// Serve the worklist HTTP API and web page.
    Api(crate::api_cli::ApiArgs),
    /// Manage sites (tenants): `sites add`.
    Sites(crate::api_cli::SitesArgs),
    /// Manage API tokens: `tokens create`, `tokens revoke`.
    Tokens(crate::api_cli::TokensArgs),
    /// Run every service in one process with the in-process bus and a local data directory.
    Standalone(crate::standalone::StandaloneArgs),
    /// Write synthetic sample studies (radiographs with and without fractures) as DICOM files.
    Samples(crate::demo::SamplesArgs),
    /// Print a site's worklist in reading order.
    Worklist(crate::demo::WorklistArgs),
    /// Apply pending database schema migrations and exit.
    Migrate(MigrateArgs),
    /// Import the DICOM files of a directory tree or an S3 prefix into a site, then print a summary.
    Import(ImportArgs),
    /// Look at what ingest refused.
    Quarantine(QuarantineArgs),
    /// Measure throughput and latency: `bench inference`, `bench worklist`.
    Bench(crate::bench::BenchArgs),
}

impl Command {
    pub fn service_name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "fxtriage-ingest",
            Command::Inference(_) => "fxtriage-inference",
            Command::Analyze(_) => "fxtriage-analyze",
            Command::Samples(_) => "fxtriage-samples",
            Command::Worklist(_) => "fxtriage-worklist",
            Command::Prioritizer(_) => "fxtriage-prioritizer",
            Command::Api(_) => "fxtriage-api",
            Command::Sites(_) => "fxtriage-sites",
            Command::Tokens(_) => "fxtriage-tokens",
            Command::Standalone(_) => "fxtriage-standalone",
            Command::Migrate(_) => "fxtriage-migrate",
            Command::Import(_) => "fxtriage-import",
            Command::Quarantine(_) => "fxtriage-quarantine",
            Command::Bench(_) => "fxtriage-bench",
        }
    }
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
pub struct PrioritizerArgs {
    /// Address of /health/live and /health/ready. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value = "127.0.0.1:8083")]
    pub health_address: SocketAddr,
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/fxtriage.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Per-site priority policies (TOML); the documented defaults when unset.
    #[arg(long, env = "FXTRIAGE_POLICIES")]
    pub policies: Option<PathBuf>,
    #[command(flatten)]
    pub bus: BusArgs,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/fxtriage.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL")]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory (walked without following symbolic links) or s3://bucket/prefix.
    /// A bucket is read with the same --s3-endpoint, --s3-region and credentials as the object store.
    pub source: String,
    /// The site the files are imported into (an id of the sites file).
    #[arg(long)]
    pub site: String,
    /// Sites file (TOML): the site's routing rules and limits.
    #[arg(long, env = "FXTRIAGE_SITES")]
    pub sites: PathBuf,
    /// Files imported at the same time.
    #[arg(long, env = "FXTRIAGE_IMPORT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub command: QuarantineCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined objects, oldest first: time, site, kind, reason, sender and key, tab-separated.
    List(QuarantineListArgs),
}

#[derive(Debug, Args)]
pub struct QuarantineListArgs {
    /// Only this site's objects.
    #[arg(long)]
    pub site: Option<String>,
    /// One JSON record per line instead of columns.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}
