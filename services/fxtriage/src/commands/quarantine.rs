//! `fxtriage quarantine list`: what ingest refused, oldest first.

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fxtriage_core::SiteId;
use fxtriage_ingest::quarantine::{self, QuarantineRecord};

use crate::clients::StoreArgs;

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

pub async fn run(args: QuarantineArgs) -> anyhow::Result<()> {
    match args.command {
        QuarantineCommand::List(args) => list(args).await,
    }
}

/// `fxtriage quarantine list`: one record per line, oldest first.
async fn list(args: QuarantineListArgs) -> anyhow::Result<()> {
    let site = args.site.map(SiteId::parse).transpose()?;
    let store = args.store.connect().await?;
    let records = quarantine::list(store.as_ref(), site.as_ref())
        .await
        .with_context(|| format!("cannot list the quarantine of {}", store.describe()))?;
    let mut out = std::io::stdout().lock();
    for record in &records {
        if args.json {
            serde_json::to_writer(&mut out, record)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", columns(record))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// time, site, kind, reason, sender, key; tab-separated, each on one line.
fn columns(record: &QuarantineRecord) -> String {
    let one_line = |text: &str| text.replace(|c: char| c.is_control(), " ");
    [
        one_line(&record.received_at),
        one_line(&record.site),
        one_line(&record.kind),
        one_line(&record.reason),
        one_line(&record.sender.to_string()),
        one_line(&record.object_key),
    ]
    .join("\t")
}
