//! Single sign-on against a small OpenID Connect issuer this test starts on
//! loopback (its discovery document and JWKS, an ES256 key generated here):
//! a person's token is verified and mapped to a site's role by its claims,
//! acts in the person's own name in the audit log and on claims, and is
//! refused with the wrong audience, after expiry beyond the clock skew, when
//! signed by another key, when no mapping names its claims, and once its
//! mapping is revoked; an issuer that cannot be reached gives 503. The web
//! page's sign-in (authorisation code with PKCE): a code is exchanged only
//! with the verifier of its challenge and an ID token with the sign-in's nonce.

mod support;

use std::time::Duration;

use fxtriage_api::oidc::OidcConfig;
use fxtriage_core::Urgency;
use fxtriage_testkit::oidc::{Provider, SigningKey, s256_challenge, unix_now};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use support::*;

const AUDIENCE: &str = "fxtriage";
const KID: &str = "test-key-1";

fn claims(issuer: &str, audience: &str, expires_in: i64, groups: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "iss": issuer, "aud": audience, "sub": "u-1001", "preferred_username": "alice",
        "iat": unix_now(), "exp": unix_now() + expires_in, "groups": groups,
    })
}

/// An API that takes the tokens of the issuer at `issuer` (for `AUDIENCE`).
async fn api_trusting(issuer: &str) -> Option<TestApi> {
    let config = OidcConfig {
        issuer: issuer.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_url: None,
        clock_skew: Duration::from_secs(60),
    };
    start_api_with(|api| api.oidc = Some(config)).await
}

/// The mapping of the tests: a person whose `groups` hold
/// `demo-radiologists` reads the demo site.
async fn map_demo_radiologists(api: &TestApi) -> fxtriage_api::Credential {
    fxtriage_sites::credentials::create_oidc_mapping(
        &api.pool,
        &fxtriage_api::Scope::Site(site_id(SITE)),
        fxtriage_api::Role::Reader,
        "groups",
        "demo-radiologists",
        "the demo site's radiologists",
    )
    .await
    .expect("mapping")
}

#[tokio::test]
async fn a_signed_in_person_is_mapped_to_a_role_by_claims_and_acts_in_their_own_name() {
    let impostor = SigningKey::generate(KID);
    let issuer = Provider::start(SigningKey::generate(KID), &[], serde_json::json!({})).await;
    let Some(api) = api_trusting(&issuer.url).await else {
        return;
    };
    let mapping = map_demo_radiologists(&api).await;
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
    let alice = issuer.sign(&claims(
        &issuer.url,
        AUDIENCE,
        300,
        &["staff", "demo-radiologists"],
    ));

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
            issuer.sign(&claims(
                &issuer.url,
                "another-app",
                300,
                &["demo-radiologists"],
            )),
        ),
        (
            "expired ten minutes ago",
            issuer.sign(&claims(&issuer.url, AUDIENCE, -600, &["demo-radiologists"])),
        ),
        (
            "another key",
            impostor.sign(&claims(&issuer.url, AUDIENCE, 300, &["demo-radiologists"])),
        ),
        (
            "another issuer",
            issuer.sign(&claims(
                "https://elsewhere.example",
                AUDIENCE,
                300,
                &["demo-radiologists"],
            )),
        ),
        (
            "no mapped claim",
            issuer.sign(&claims(&issuer.url, AUDIENCE, 300, &["staff"])),
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
    let unnamed_key = issuer.key().sign_with(
        &Header::new(Algorithm::ES256),
        &claims(&issuer.url, AUDIENCE, 300, &["demo-radiologists"]),
    );
    for (label, refused) in [("HS256", secret_signed), ("no kid", unnamed_key)] {
        assert_eq!(
            get(worklist.clone(), refused).await,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
    }
    let within_skew = issuer.sign(&claims(&issuer.url, AUDIENCE, -30, &["demo-radiologists"]));
    assert_eq!(get(worklist.clone(), within_skew).await, StatusCode::OK);

    // A flood of bad JWTs from one address holds that address only: every
    // JWT begins with the same header, which is no key of the throttle.
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let expired = issuer.sign(&claims(&issuer.url, AUDIENCE, -600, &["demo-radiologists"]));
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

    // A person reports in their own name and at their own time: the RIS's
    // FHIR route, whose reports name both, is not theirs.
    let fhir = api
        .http
        .post(api.site_url(SITE, "/fhir/DiagnosticReport"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({
            "resourceType": "DiagnosticReport", "id": "r-1", "status": "final",
            "issued": "2026-03-02T10:15:00Z",
            "imagingStudy": [{ "identifier": { "value": "urn:oid:1.9.1" } }],
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(fhir.status(), StatusCode::FORBIDDEN);

    // Revoking the mapping ends the person's access at once.
    fxtriage_api::revoke_token(&api.pool, mapping_id)
        .await
        .expect("revoke");
    assert_eq!(get(worklist.clone(), alice).await, StatusCode::UNAUTHORIZED);
    drop(issuer);
    api.finish().await;
}

#[tokio::test]
async fn an_identity_provider_that_cannot_be_reached_gives_503_not_401() {
    let signing = SigningKey::generate(KID);
    // Nothing listens here.
    let unreachable = "http://127.0.0.1:9".to_owned();
    let Some(api) = api_trusting(&unreachable).await else {
        return;
    };
    let response = api
        .http
        .get(api.site_url(SITE, "/worklist"))
        .bearer_auth(signing.sign(&claims(&unreachable, AUDIENCE, 300, &["demo-radiologists"])))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The page cannot offer the provider's sign-in either, and says so.
    let offered = api
        .http
        .get(api.url("/api/v1/auth/config"))
        .send()
        .await
        .expect("config");
    assert_eq!(offered.status(), StatusCode::SERVICE_UNAVAILABLE);
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

/// The page's half of the authorisation-code flow, done by hand: the
/// provider's redirect back carries a code for this challenge.
async fn authorize(
    provider: &Provider,
    challenge: &str,
    nonce: &str,
    redirect_uri: &str,
) -> String {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = no_redirects
        .get(format!("{}/authorize", provider.url))
        .query(&[
            ("response_type", "code"),
            ("client_id", AUDIENCE),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile email"),
            ("state", "s-1"),
            ("nonce", nonce),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let query = location
        .strip_prefix(&format!("{redirect_uri}?"))
        .expect("back to the page");
    let code = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("code="))
        .expect("a code");
    assert!(query.contains("state=s-1"), "{location}");
    code.to_owned()
}

#[tokio::test]
async fn the_web_page_sign_in_exchanges_a_code_only_with_its_pkce_verifier_and_nonce() {
    let provider = Provider::start(
        SigningKey::generate(KID),
        &[],
        serde_json::json!({
            "sub": "u-2002", "preferred_username": "bob", "groups": ["demo-radiologists"],
        }),
    )
    .await;
    let Some(api) = api_trusting(&provider.url).await else {
        return;
    };
    map_demo_radiologists(&api).await;

    // What the page reads to offer the provider's sign-in (no token needed).
    let offered: serde_json::Value = api
        .http
        .get(api.url("/api/v1/auth/config"))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("json");
    let sign_in = &offered["sign_in"];
    assert_eq!(
        sign_in["authorization_endpoint"],
        format!("{}/authorize", provider.url)
    );
    assert_eq!(sign_in["client_id"], AUDIENCE);
    assert!(
        sign_in["scope"]
            .as_str()
            .is_some_and(|scope| scope.split(' ').any(|word| word == "openid")),
        "{offered}"
    );

    let redirect_uri = api.url("/");
    let verifier = "a-verifier-of-forty-three-or-more-characters.~_0123";
    let challenge = s256_challenge(verifier);
    let exchange = |code: String, verifier: &'static str, nonce: &'static str| {
        let http = api.http.clone();
        let url = api.url("/api/v1/auth/token");
        let redirect_uri = redirect_uri.clone();
        async move {
            http.post(url)
                .json(&serde_json::json!({
                    "code": code, "code_verifier": verifier,
                    "redirect_uri": redirect_uri, "nonce": nonce,
                }))
                .send()
                .await
                .expect("exchange")
        }
    };

    // Another verifier than the challenge's: the provider refuses the code.
    let code = authorize(&provider, &challenge, "n-1", &redirect_uri).await;
    let refused = exchange(
        code,
        "another-verifier-of-forty-three-or-more-characters",
        "n-1",
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        provider.refused(),
        ["token: code_verifier does not match the challenge"]
    );
    // The right verifier, but the ID token carries another sign-in's nonce.
    let code = authorize(&provider, &challenge, "n-2", &redirect_uri).await;
    let replayed = exchange(code, verifier, "n-other").await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    // A short verifier is refused before the provider is asked.
    let code = authorize(&provider, &challenge, "n-3", &redirect_uri).await;
    let short = exchange(code, "short", "n-3").await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        provider.exchanged(),
        1,
        "only the nonce case reached a token"
    );

    // The page's sign-in as it is meant to be.
    let code = authorize(&provider, &challenge, "n-4", &redirect_uri).await;
    let accepted = exchange(code.clone(), verifier, "n-4").await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(accepted.headers()["cache-control"], "no-store");
    let body: serde_json::Value = accepted.json().await.expect("json");
    assert_eq!(body["name"], "bob");
    assert!(
        body["expires_at"]
            .as_i64()
            .is_some_and(|at| at > unix_now())
    );
    let token = body["token"].as_str().expect("token").to_owned();
    let worklist = api
        .http
        .get(api.site_url(SITE, "/worklist"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("worklist");
    assert_eq!(worklist.status(), StatusCode::OK);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE actor = 'oidc:bob (u-2002)' AND action = 'worklist.read'"
        )
        .await,
        1
    );
    // A code is taken once.
    let again = exchange(code, verifier, "n-4").await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        provider.refused().last().map(String::as_str),
        Some("token: unknown or used code")
    );
    api.finish().await;
}

/// A provider that is away is asked for its discovery document once, not once
/// per request: concurrent requests wait for one read, and after it failed
/// none is sent for a while (each answered 503 at once); once it was read, the
/// document stays in use while the provider is away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_away_is_asked_once_not_once_per_request() {
    let issuer = Provider::start(SigningKey::generate(KID), &[], serde_json::json!({})).await;
    let Some(api) = api_trusting(&issuer.url).await else {
        return;
    };
    issuer.set_away(true);
    let config = || async {
        api.http
            .get(api.url("/api/v1/auth/config"))
            .send()
            .await
            .expect("config")
            .status()
    };
    let statuses = futures::future::join_all((0..8).map(|_| config())).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(issuer.discoveries(), 1, "one read for eight requests");
    // Back, but within the pause after a failed read: not asked yet.
    issuer.set_away(false);
    assert_eq!(config().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(issuer.discoveries(), 1, "no read within the pause");
    api.finish().await;

    // Read once, the document is used while the provider is away.
    let Some(api) = api_trusting(&issuer.url).await else {
        return;
    };
    let before = issuer.discoveries();
    let offered = api
        .http
        .get(api.url("/api/v1/auth/config"))
        .send()
        .await
        .expect("config");
    assert_eq!(offered.status(), StatusCode::OK);
    issuer.set_away(true);
    for _ in 0..3 {
        let offered = api
            .http
            .get(api.url("/api/v1/auth/config"))
            .send()
            .await
            .expect("config");
        assert_eq!(offered.status(), StatusCode::OK);
    }
    assert_eq!(issuer.discoveries(), before + 1);
    api.finish().await;
}
