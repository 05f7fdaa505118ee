//! `fxtriage sites`: the site registry, in PostgreSQL, that every service reads.
//!
//! - `sites apply FILE [--dry-run] [--prune]`: applies a sites file (format in
//!   `fxtriage_sites::file`); prints what it adds, changes and (with `--prune`)
//!   removes; an invalid file is refused whole, every error with its line, and
//!   nothing changes;
//! - `sites list [--json]`: the sites and groups in force;
//! - `sites show ID [--format toml|json]`: one site; the TOML applies back unchanged.
//!
//! Services pick up a change within a few seconds, without a restart.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use fxtriage_sites::store::{self, ApplyError, ApplyOptions};

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct SitesArgs {
    #[command(subcommand)]
    pub command: SitesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Apply a sites file (TOML): add and change the sites and groups it defines.
    Apply(ApplyArgs),
    /// List the sites and groups in force.
    List(ListArgs),
    /// Show one site, as a sites file (TOML) that applies back unchanged, or JSON.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The sites file.
    pub file: PathBuf,
    /// Say what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove (retire) the sites and groups the file does not name. A
    /// retired site keeps its worklist and history; its AE titles are freed.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per site and group instead of columns.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Toml,
    Json,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The site's id.
    pub site: String,
    #[arg(long, value_enum, default_value = "toml")]
    pub format: Format,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: SitesArgs) -> anyhow::Result<()> {
    match args.command {
        SitesCommand::Apply(args) => apply(args).await,
        SitesCommand::List(args) => list(args).await,
        SitesCommand::Show(args) => show(args).await,
    }
}

/// Applies `path` (the sites file of `--sites` at a service's start, too) and
/// writes what changed to `out`.
pub async fn apply_file(
    pool: &fxtriage_db::DbPool,
    path: &std::path::Path,
    options: ApplyOptions,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    // Refused by its size before it is read into memory.
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read the sites file {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= fxtriage_sites::file::MAX_FILE_BYTES as u64,
        "{}: the sites file has {size} bytes, more than the limit of {} MiB",
        path.display(),
        fxtriage_sites::file::MAX_FILE_BYTES >> 20
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the sites file {}", path.display()))?;
    match store::apply_text(pool, &text, options).await {
        Ok(changes) => {
            let verb = if options.dry_run { "would" } else { "did" };
            if changes.is_empty() {
                writeln!(out, "{}: no change", path.display())?;
            }
            for change in &changes {
                writeln!(out, "{verb}: {change}")?;
            }
            Ok(())
        }
        Err(ApplyError::Invalid(invalid)) => {
            anyhow::bail!("{}: {invalid}", path.display())
        }
        Err(ApplyError::Registry(error)) => Err(error.into()),
    }
}

#[allow(clippy::print_stdout)]
async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let options = ApplyOptions {
        prune: args.prune,
        dry_run: args.dry_run,
    };
    let mut out = std::io::stdout().lock();
    apply_file(&pool, &args.file, options, &mut out).await?;
    out.flush()?;
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let client = pool.get().await?;
    let registry = store::load(&client).await?;
    let mut out = std::io::stdout().lock();
    for record in registry.sites.values() {
        let site = &record.config;
        if args.json {
            let mut value = serde_json::to_value(site)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("kind".into(), "site".into());
                object.insert("retired".into(), record.retired.into());
            }
            serde_json::to_writer(&mut out, &value)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "site\t{}\t{}\t{}\t{}",
                site.id,
                site.name,
                site.called_ae_titles.join(","),
                if record.retired {
                    "retired"
                } else {
                    "in service"
                }
            )?;
        }
    }
    for record in registry.groups.values() {
        let group = &record.config;
        if args.json {
            let mut value = serde_json::to_value(group)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("kind".into(), "group".into());
                object.insert("retired".into(), record.retired.into());
            }
            serde_json::to_writer(&mut out, &value)?;
            writeln!(out)?;
        } else {
            let sites: Vec<&str> = group.sites.iter().map(|site| site.as_str()).collect();
            writeln!(
                out,
                "group\t{}\t{}\t{}\t{}",
                group.id,
                group.name,
                sites.join(","),
                if record.retired {
                    "retired"
                } else {
                    "in service"
                }
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let client = pool.get().await?;
    let registry = store::load(&client).await?;
    let record = registry
        .sites
        .iter()
        .find(|(id, _)| id.as_str() == args.site)
        .map(|(_, record)| record)
        .with_context(|| format!("no site {:?} in the registry", args.site))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Toml => {
            if record.retired {
                writeln!(
                    out,
                    "# retired: applying this file puts the site back in service"
                )?;
            }
            write!(
                out,
                "{}",
                fxtriage_sites::file::to_toml(std::slice::from_ref(&record.config), &[])
            )?;
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &record.config)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn sites_apply_takes_a_file_and_its_options() {
        let cli = Cli::try_parse_from([
            "fxtriage",
            "sites",
            "apply",
            "network.toml",
            "--dry-run",
            "--prune",
            "--database-url",
            "postgres://fxtriage@127.0.0.1/fxtriage",
        ])
        .expect("parses");
        let Command::Sites(sites) = cli.command else {
            panic!("not the sites command");
        };
        let super::SitesCommand::Apply(apply) = sites.command else {
            panic!("not sites apply");
        };
        assert_eq!(apply.file, std::path::PathBuf::from("network.toml"));
        assert!(apply.dry_run && apply.prune);
    }
}
