//! The web page's sign-in through the deployment's identity provider: the
//! OpenID Connect authorisation-code flow with PKCE (RFC 7636, S256).
//!
//! 1. `GET /api/v1/auth/config` tells the page whether a provider is
//!    configured, and its authorisation endpoint and client id (public).
//! 2. The page makes a random `code_verifier`, `state` and `nonce`, keeps them
//!    in the tab's sessionStorage, and sends the person to the provider with
//!    `code_challenge = BASE64URL(SHA-256(code_verifier))`.
//! 3. The provider sends the person back with a `code`; the page checks
//!    `state` and posts the code, the verifier, its redirect URI and the nonce
//!    to `POST /api/v1/auth/token`.
//! 4. This server exchanges the code at the provider's token endpoint (server
//!    to server: the provider needs no CORS rule for the page, and the page's
//!    Content-Security-Policy stays `connect-src 'self'`), verifies the ID
//!    token as it verifies every bearer token, checks the nonce, and returns
//!    the ID token, which the page then sends as its bearer token. Its
//!    audience is fxtriage's client id, the configured `--oidc-audience`.
//!
//! Failed exchanges count in the failed-authentication throttle of the
//! client's address, like invalid tokens.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::oidc::{OidcError, WEB_SCOPES};
use crate::state::AppState;

/// The most bytes of each field of a code exchange.
const MAX_FIELD_BYTES: usize = 4096;

/// `GET /api/v1/auth/config`: `{"sign_in": null}` without a provider; else
/// what the page needs to send a person to it.
pub async fn get_config(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let Some(verifier) = state.oidc.as_ref() else {
        return Ok(Json(json!({ "sign_in": null })));
    };
    let discovery = verifier.discovery().await.map_err(|error| {
        tracing::warn!(%error, "the identity provider's discovery document cannot be read");
        ApiError::unavailable("the identity provider cannot be reached; retry later")
    })?;
    let Some(authorization_endpoint) = discovery.authorization_endpoint else {
        return Ok(Json(json!({ "sign_in": null })));
    };
    Ok(Json(json!({
        "sign_in": {
            "issuer": verifier.config().issuer,
            "client_id": verifier.config().audience,
            "authorization_endpoint": authorization_endpoint,
            "scope": WEB_SCOPES,
        }
    })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    code: String,
    code_verifier: String,
    redirect_uri: String,
    nonce: String,
}

/// `POST /api/v1/auth/token` with `{code, code_verifier, redirect_uri, nonce}`:
/// `{token, name, expires_at}` (seconds since the epoch) once the provider
/// took the code and its ID token is verified; 401 when the provider refused
/// the code or the token is not acceptable; 503 when the provider cannot be
/// reached.
pub async fn post_token(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> ApiResult<([(axum::http::HeaderName, &'static str); 1], Json<Value>)> {
    let Some(verifier) = state.oidc.as_ref() else {
        return Err(ApiError::not_found());
    };
    let exchange: Exchange = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))?;
    let fields = [
        &exchange.code,
        &exchange.code_verifier,
        &exchange.redirect_uri,
        &exchange.nonce,
    ];
    if fields
        .iter()
        .any(|field| field.is_empty() || field.len() > MAX_FIELD_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "code, code_verifier, redirect_uri and nonce must each be 1 to {MAX_FIELD_BYTES} bytes"
        )));
    }
    // RFC 7636: 43 to 128 characters of [A-Za-z0-9-._~].
    let verifier_ok = (43..=128).contains(&exchange.code_verifier.len())
        && exchange
            .code_verifier
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
    if !verifier_ok {
        return Err(ApiError::bad_request(
            "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'",
        ));
    }
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let now = Instant::now();
    if let Err(retry_after) = state.auth_throttle.check(address, &exchange.code, now) {
        return Err(ApiError::too_many_failures(retry_after));
    }
    match verifier
        .exchange_code(
            &exchange.code,
            &exchange.code_verifier,
            &exchange.redirect_uri,
            &exchange.nonce,
        )
        .await
    {
        Ok((token, person)) => {
            let expires_at = person.claims.get("exp").and_then(Value::as_i64);
            tracing::info!("a person signed in to the web page through the identity provider");
            // A credential: never kept by a cache on the way.
            Ok((
                [(axum::http::header::CACHE_CONTROL, "no-store")],
                Json(json!({
                    "token": token,
                    "name": person.name,
                    "expires_at": expires_at,
                })),
            ))
        }
        Err(OidcError::Unavailable(reason)) => {
            tracing::warn!(%reason, "cannot complete a sign-in through the identity provider");
            Err(ApiError::unavailable(
                "the identity provider cannot be reached to complete the sign-in; retry later",
            ))
        }
        Err(OidcError::Invalid(reason)) => {
            tracing::info!(%reason, "a sign-in through the identity provider was refused");
            state
                .auth_throttle
                .record_failure(address, &exchange.code, now);
            Err(ApiError::invalid_token())
        }
    }
}
