//! `fxtriage audit verify`: checks the audit log's hash chain of every site
//! (or one) and reports the first broken link of each, with each chain's head
//! hash to keep elsewhere. Exits non-zero when a chain is broken.

use std::io::Write as _;

use clap::{Args, Subcommand, ValueEnum};

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check each site's chain of audit rows; print its length, its head hash
    /// and its first broken link, if any.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this site's chain.
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let AuditCommand::Verify(args) = args.command;
    let pool = args.database.migrated_pool().await?;
    let client = pool.get().await?;
    let chains = fxtriage_worklist::audit_chain::verify(&**client, args.site.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &chains)?;
            writeln!(out)?;
        }
        Format::Table => {
            for chain in &chains {
                match &chain.broken {
                    None => writeln!(
                        out,
                        "{}: {} rows, intact; head {}",
                        chain.site_id, chain.rows, chain.head
                    )?,
                    Some(link) => writeln!(
                        out,
                        "{}: {} rows, BROKEN at row {} of the chain (audit row id {}): {}",
                        chain.site_id, chain.rows, link.chain_seq, link.id, link.reason
                    )?,
                }
            }
            if chains.is_empty() {
                writeln!(out, "no audit rows")?;
            }
        }
    }
    out.flush()?;
    let broken = chains.iter().filter(|chain| chain.broken.is_some()).count();
    anyhow::ensure!(broken == 0, "{broken} audit chain(s) broken");
    Ok(())
}
