//! One file per subcommand: its arguments and its `run`.

pub mod analytics;
pub mod analyze;
pub mod api;
pub mod audit;
pub mod bench;
pub mod dispatch;
pub mod import;
pub mod inference;
pub mod ingest;
pub mod migrate;
pub mod models;
pub mod parquet_export;
pub mod prioritizer;
pub mod quarantine;
pub mod samples;
pub mod simulate;
pub mod sites;
pub mod standalone;
pub mod tokens;
pub mod worklist;
