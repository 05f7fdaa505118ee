//! `fxtriage api` (the HTTP API), and the administration of what it serves:
//! `fxtriage sites add` and `fxtriage tokens create|revoke`. Each migrates the
//! database first, so they work on an empty one.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use fxtriage_api::Role;
use fxtriage_core::SiteId;
use fxtriage_db::{DbConfig, DbPool};
use fxtriage_prioritizer::sites::{SiteAdded, add_site};
use tokio_util::sync::CancellationToken;

use crate::infra::{BusArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/fxtriage.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

impl DatabaseArgs {
    pub(crate) async fn migrated_pool(&self) -> anyhow::Result<DbPool> {
        let config = DbConfig::from_url(&self.database_url)?;
        fxtriage_db::migrate(&config).await?;
        Ok(config.pool()?)
    }
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address of the API, /health/live, /health/ready and /metrics. Loopback unless told otherwise.
    #[arg(long, env = "FXTRIAGE_API_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_address: SocketAddr,
    /// Minutes a claim lasts unless its reader renews, releases or reports it.
    #[arg(long, env = "FXTRIAGE_CLAIM_MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub claim_minutes: u32,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run_api(args: ApiArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let store = args.store.connect().await?;
    let bus = args.bus.connect("fxtriage-api").await?;
    let mut config = fxtriage_api::Config::new(args.http_address);
    config.claim_ttl = Duration::from_secs(u64::from(args.claim_minutes) * 60);
    config.topic_partitions = args.bus.topic_partitions;
    config.namespace = args.bus.namespace.clone();
    fxtriage_api::run(config, pool, store, bus, shutdown).await
}

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

pub async fn sites(args: SitesArgs) -> anyhow::Result<()> {
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

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token for one site and print it on stdout. It is shown only
    /// this once: only its SHA-256 is stored.
    Create(TokensCreateArgs),
    /// Revoke a token by its id (tok-...): it stops working at once.
    Revoke(TokensRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokensCreateArgs {
    /// The site the token is for; it sees nothing of any other.
    #[arg(long)]
    pub site: String,
    /// viewer (reads), reader (also claims, releases, reports) or admin (also overrides others' claims).
    #[arg(long)]
    pub role: Role,
    /// What the token is for (a workstation, a RIS adapter), for whoever revokes it later.
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct TokensRevokeArgs {
    /// The token's id, as `tokens create` logged it.
    pub token_id: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

pub async fn tokens(args: TokensArgs) -> anyhow::Result<()> {
    match args.command {
        TokensCommand::Create(args) => {
            let site = SiteId::parse(args.site)?;
            let pool = args.database.migrated_pool().await?;
            let created =
                fxtriage_api::create_token(&pool, &site, args.role, &args.description).await?;
            tracing::info!(
                token_id = %created.token_id,
                site = %created.site,
                role = %created.role,
                "token created; it is printed once on stdout and cannot be shown again"
            );
            println!("{}", created.token.reveal());
            Ok(())
        }
        TokensCommand::Revoke(args) => {
            let pool = args.database.migrated_pool().await?;
            fxtriage_api::revoke_token(&pool, &args.token_id).await?;
            tracing::info!(token_id = %args.token_id, "token revoked");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn tokens_create_takes_a_site_a_role_and_a_description() {
        let cli = Cli::try_parse_from([
            "fxtriage",
            "tokens",
            "create",
            "--site",
            "demo",
            "--role",
            "reader",
            "--description",
            "reading room 2",
            "--database-url",
            "postgres://fxtriage@127.0.0.1/fxtriage",
        ])
        .expect("parses");
        let Command::Tokens(tokens) = cli.command else {
            panic!("not the tokens command");
        };
        let super::TokensCommand::Create(create) = tokens.command else {
            panic!("not tokens create");
        };
        assert_eq!(create.role, fxtriage_api::Role::Reader);
        assert_eq!(create.site, "demo");
        assert_eq!(create.description, "reading room 2");
        let unknown_role = Cli::try_parse_from([
            "fxtriage",
            "tokens",
            "create",
            "--site",
            "demo",
            "--role",
            "root",
            "--database-url",
            "postgres://x@127.0.0.1/x",
        ]);
        assert!(unknown_role.is_err());
    }

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
