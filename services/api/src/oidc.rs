//! Single sign-on for people: OpenID Connect bearer tokens (JWT) from the
//! deployment's identity provider, verified here, mapped to sites, groups and
//! roles by the mappings of the credential system (`fxtriage tokens create
//! --oidc-claim CLAIM=VALUE`, `fxtriage_sites::credentials::oidc_credentials`).
//! Service tokens (`fxt_...`) remain for machines.
//!
//! A token is accepted when:
//! - its header names a key (`kid`) of the issuer's JWKS and an asymmetric
//!   algorithm (RS*, PS*, ES256, ES384, EdDSA; never `none` or a shared
//!   secret), and its signature verifies with that key;
//! - `iss` is the configured issuer, `aud` holds the configured audience,
//!   `exp` has not passed and `nbf` has (each with the configured clock skew),
//!   and it has a `sub`.
//!
//! The JWKS comes from `jwks_url`, else from the issuer's discovery document
//! (`{issuer}/.well-known/openid-configuration`). It is fetched at the first
//! token and again when a token names a key it lacks (the provider rotated
//! its keys), at most once per [`REFRESH_INTERVAL`]. When it cannot be fetched
//! the request is answered 503, not 401: the person's sign-in is not at fault.
//!
//! The library is `jsonwebtoken` (signature, algorithms, registered claims);
//! what is written here is the key cache and the mapping to credentials.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// The JWKS is fetched again, for a key it lacks, at most this often (also
/// after a failed fetch).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Keys older than this are fetched again at the next token, so that a key
/// the provider withdrew stops being trusted.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// The most characters of a person's name kept (in the audit log, on claims).
const MAX_NAME_CHARS: usize = 96;

/// The deployment's identity provider.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer, exactly as tokens state it in `iss`.
    pub issuer: String,
    /// The audience the tokens must be for (the client id fxtriage is
    /// registered under at the provider).
    pub audience: String,
    /// The JWKS; `None`: the one the issuer's discovery document names.
    pub jwks_url: Option<String>,
    /// How far the clocks of the provider and this server may disagree.
    pub clock_skew: Duration,
}

/// Who a verified token names.
#[derive(Debug, Clone)]
pub struct Person {
    /// `sub`: the provider's stable, unique identifier of the person.
    pub subject: String,
    /// `preferred_username`, else `email`, else `sub`; printable, bounded.
    pub name: String,
    /// Every claim of the token, for the mappings to look at.
    pub claims: Map<String, Value>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The token is not one of this provider's, or no longer valid: the
    /// request gets 401.
    #[error("{0}")]
    Invalid(String),
    /// The provider's keys cannot be read now: the request gets 503.
    #[error("the identity provider's keys cannot be read: {0}")]
    Unavailable(String),
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<JwkSet>,
    /// When the set was fetched.
    fetched: Option<Instant>,
    /// When a fetch was last tried, whatever came of it.
    tried: Option<Instant>,
}

/// Verifies tokens of one provider; shared by every request.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    /// Held only to read or replace the keys, never across a fetch.
    keys: std::sync::Mutex<Keys>,
    /// One fetch at a time; those that need the keys wait for it.
    fetching: Mutex<()>,
    /// The provider's discovery document, once read (see [`Self::discovery`]).
    discovered: std::sync::Mutex<Option<(Discovery, Instant)>>,
    /// One read of the discovery document at a time; the others wait for it.
    discovering: Mutex<()>,
    /// When a read of the discovery document last failed.
    discovery_failed: std::sync::Mutex<Option<Instant>>,
}

/// What the web page's sign-in needs of the provider's discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
}

/// The scopes the web page asks for: who the person is (`sub`, a name).
pub const WEB_SCOPES: &str = "openid profile email";

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with a timeout (only TLS initialisation can fail)");
        Self {
            config,
            http,
            keys: std::sync::Mutex::new(Keys::default()),
            fetching: Mutex::new(()),
            discovered: std::sync::Mutex::new(None),
            discovering: Mutex::new(()),
            discovery_failed: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The issuer's discovery document (`{issuer}/.well-known/openid-configuration`),
    /// read again after [`MAX_KEY_AGE`]; its `issuer` must be the configured one.
    /// One read at a time, and after a failed one none for [`REFRESH_INTERVAL`]:
    /// while the provider is away, requests neither queue on it nor flood it
    /// when it comes back. A document read before stays in use meanwhile.
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        let read = |any_age: bool| {
            self.discovered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .filter(|(_, read)| any_age || read.elapsed() < MAX_KEY_AGE)
                .map(|(discovery, _)| discovery)
        };
        if let Some(discovery) = read(false) {
            return Ok(discovery);
        }
        let _one_read = self.discovering.lock().await;
        // Another request may have read it while this one waited.
        if let Some(discovery) = read(false) {
            return Ok(discovery);
        }
        let failed_lately = self
            .discovery_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL);
        if failed_lately {
            return read(true).ok_or_else(|| {
                OidcError::Unavailable(
                    "the provider's discovery document could not be read lately; retrying shortly"
                        .into(),
                )
            });
        }
        match self.read_discovery().await {
            Ok(discovery) => {
                *self
                    .discovered
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((discovery.clone(), Instant::now()));
                *self
                    .discovery_failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                Ok(discovery)
            }
            Err(error) => {
                *self
                    .discovery_failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                match read(true) {
                    Some(discovery) => {
                        tracing::warn!(%error, "the identity provider's discovery document could not be read again; the one read before stays in use");
                        Ok(discovery)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Reads the discovery document from the provider.
    async fn read_discovery(&self) -> Result<Discovery, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let document: Value = self.get_json(&url).await?;
        let issuer = document.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.config.issuer.as_str()) {
            return Err(OidcError::Unavailable(format!(
                "{url} names issuer {issuer:?}, not the configured one"
            )));
        }
        let text = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Discovery {
            authorization_endpoint: text("authorization_endpoint"),
            token_endpoint: text("token_endpoint"),
            jwks_uri: text("jwks_uri"),
        })
    }

    /// The web page's sign-in through the provider (authorisation code with
    /// PKCE), second half: exchanges `code` at the provider's token endpoint
    /// with the page's `code_verifier` (the provider checks it against the
    /// challenge the page sent), and returns the ID token once it is verified
    /// here like any other token and carries the page's `nonce`.
    pub async fn exchange_code(
        &self,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<(String, Person), OidcError> {
        let token_endpoint = self.discovery().await?.token_endpoint.ok_or_else(|| {
            OidcError::Unavailable(
                "the provider's discovery document names no token_endpoint".into(),
            )
        })?;
        let response = self
            .http
            .post(&token_endpoint)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", self.config.audience.as_str()),
                ("code_verifier", code_verifier),
            ])
            .send()
            .await
            .map_err(|error| OidcError::Unavailable(error.without_url().to_string()))?;
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            // A refusal need not be JSON; an answer to a good request must.
            Err(_) if status.is_client_error() => Value::Null,
            Err(error) => return Err(OidcError::Unavailable(error.without_url().to_string())),
        };
        if !status.is_success() {
            // The provider refused the code or the verifier: the sign-in is
            // at fault (OAuth 2.0's error, bounded).
            let error: String = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .chars()
                .take(64)
                .collect();
            return Err(if status.is_client_error() {
                OidcError::Invalid(format!("the provider refused the code: {error}"))
            } else {
                OidcError::Unavailable(format!("the provider's token endpoint answered {status}"))
            });
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Invalid("the provider returned no ID token".into()))?
            .to_owned();
        let person = self.verify(&id_token).await?;
        if person.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(OidcError::Invalid(
                "the ID token does not carry this sign-in's nonce".into(),
            ));
        }
        Ok((id_token, person))
    }

    /// Whether `presented` has the shape of a JWT (three base64url parts);
    /// anything else is not this verifier's to judge.
    pub fn looks_like_jwt(presented: &str) -> bool {
        let parts: Vec<&str> = presented.split('.').collect();
        parts.len() == 3
            && parts[..2].iter().all(|part| !part.is_empty())
            && presented
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// The person a valid token names.
    pub async fn verify(&self, token: &str) -> Result<Person, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| OidcError::Invalid(format!("not a JWT: {error}")))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(OidcError::Invalid(format!(
                "algorithm {:?} is not accepted (asymmetric signatures only)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| OidcError::Invalid("the token names no key (kid)".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.clock_skew.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| OidcError::Invalid(format!("refused: {error}")))?;
        let claims = data.claims;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let printable = |text: &str| -> String {
            text.chars()
                .filter(|c| !c.is_control())
                .take(MAX_NAME_CHARS)
                .collect()
        };
        let subject = text("sub")
            .map(printable)
            .ok_or_else(|| OidcError::Invalid("the token's sub is empty".into()))?;
        let name = text("preferred_username")
            .or_else(|| text("email"))
            .map_or_else(|| subject.clone(), printable);
        Ok(Person {
            subject,
            name,
            claims,
        })
    }

    /// The decoding key `kid`, fetching the JWKS when it is missing or older
    /// than [`MAX_KEY_AGE`] (at most once per [`REFRESH_INTERVAL`], one fetch
    /// at a time; a token whose key is cached never waits for one).
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.cached(kid, false) {
            return key;
        }
        let _one_fetch = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, false) {
            return key;
        }
        let may_fetch = self
            .lock()
            .tried
            .is_none_or(|at| at.elapsed() >= REFRESH_INTERVAL);
        if may_fetch {
            self.lock().tried = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => {
                    let mut keys = self.lock();
                    keys.set = Some(set);
                    keys.fetched = Some(Instant::now());
                }
                // With no keys at all, the sign-in cannot be judged: 503.
                Err(error) if self.lock().set.is_none() => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "the identity provider's keys could not be fetched again; the cached keys stay in use")
                }
            }
        } else if self.lock().set.is_none() {
            return Err(OidcError::Unavailable(
                "the keys could not be fetched lately; retrying shortly".into(),
            ));
        }
        self.cached(kid, true).unwrap_or_else(|| {
            Err(OidcError::Invalid(format!(
                "key {kid} is not among the identity provider's keys"
            )))
        })
    }

    /// `kid` from the cached keys; `None` when it is not there, or the keys
    /// are older than [`MAX_KEY_AGE`] (unless `any_age`).
    fn cached(&self, kid: &str, any_age: bool) -> Option<Result<DecodingKey, OidcError>> {
        let keys = self.lock();
        let fresh = keys
            .fetched
            .is_some_and(|at| any_age || at.elapsed() < MAX_KEY_AGE);
        if !fresh {
            return None;
        }
        let jwk = keys.set.as_ref()?.find(kid)?;
        Some(
            DecodingKey::from_jwk(jwk)
                .map_err(|error| OidcError::Invalid(format!("key {kid}: {error}"))),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A JSON document of the provider; `Unavailable` when it cannot be read.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let unavailable =
            |error: reqwest::Error| OidcError::Unavailable(error.without_url().to_string());
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }

    async fn fetch(&self) -> Result<JwkSet, OidcError> {
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => self.discovery().await?.jwks_uri.ok_or_else(|| {
                OidcError::Unavailable("the provider's discovery document names no jwks_uri".into())
            })?,
        };
        let set: JwkSet = self.get_json(&url).await?;
        tracing::info!(keys = set.keys.len(), "identity provider keys fetched");
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_base64url_parts_look_like_a_jwt() {
        assert!(OidcVerifier::looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(OidcVerifier::looks_like_jwt("a-b_c.d.e"));
        for other in ["fxt_abc", "a.b", "a.b.c.d", ".b.c", "a b.c.d", "a.b.c="] {
            assert!(!OidcVerifier::looks_like_jwt(other), "{other}");
        }
    }
}
