//! `fxtriage sites`: the site registry.

use clap::{Args, Subcommand};
use fxtriage_core::SiteId;
use fxtriage_prioritizer::sites::{SiteAdded, add_site};

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct SitesArgs {
    #[command(subcommand)]
    pub command: SitesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Register a site (a hospital or reading group). Adding it again changes nothing.
    Add(SitesAddArgs),
}

#[derive(Debug, Args)]
pub struct SitesAddArgs {
    /// The site id: lower-case letters, digits and '-', as used in URLs and the sites file.
    pub site: String,
    /// Its display name.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn run(args: SitesArgs) -> anyhow::Result<()> {
    match args.command {
        SitesCommand::Add(args) => {
            let site = SiteId::parse(args.site)?;
            let pool = args.database.migrated_pool().await?;
            match add_site(&pool, &site, &args.name).await? {
                SiteAdded::Created => tracing::info!(%site, "site added"),
                SiteAdded::AlreadyExists => {
                    tracing::info!(%site, "site exists already; left as it was");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn sites_add_takes_the_site_and_its_name() {
        let cli = Cli::try_parse_from([
            "fxtriage",
            "sites",
            "add",
            "north",
            "--name",
            "North hospital",
            "--database-url",
            "postgres://fxtriage@127.0.0.1/fxtriage",
        ])
        .expect("parses");
        let Command::Sites(sites) = cli.command else {
            panic!("not the sites command");
        };
        let super::SitesCommand::Add(add) = sites.command;
        assert_eq!(
            (add.site.as_str(), add.name.as_str()),
            ("north", "North hospital")
        );
    }
}
