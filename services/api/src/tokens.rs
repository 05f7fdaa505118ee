//! API tokens: random secrets shown once, stored only as their SHA-256
//! (`api_credentials`), each bound to one site and one role.
//!
//! A token is `fxt_` followed by 32 random bytes in hex; the prefix lets secret
//! scanners recognise a leaked one. Its `token_id` (`tok-` and 12 random hex
//! digits) is its public name in logs and the audit log.

use std::fmt;

use deadpool_postgres::Pool;
use fxtriage_core::SiteId;
use fxtriage_worklist::StoreError;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::error::Doing as _;

const TOKEN_PREFIX: &str = "fxt_";
const SECRET_BYTES: usize = 32;

/// What a token may do on its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads the worklist, studies, overlays and events.
    Viewer,
    /// A viewer that also claims, releases and reports studies.
    Reader,
    /// A reader that may also release or report a study claimed by someone else.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Reader, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == value)
    }

    /// Claim, release and report.
    pub fn can_read_studies(self) -> bool {
        self >= Role::Reader
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
        Self::parse(value)
            .ok_or_else(|| format!("unknown role {value:?} (expected viewer, reader or admin)"))
    }
}

/// A bearer token in clear. Never displayed by `Debug`; print it with
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

/// A token just created: its public id and the secret, to be shown once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token_id: String,
    pub site: SiteId,
    pub role: Role,
    pub token: ApiToken,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("site {0} is not registered (add it with `fxtriage sites add`)")]
    UnknownSite(SiteId),
    #[error("no token {0}")]
    UnknownToken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<deadpool_postgres::PoolError> for TokenError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        TokenError::Store(error.into())
    }
}

/// Creates a token of `role` for `site`.
pub async fn create_token(
    pool: &Pool,
    site: &SiteId,
    role: Role,
    description: &str,
) -> Result<CreatedToken, TokenError> {
    let client = pool.get().await?;
    let site_known = client
        .query_opt("SELECT 1 FROM sites WHERE site_id = $1", &[&site.as_str()])
        .await
        .doing("looking up the site")?
        .is_some();
    if !site_known {
        return Err(TokenError::UnknownSite(site.clone()));
    }
    let mut id_bytes = [0_u8; 6];
    rand::rng().fill_bytes(&mut id_bytes);
    let token_id = format!("tok-{}", hex::encode(id_bytes));
    let token = ApiToken::generate();
    client
        .execute(
            "INSERT INTO api_credentials (token_id, site_id, token_sha256, role, description) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &token_id,
                &site.as_str(),
                &token.sha256(),
                &role.as_str(),
                &description,
            ],
        )
        .await
        .doing("storing the token")?;
    Ok(CreatedToken {
        token_id,
        site: site.clone(),
        role,
        token,
    })
}

/// Revokes a token: it stops working at once. Revoking twice is harmless.
pub async fn revoke_token(pool: &Pool, token_id: &str) -> Result<(), TokenError> {
    let client = pool.get().await?;
    let found = client
        .query_opt(
            "UPDATE api_credentials SET revoked_at = coalesce(revoked_at, now()) \
             WHERE token_id = $1 RETURNING token_id",
            &[&token_id],
        )
        .await
        .doing("revoking the token")?;
    match found {
        Some(_) => Ok(()),
        None => Err(TokenError::UnknownToken(token_id.to_owned())),
    }
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
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(!Role::Viewer.can_read_studies());
        assert!(Role::Reader.can_read_studies());
        assert!(Role::Admin.can_read_studies());
        assert!(!Role::Reader.can_override_claims());
        assert!(Role::Admin.can_override_claims());
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
    }
}
