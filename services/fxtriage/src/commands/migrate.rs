//! `fxtriage migrate`: applies pending schema migrations and exits; with
//! `--service-role`, then grants that role what the services need and no
//! more (see `fxtriage_db::grant_service_role`).

use clap::Args;

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// After migrating, grant this existing role what the services need: every
    /// table but the audit log read and written, the audit log only read and
    /// appended to, no DDL. Run the services as that role and this command as
    /// the schema's owner.
    #[arg(long, env = "FXTRIAGE_SERVICE_ROLE")]
    pub service_role: Option<String>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = fxtriage_db::DbConfig::from_url(&args.database.database_url)?;
    let report = fxtriage_db::migrate(&config).await?;
    tracing::info!(applied = ?report.applied, version = ?report.current_version, "schema is current");
    if let Some(role) = &args.service_role {
        fxtriage_db::grant_service_role(&config, role).await?;
        println!(
            "service role {role}: granted the services' privileges (the audit log: read and append only)"
        );
    }
    Ok(())
}
