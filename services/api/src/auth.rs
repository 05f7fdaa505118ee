//! Who is calling: every `/api/v1/sites/{site}/...` request carries
//! `Authorization: Bearer <token>`, and the token's site must be `{site}`.
//!
//! - no or malformed credentials: 401 with `WWW-Authenticate: Bearer`;
//! - an unknown or revoked token: 401 with `error="invalid_token"`;
//! - a valid token of another site (or a site that does not exist): 404, the
//!   same answer as for a missing study, so that a token never learns which other
//!   sites or studies exist;
//! - a role too weak for the action: 403 (the caller's own site, nothing to hide).
//!
//! Handlers take the [`Caller`] and use its site, never the site in the URL.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use fxtriage_core::SiteId;

use crate::error::{ApiError, ApiResult, Doing as _};
use crate::state::AppState;
use crate::tokens::{ApiToken, Role};

/// The authenticated caller of a site route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub site: SiteId,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller may claim, release and report.
    pub fn require_reader(&self) -> ApiResult<()> {
        if self.role.can_read_studies() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} token may only read; claiming, releasing and reporting need a reader or admin token",
                self.role
            )))
        }
    }
}

/// Middleware of the site routes: authenticates, checks the site, and hands the
/// [`Caller`] to the handler as a request extension.
pub async fn authenticate(
    State(state): State<AppState>,
    path_params: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented_token(&request)?;
    let caller = look_up(&state, &token).await?;
    let requested_site = path_params.ok().and_then(|params| {
        params
            .iter()
            .find(|(name, _)| *name == "site")
            .map(|(_, value)| value.to_owned())
    });
    if requested_site.as_deref() != Some(caller.site.as_str()) {
        tracing::warn!(
            token_id = %caller.token_id,
            "a token asked for a site other than its own; answered 404"
        );
        return Err(ApiError::not_found());
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

fn presented_token(request: &Request) -> ApiResult<ApiToken> {
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
    ApiToken::from_presented(credentials.trim()).ok_or_else(ApiError::invalid_token)
}

async fn look_up(state: &AppState, token: &ApiToken) -> ApiResult<Caller> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT token_id, site_id, role FROM api_credentials \
             WHERE token_sha256 = $1 AND revoked_at IS NULL",
            &[&token.sha256()],
        )
        .await
        .doing("looking up an API token")?
        .ok_or_else(ApiError::invalid_token)?;
    let site: String = row.get("site_id");
    let role: String = row.get("role");
    let token_id: String = row.get("token_id");
    let (Ok(site), Some(role)) = (SiteId::parse(site), Role::parse(&role)) else {
        tracing::error!(%token_id, "api_credentials holds a site or role this version does not know");
        return Err(ApiError::internal());
    };
    Ok(Caller {
        token_id,
        site,
        role,
    })
}
