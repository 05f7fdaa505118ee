//! The command line. Every flag also reads an `FXTRIAGE_*` environment variable;
//! nothing deeper in the code reads the environment.

use clap::{Args, Parser, Subcommand};
use fxtriage_telemetry::{LogFormat, TelemetryConfig};

use crate::commands;

/// The crate version and the git revision it was built from, as `fxtriage --version` prints them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("FXTRIAGE_GIT_REVISION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "fxtriage",
    version = VERSION,
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
    Ingest(commands::ingest::IngestArgs),
    /// Analyse stored images with the fracture detection model.
    Inference(commands::inference::InferenceArgs),
    /// Run the model on local DICOM files and print probability, boxes and timings.
    Analyze(commands::analyze::AnalyzeArgs),
    /// Aggregate findings per study and keep the worklists in PostgreSQL.
    Prioritizer(commands::prioritizer::PrioritizerArgs),
    /// Serve the worklist HTTP API and web page.
    Api(commands::api::ApiArgs),
    /// Results back to each site's PACS: `dispatch serve`, `dispatch list`, `dispatch retry`.
    Dispatch(commands::dispatch::DispatchArgs),
    /// Manage sites (tenants): `sites add`.
    Sites(commands::sites::SitesArgs),
    /// Manage API tokens: `tokens create`, `tokens revoke`.
    Tokens(commands::tokens::TokensArgs),
    /// Run every service in one process with the in-process bus and a local data directory.
    Standalone(commands::standalone::StandaloneArgs),
    /// Turnaround and queue figures of sites over a period; per-study timelines as CSV.
    Analytics(commands::analytics::AnalyticsArgs),
    /// Measure models: `models evaluate MODEL_DIR --dataset DIR`.
    Models(commands::models::ModelsArgs),
    /// Write synthetic sample studies (radiographs with and without fractures) as DICOM files.
    Samples(commands::samples::SamplesArgs),
    /// Check the audit log: `audit verify` reports each site's first broken link.
    Audit(commands::audit::AuditArgs),
    /// Simulate a reading list under several policies: `simulate SCENARIO.toml`.
    Simulate(commands::simulate::SimulateArgs),
    /// Print a site's worklist in reading order.
    Worklist(commands::worklist::WorklistArgs),
    /// Apply pending database schema migrations and exit.
    Migrate(commands::migrate::MigrateArgs),
    /// Import the DICOM files of a directory tree or an S3 prefix into a site, then print a summary.
    Import(commands::import::ImportArgs),
    /// Look at what ingest refused.
    Quarantine(commands::quarantine::QuarantineArgs),
    /// Measure throughput and latency: `bench inference`, `bench worklist`.
    Bench(commands::bench::BenchArgs),
}

impl Command {
    pub fn service_name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "fxtriage-ingest",
            Command::Inference(_) => "fxtriage-inference",
            Command::Analyze(_) => "fxtriage-analyze",
            Command::Samples(_) => "fxtriage-samples",
            Command::Audit(_) => "fxtriage-audit",
            Command::Simulate(_) => "fxtriage-simulate",
            Command::Models(_) => "fxtriage-models",
            Command::Analytics(_) => "fxtriage-analytics",
            Command::Worklist(_) => "fxtriage-worklist",
            Command::Prioritizer(_) => "fxtriage-prioritizer",
            Command::Api(_) => "fxtriage-api",
            Command::Dispatch(_) => "fxtriage-dispatch",
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
