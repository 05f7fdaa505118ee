//! `fxtriage import DIR|s3://bucket/prefix`: back-loads an archive into a site
//! through the ingest pipeline, with a progress bar and a summary. The work itself
//! is in `fxtriage_ingest::import`; here are the arguments, the bar and the printing.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use clap::Args;
use fxtriage_ingest::Ingestor;
use fxtriage_ingest::import::{
    self, FileOutcome, ImportLocation, ImportOptions, ImportProgress, ImportSource,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, DatabaseArgs, SitesFileArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory (walked without following symbolic links) or s3://bucket/prefix.
    /// A bucket is read with the same --s3-endpoint, --s3-region and credentials as the object store.
    pub source: String,
    /// The site the files are imported into (a site of the registry, whose
    /// routing rules and limits apply).
    #[arg(long)]
    pub site: String,
    #[command(flatten)]
    pub sites: SitesFileArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Files imported at the same time.
    #[arg(long, env = "FXTRIAGE_IMPORT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `fxtriage import`: prints the summary on stdout; fails (exit status 1) if a
/// file could not be stored or the import was interrupted, since running it
/// again would import more. Quarantined files do not make it fail: they are
/// dealt with, and listed.
pub async fn run(args: ImportArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    args.sites.apply_at_start(&pool).await?;
    let registry = fxtriage_ingest::SiteRegistry::load(&pool).await?;
    let sites = registry.current();
    let site = sites.site(&args.site).with_context(|| {
        format!(
            "site {:?} is not in the site registry (see `fxtriage sites list`)",
            args.site
        )
    })?;
    let source = match ImportLocation::parse(&args.source)? {
        ImportLocation::Directory(path) => ImportSource::Directory(path),
        ImportLocation::S3 { bucket, prefix } => ImportSource::Bucket {
            // The object store's S3 endpoint, region and credentials, another
            // bucket. (A source elsewhere is copied into reach first, or mounted
            // and imported as a directory.)
            store: args.store.s3(&bucket).await?,
            name: format!("s3://{bucket}"),
            prefix,
        },
    };
    let ingestor = Ingestor::new(
        args.store.connect().await?,
        args.bus.connect("fxtriage-import").await?,
        &args.bus.namespace,
    );
    let options = ImportOptions {
        concurrency: usize::from(args.concurrency),
    };
    let progress = ImportBar::new();
    let summary = import::import(&ingestor, site, &source, &options, &progress, shutdown).await;
    progress.bar.finish_and_clear();
    let summary = summary?;
    print!("{summary}");
    std::io::stdout().flush()?;
    if summary.interrupted {
        anyhow::bail!("the import was interrupted; run it again to import the rest");
    }
    if summary.failed.count > 0 {
        anyhow::bail!(
            "{} files could not be stored; run the import again to retry them",
            summary.failed.count
        );
    }
    Ok(())
}

/// Files, bytes, rate and ETA on stderr; hidden when stderr is not a terminal.
struct ImportBar {
    bar: ProgressBar,
    files: AtomicU64,
    done: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    quarantined: AtomicU64,
    failed: AtomicU64,
}

impl ImportBar {
    fn new() -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message("finding files");
        Self {
            bar,
            files: AtomicU64::new(0),
            done: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl ImportProgress for ImportBar {
    fn found(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }

    fn done(&self, _source: &str, bytes: u64, outcome: &FileOutcome) {
        let counter = match outcome {
            FileOutcome::Stored => Some(&self.stored),
            FileOutcome::Duplicate => Some(&self.duplicates),
            FileOutcome::Quarantined { .. } => Some(&self.quarantined),
            FileOutcome::Failed { .. } => Some(&self.failed),
            FileOutcome::Skipped { .. } => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.inc(bytes);
        self.bar.set_message(format!(
            "{done}/{} files: {} stored, {} duplicates, {} quarantined, {} failed",
            self.files.load(Ordering::Relaxed),
            self.stored.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            self.quarantined.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ));
    }
}
