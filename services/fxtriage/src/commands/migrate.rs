//! `fxtriage migrate`: applies pending schema migrations and exits.

use clap::Args;

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = fxtriage_db::DbConfig::from_url(&args.database.database_url)?;
    let report = fxtriage_db::migrate(&config).await?;
    tracing::info!(applied = ?report.applied, version = ?report.current_version, "schema is current");
    Ok(())
}
