//! Changes to the site registry and to credentials, in the audit log: one row
//! in the log of each site a change concerns (a site's own token or settings;
//! every site of a group for the group's; every site for the deployment's),
//! written in the change's own transaction, so a change without its rows
//! cannot be committed. Actions: `sites.apply` (one row per change, the
//! change as `sites apply` prints it), `token.create` and `token.revoke`
//! (the token's id, role and scope, and the claim of an OpenID Connect
//! mapping; never a secret).

use deadpool_postgres::GenericClient;
use serde_json::Value;

use crate::credentials::Scope;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changer {
    /// The admin credential used (the API); `None` for the operator.
    pub token_id: Option<String>,
    /// The person signed in (`oidc:NAME (sub)`), the token's id, or
    /// `operator`.
    pub actor: String,
}

impl Changer {
    /// Someone with the database's own rights: `fxtriage sites apply`,
    /// `fxtriage tokens`, the services' `--sites` file at start.
    pub fn operator() -> Self {
        Self {
            token_id: None,
            actor: "operator".to_owned(),
        }
    }

    /// An admin of the API, through `token_id`, as `actor`.
    pub fn admin(token_id: &str, actor: &str) -> Self {
        Self {
            token_id: Some(token_id.to_owned()),
            actor: actor.to_owned(),
        }
    }
}

/// The sites (in service or not) a credential of `scope` concerns.
pub(crate) async fn sites_of(
    client: &impl GenericClient,
    scope: &Scope,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows =
        match scope {
            Scope::Site(site) => return Ok(vec![site.as_str().to_owned()]),
            Scope::Group(group) => client
                .query(
                    "SELECT site_id FROM site_group_members WHERE group_id = $1 ORDER BY site_id",
                    &[&group.as_str()],
                )
                .await?,
            Scope::Deployment => {
                client
                    .query("SELECT site_id FROM sites ORDER BY site_id", &[])
                    .await?
            }
        };
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Appends `action` by `by`, with `detail`, to the audit log of each of `sites`.
pub(crate) async fn record(
    client: &impl GenericClient,
    sites: &[String],
    by: &Changer,
    action: &str,
    detail: &Value,
) -> Result<(), tokio_postgres::Error> {
    for site in sites {
        client
            .execute(
                "INSERT INTO audit_log (site_id, token_id, actor, action, detail) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[site, &by.token_id, &by.actor, &action, detail],
            )
            .await?;
    }
    Ok(())
}
