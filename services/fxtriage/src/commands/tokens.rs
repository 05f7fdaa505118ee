//! `fxtriage tokens`: access tokens, stored only as digests.

use clap::{Args, Subcommand};
use fxtriage_api::Role;
use fxtriage_core::SiteId;

use crate::clients::DatabaseArgs;

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

pub async fn run(args: TokensArgs) -> anyhow::Result<()> {
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
}
