//! Who is calling. Every `/api/v1` request carries `Authorization: Bearer <token>`,
//! a token of the one credential system (`fxtriage_sites::credentials`):
//!
//! - no or malformed credentials: 401 with `WWW-Authenticate: Bearer`;
//! - an unknown or revoked token (or one of a retired site or group): 401 with
//!   `error="invalid_token"`;
//! - with an identity provider configured (`crate::oidc`), a person's token
//!   (JWT) is verified and mapped to the credentials its claims name; the
//!   one covering the URL with the most rights is used, and the person is
//!   the actor in the audit log;
//! - after too many invalid tokens from one address or with one token prefix
//!   (`fxtriage_sites::throttle`, 20 a minute by default): 429 with
//!   `Retry-After`, before any lookup, until that minute ends;
//! - a valid token whose scope does not cover the URL's site or group (a site
//!   token on another site, a group token on a site outside its group, a site
//!   token on a group, a deployment token on a worklist), or a site or group that
//!   does not exist: 404, the same answer as for a missing study, so a token never
//!   learns which other sites, groups or studies exist;
//! - a role too weak for the action: 403, naming the role it lacks.
//!
//! Handlers take the [`Caller`] (site routes) or [`GroupCaller`] (group routes)
//! and use their site or sites, never the URL's text. Admin routes take an
//! [`AdminCaller`]: a deployment admin token.

use axum::extract::rejection::RawPathParamsRejection;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use fxtriage_core::{GroupId, SiteId};
use fxtriage_sites::credentials::{self, ApiToken, Credential, Role, Scope};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated caller of a site route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    /// The URL's site, which the token covers.
    pub site: SiteId,
    pub role: Role,
    /// The group whose token this is, when it is a group's.
    pub group: Option<GroupId>,
    /// The person signed in through the identity provider (`oidc:NAME`);
    /// `None` for a service token.
    pub person: Option<String>,
}

impl Caller {
    /// Who acts, for the audit log: the signed-in person, else the token.
    pub fn actor(&self) -> &str {
        self.person.as_deref().unwrap_or(&self.token_id)
    }

    /// The reader a claim, report or review is made in the name of: a
    /// signed-in person acts as themselves (a different `requested` name is
    /// refused); a service token names the reader, or is named itself.
    pub fn reader_name(&self, requested: Option<&str>) -> ApiResult<String> {
        let Some(person) = &self.person else {
            return crate::views::reader_name(requested, &self.token_id);
        };
        match requested.map(str::trim) {
            Some(requested) if requested != person => Err(ApiError::forbidden(
                "a person signed in through the identity provider acts in their own name only",
            )),
            _ => Ok(person.clone()),
        }
    }

    /// 403 unless the caller administers the site.
    pub fn require_admin(&self) -> ApiResult<()> {
        require(
            self.role,
            |role| role == Role::Admin,
            "admin",
            "see or retry the site's result deliveries",
        )
    }

    /// 403 unless the caller may claim, release and report.
    pub fn require_reader(&self) -> ApiResult<()> {
        require(
            self.role,
            Role::can_read_studies,
            "reader or admin",
            "claim, release or report",
        )
    }
}

/// The authenticated caller of a group route.
#[derive(Debug, Clone)]
pub struct GroupCaller {
    pub token_id: String,
    pub group: GroupId,
    /// The group's sites in service.
    pub sites: Vec<SiteId>,
    pub role: Role,
    /// The person signed in through the identity provider, as for [`Caller`].
    pub person: Option<String>,
}

impl GroupCaller {
    /// 403 unless the caller may claim, release and report.
    pub fn require_reader(&self) -> ApiResult<()> {
        require(
            self.role,
            Role::can_read_studies,
            "reader or admin",
            "claim, release or report",
        )
    }

    /// The caller acting on one of the group's sites.
    pub fn on_site(&self, site: &SiteId) -> Caller {
        Caller {
            token_id: self.token_id.clone(),
            site: site.clone(),
            role: self.role,
            group: Some(self.group.clone()),
            person: self.person.clone(),
        }
    }
}

/// A deployment admin: administers the site registry and the tokens.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub token_id: String,
    /// The signed-in person (`oidc:NAME (sub)`), else the token's id: who the
    /// audit log names for the admin's changes.
    pub actor: String,
}

impl AdminCaller {
    pub fn changer(&self) -> fxtriage_sites::audit::Changer {
        fxtriage_sites::audit::Changer::admin(&self.token_id, &self.actor)
    }
}

fn require(role: Role, may: fn(Role) -> bool, needed: &str, action: &str) -> ApiResult<()> {
    if may(role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a {role} token may not {action}: that needs the {needed} role"
        )))
    }
}

/// The value of path parameter `name`.
fn path_param(
    params: &Result<RawPathParams, RawPathParamsRejection>,
    name: &str,
) -> Option<String> {
    params.as_ref().ok().and_then(|params| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    })
}

/// Middleware of the site routes: authenticates, checks that the token covers
/// the URL's site and may view, and hands the [`Caller`] to the handler.
pub async fn authenticate(
    State(state): State<AppState>,
    path_params: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (presented, address) = presented_by(&request)?;
    let signed_in = authenticated(&state, &presented, address).await?;
    let requested = path_param(&path_params, "site").unwrap_or_default();
    let snapshot = state.sites.current();
    let covers = |credential: &&Credential| match &credential.scope {
        Scope::Site(site) => site.as_str() == requested,
        Scope::Group(group) => snapshot.group_has_site(group, &requested),
        Scope::Deployment => false,
    };
    let chosen = signed_in
        .credentials
        .iter()
        .filter(covers)
        .max_by_key(|credential| rank(credential.role));
    let site = snapshot.site(&requested).filter(|_| chosen.is_some());
    let (Some(site), Some(credential)) = (site, chosen) else {
        tracing::warn!(
            token_ids = ?signed_in.token_ids(),
            "a token asked for a site outside its scope; answered 404"
        );
        return Err(ApiError::not_found());
    };
    require(
        credential.role,
        Role::can_view,
        "viewer, reader or admin",
        "read worklists",
    )?;
    let group = match &credential.scope {
        Scope::Group(group) => Some(group.clone()),
        _ => None,
    };
    request.extensions_mut().insert(Caller {
        token_id: credential.token_id.clone(),
        site: site.id.clone(),
        role: credential.role,
        group,
        person: signed_in.person.clone(),
    });
    Ok(next.run(request).await)
}

/// Middleware of the group routes: the token must be the URL's group's.
pub async fn authenticate_group(
    State(state): State<AppState>,
    path_params: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (presented, address) = presented_by(&request)?;
    let signed_in = authenticated(&state, &presented, address).await?;
    let requested = path_param(&path_params, "group").unwrap_or_default();
    let chosen = signed_in
        .credentials
        .iter()
        .filter(|credential| matches!(&credential.scope, Scope::Group(group) if group.as_str() == requested))
        .max_by_key(|credential| rank(credential.role));
    let Some(credential) = chosen else {
        tracing::warn!(
            token_ids = ?signed_in.token_ids(),
            "a token asked for a group outside its scope; answered 404"
        );
        return Err(ApiError::not_found());
    };
    let Scope::Group(group) = credential.scope.clone() else {
        return Err(ApiError::not_found());
    };
    let sites = state
        .sites
        .current()
        .group_sites(group.as_str())
        .ok_or_else(ApiError::not_found)?
        .to_vec();
    require(
        credential.role,
        Role::can_view,
        "viewer, reader or admin",
        "read worklists",
    )?;
    request.extensions_mut().insert(GroupCaller {
        token_id: credential.token_id.clone(),
        group,
        sites,
        role: credential.role,
        person: signed_in.person.clone(),
    });
    Ok(next.run(request).await)
}

/// Middleware of the admin routes: a deployment admin token, else 404 (an
/// admin surface is not advertised to other tokens).
pub async fn authenticate_admin(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (presented, address) = presented_by(&request)?;
    let signed_in = authenticated(&state, &presented, address).await?;
    let Some(credential) = signed_in
        .credentials
        .iter()
        .find(|credential| credential.scope == Scope::Deployment && credential.role == Role::Admin)
    else {
        tracing::warn!(token_ids = ?signed_in.token_ids(), "a token without deployment admin rights asked for the admin API; answered 404");
        return Err(ApiError::not_found());
    };
    let token_id = credential.token_id.clone();
    let actor = signed_in.person.clone().unwrap_or_else(|| token_id.clone());
    request
        .extensions_mut()
        .insert(AdminCaller { token_id, actor });
    Ok(next.run(request).await)
}

/// Which credential a person with several mappings acts under, where more
/// than one covers the route: the one with the most rights to read.
fn rank(role: Role) -> u8 {
    match role {
        Role::Sender => 0,
        Role::Viewer => 1,
        Role::Reader => 2,
        Role::Admin => 3,
    }
}

/// Who a request is: one service token's credential, or the credentials a
/// signed-in person's claims map to.
struct SignedIn {
    credentials: Vec<Credential>,
    person: Option<String>,
}

impl SignedIn {
    fn token_ids(&self) -> Vec<&str> {
        self.credentials
            .iter()
            .map(|credential| credential.token_id.as_str())
            .collect()
    }
}

/// The credentials of the request's bearer token, through the failed
/// authentication throttle: an address or token prefix with too many invalid
/// tokens lately gets 429 before any lookup, and each invalid token counts.
/// A service token (`fxt_...`) is looked up; with an identity provider
/// configured, a JWT is verified (`crate::oidc`) and mapped.
async fn authenticated(
    state: &AppState,
    presented: &str,
    address: Option<IpAddr>,
) -> ApiResult<SignedIn> {
    let now = Instant::now();
    if let Err(retry_after) = state.auth_throttle.check(address, presented, now) {
        return Err(ApiError::too_many_failures(retry_after));
    }
    let found = if let Some(token) = ApiToken::from_presented(presented) {
        let client = state.pool.get().await?;
        match credentials::authenticate(&client, &token).await {
            Ok(found) => Ok(found.map(|credential| SignedIn {
                credentials: vec![credential],
                person: None,
            })),
            Err(error) => Err(error),
        }
    } else if let Some(verifier) = state
        .oidc
        .as_ref()
        .filter(|_| crate::oidc::OidcVerifier::looks_like_jwt(presented))
    {
        match verifier.verify(presented).await {
            Ok(person) => {
                let client = state.pool.get().await?;
                match credentials::oidc_credentials(&client, &person.claims).await {
                    Ok(mapped) if mapped.is_empty() => {
                        tracing::warn!(
                            "a person signed in whose claims no mapping names (fxtriage tokens create --oidc-claim); answered 401"
                        );
                        Ok(None)
                    }
                    Ok(mapped) => Ok(Some(SignedIn {
                        credentials: mapped,
                        person: Some(format!(
                            "{}{} ({})",
                            crate::views::OIDC_PREFIX,
                            person.name,
                            person.subject
                        )),
                    })),
                    Err(error) => Err(error),
                }
            }
            Err(crate::oidc::OidcError::Unavailable(reason)) => {
                tracing::warn!(%reason, "cannot check a sign-in");
                return Err(ApiError::unavailable(
                    "the identity provider cannot be reached to check the sign-in; retry later",
                ));
            }
            Err(error) => {
                tracing::info!(%error, "an identity provider token was refused");
                Ok(None)
            }
        }
    } else {
        Ok(None)
    };
    match found {
        Ok(Some(signed_in)) => Ok(signed_in),
        Ok(None) => {
            state.auth_throttle.record_failure(address, presented, now);
            Err(ApiError::invalid_token())
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check a token");
            Err(ApiError::unavailable(
                "the credentials cannot be checked now; retry later",
            ))
        }
    }
}

/// The bearer token the request presents, and the client's address.
fn presented_by(request: &Request) -> ApiResult<(String, Option<IpAddr>)> {
    let presented = presented_token(request)?.to_owned();
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    Ok((presented, address))
}

/// The value after `Bearer ` in the request's `Authorization` header.
fn presented_token(request: &Request) -> ApiResult<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(ApiError::unauthenticated)?
        .to_str()
        .map_err(|_| ApiError::unauthenticated())?;
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or_else(ApiError::unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthenticated());
    }
    Ok(credentials.trim())
}
