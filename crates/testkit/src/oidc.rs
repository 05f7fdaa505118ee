//! A small OpenID Connect provider for tests, on loopback: its discovery
//! document, its JWKS (ES256 keys generated here), an authorisation endpoint
//! that signs in one configured person at once (no page to fill) and a token
//! endpoint that takes each code once and only with the PKCE verifier of the
//! challenge it was issued for (S256), returning an ID token with the nonce.
//! What it refused, and why, is kept for the test to assert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// base64url without padding (RFC 7515's encoding, RFC 7636's challenge).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, byte)| n | (u32::from(*byte) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// RFC 7636's S256 challenge of `verifier`.
pub fn s256_challenge(verifier: &str) -> String {
    base64url(&Sha256::digest(verifier.as_bytes()))
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// An ES256 signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": base64url(&point[1..33]), "y": base64url(&point[33..65]),
            }),
        }
    }

    /// A JWT of `claims`, signed with this key and naming it.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        self.sign_with(&header, claims)
    }

    /// A JWT of `claims` with `header` as given, signed with this key.
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

/// A code the authorisation endpoint issued, waiting for its exchange.
#[derive(Debug, Clone)]
struct Issued {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    codes: HashMap<String, Issued>,
    exchanged: usize,
    refused: Vec<String>,
    /// Requests for the discovery document, answered or not.
    discoveries: usize,
    /// Whether the provider answers (else 503 to everything).
    away: bool,
}

struct Shared {
    url: String,
    key: SigningKey,
    /// The claims of the person every authorisation signs in (besides iss,
    /// aud, iat, exp and nonce).
    person: Value,
    ledger: Mutex<Ledger>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The provider; stops when dropped.
pub struct Provider {
    pub url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Provider {
    /// Serves on a free loopback port; its JWKS is `key`'s and `extra_keys`',
    /// and it signs ID tokens with `key` for `person` (claims such as `sub`,
    /// `preferred_username`, `groups`).
    pub async fn start(key: SigningKey, extra_keys: &[Value], person: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the provider");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let mut keys = vec![key.jwk.clone()];
        keys.extend(extra_keys.iter().cloned());
        let jwks = json!({ "keys": keys });
        let shared = Arc::new(Shared {
            url: url.clone(),
            key,
            person,
            ledger: Mutex::new(Ledger::default()),
        });
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        });
        let counted = Arc::clone(&shared);
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move {
                    counted.ledger().discoveries += 1;
                    axum::Json(discovery)
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            )
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                answer_unless_away,
            ))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("provider");
        });
        Self {
            url,
            shared,
            server,
        }
    }

    /// A JWT signed with the provider's key.
    pub fn sign(&self, claims: &Value) -> String {
        self.shared.key.sign(claims)
    }

    /// The key the provider signs with.
    pub fn key(&self) -> &SigningKey {
        &self.shared.key
    }

    /// Codes exchanged for tokens so far.
    pub fn exchanged(&self) -> usize {
        self.shared.ledger().exchanged
    }

    /// Why each refused authorisation or exchange was refused.
    pub fn refused(&self) -> Vec<String> {
        self.shared.ledger().refused.clone()
    }

    /// Requests for the discovery document so far, answered or not.
    pub fn discoveries(&self) -> usize {
        self.shared.ledger().discoveries
    }

    /// Makes the provider answer 503 to everything (`true`) or answer again.
    pub fn set_away(&self, away: bool) {
        self.shared.ledger().away = away;
    }
}

/// 503 to every request while the provider is away, counting the discovery
/// requests it refuses.
async fn answer_unless_away(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    {
        let mut ledger = shared.ledger();
        if ledger.away {
            if request.uri().path() == "/.well-known/openid-configuration" {
                ledger.discoveries += 1;
            }
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    next.run(request).await
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let redirect_uri = field("redirect_uri");
    let refusal = if field("response_type") != "code" {
        Some("response_type is not code")
    } else if field("code_challenge_method") != "S256" || field("code_challenge").is_empty() {
        Some("no S256 code challenge (PKCE)")
    } else if redirect_uri.is_empty() || field("client_id").is_empty() {
        Some("no redirect_uri or client_id")
    } else {
        None
    };
    if let Some(reason) = refusal {
        shared.ledger().refused.push(format!("authorize: {reason}"));
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    shared.ledger().codes.insert(
        code.clone(),
        Issued {
            client_id: field("client_id"),
            redirect_uri: redirect_uri.clone(),
            challenge: field("code_challenge"),
            nonce: query.get("nonce").cloned(),
        },
    );
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!(
        "{redirect_uri}{separator}code={code}&state={}",
        percent_encode(&field("state"))
    );
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let issued = shared.ledger().codes.remove(&field("code"));
    let refusal = match &issued {
        _ if field("grant_type") != "authorization_code" => Some("grant_type"),
        None => Some("unknown or used code"),
        Some(issued) if issued.redirect_uri != field("redirect_uri") => Some("redirect_uri"),
        Some(issued) if issued.client_id != field("client_id") => Some("client_id"),
        Some(issued) if s256_challenge(&field("code_verifier")) != issued.challenge => {
            Some("code_verifier does not match the challenge")
        }
        Some(_) => None,
    };
    let (Some(issued), None) = (issued, refusal) else {
        let reason = refusal.unwrap_or("refused");
        shared.ledger().refused.push(format!("token: {reason}"));
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": reason })),
        )
            .into_response();
    };
    let mut claims = shared.person.clone();
    if let Value::Object(claims) = &mut claims {
        claims.insert("iss".into(), json!(shared.url));
        claims.insert("aud".into(), json!(issued.client_id));
        claims.insert("iat".into(), json!(unix_now()));
        claims.insert("exp".into(), json!(unix_now() + 300));
        if let Some(nonce) = &issued.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
    }
    shared.ledger().exchanged += 1;
    axum::Json(json!({
        "access_token": uuid::Uuid::new_v4().simple().to_string(),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": shared.key.sign(&claims),
    }))
    .into_response()
}
