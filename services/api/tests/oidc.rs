//! Single sign-on against a small OpenID Connect issuer this test starts on
//! loopback (its discovery document and JWKS, an ES256 key generated here):
//! a person's token is verified and mapped to a site's role by its claims,
//! acts in the person's own name in the audit log and on claims, and is
//! refused with the wrong audience, after expiry beyond the clock skew, when
//! signed by another key, when no mapping names its claims, and once its
//! mapping is revoked; an issuer that cannot be reached gives 503.

mod support;

use std::time::Duration;

use fxtriage_api::oidc::OidcConfig;
use fxtriage_core::Urgency;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use support::*;

const AUDIENCE: &str = "fxtriage";
const KID: &str = "test-key-1";

/// base64url without padding (RFC 7515's encoding of JWK coordinates).
fn base64url(bytes: &[u8]) -> String {
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

/// An ES256 signing key and its public JWK.
struct Key {
    signing: EncodingKey,
    jwk: serde_json::Value,
}

fn key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate().expect("P-256 key");
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    Key {
        signing: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": base64url(&point[1..33]), "y": base64url(&point[33..65]),
        }),
    }
}

/// The issuer: its discovery document and JWKS, served on loopback.
struct Issuer {
    url: String,
    shutdown: tokio_util::sync::CancellationToken,
}

async fn start_issuer(jwks: serde_json::Value) -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let discovery = serde_json::json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("issuer");
    });
    Issuer { url, shutdown }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn token(key: &Key, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.to_owned());
    jsonwebtoken::encode(&header, claims, &key.signing).expect("sign")
}

fn claims(issuer: &str, audience: &str, expires_in: i64, groups: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "iss": issuer, "aud": audience, "sub": "u-1001", "preferred_username": "alice",
        "iat": unix_now(), "exp": unix_now() + expires_in, "groups": groups,
    })
}

#[tokio::test]
async fn a_signed_in_person_is_mapped_to_a_role_by_claims_and_acts_in_their_own_name() {
    let signing = key(KID);
    let impostor = key(KID);
    let issuer = start_issuer(serde_json::json!({ "keys": [signing.jwk] })).await;
    let config = OidcConfig {
        issuer: issuer.url.clone(),
        audience: AUDIENCE.to_owned(),
        jwks_url: None,
        clock_skew: Duration::from_secs(60),
    };
    let Some(api) = start_api_with(|api| api.oidc = Some(config)).await else {
        return;
    };
    let mapping = fxtriage_sites::credentials::create_oidc_mapping(
        &api.pool,
        &fxtriage_api::Scope::Site(site_id(SITE)),
        fxtriage_api::Role::Reader,
        "groups",
        "demo-radiologists",
        "the demo site's radiologists",
    )
    .await
    .expect("mapping");
    let spec = StudySpec::new("1.9.1", Urgency::Emergency, now());
    add_study(&api.pool, &spec).await;
    let get = |url: String, bearer: String| {
        let http = api.http.clone();
        async move {
            http.get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    let worklist = api.site_url(SITE, "/worklist");
    let alice = token(
        &signing,
        &claims(&issuer.url, AUDIENCE, 300, &["staff", "demo-radiologists"]),
    );

    assert_eq!(get(worklist.clone(), alice.clone()).await, StatusCode::OK);
    assert_eq!(
        get(api.site_url(OTHER_SITE, "/worklist"), alice.clone()).await,
        StatusCode::NOT_FOUND,
        "no mapping covers the other site"
    );
    // In the audit log as the person, under the mapping's credential.
    let mapping_id = &mapping.token_id;
    assert_eq!(
        api.count(&format!(
            "SELECT count(*) FROM audit_log WHERE actor = 'oidc:alice (u-1001)' AND token_id = '{mapping_id}'"
        ))
        .await,
        1
    );
    // Claims in the person's own name; another name is refused.
    let claim = |body: serde_json::Value| {
        let http = api.http.clone();
        let url = api.site_url(SITE, "/studies/1.9.1/claim");
        let bearer = alice.clone();
        async move {
            http.post(url)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(
        claim(serde_json::json!({ "reader": "bob" })).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(claim(serde_json::json!({})).await, StatusCode::OK);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE action = 'study.claim' AND actor = 'oidc:alice (u-1001)'"
        )
        .await,
        1
    );

    // Refused: another audience; expired beyond the skew (but not within it);
    // signed by another key under the same key id; claims no mapping names.
    for (label, refused) in [
        (
            "another audience",
            token(
                &signing,
                &claims(&issuer.url, "another-app", 300, &["demo-radiologists"]),
            ),
        ),
        (
            "expired ten minutes ago",
            token(
                &signing,
                &claims(&issuer.url, AUDIENCE, -600, &["demo-radiologists"]),
            ),
        ),
        (
            "another key",
            token(
                &impostor,
                &claims(&issuer.url, AUDIENCE, 300, &["demo-radiologists"]),
            ),
        ),
        (
            "another issuer",
            token(
                &signing,
                &claims(
                    "https://elsewhere.example",
                    AUDIENCE,
                    300,
                    &["demo-radiologists"],
                ),
            ),
        ),
        (
            "no mapped claim",
            token(&signing, &claims(&issuer.url, AUDIENCE, 300, &["staff"])),
        ),
    ] {
        assert_eq!(
            get(worklist.clone(), refused).await,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
    }
    // Never a shared secret nor an unnamed key.
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(KID.to_owned());
    let secret_signed = jsonwebtoken::encode(
        &hs256,
        &claims(&issuer.url, AUDIENCE, 300, &["demo-radiologists"]),
        &EncodingKey::from_secret(b"a shared secret"),
    )
    .expect("sign");
    let unnamed_key = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(&issuer.url, AUDIENCE, 300, &["demo-radiologists"]),
        &signing.signing,
    )
    .expect("sign");
    for (label, refused) in [("HS256", secret_signed), ("no kid", unnamed_key)] {
        assert_eq!(
            get(worklist.clone(), refused).await,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
    }
    let within_skew = token(
        &signing,
        &claims(&issuer.url, AUDIENCE, -30, &["demo-radiologists"]),
    );
    assert_eq!(get(worklist.clone(), within_skew).await, StatusCode::OK);

    // A flood of bad JWTs from one address holds that address only: every
    // JWT begins with the same header, which is no key of the throttle.
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let expired = token(
        &signing,
        &claims(&issuer.url, AUDIENCE, -600, &["demo-radiologists"]),
    );
    for _ in 0..25 {
        let status = flooder
            .get(&worklist)
            .bearer_auth(&expired)
            .send()
            .await
            .expect("request")
            .status();
        assert!(
            matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "{status}"
        );
    }
    let neighbour = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .expect("client")
        .get(&worklist)
        .bearer_auth(&alice)
        .send()
        .await
        .expect("request");
    assert_eq!(
        neighbour.status(),
        StatusCode::OK,
        "another person signs in"
    );

    // Revoking the mapping ends the person's access at once.
    fxtriage_api::revoke_token(&api.pool, mapping_id)
        .await
        .expect("revoke");
    assert_eq!(get(worklist.clone(), alice).await, StatusCode::UNAUTHORIZED);
    issuer.shutdown.cancel();
    api.finish().await;
}

#[tokio::test]
async fn an_identity_provider_that_cannot_be_reached_gives_503_not_401() {
    let signing = key(KID);
    // Nothing listens here.
    let unreachable = "http://127.0.0.1:9".to_owned();
    let config = OidcConfig {
        issuer: unreachable.clone(),
        audience: AUDIENCE.to_owned(),
        jwks_url: None,
        clock_skew: Duration::from_secs(60),
    };
    let Some(api) = start_api_with(|api| api.oidc = Some(config)).await else {
        return;
    };
    let response = api
        .http
        .get(api.site_url(SITE, "/worklist"))
        .bearer_auth(token(
            &signing,
            &claims(&unreachable, AUDIENCE, 300, &["demo-radiologists"]),
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Service tokens work as before.
    let service = api
        .http
        .get(api.site_url(SITE, "/worklist"))
        .bearer_auth(&api.demo.viewer)
        .send()
        .await
        .expect("request");
    assert_eq!(service.status(), StatusCode::OK);
    api.finish().await;
}
