//! Who may store to a site: a request carries `Authorization: Bearer <token>`
//! (RFC 6750), a token of the one credential system (`fxtriage tokens create`,
//! see `fxtriage_sites::credentials`) whose site is the site in the URL, or whose
//! group includes it, with a role that may send (`sender` or `admin`).
//!
//! - no `Authorization`, another scheme, or a malformed header: 401 with a
//!   `WWW-Authenticate: Bearer` challenge;
//! - a token that is unknown, revoked, or of a retired site: 401 with
//!   `error="invalid_token"`;
//! - a valid token whose site or group does not cover the URL's site, or a site
//!   that does not exist or is retired: 404, the same answer for both, so a token
//!   never learns which other sites exist;
//! - a token whose role may not send: 403, saying which role it lacks;
//! - the credentials cannot be read (PostgreSQL down): 503 with `Retry-After`;
//! - after too many invalid tokens from one address or with one token prefix
//!   (`fxtriage_sites::throttle`, 20 a minute by default): 429 with
//!   `Retry-After`, before any lookup, until that minute ends.
//!
//! The token itself is never logged or recorded: a sender is named by its token id.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use deadpool_postgres::Pool;
use fxtriage_sites::FailedAuthThrottle;
use fxtriage_sites::credentials::{self, ApiToken, Credential, Scope};

use crate::{SiteConfig, SiteRegistry};

const REALM: &str = "fxtriage-stow";

/// Why a request is not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Authorization` header, another scheme, or a header that is not
    /// `Bearer <token>`.
    NoBearerToken,
    /// A bearer token that is not a valid one.
    InvalidToken,
}

/// The bearer token of `headers`, if it has one well formed.
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(Refusal::NoBearerToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Refusal::NoBearerToken)?;
    let token = token.trim_start_matches(' ');
    let well_formed = !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_graphic());
    if !scheme.eq_ignore_ascii_case("bearer") || !well_formed {
        return Err(Refusal::NoBearerToken);
    }
    Ok(token)
}

/// Who is asking: the request's headers and the peer's address.
pub(super) struct Asker<'a> {
    pub headers: &'a HeaderMap,
    pub address: Option<IpAddr>,
}

/// The site `site_id` and the caller's credential, or the response that
/// refuses. Invalid tokens are counted by `throttle`, which answers 429 for
/// an address or token prefix over its limit before any lookup.
pub(super) async fn authorise(
    asker: Asker<'_>,
    site_id: &str,
    sites: &SiteRegistry,
    database: &Pool,
    throttle: &FailedAuthThrottle,
) -> Result<(Arc<SiteConfig>, Credential), Response> {
    let presented = bearer_token(asker.headers).map_err(unauthorised)?;
    let now = Instant::now();
    if let Err(retry_after) = throttle.check(asker.address, presented, now) {
        return Err(too_many_failures(retry_after));
    }
    let credential = match ApiToken::from_presented(presented) {
        None => Ok(None),
        Some(token) => match database.get().await {
            Ok(client) => credentials::authenticate(&client, &token).await,
            Err(error) => Err(error.into()),
        },
    };
    let credential = match credential {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            throttle.record_failure(asker.address, presented, now);
            return Err(unauthorised(Refusal::InvalidToken));
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check a STOW-RS token");
            return Err(unavailable());
        }
    };
    let snapshot = sites.current();
    let covers = match &credential.scope {
        Scope::Site(site) => site.as_str() == site_id,
        Scope::Group(group) => snapshot.group_has_site(group, site_id),
        Scope::Deployment => false,
    };
    let site = snapshot.site(site_id).filter(|_| covers).cloned();
    let Some(site) = site else {
        tracing::warn!(token_id = %credential.token_id, "a STOW-RS token asked for a site outside its scope; answered 404");
        return Err((StatusCode::NOT_FOUND, "no such site").into_response());
    };
    if !credential.role.can_send() {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "a {} token may not store images: STOW-RS needs the sender or admin role",
                credential.role
            ),
        )
            .into_response());
    }
    Ok((site, credential))
}

pub(super) fn unauthorised(refusal: Refusal) -> Response {
    let (challenge, message) = match refusal {
        Refusal::NoBearerToken => (
            format!("Bearer realm=\"{REALM}\""),
            "this endpoint requires an Authorization: Bearer token",
        ),
        Refusal::InvalidToken => (
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"the token is not valid\""
            ),
            "the token is not valid (unknown, revoked, or of a retired site)",
        ),
    };
    let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
    if let Ok(challenge) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

fn too_many_failures(retry_after: Duration) -> Response {
    let seconds = fxtriage_sites::throttle::retry_after_seconds(retry_after);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        "too many invalid tokens from this address or with this token's prefix; retry after the Retry-After seconds",
    )
        .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn unavailable() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "the credentials cannot be checked now; retry later",
    )
        .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_is_taken_whole() {
        assert_eq!(
            bearer_token(&headers("Bearer abc.DEF-1~")),
            Ok("abc.DEF-1~")
        );
        assert_eq!(bearer_token(&headers("bearer  abc")), Ok("abc"));
    }

    #[test]
    fn anything_but_a_bearer_token_is_refused_the_same_way() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "abc",
        ] {
            assert_eq!(
                bearer_token(&headers(value)),
                Err(Refusal::NoBearerToken),
                "{value:?}"
            );
        }
        assert_eq!(bearer_token(&HeaderMap::new()), Err(Refusal::NoBearerToken));
    }
}
