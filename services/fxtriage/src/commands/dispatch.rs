//! `fxtriage dispatch`: results back to each site's PACS, and the state of
//! every delivery. `dispatch serve` runs the service; `dispatch list` and
//! `dispatch retry` are for the operator.

use std::io::Write as _;
use std::net::SocketAddr;

use clap::{Args, Subcommand};
use fxtriage_dispatch::outbox;
use tokio_util::sync::CancellationToken;

use crate::clients::{DatabaseArgs, SitesFileArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct DispatchArgs {
    #[command(subcommand)]
    pub command: DispatchCommand,
}

#[derive(Debug, Subcommand)]
pub enum DispatchCommand {
    /// Run the dispatch service: the SR of each study whose findings are final,
    /// to each DICOM destination of its site, retried while the peer is away.
    Serve(ServeArgs),
    /// List deliveries, newest first: id, state, attempts, site, destination,
    /// kind, study, object and the last error, tab-separated.
    List(ListArgs),
    /// Send a dead (or waiting) delivery again now, with a fresh count of
    /// attempts; with --resend, also one that was sent.
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of /health/live, /health/ready and /metrics. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_HEALTH_ADDR", default_value = "127.0.0.1:8085")]
    pub health_address: SocketAddr,
    /// Listen for reports from the sites' RIS (HL7 v2 ORU^R01 over MLLP) here,
    /// e.g. 127.0.0.1:2575; no listener when unset.
    #[arg(long, env = "FXTRIAGE_HL7_ADDR")]
    pub hl7_address: Option<SocketAddr>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub sites: SitesFileArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this site's deliveries.
    #[arg(long)]
    pub site: Option<String>,
    /// Only deliveries that failed: dead, or waiting after a failed attempt.
    #[arg(long)]
    pub failed: bool,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// One JSON record per line instead of columns.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The delivery's id, as `dispatch list` shows it.
    pub id: i64,
    /// Send it again even if it was sent (the receiver lost it): the same
    /// object, which the receiver replaces rather than adds.
    #[arg(long)]
    pub resend: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: DispatchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    match args.command {
        DispatchCommand::Serve(args) => serve(args, shutdown).await,
        DispatchCommand::List(args) => list(args).await,
        DispatchCommand::Retry(args) => retry(args).await,
    }
}

async fn serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(database) = args.database.wait_and_migrate(&shutdown).await? else {
        return Ok(());
    };
    args.sites.apply_at_start(&database).await?;
    let store = args.store.connect().await?;
    let mut config = fxtriage_dispatch::Config::new(args.health_address);
    config.hl7_address = args.hl7_address;
    fxtriage_dispatch::run(config, database, store, shutdown).await
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let rows = outbox::list(&pool, args.site.as_deref(), args.failed, args.limit)
        .await
        .map_err(|error| anyhow::anyhow!("cannot list deliveries: {error}"))?;
    let mut out = std::io::stdout().lock();
    for row in &rows {
        if args.json {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                row.delivery_id,
                row.state,
                row.attempts,
                row.site_id,
                row.destination,
                row.kind,
                row.study_instance_uid,
                row.object_id,
                row.last_error
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let retried = if args.resend {
        outbox::resend(&pool, args.id).await
    } else {
        outbox::retry(&pool, args.id).await
    };
    let retried =
        retried.map_err(|error| anyhow::anyhow!("cannot retry delivery {}: {error}", args.id))?;
    anyhow::ensure!(
        retried,
        "delivery {} is not dead or waiting (it was sent: --resend sends it again; it was superseded by a newer result, which is sent instead; or there is no such delivery)",
        args.id
    );
    #[allow(clippy::print_stdout)]
    {
        println!("delivery {} is due now", args.id);
    }
    Ok(())
}
