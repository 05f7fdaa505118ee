//! `fxtriage tokens`: the one credential system (`fxtriage_sites::credentials`).
//!
//! - `tokens create (--site S | --group G | --deployment) --role R`: prints the
//!   new token once on stdout (only its SHA-256 is stored);
//! - `tokens revoke TOKEN_ID`: it stops working at once;
//! - `tokens list [--site S | --group G] [--json]`: ids, scopes, roles; never secrets.

use std::io::Write as _;

use clap::{ArgGroup, Args, Subcommand};
use fxtriage_core::{GroupId, SiteId};
use fxtriage_sites::credentials::{self, Role, Scope};

use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it on stdout. It is shown only this once: only
    /// its SHA-256 is stored.
    Create(TokensCreateArgs),
    /// Revoke a token by its id (tok-...): it stops working at once.
    Revoke(TokensRevokeArgs),
    /// List tokens: id, scope, role, description, creation, revoked.
    List(TokensListArgs),
}

/// Where a token works: one of a site, a group, or the deployment.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["site", "group", "deployment"])))]
pub struct ScopeArgs {
    /// A site: the token sees nothing of any other.
    #[arg(long)]
    pub site: Option<String>,
    /// A group of sites (a reading network): its merged worklist and each of its sites.
    #[arg(long)]
    pub group: Option<String>,
    /// The deployment: administers the site registry and tokens (admin role only).
    #[arg(long)]
    pub deployment: bool,
}

impl ScopeArgs {
    pub fn scope(&self) -> anyhow::Result<Scope> {
        Ok(match (&self.site, &self.group) {
            (Some(site), _) => Scope::Site(SiteId::parse(site.clone())?),
            (None, Some(group)) => Scope::Group(GroupId::parse(group.clone())?),
            (None, None) => Scope::Deployment,
        })
    }
}

#[derive(Debug, Args)]
pub struct TokensCreateArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// viewer (reads), reader (also claims, releases, reports), sender (STOW-RS
    /// only) or admin (all of them, and overrides others' claims).
    #[arg(long)]
    pub role: Role,
    /// What the token is for (a workstation, a RIS adapter), for whoever revokes it later.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Instead of a token, map people signed in at the identity provider
    /// (OpenID Connect, `fxtriage api --oidc-issuer`) whose token has this
    /// claim with this value (`CLAIM=VALUE`, e.g. `groups=north-radiologists`)
    /// to this role on this scope. Nothing secret is printed.
    #[arg(long, value_name = "CLAIM=VALUE")]
    pub oidc_claim: Option<String>,
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

#[derive(Debug, Args)]
pub struct TokensListArgs {
    /// Only this site's tokens.
    #[arg(long, conflicts_with = "group")]
    pub site: Option<String>,
    /// Only this group's tokens.
    #[arg(long)]
    pub group: Option<String>,
    /// One JSON object per token instead of columns.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[allow(clippy::print_stdout)]
pub async fn run(args: TokensArgs) -> anyhow::Result<()> {
    match args.command {
        TokensCommand::Create(args) => {
            let scope = args.scope.scope()?;
            let pool = args.database.migrated_pool().await?;
            if let Some(mapping) = &args.oidc_claim {
                let (claim, value) = mapping.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--oidc-claim takes CLAIM=VALUE, e.g. groups=north-radiologists"
                    )
                })?;
                let credential = credentials::create_oidc_mapping(
                    &pool,
                    &scope,
                    args.role,
                    claim.trim(),
                    value.trim(),
                    &args.description,
                )
                .await?;
                tracing::info!(
                    token_id = %credential.token_id,
                    scope = %credential.scope,
                    role = %credential.role,
                    "OpenID Connect mapping created"
                );
                println!("{}", credential.token_id);
                return Ok(());
            }
            let created =
                credentials::create_token(&pool, &scope, args.role, &args.description).await?;
            tracing::info!(
                token_id = %created.credential.token_id,
                scope = %created.credential.scope,
                role = %created.credential.role,
                "token created; it is printed once on stdout and cannot be shown again"
            );
            println!("{}", created.token.reveal());
            Ok(())
        }
        TokensCommand::Revoke(args) => {
            let pool = args.database.migrated_pool().await?;
            credentials::revoke_token(&pool, &args.token_id).await?;
            tracing::info!(token_id = %args.token_id, "token revoked");
            Ok(())
        }
        TokensCommand::List(args) => {
            let scope = match (&args.site, &args.group) {
                (Some(site), _) => Some(Scope::Site(SiteId::parse(site.clone())?)),
                (None, Some(group)) => Some(Scope::Group(GroupId::parse(group.clone())?)),
                (None, None) => None,
            };
            let pool = args.database.migrated_pool().await?;
            let tokens = credentials::list_tokens(&pool, scope.as_ref()).await?;
            let mut out = std::io::stdout().lock();
            for token in &tokens {
                if args.json {
                    serde_json::to_writer(&mut out, token)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{}\t{} {}\t{}\t{}\t{}\t{}{}",
                        token.token_id,
                        token.scope,
                        token.target,
                        token.role,
                        token.description,
                        token.created_at,
                        if token.revoked { "revoked" } else { "active" },
                        token
                            .oidc
                            .as_ref()
                            .map(|mapping| format!("\toidc {mapping}"))
                            .unwrap_or_default()
                    )?;
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn create(arguments: &[&str]) -> Result<super::TokensCreateArgs, clap::Error> {
        let mut all = vec!["fxtriage", "tokens", "create"];
        all.extend_from_slice(arguments);
        all.extend_from_slice(&["--database-url", "postgres://fxtriage@127.0.0.1/fxtriage"]);
        let cli = Cli::try_parse_from(all)?;
        let Command::Tokens(tokens) = cli.command else {
            panic!("not the tokens command");
        };
        let super::TokensCommand::Create(create) = tokens.command else {
            panic!("not tokens create");
        };
        Ok(create)
    }

    #[test]
    fn tokens_create_takes_one_scope_a_role_and_a_description() {
        let reader = create(&[
            "--site",
            "demo",
            "--role",
            "reader",
            "--description",
            "reading room 2",
        ])
        .expect("parses");
        assert_eq!(reader.role, fxtriage_sites::Role::Reader);
        assert_eq!(
            reader.scope.scope().expect("scope"),
            fxtriage_sites::Scope::Site(fxtriage_core::SiteId::parse("demo").expect("id"))
        );
        assert_eq!(reader.description, "reading room 2");
        assert_eq!(reader.oidc_claim, None);
        let mapped = create(&[
            "--site",
            "demo",
            "--role",
            "reader",
            "--oidc-claim",
            "groups=demo-radiologists",
        ])
        .expect("parses");
        assert_eq!(
            mapped.oidc_claim.as_deref(),
            Some("groups=demo-radiologists")
        );
        let sender = create(&["--group", "north", "--role", "sender"]).expect("parses");
        assert!(matches!(
            sender.scope.scope().expect("scope"),
            fxtriage_sites::Scope::Group(_)
        ));
        assert!(
            create(&["--site", "demo", "--role", "root"]).is_err(),
            "unknown role"
        );
        assert!(create(&["--role", "reader"]).is_err(), "no scope");
        assert!(
            create(&["--site", "a", "--group", "b", "--role", "reader"]).is_err(),
            "two scopes"
        );
    }
}
