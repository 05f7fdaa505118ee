//! Who may store to a site: a request carries `Authorization: Bearer <token>`
//! (RFC 6750), and the site's configuration lists the token's SHA-256.
//!
//! Every refusal is 401 with a `WWW-Authenticate: Bearer` challenge, and a token
//! of another site, a wrong token and a site that does not exist get the same
//! answer, so the endpoint never tells a caller which sites exist. The token
//! itself is never logged or recorded: a sender is named by [`token_id`].

use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};

use crate::sites::token_digest;

const REALM: &str = "fxtriage-stow";

/// Why a request is not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Authorization` header, another scheme, or a header that is not
    /// `Bearer <token>`.
    NoBearerToken,
    /// A bearer token that does not open this site (wrong, of another site, or
    /// the site does not exist).
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

/// How a token appears in logs, quarantine records and events: a prefix of its
/// SHA-256, enough to tell the configured tokens apart, useless to an attacker.
pub(super) fn token_id(token: &str) -> String {
    let digest = token_digest(token);
    format!("sha256:{}", &digest[..12])
}

pub(super) fn unauthorised(refusal: Refusal) -> Response {
    let (challenge, message) = match refusal {
        Refusal::NoBearerToken => (
            format!("Bearer realm=\"{REALM}\""),
            "this endpoint requires an Authorization: Bearer token",
        ),
        Refusal::InvalidToken => (
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"the token does not grant access to this site\""
            ),
            "the token does not grant access to this site",
        ),
    };
    let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
    if let Ok(challenge) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
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

    #[test]
    fn a_token_id_does_not_contain_the_token() {
        let id = token_id("secret-token");
        assert!(id.starts_with("sha256:"), "{id}");
        assert!(!id.contains("secret"), "{id}");
        assert_eq!(id, token_id("secret-token"), "stable");
    }
}
