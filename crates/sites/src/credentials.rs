//! One credential system for every door: the API, the web page and STOW-RS.
//!
//! A token is a random secret shown once (`fxt_` and 32 random bytes in hex; the
//! prefix lets secret scanners recognise a leaked one), stored only as its
//! SHA-256 in `api_credentials`, with a public id (`tok-` and 12 hex digits) for
//! logs and the audit log. It has one role on one scope:
//!
//! | role | may |
//! |---|---|
//! | viewer | read worklists, studies, overlays, events |
//! | reader | a viewer that also claims, releases and reports |
//! | sender | store images by STOW-RS, nothing else |
//! | admin | all of the above, and release or report a study someone else claimed |
//!
//! The scope is a site, a group of sites (a reading network: the token works for
//! each of the group's sites and for the group's merged worklist), or the whole
//! deployment (an admin token for the site registry and tokens only: it reads no
//! worklist). A presented token is looked up by its digest, and the stored digest
//! is compared with the presented one in constant time.

use std::fmt;

use deadpool_postgres::Pool;
use fxtriage_core::{GroupId, SiteId};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::audit::{self, Changer};
use crate::store::RegistryError;

pub(crate) const TOKEN_PREFIX: &str = "fxt_";
const SECRET_BYTES: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Reader,
    Sender,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Reader, Role::Sender, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reader => "reader",
            Role::Sender => "sender",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == value)
    }

    /// Read worklists, studies, overlays and events.
    pub fn can_view(self) -> bool {
        matches!(self, Role::Viewer | Role::Reader | Role::Admin)
    }

    /// Claim, release and report.
    pub fn can_read_studies(self) -> bool {
        matches!(self, Role::Reader | Role::Admin)
    }

    /// Store images by STOW-RS.
    pub fn can_send(self) -> bool {
        matches!(self, Role::Sender | Role::Admin)
    }

    /// Release or report a study someone else claimed.
    pub fn can_override_claims(self) -> bool {
        self == Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value).ok_or_else(|| {
            format!("unknown role {value:?} (expected viewer, reader, sender or admin)")
        })
    }
}

/// Where a token works.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Site(SiteId),
    Group(GroupId),
    /// The registry and the tokens; no worklist.
    Deployment,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Site(site) => write!(f, "site {site}"),
            Scope::Group(group) => write!(f, "group {group}"),
            Scope::Deployment => f.write_str("the deployment"),
        }
    }
}

/// A bearer token in clear. Never shown by `Debug`; print it with
/// [`ApiToken::reveal`] exactly once, when it is created.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    fn generate() -> Self {
        let mut secret = [0_u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Self(format!("{TOKEN_PREFIX}{}", hex::encode(secret)))
    }

    /// A token as a client sent it; `None` when it cannot be one of ours, so that
    /// no lookup is spent on it.
    pub fn from_presented(value: &str) -> Option<Self> {
        let secret = value.strip_prefix(TOKEN_PREFIX)?;
        let well_formed = secret.len() == SECRET_BYTES * 2
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(value.to_owned()))
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The hex SHA-256 stored in `api_credentials.token_sha256`.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// An authenticated token: who it is and what it may do where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub token_id: String,
    pub scope: Scope,
    pub role: Role,
}

/// A token just created: its public id and the secret, to be shown once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub credential: Credential,
    pub token: ApiToken,
}

/// A token as `tokens list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub token_id: String,
    /// "site", "group" or "deployment".
    pub scope: String,
    /// The site or group id; empty for the deployment.
    pub target: String,
    pub role: String,
    pub description: String,
    pub created_at: String,
    pub revoked: bool,
    /// `claim=value` of an OpenID Connect mapping; `None` for a bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0} is not in the site registry (or is retired)")]
    UnknownScope(Scope),
    #[error(
        "a deployment token can only be an admin token (it administers the registry and tokens)"
    )]
    DeploymentRoleNotAdmin,
    #[error("no token {0}")]
    UnknownToken(String),
    #[error(
        "an OpenID Connect mapping needs a claim name and a value, each of 1 to 256 characters"
    )]
    InvalidOidcMapping,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<deadpool_postgres::PoolError> for TokenError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        TokenError::Registry(error.into())
    }
}

fn database(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> TokenError {
    move |source| TokenError::Registry(RegistryError::Database { doing, source })
}

/// Creates a token of `role` on `scope`, by the operator (see
/// [`create_token_by`]).
pub async fn create_token(
    pool: &Pool,
    scope: &Scope,
    role: Role,
    description: &str,
) -> Result<CreatedToken, TokenError> {
    create_token_by(pool, scope, role, description, &Changer::operator()).await
}

/// Creates a token of `role` on `scope`, recorded in the audit log of the
/// sites it concerns as made `by` (see `crate::audit`).
pub async fn create_token_by(
    pool: &Pool,
    scope: &Scope,
    role: Role,
    description: &str,
    by: &Changer,
) -> Result<CreatedToken, TokenError> {
    insert_credential(pool, scope, role, description, None, by).await
}

/// Maps an OpenID Connect claim to `role` on `scope`: a person whose verified
/// token has `claim` equal to `value` (or holding it among an array) is known
/// by this credential. Revoked like a token (`revoke_token`). Made by the
/// operator (`fxtriage tokens create --oidc-claim`).
pub async fn create_oidc_mapping(
    pool: &Pool,
    scope: &Scope,
    role: Role,
    claim: &str,
    value: &str,
    description: &str,
) -> Result<Credential, TokenError> {
    if claim.is_empty() || value.is_empty() || claim.len() > 256 || value.len() > 256 {
        return Err(TokenError::InvalidOidcMapping);
    }
    let created = insert_credential(
        pool,
        scope,
        role,
        description,
        Some((claim, value)),
        &Changer::operator(),
    )
    .await?;
    Ok(created.credential)
}

async fn insert_credential(
    pool: &Pool,
    scope: &Scope,
    role: Role,
    description: &str,
    oidc: Option<(&str, &str)>,
    by: &Changer,
) -> Result<CreatedToken, TokenError> {
    let mut client = pool.get().await?;
    let client = client
        .transaction()
        .await
        .map_err(database("starting to create the token"))?;
    let (site, group): (Option<&str>, Option<&str>) = match scope {
        Scope::Site(site) => (Some(site.as_str()), None),
        Scope::Group(group) => (None, Some(group.as_str())),
        Scope::Deployment => (None, None),
    };
    if *scope == Scope::Deployment && role != Role::Admin {
        return Err(TokenError::DeploymentRoleNotAdmin);
    }
    let known = match scope {
        Scope::Site(site) => client
            .query_opt(
                "SELECT 1 FROM sites WHERE site_id = $1 AND retired_at IS NULL",
                &[&site.as_str()],
            )
            .await
            .map_err(database("looking up the site"))?
            .is_some(),
        Scope::Group(group) => client
            .query_opt(
                "SELECT 1 FROM site_groups WHERE group_id = $1 AND retired_at IS NULL",
                &[&group.as_str()],
            )
            .await
            .map_err(database("looking up the group"))?
            .is_some(),
        Scope::Deployment => true,
    };
    if !known {
        return Err(TokenError::UnknownScope(scope.clone()));
    }
    let mut id_bytes = [0_u8; 6];
    rand::rng().fill_bytes(&mut id_bytes);
    let token_id = format!("tok-{}", hex::encode(id_bytes));
    let token = ApiToken::generate();
    client
        .execute(
            "INSERT INTO api_credentials \
                 (token_id, site_id, group_id, token_sha256, role, description, oidc_claim, oidc_value) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &token_id,
                &site,
                &group,
                &token.sha256(),
                &role.as_str(),
                &description,
                &oidc.map(|(claim, _)| claim),
                &oidc.map(|(_, value)| value),
            ],
        )
        .await
        .map_err(database("storing the token"))?;
    let mut detail = serde_json::json!({
        "token_id": token_id,
        "role": role.as_str(),
        "scope": scope.to_string(),
    });
    if let Some((claim, value)) = oidc {
        detail["oidc"] = serde_json::json!(format!("{claim}={value}"));
    }
    let sites = audit::sites_of(&client, scope)
        .await
        .map_err(database("finding the sites the token concerns"))?;
    audit::record(&client, &sites, by, "token.create", &detail)
        .await
        .map_err(database("writing the audit log"))?;
    client
        .commit()
        .await
        .map_err(database("storing the token"))?;
    Ok(CreatedToken {
        credential: Credential {
            token_id,
            scope: scope.clone(),
            role,
        },
        token,
    })
}

/// The scope of a credential's row (`site_id`, `group_id`); `None` for an id
/// this version cannot parse.
fn scope_of(site: Option<String>, group: Option<String>) -> Option<Scope> {
    match (site, group) {
        (Some(site), _) => SiteId::parse(site).ok().map(Scope::Site),
        (None, Some(group)) => GroupId::parse(group).ok().map(Scope::Group),
        (None, None) => Some(Scope::Deployment),
    }
}

/// Revokes a token, by the operator (see [`revoke_token_by`]).
pub async fn revoke_token(pool: &Pool, token_id: &str) -> Result<(), TokenError> {
    revoke_token_by(pool, token_id, &Changer::operator()).await
}

/// Revokes a token: it stops working at once. Revoking twice is harmless
/// (the audit log records the first). Recorded as made `by`.
pub async fn revoke_token_by(pool: &Pool, token_id: &str, by: &Changer) -> Result<(), TokenError> {
    let mut client = pool.get().await?;
    let client = client
        .transaction()
        .await
        .map_err(database("starting to revoke the token"))?;
    let found = client
        .query_opt(
            "UPDATE api_credentials SET revoked_at = coalesce(revoked_at, now()) \
             WHERE token_id = $1 \
             RETURNING site_id, group_id, role, revoked_at = now() AS revoked_now",
            &[&token_id],
        )
        .await
        .map_err(database("revoking the token"))?;
    let Some(row) = found else {
        return Err(TokenError::UnknownToken(token_id.to_owned()));
    };
    if row.get::<_, bool>("revoked_now") {
        let scope = scope_of(row.get("site_id"), row.get("group_id")).unwrap_or(Scope::Deployment);
        let sites = audit::sites_of(&client, &scope)
            .await
            .map_err(database("finding the sites the token concerns"))?;
        let detail = serde_json::json!({
            "token_id": token_id,
            "role": row.get::<_, String>("role"),
            "scope": scope.to_string(),
        });
        audit::record(&client, &sites, by, "token.revoke", &detail)
            .await
            .map_err(database("writing the audit log"))?;
    }
    client
        .commit()
        .await
        .map_err(database("revoking the token"))
}

/// Every token, or those of `scope`, oldest first.
pub async fn list_tokens(pool: &Pool, scope: Option<&Scope>) -> Result<Vec<TokenInfo>, TokenError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT token_id, site_id, group_id, role, description, \
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, \
                    revoked_at IS NOT NULL AS revoked, \
                    CASE WHEN oidc_claim IS NOT NULL THEN oidc_claim || '=' || oidc_value END AS oidc \
             FROM api_credentials ORDER BY created_at, token_id",
            &[],
        )
        .await
        .map_err(database("listing the tokens"))?;
    let mut tokens = Vec::new();
    for row in &rows {
        let site: Option<String> = row.get("site_id");
        let group: Option<String> = row.get("group_id");
        let (kind, target) = match (&site, &group) {
            (Some(site), _) => ("site", site.clone()),
            (None, Some(group)) => ("group", group.clone()),
            (None, None) => ("deployment", String::new()),
        };
        let wanted = match scope {
            None => true,
            Some(Scope::Site(wanted)) => site.as_deref() == Some(wanted.as_str()),
            Some(Scope::Group(wanted)) => group.as_deref() == Some(wanted.as_str()),
            Some(Scope::Deployment) => kind == "deployment",
        };
        if wanted {
            tokens.push(TokenInfo {
                token_id: row.get("token_id"),
                scope: kind.to_owned(),
                target,
                role: row.get("role"),
                description: row.get("description"),
                created_at: row.get("created_at"),
                revoked: row.get("revoked"),
                oidc: row.get("oidc"),
            });
        }
    }
    Ok(tokens)
}

/// The credential of a presented token, if it is valid: known, not revoked, and
/// its site or group in service. `None` for anything else.
pub async fn authenticate(
    client: &impl deadpool_postgres::GenericClient,
    token: &ApiToken,
) -> Result<Option<Credential>, TokenError> {
    let presented = token.sha256();
    let row = client
        .query_opt(
            "SELECT c.token_id, c.site_id, c.group_id, c.role, c.token_sha256 \
             FROM api_credentials c \
             LEFT JOIN sites s ON s.site_id = c.site_id \
             LEFT JOIN site_groups g ON g.group_id = c.group_id \
             WHERE c.token_sha256 = $1 AND c.revoked_at IS NULL \
               AND s.retired_at IS NULL AND g.retired_at IS NULL",
            &[&presented],
        )
        .await
        .map_err(database("looking up a token"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored: String = row.get("token_sha256");
    if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
        return Ok(None);
    }
    let token_id: String = row.get("token_id");
    let role: String = row.get("role");
    let scope = scope_of(row.get("site_id"), row.get("group_id"));
    let (Some(scope), Some(role)) = (scope, Role::parse(&role)) else {
        tracing::error!(%token_id, "api_credentials holds a scope or role this version does not know");
        return Ok(None);
    };
    Ok(Some(Credential {
        token_id,
        scope,
        role,
    }))
}

/// The credentials a person's verified OpenID Connect claims map to: every
/// mapping in force (not revoked, its site or group in service) whose claim
/// the token holds with the mapping's value (a string equal to it, or an
/// array containing it).
pub async fn oidc_credentials(
    client: &impl deadpool_postgres::GenericClient,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Credential>, TokenError> {
    let rows = client
        .query(
            "SELECT c.token_id, c.site_id, c.group_id, c.role, c.oidc_claim, c.oidc_value \
             FROM api_credentials c \
             LEFT JOIN sites s ON s.site_id = c.site_id \
             LEFT JOIN site_groups g ON g.group_id = c.group_id \
             WHERE c.oidc_claim IS NOT NULL AND c.revoked_at IS NULL \
               AND s.retired_at IS NULL AND g.retired_at IS NULL \
             ORDER BY c.token_id",
            &[],
        )
        .await
        .map_err(database("looking up the OpenID Connect mappings"))?;
    let holds = |claim: &str, value: &str| match claims.get(claim) {
        Some(serde_json::Value::String(held)) => held == value,
        Some(serde_json::Value::Array(held)) => {
            held.iter().any(|item| item.as_str() == Some(value))
        }
        _ => false,
    };
    let mut found = Vec::new();
    for row in &rows {
        let claim: String = row.get("oidc_claim");
        let value: String = row.get("oidc_value");
        if !holds(&claim, &value) {
            continue;
        }
        let scope = scope_of(row.get("site_id"), row.get("group_id"));
        let role: String = row.get("role");
        if let (Some(scope), Some(role)) = (scope, Role::parse(&role)) {
            found.push(Credential {
                token_id: row.get("token_id"),
                scope,
                role,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_accepted_back_and_never_debug_printed() {
        let token = ApiToken::generate();
        assert_eq!(token.reveal().len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(
            ApiToken::from_presented(token.reveal()),
            Some(token.clone())
        );
        assert!(!format!("{token:?}").contains(&token.reveal()[4..]));
        assert_eq!(token.sha256().len(), 64);
        assert_ne!(ApiToken::generate(), token);
    }

    #[test]
    fn presented_values_that_cannot_be_tokens_are_refused_without_a_lookup() {
        for value in [
            "",
            "fxt_",
            "secret",
            &format!("fxt_{}", "A".repeat(64)),
            &format!("fxt_{}", "a".repeat(63)),
            &format!("xyz_{}", "a".repeat(64)),
        ] {
            assert_eq!(ApiToken::from_presented(value), None, "{value:?}");
        }
    }

    #[test]
    fn each_role_may_do_what_its_row_says() {
        let may = |role: Role| {
            (
                role.can_view(),
                role.can_read_studies(),
                role.can_send(),
                role.can_override_claims(),
            )
        };
        assert_eq!(may(Role::Viewer), (true, false, false, false));
        assert_eq!(may(Role::Reader), (true, true, false, false));
        assert_eq!(may(Role::Sender), (false, false, true, false));
        assert_eq!(may(Role::Admin), (true, true, true, true));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
