//! Who may see and do what, against the real PostgreSQL: requests without a
//! valid token get 401, a token never sees another site (404, as for a missing
//! study), a viewer only reads, malformed requests get 400 with a JSON message,
//! too many invalid tokens from one address get 429, and the probes and
//! metrics answer without a token.

mod support;

use fxtriage_core::Urgency;
use reqwest::StatusCode;
use support::*;

/// Every site route, with its method; `{study}` and `{sop}` filled in.
fn site_routes(study: &str, sop: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/worklist".to_owned()),
        ("POST", "/worklist/next".to_owned()),
        ("GET", "/events".to_owned()),
        ("GET", format!("/studies/{study}")),
        ("POST", format!("/studies/{study}/claim")),
        ("POST", format!("/studies/{study}/release")),
        ("POST", format!("/studies/{study}/report")),
        (
            "GET",
            format!("/studies/{study}/instances/{sop}/overlay.png"),
        ),
    ]
}

async fn send(
    api: &TestApi,
    method: &str,
    url: String,
    authorization: Option<&str>,
) -> reqwest::Response {
    let request = match method {
        "GET" => api.http.get(url),
        _ => api.http.post(url),
    };
    let request = match authorization {
        Some(value) => request.header("authorization", value),
        None => request,
    };
    request.send().await.expect("request")
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_a_bearer_challenge() {
    // 24 invalid tokens from one address on purpose: the throttle that would
    // answer the 21st with 429 is tested on its own below.
    let Some(api) = start_api_with(|config| config.failed_auth.max_failures = 100).await else {
        return;
    };
    let spec = StudySpec::new("1.5.1", Urgency::Emergency, now());
    add_study(&api.pool, &spec).await;
    let unknown = format!("Bearer fxt_{}", "0".repeat(64));
    let revoked = {
        let created = fxtriage_api::create_token(
            &api.pool,
            &fxtriage_api::Scope::Site(site_id(SITE)),
            fxtriage_api::Role::Admin,
            "to be revoked",
        )
        .await
        .expect("token");
        fxtriage_api::revoke_token(&api.pool, &created.credential.token_id)
            .await
            .expect("revoke");
        format!("Bearer {}", created.token.reveal())
    };
    let basic = "Basic ZGVtbzpkZW1v".to_owned();
    let not_ours = "Bearer secret".to_owned();
    for (method, route) in site_routes(&spec.study, &spec.sop()) {
        for authorization in [None, Some(basic.as_str())] {
            let response = send(&api, method, api.site_url(SITE, &route), authorization).await;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(
                challenge.starts_with("Bearer"),
                "{method} {route}: {challenge:?}"
            );
            expect_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        }
        for authorization in [&unknown, &revoked, &not_ours] {
            let response = send(
                &api,
                method,
                api.site_url(SITE, &route),
                Some(authorization),
            )
            .await;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(
                challenge.contains("invalid_token"),
                "{method} {route}: {challenge:?}"
            );
            expect_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        }
    }
    assert_eq!(
        api.count("SELECT count(*) FROM claims").await,
        0,
        "nothing was claimed"
    );
    api.finish().await;
}

/// A client whose requests come from `address` (any of 127.0.0.0/8 reaches
/// the API's loopback listener).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .expect("client")
}

#[tokio::test]
async fn too_many_invalid_tokens_from_one_address_get_429_before_any_lookup() {
    let Some(api) = start_api_with(|config| config.failed_auth.max_failures = 5).await else {
        return;
    };
    let worklist = api.site_url(SITE, "/worklist");
    let attacker = client_from([127, 0, 0, 2]);
    for guess in 0..5 {
        // Each guess differs in its first characters: the address is what counts them.
        let token = format!("Bearer fxt_{guess:08}{}", "0".repeat(56));
        let response = attacker
            .get(&worklist)
            .header("authorization", token)
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    // Now even a valid token from that address is held, before it is looked up.
    let held = attacker
        .get(&worklist)
        .bearer_auth(&api.demo.viewer)
        .send()
        .await
        .expect("request");
    let retry_after: u64 = held
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(held, StatusCode::TOO_MANY_REQUESTS, "too-many-failures").await;
    // The same on the admin API.
    let admin = attacker
        .get(format!("{}/api/v1/admin/sites", api.base))
        .bearer_auth(&api.deployment_admin)
        .send()
        .await
        .expect("request");
    assert_eq!(admin.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another address is served as before.
    let neighbour = client_from([127, 0, 0, 3])
        .get(&worklist)
        .bearer_auth(&api.demo.viewer)
        .send()
        .await
        .expect("request");
    assert_eq!(neighbour.status(), StatusCode::OK);
    // A revoked token's prefix is held from any address once it has failed
    // five times, even spread over five addresses.
    let revoked = format!("Bearer fxt_deadbeef{}", "1".repeat(56));
    for host in 10..15 {
        let response = client_from([127, 0, 0, host])
            .get(&worklist)
            .header("authorization", &revoked)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let sixth = client_from([127, 0, 0, 20])
        .get(&worklist)
        .header("authorization", &revoked)
        .send()
        .await
        .expect("request");
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
    api.finish().await;
}

#[tokio::test]
async fn the_api_serves_https_with_its_certificate_and_nothing_in_plain_http() {
    let pki = fxtriage_testkit::pki::TestPki::generate();
    let tls = fxtriage_telemetry::tls::https_config(&fxtriage_telemetry::tls::TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.server.key,
        client_ca: None,
    })
    .expect("HTTPS configuration");
    // Ready over HTTPS, with a client that trusts the test's CA.
    let Some(api) = start_api_over_https(tls, &pki.ca_pem).await else {
        return;
    };
    let url = api.site_url(SITE, "/worklist");
    assert!(url.starts_with("https://localhost:"), "{url}");
    let response = api
        .http
        .get(&url)
        .bearer_auth(&api.demo.viewer)
        .send()
        .await
        .expect("an HTTPS request");
    assert_eq!(response.status(), StatusCode::OK);
    let port = url
        .trim_start_matches("https://localhost:")
        .split('/')
        .next()
        .expect("port")
        .to_owned();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    // A client that does not trust the test's CA refuses the server.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", address)
        .build()
        .expect("client");
    let refused = untrusting
        .get(&url)
        .bearer_auth(&api.demo.viewer)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP to the HTTPS port gets no answer of the API.
    let plain = reqwest::Client::new()
        .get(url.replace("https://localhost", "http://127.0.0.1"))
        .bearer_auth(&api.demo.viewer)
        .send()
        .await;
    assert!(
        plain
            .as_ref()
            .map_or(true, |response| response.status() != StatusCode::OK),
        "{plain:?}"
    );
    api.finish().await;
}

#[tokio::test]
async fn a_token_of_another_site_gets_404_for_everything_of_that_site() {
    let Some(api) = start_api().await else {
        return;
    };
    let spec = StudySpec::new("1.5.2", Urgency::Emergency, now()).analysed(0.9);
    add_study(&api.pool, &spec).await;
    store_image(api.store.as_ref(), &spec).await;
    let missing = api.get(&api.demo.viewer, SITE, "/studies/1.5.999").await;
    let missing_body = expect_error(missing, StatusCode::NOT_FOUND, "not-found").await;

    for token in [&api.other.viewer, &api.other.reader, &api.other.admin] {
        for (method, route) in site_routes(&spec.study, &spec.sop()) {
            let authorization = format!("Bearer {token}");
            let response = send(
                &api,
                method,
                api.site_url(SITE, &route),
                Some(&authorization),
            )
            .await;
            let body = expect_error(response, StatusCode::NOT_FOUND, "not-found").await;
            assert_eq!(
                body, missing_body,
                "{method} {route}: indistinguishable from missing"
            );
            // A site that does not exist answers the same.
            let response = send(
                &api,
                method,
                api.site_url("no-such-site", &route),
                Some(&authorization),
            )
            .await;
            expect_error(response, StatusCode::NOT_FOUND, "not-found").await;
        }
    }
    // The other site's own worklist does not show the demo study.
    let response = api
        .get(&api.other.viewer, OTHER_SITE, "/worklist?state=all")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: serde_json::Value = response.json().await.expect("JSON");
    assert!(uids(&page).is_empty(), "{page}");
    // ... and the demo study stays as it was.
    assert_eq!(api.count("SELECT count(*) FROM claims").await, 0);
    assert_eq!(api.count("SELECT count(*) FROM reports").await, 0);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE site_id = 'demo' \
             AND action NOT IN ('sites.apply', 'token.create')"
        )
        .await,
        0,
        "nothing of the demo site was read or changed"
    );
    api.finish().await;
}

#[tokio::test]
async fn a_viewer_may_read_but_not_claim_release_or_report() {
    let Some(api) = start_api().await else {
        return;
    };
    let spec = StudySpec::new("1.5.3", Urgency::Inpatient, now());
    add_study(&api.pool, &spec).await;
    for route in [
        "/studies/1.5.3/claim",
        "/studies/1.5.3/release",
        "/studies/1.5.3/report",
        "/worklist/next",
    ] {
        let response = api
            .post(&api.demo.viewer, SITE, route, serde_json::json!({}))
            .await;
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let response = api.get(&api.demo.viewer, SITE, "/studies/1.5.3").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.count("SELECT count(*) FROM claims").await, 0);
    let state: String = {
        let client = api.pool.get().await.expect("connection");
        client
            .query_one(
                "SELECT state FROM studies WHERE study_instance_uid = '1.5.3'",
                &[],
            )
            .await
            .expect("state")
            .get(0)
    };
    assert_eq!(state, "open");
    api.finish().await;
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_json_message() {
    let Some(api) = start_api().await else {
        return;
    };
    add_study(
        &api.pool,
        &StudySpec::new("1.5.4", Urgency::Emergency, now()),
    )
    .await;
    let token = &api.demo.admin;
    for query in [
        "?state=closed",
        "?state=",
        "?urgency=stat",
        "?ai_result=fracture",
        "?body_part=WRIST;DROP",
        "?limit=0",
        "?limit=100000",
        "?limit=ten",
        "?cursor=zz",
        "?cursor=31325f",
        "?colour=red",
    ] {
        let response = api.get(token, SITE, &format!("/worklist{query}")).await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad-request").await;
    }
    for route in [
        "/studies/1.5.x",
        "/studies/1..5",
        "/studies/1.5.4/instances/abc/overlay.png",
    ] {
        let response = api.get(token, SITE, route).await;
        expect_error(response, StatusCode::BAD_REQUEST, "bad-request").await;
    }
    for body in [
        "{",
        "[]",
        r#"{"reader": 7}"#,
        r#"{"reader": ""}"#,
        r#"{"reader": "a\nb"}"#,
        r#"{"reeder": "dr-a"}"#,
    ] {
        let response = api
            .http
            .post(api.site_url(SITE, "/studies/1.5.4/claim"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::BAD_REQUEST, "bad-request").await;
    }
    let response = api
        .post(
            token,
            SITE,
            "/worklist/next",
            serde_json::json!({ "urgency": ["stat"] }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad-request").await;
    // Unknown routes and methods answer JSON too.
    let response = api.get(token, SITE, "/nothing-here").await;
    expect_error(response, StatusCode::NOT_FOUND, "not-found").await;
    let response = api.get(token, SITE, "/studies/1.5.4/claim").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // None of it changed anything, and the server still answers.
    assert_eq!(api.count("SELECT count(*) FROM claims").await, 0);
    assert_eq!(api.worklist_order("").await, ["1.5.4"]);
    api.finish().await;
}

#[tokio::test]
async fn probes_and_metrics_answer_without_a_token() {
    let Some(api) = start_api().await else {
        return;
    };
    for index in 1..=3 {
        // The last one arrived two hours ago: the oldest open item.
        let arrived_at = if index == 3 {
            now() - time::Duration::hours(2)
        } else {
            now()
        };
        add_study(
            &api.pool,
            &StudySpec::new(&format!("1.5.6.{index}"), Urgency::Outpatient, arrived_at),
        )
        .await;
    }
    assert_eq!(api.claim("1.5.6.1", "dr-a").await.status(), StatusCode::OK);
    api.worklist("").await;
    for probe in ["/health/live", "/health/ready"] {
        let response = api.http.get(api.url(probe)).send().await.expect("probe");
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
    let response = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
    for expected in [
        "fxtriage_api_requests_total{route=\"/api/v1/sites/{site}/worklist\",method=\"GET\",status=\"200\"} 1",
        "fxtriage_api_requests_total{route=\"/api/v1/sites/{site}/studies/{study}/claim\",method=\"POST\",status=\"200\"} 1",
        "fxtriage_worklist_items{site=\"demo\",state=\"open\"} 2",
        "fxtriage_worklist_items{site=\"demo\",state=\"claimed\"} 1",
        "fxtriage_worklist_items{site=\"other\",state=\"open\"} 0",
        "fxtriage_api_database_up 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("1.5.6"), "no UID in any label");
    let oldest = |site: &str| -> f64 {
        let prefix = format!("fxtriage_worklist_oldest_waiting_seconds{{site=\"{site}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no oldest waiting time for {site} in\n{text}"))
            .parse()
            .expect("seconds")
    };
    let demo = oldest("demo");
    assert!((7_190.0..7_800.0).contains(&demo), "two hours: {demo}");
    assert_eq!(oldest("other"), 0.0, "nothing open at the other site");
    api.finish().await;
}
