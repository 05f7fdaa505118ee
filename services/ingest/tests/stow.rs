//! DICOMweb STOW-RS, served on loopback and called over HTTP: each instance of a
//! request is reported as it ended (stored, or failed with its reason), stored
//! instances are announced, refused ones are quarantined, and only a site's own
//! token opens it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::stow::{self, StowLimits, failure_reason};
use fxtriage_ingest::{Ingestor, Sender, SiteRegistry, quarantine};
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::InstanceStored;
use fxtriage_sites::credentials::{self, Role, Scope};
use serde_json::Value;

const BOUNDARY: &str = "fxtriage-test-boundary";
const DICOM_MULTIPART: &str =
    "multipart/related; type=\"application/dicom\"; boundary=fxtriage-test-boundary";

/// Two sites (kings with a small instance limit, and one STOW-RS request at
/// a time) and a group of both, in a database of the test's own.
const SITES: &str = r#"
[[site]]
id = "st-marys"

[[site]]
id = "kings"
[site.limits]
max_instance_bytes = 50000
[site.intake]
max_stow_requests = 1

[[group]]
id = "network"
sites = ["st-marys", "kings"]
"#;

/// Tokens of the one credential system, by what they may do.
struct Tokens {
    /// st-marys, sender.
    st_marys: String,
    /// kings, sender.
    kings: String,
    /// st-marys, viewer: may read, not store.
    st_marys_viewer: String,
    /// The group, sender: stores to either site.
    network: String,
}

struct Server {
    base: String,
    store: Arc<dyn ObjectStore>,
    bus: Arc<InProcessBus>,
    client: reqwest::Client,
    tokens: Tokens,
    pool: deadpool_postgres::Pool,
    _dir: tempfile::TempDir,
}

async fn token(pool: &deadpool_postgres::Pool, scope: Scope, role: Role) -> String {
    credentials::create_token(pool, &scope, role, "STOW-RS test")
        .await
        .expect("token")
        .token
        .reveal()
        .to_owned()
}

/// `None` (skipped) without the local stack's PostgreSQL.
async fn serve_with(
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
    limits: StowLimits,
) -> Option<Server> {
    serve_over(store, dir, limits, None).await
}

/// [`serve_with`], served as ingest serves it (`health::serve_listener`),
/// over HTTPS when `tls` is given.
async fn serve_over(
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
    limits: StowLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Option<Server> {
    let database = fxtriage_testkit::FreshDatabase::create("fxt_stow").await?;
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    fxtriage_sites::store::apply_text(&pool, SITES, Default::default())
        .await
        .expect("the sites");
    let site = |id: &str| Scope::Site(fxtriage_core::SiteId::parse(id).expect("id"));
    let tokens = Tokens {
        st_marys: token(&pool, site("st-marys"), Role::Sender).await,
        kings: token(&pool, site("kings"), Role::Sender).await,
        st_marys_viewer: token(&pool, site("st-marys"), Role::Viewer).await,
        network: token(
            &pool,
            Scope::Group(fxtriage_core::GroupId::parse("network").expect("id")),
            Role::Sender,
        )
        .await,
    };
    let bus = Arc::new(InProcessBus::default());
    let ingestor = Ingestor::new(
        Arc::clone(&store),
        bus.clone() as Arc<dyn Bus>,
        &fxtriage_proto::Namespace::none(),
    );
    let sites = SiteRegistry::load(&pool).await.expect("registry");
    let router = stow::router_with_limits(ingestor, sites, pool.clone(), limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(async move {
        fxtriage_telemetry::health::serve_listener(
            listener,
            router,
            tokio_util::sync::CancellationToken::new(),
            tls,
        )
        .await
        .expect("serve");
    });
    Some(Server {
        base: format!("{scheme}://{address}/dicomweb/sites"),
        store,
        bus,
        client: reqwest::Client::new(),
        tokens,
        pool,
        _dir: dir,
    })
}

async fn serve(limits: StowLimits) -> Option<Server> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().join("objects")));
    serve_with(store, dir, limits).await
}

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (content_type, bytes) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn dicom_parts(instances: &[&[u8]]) -> Vec<u8> {
    let parts: Vec<(&str, &[u8])> = instances
        .iter()
        .map(|bytes| ("application/dicom", *bytes))
        .collect();
    multipart(&parts)
}

impl Server {
    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/{path}", self.base))
            .header("Content-Type", content_type)
            .header("Accept", "application/dicom+json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// Every `InstanceStored` published so far.
    async fn published(&self) -> Vec<InstanceStored> {
        let group = format!("test-{}", uuid::Uuid::new_v4());
        let consumer = self
            .bus
            .subscribe(&group, &[topics::INSTANCES])
            .await
            .expect("subscribe");
        let mut events = Vec::new();
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
        {
            consumer.ack(&message).expect("ack");
            events.push(InstanceStored::decode(message.payload.as_slice()).expect("event"));
        }
        events
    }

    async fn stored_bytes(&self, site: &str, instance: &SyntheticInstance) -> Option<Bytes> {
        let key = ObjectKey::parse(&format!(
            "{site}/{}/{}/{}.dcm",
            instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
        ))
        .expect("key");
        self.store.get(&key).await.ok()
    }

    async fn object_count(&self) -> usize {
        self.store.list("").await.expect("list").len()
    }
}

async fn dicom_json(response: reqwest::Response) -> Value {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/dicom+json")
    );
    response.json().await.expect("DICOM JSON")
}

fn sequence<'a>(dataset: &'a Value, tag: &str) -> &'a [Value] {
    dataset[tag]["Value"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn text<'a>(item: &'a Value, tag: &str) -> &'a str {
    item[tag]["Value"][0].as_str().unwrap_or_default()
}

fn failure_reason_of(item: &Value) -> u64 {
    item["00081197"]["Value"][0]
        .as_u64()
        .expect("FailureReason")
}

fn small_wrist() -> SyntheticInstance {
    SyntheticInstance {
        rows: 64,
        columns: 64,
        ..SyntheticInstance::wrist()
    }
}

#[tokio::test]
async fn a_request_with_one_corrupt_instance_is_answered_202_listing_each_instance() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let first = SyntheticInstance::wrist();
    let second = SyntheticInstance::wrist();
    let corrupt = SyntheticInstance::wrist();
    let first_bytes = first.to_part10();
    let second_bytes = second.to_part10();
    let corrupt_full = corrupt.to_part10();
    let corrupt_bytes = &corrupt_full[..corrupt_full.len() / 2];

    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&first_bytes, corrupt_bytes, &second_bytes]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;

    let referenced = sequence(&dataset, "00081199");
    let referenced_uids: Vec<&str> = referenced
        .iter()
        .map(|item| text(item, "00081155"))
        .collect();
    assert_eq!(
        referenced_uids,
        [
            first.sop_instance_uid.as_str(),
            second.sop_instance_uid.as_str()
        ]
    );
    assert_eq!(text(&referenced[0], "00081150"), first.sop_class_uid);
    let failed = sequence(&dataset, "00081198");
    assert_eq!(failed.len(), 1, "{dataset}");
    assert_eq!(
        text(&failed[0], "00081155"),
        corrupt.sop_instance_uid,
        "a refused instance is named by its header"
    );
    assert_eq!(text(&failed[0], "00081150"), corrupt.sop_class_uid);
    assert_eq!(
        failure_reason_of(&failed[0]),
        u64::from(failure_reason::CANNOT_UNDERSTAND)
    );
    assert_eq!(text(&failed[0], "00090010"), "FXTRIAGE");
    assert_eq!(text(&failed[0], "00091001"), "unreadable");
    assert!(
        text(&failed[0], "00091002").contains("truncated"),
        "{dataset}"
    );

    assert_eq!(
        server.stored_bytes("st-marys", &first).await.as_deref(),
        Some(first_bytes.as_slice()),
        "stored byte for byte"
    );
    assert_eq!(
        server.stored_bytes("st-marys", &second).await.as_deref(),
        Some(second_bytes.as_slice())
    );
    assert_eq!(server.stored_bytes("st-marys", &corrupt).await, None);

    let events = server.published().await;
    let mut announced: Vec<String> = events
        .iter()
        .map(|event| {
            assert_eq!(event.received_via, "stow-rs");
            assert!(
                !event.sender.contains(&server.tokens.st_marys),
                "the token never leaves the request: {}",
                event.sender
            );
            event
                .instance
                .as_ref()
                .expect("instance")
                .sop_instance_uid
                .clone()
        })
        .collect();
    announced.sort();
    let mut expected = vec![
        first.sop_instance_uid.clone(),
        second.sop_instance_uid.clone(),
    ];
    expected.sort();
    assert_eq!(
        announced, expected,
        "each stored instance is announced once"
    );

    let site = fxtriage_core::SiteId::parse("st-marys").expect("site id");
    let records = quarantine::list(server.store.as_ref(), Some(&site))
        .await
        .expect("quarantine");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "unreadable");
    let Sender::StowRs { token_id, peer } = &records[0].sender else {
        panic!("quarantined from {:?}", records[0].sender);
    };
    assert!(
        token_id.starts_with("tok-") && !server.tokens.st_marys.contains(token_id.as_str()),
        "named by its public id: {token_id}"
    );
    assert!(peer.is_some_and(|peer| peer.ip().is_loopback()));
}

#[tokio::test]
async fn a_request_whose_instances_are_all_valid_is_answered_200_whatever_their_size() {
    let spool = tempfile::tempdir().expect("spool dir");
    // A 64x64 instance stays in memory; a 256x256 one (131 kB) is spooled to a file.
    let Some(server) = serve(StowLimits {
        memory_threshold_bytes: 64 * 1024,
        spool_dir: Some(spool.path().to_path_buf()),
        ..StowLimits::default()
    })
    .await
    else {
        return;
    };
    let small = small_wrist();
    let large = SyntheticInstance::wrist();
    let small_bytes = small.to_part10();
    let large_bytes = large.to_part10();
    assert!(large_bytes.len() > 64 * 1024);

    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&small_bytes, &large_bytes]),
        )
        .await;
    assert_eq!(response.status(), 200);
    let dataset = dicom_json(response).await;
    assert_eq!(sequence(&dataset, "00081199").len(), 2);
    assert!(dataset.get("00081198").is_none(), "{dataset}");
    assert_eq!(
        dataset["00081190"],
        serde_json::json!({"vr": "UR"}),
        "Retrieve URL is Type 2: present, empty"
    );
    assert_eq!(
        server.stored_bytes("st-marys", &small).await.as_deref(),
        Some(small_bytes.as_slice())
    );
    assert_eq!(
        server.stored_bytes("st-marys", &large).await.as_deref(),
        Some(large_bytes.as_slice())
    );
    assert_eq!(server.published().await.len(), 2);
    assert_eq!(
        std::fs::read_dir(spool.path()).expect("spool").count(),
        0,
        "spooled parts are removed"
    );
}

#[tokio::test]
async fn a_request_of_one_unsupported_sop_class_is_answered_409_with_reason_0122() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let ct = SyntheticInstance {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        ..SyntheticInstance::wrist()
    };
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&ct.to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 409);
    let dataset = dicom_json(response).await;
    assert!(dataset.get("00081199").is_none());
    let failed = sequence(&dataset, "00081198");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failure_reason_of(&failed[0]),
        u64::from(failure_reason::SOP_CLASS_NOT_SUPPORTED)
    );
    assert_eq!(text(&failed[0], "00081150"), "1.2.840.10008.5.1.4.1.1.2");
    assert_eq!(text(&failed[0], "00081155"), ct.sop_instance_uid);
    assert_eq!(text(&failed[0], "00091001"), "sop-class-not-accepted");
    assert!(server.published().await.is_empty());
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_is_answered_401_with_a_bearer_challenge() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let body = dicom_parts(&[&SyntheticInstance::wrist().to_part10()]);
    let url = format!("{}/st-marys/studies", server.base);
    for authorization in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Bearer a b"),
    ] {
        let mut request = server
            .client
            .post(&url)
            .header("Content-Type", DICOM_MULTIPART)
            .body(body.clone());
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{authorization:?}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    }
    let wrong = server
        .post(
            "st-marys/studies",
            Some("fxt_0000000000000000000000000000000000000000000000000000000000000000"),
            DICOM_MULTIPART,
            body,
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let challenge = wrong
        .headers()
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(
        server.object_count().await,
        0,
        "nothing stored or quarantined"
    );
    assert!(server.published().await.is_empty());
}

#[tokio::test]
async fn a_sites_token_opens_no_other_site_and_does_not_reveal_which_sites_exist() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let body = dicom_parts(&[&small_wrist().to_part10()]);
    let refusal = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    };
    let other_site = refusal(
        server
            .post(
                "st-marys/studies",
                Some(server.tokens.kings.as_str()),
                DICOM_MULTIPART,
                body.clone(),
            )
            .await,
    )
    .await;
    let no_such_site = refusal(
        server
            .post(
                "nowhere/studies",
                Some(server.tokens.kings.as_str()),
                DICOM_MULTIPART,
                body.clone(),
            )
            .await,
    )
    .await;
    assert_eq!(other_site.0, 404);
    assert_eq!(
        other_site, no_such_site,
        "an unknown site and a foreign token are refused alike"
    );
    assert_eq!(server.object_count().await, 0);

    let own = server
        .post(
            "kings/studies",
            Some(server.tokens.kings.as_str()),
            DICOM_MULTIPART,
            body,
        )
        .await;
    assert_eq!(own.status(), 200, "the token opens its own site");
}

#[tokio::test]
async fn a_token_that_may_not_send_gets_403_with_the_role_it_lacks() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys_viewer.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&small_wrist().to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 403);
    let message = response.text().await.expect("body");
    assert!(
        message.contains("viewer") && message.contains("sender"),
        "says which role it has and which it needs: {message}"
    );
    assert_eq!(server.object_count().await, 0);
}

#[tokio::test]
async fn a_group_sender_token_stores_to_each_of_its_sites_and_a_revoked_one_to_none() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    for site in ["st-marys", "kings"] {
        let instance = small_wrist();
        let response = server
            .post(
                &format!("{site}/studies"),
                Some(server.tokens.network.as_str()),
                DICOM_MULTIPART,
                dicom_parts(&[&instance.to_part10()]),
            )
            .await;
        assert_eq!(response.status(), 200, "{site}");
        assert!(
            server.stored_bytes(site, &instance).await.is_some(),
            "{site}"
        );
    }
    let tokens = credentials::list_tokens(&server.pool, None)
        .await
        .expect("tokens");
    let network = tokens
        .iter()
        .find(|token| token.scope == "group")
        .expect("the group's token");
    credentials::revoke_token(&server.pool, &network.token_id)
        .await
        .expect("revoke");
    let response = server
        .post(
            "kings/studies",
            Some(server.tokens.network.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&small_wrist().to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 401, "a revoked token stops at once");
}

#[tokio::test]
async fn an_instance_of_another_study_than_the_url_names_fails_and_is_not_stored() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let of_the_study = SyntheticInstance::wrist();
    let of_another_study = SyntheticInstance::wrist();
    let response = server
        .post(
            &format!("st-marys/studies/{}", of_the_study.study_instance_uid),
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&of_the_study.to_part10(), &of_another_study.to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;
    assert_eq!(
        text(&sequence(&dataset, "00081199")[0], "00081155"),
        of_the_study.sop_instance_uid
    );
    let failed = sequence(&dataset, "00081198");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        text(&failed[0], "00081155"),
        of_another_study.sop_instance_uid
    );
    assert_eq!(
        failure_reason_of(&failed[0]),
        u64::from(failure_reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
    );
    assert_eq!(text(&failed[0], "00091001"), "study-mismatch");
    assert!(text(&failed[0], "00091002").contains(&of_another_study.study_instance_uid));
    assert_eq!(
        server.stored_bytes("st-marys", &of_another_study).await,
        None
    );
    assert!(
        quarantine::list(server.store.as_ref(), None)
            .await
            .expect("quarantine")
            .is_empty(),
        "a misaddressed instance is refused, not quarantined"
    );
    assert_eq!(server.published().await.len(), 1);

    let bad_uid = server
        .post(
            "st-marys/studies/not-a-uid",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&of_the_study.to_part10()]),
        )
        .await;
    assert_eq!(bad_uid.status(), 400);
}

#[tokio::test]
async fn other_media_types_are_answered_415() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let instance = small_wrist().to_part10();
    for content_type in [
        "application/dicom",
        "application/json",
        "multipart/related; type=\"application/dicom+json\"; boundary=fxtriage-test-boundary",
    ] {
        let response = server
            .post(
                "st-marys/studies",
                Some(server.tokens.st_marys.as_str()),
                content_type,
                instance.clone(),
            )
            .await;
        assert_eq!(response.status(), 415, "{content_type}");
    }
    assert_eq!(server.object_count().await, 0);
}

#[tokio::test]
async fn a_malformed_multipart_body_is_answered_400_with_a_message() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            b"this is not a multipart body".to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let message = response.text().await.expect("body");
    assert!(message.contains("multipart"), "{message}");

    let empty = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            format!("--{BOUNDARY}--\r\n").into_bytes(),
        )
        .await;
    assert_eq!(empty.status(), 400);
    assert_eq!(server.object_count().await, 0);
}

#[tokio::test]
async fn a_body_cut_off_after_a_stored_instance_still_reports_what_was_stored() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let stored = small_wrist();
    let mut body = dicom_parts(&[&stored.to_part10()]);
    // Replace the closing delimiter by the start of a part that never ends.
    body.truncate(body.len() - format!("--{BOUNDARY}--\r\n").len());
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nDICM").as_bytes(),
    );
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            body,
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;
    assert_eq!(
        text(&sequence(&dataset, "00081199")[0], "00081155"),
        stored.sop_instance_uid
    );
    let failed = sequence(&dataset, "00081198");
    assert_eq!(text(&failed[0], "00091001"), "malformed-request");
    assert!(failed[0].get("00081155").is_none(), "no UIDs are invented");
}

#[tokio::test]
async fn a_part_that_is_not_dicom_fails_alone() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let instance = small_wrist();
    let bytes = instance.to_part10();
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            "multipart/related; boundary=fxtriage-test-boundary",
            multipart(&[
                ("text/plain", b"hello".as_slice()),
                ("application/dicom", &bytes),
            ]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;
    assert_eq!(
        text(&sequence(&dataset, "00081198")[0], "00091001"),
        "not-an-instance"
    );
    assert_eq!(sequence(&dataset, "00081199").len(), 1);
}

#[tokio::test]
async fn a_part_over_the_sites_instance_limit_fails_and_the_next_part_is_stored() {
    // kings accepts instances of up to 50 000 bytes.
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let oversize = SyntheticInstance::wrist();
    let small = small_wrist();
    let response = server
        .post(
            "kings/studies",
            Some(server.tokens.kings.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&oversize.to_part10(), &small.to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;
    let failed = sequence(&dataset, "00081198");
    assert_eq!(text(&failed[0], "00091001"), "instance-too-large");
    assert_eq!(
        text(&failed[0], "00081155"),
        oversize.sop_instance_uid,
        "named from the bytes kept"
    );
    assert_eq!(
        text(&sequence(&dataset, "00081199")[0], "00081155"),
        small.sop_instance_uid
    );
    assert!(server.stored_bytes("kings", &small).await.is_some());
    let records = quarantine::list(server.store.as_ref(), None)
        .await
        .expect("quarantine");
    assert_eq!(
        records.len(),
        1,
        "the refusal is recorded in quarantine: {records:?}"
    );
    assert_eq!(records[0].kind, "instance-too-large");
    assert!(
        records[0].object_key.is_empty(),
        "oversize bytes are not kept"
    );
}

#[tokio::test]
async fn a_request_over_the_request_limit_is_answered_413() {
    let Some(server) = serve(StowLimits {
        max_request_bytes: 5_000,
        ..StowLimits::default()
    })
    .await
    else {
        return;
    };
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&small_wrist().to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 413, "refused by its Content-Length");
    assert_eq!(server.object_count().await, 0);
}

#[tokio::test]
async fn a_chunked_request_that_outgrows_the_limit_reports_what_was_stored_before() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let Some(server) = serve(StowLimits {
        max_request_bytes: 14_000,
        ..StowLimits::default()
    })
    .await
    else {
        return;
    };
    let first = small_wrist();
    let body = dicom_parts(&[&first.to_part10(), &small_wrist().to_part10()]);
    // Up to the second part's data, the first part is complete; the rest
    // crosses the limit.
    let part_head = format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").len();
    let second_data = part_head + first.to_part10().len() + "\r\n".len() + part_head;
    let (first_part, second_part) = body.split_at(second_data);
    let address = server
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("address")
        .to_owned();
    let chunked = |bytes: &[u8]| {
        let mut encoded = Vec::new();
        for chunk in bytes.chunks(4096) {
            encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded
    };
    // Without a Content-Length the limit can only be found while reading.
    let mut head = format!(
        "POST /dicomweb/sites/st-marys/studies HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: {DICOM_MULTIPART}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.tokens.st_marys
    )
    .into_bytes();
    head.extend_from_slice(&chunked(first_part));
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream.write_all(&head).await.expect("send the first part");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.stored_bytes("st-marys", &first).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first part was never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rest = chunked(second_part);
    rest.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = stream.write_all(&rest).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains("request-too-large"), "{answer}");
    assert!(answer.contains(&first.sop_instance_uid), "{answer}");
    assert!(server.stored_bytes("st-marys", &first).await.is_some());
}

#[tokio::test]
async fn an_unavailable_store_is_answered_503_with_out_of_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A store rooted at a regular file can write nothing.
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, b"").expect("file");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(blocked));
    let Some(server) = serve_with(store, dir, StowLimits::default()).await else {
        return;
    };
    let instance = small_wrist();
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&instance.to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let dataset = dicom_json(response).await;
    let failed = sequence(&dataset, "00081198");
    assert_eq!(
        failure_reason_of(&failed[0]),
        u64::from(failure_reason::OUT_OF_RESOURCES)
    );
    assert_eq!(text(&failed[0], "00081155"), instance.sop_instance_uid);
    assert!(server.published().await.is_empty());
}

/// A body of 100,000 tiny parts (about 7 MB) is read up to the part limit
/// and answered 413 with the reason: nothing is stored or quarantined for
/// the parts beyond it, and the service answers the next request.
#[tokio::test]
async fn a_request_of_100000_parts_is_answered_413_at_the_part_limit() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let part: (&str, &[u8]) = ("text/plain", b"x");
    let body = multipart(&vec![part; 100_000]);
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            "multipart/related; boundary=fxtriage-test-boundary",
            body,
        )
        .await;
    assert_eq!(response.status(), 413);
    let message = response.text().await.expect("text");
    assert!(
        message.contains("more than 1000 parts") && message.contains("read up to part 1001"),
        "{message}"
    );
    assert_eq!(server.object_count().await, 0);
    // Nothing else disturbed: the next request is stored.
    let instance = small_wrist();
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&instance.to_part10()]),
        )
        .await;
    assert_eq!(response.status(), 200);
}

/// Hostile structure in a part is refused with its reason and quarantined
/// like any unreadable instance, while the valid part beside it is stored:
/// sequences nested 10,000 deep (the parser would overflow the service's
/// stack and abort it) and an element declaring 4 GiB in a few hundred bytes.
#[tokio::test]
async fn parts_built_to_break_the_parser_fail_alone_with_their_reason() {
    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    let valid = small_wrist();
    let mut nested = small_wrist().to_part10();
    for _ in 0..10_000 {
        nested.extend_from_slice(&[
            0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let mut declared = small_wrist().to_part10();
    declared.extend_from_slice(&[
        0x11, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ]);
    declared.extend_from_slice(&[0; 16]);
    let response = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&nested, &valid.to_part10(), &declared]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dataset = dicom_json(response).await;
    let stored = sequence(&dataset, "00081199");
    assert_eq!(stored.len(), 1, "{dataset}");
    assert_eq!(text(&stored[0], "00081155"), valid.sop_instance_uid);
    let failed = sequence(&dataset, "00081198");
    assert_eq!(failed.len(), 2, "{dataset}");
    for (item, reason) in failed
        .iter()
        .zip(["nested deeper than 64 levels", "declares 4294967280 bytes"])
    {
        assert_eq!(text(item, "00091001"), "unreadable", "{dataset}");
        assert!(text(item, "00091002").contains(reason), "{dataset}");
    }
}

/// Randomised hostile STOW-RS bodies (64 cases in CI; `PROPTEST_CASES`
/// raises it): parts of valid, mutated and random bytes under valid, odd and
/// missing headers, the body then cut short or with bytes inserted. Each
/// request is answered with one of the documented statuses, never a dropped
/// connection or a 5xx, and a valid request is still stored after them all.
#[test]
fn randomised_hostile_bodies_are_answered_with_a_documented_status() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(serve(StowLimits::default())) else {
        return;
    };
    let valid = small_wrist().to_part10();
    let part = (
        prop_oneof![
            Just("application/dicom".to_owned()),
            Just("application/dicom; transfer-syntax=*".to_owned()),
            Just("text/plain".to_owned()),
            "[ -~]{0,40}",
        ],
        prop_oneof![
            Just(valid.clone()),
            (0.0..1.0_f64, any::<u8>()).prop_map({
                let valid = valid.clone();
                move |(at, mask)| {
                    let mut bytes = valid.clone();
                    let index = (at * bytes.len() as f64) as usize % bytes.len();
                    bytes[index] ^= mask | 1;
                    bytes
                }
            }),
            prop::collection::vec(any::<u8>(), 0..512),
        ],
    );
    let case = (
        prop::collection::vec(part, 0..5),
        prop_oneof![
            Just(None),
            (0.0..1.0_f64).prop_map(|at| Some((at, Vec::new()))),
            (0.0..1.0_f64, prop::collection::vec(any::<u8>(), 1..32))
                .prop_map(|(at, bytes)| Some((at, bytes))),
        ],
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let token = server.tokens.st_marys.clone();
    runner
        .run(&case, |(parts, damage)| {
            let parts: Vec<(&str, &[u8])> = parts
                .iter()
                .map(|(kind, bytes)| (kind.as_str(), bytes.as_slice()))
                .collect();
            let mut body = multipart(&parts);
            match damage {
                Some((at, inserted)) if inserted.is_empty() => {
                    body.truncate((at * body.len() as f64) as usize);
                }
                Some((at, inserted)) => {
                    let index = (at * body.len() as f64) as usize;
                    body.splice(index..index, inserted);
                }
                None => {}
            }
            let status = runtime
                .block_on(server.post(
                    "st-marys/studies",
                    Some(token.as_str()),
                    "multipart/related; boundary=fxtriage-test-boundary",
                    body,
                ))
                .status()
                .as_u16();
            if [200, 202, 400, 409, 413].contains(&status) {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!("answered {status}")))
            }
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let instance = small_wrist();
    let status = runtime
        .block_on(server.post(
            "st-marys/studies",
            Some(token.as_str()),
            DICOM_MULTIPART,
            dicom_parts(&[&instance.to_part10()]),
        ))
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn too_many_invalid_tokens_from_one_address_get_429_even_with_a_valid_token() {
    let Some(server) = serve(StowLimits {
        failed_auth: fxtriage_sites::ThrottleLimits {
            max_failures: 3,
            ..Default::default()
        },
        ..StowLimits::default()
    })
    .await
    else {
        return;
    };
    let body = dicom_parts(&[&SyntheticInstance::wrist().to_part10()]);
    for guess in 0..3 {
        let token = format!("fxt_{guess:08}{}", "0".repeat(56));
        let response = server
            .post(
                "st-marys/studies",
                Some(&token),
                DICOM_MULTIPART,
                body.clone(),
            )
            .await;
        assert_eq!(response.status(), 401, "guess {guess}");
    }
    let held = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            body.clone(),
        )
        .await;
    assert_eq!(held.status(), 429);
    let retry_after: u64 = held
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(server.object_count().await, 0, "nothing stored");
    // From another address the same request is stored.
    let neighbour = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client")
        .post(format!("{}/st-marys/studies", server.base))
        .header("Content-Type", DICOM_MULTIPART)
        .header("Accept", "application/dicom+json")
        .bearer_auth(&server.tokens.st_marys)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(neighbour.status(), 200);
    assert_eq!(server.published().await.len(), 1);
}

#[tokio::test]
async fn a_site_at_its_limit_of_requests_in_progress_gets_429_and_other_sites_do_not() {
    use tokio::io::AsyncWriteExt as _;

    let Some(server) = serve(StowLimits::default()).await else {
        return;
    };
    // A request to kings (one at a time) whose body has only begun: authorised,
    // and holding kings' one slot while the rest of its body is awaited.
    let address = server
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("address")
        .to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /dicomweb/sites/kings/studies HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: {DICOM_MULTIPART}\r\n\
         Accept: application/dicom+json\r\nContent-Length: 1000000\r\n\r\n--{BOUNDARY}\r\n",
        server.tokens.kings
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    slow.flush().await.expect("flush");

    let fresh = || dicom_parts(&[&small_wrist().to_part10()]);
    // Stores a fresh instance to kings until the answer is `wanted`; the only
    // other answer allowed meanwhile is `meanwhile`. Waits on progress, not a
    // fixed time.
    let kings_until = |wanted: u16, meanwhile: u16, never: &'static str| {
        let server = &server;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let response = server
                    .post(
                        "kings/studies",
                        Some(server.tokens.kings.as_str()),
                        DICOM_MULTIPART,
                        fresh(),
                    )
                    .await;
                if response.status() == wanted {
                    return response;
                }
                assert_eq!(response.status(), meanwhile);
                assert!(tokio::time::Instant::now() < deadline, "{never}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The slow request reaches its handler soon; one served before it took
    // the slot is fine.
    let busy = kings_until(429, 200, "the slow request never held kings' slot").await;
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        busy.text()
            .await
            .expect("body")
            .contains("intake.max_stow_requests"),
        "the reason names the setting"
    );
    // St Mary's has no such limit and is not held by kings' request.
    let other = server
        .post(
            "st-marys/studies",
            Some(server.tokens.st_marys.as_str()),
            DICOM_MULTIPART,
            fresh(),
        )
        .await;
    assert_eq!(other.status(), 200);
    // Once the slow sender gives up, kings takes requests again.
    drop(slow);
    kings_until(200, 429, "kings' slot was never given back").await;
}

#[tokio::test]
async fn stow_rs_over_https_stores_for_curl_and_plain_http_or_an_unknown_ca_get_nothing() {
    if !fxtriage_testkit::stack::tool("curl", "curl") {
        return;
    }
    let pki = fxtriage_testkit::pki::TestPki::generate();
    let tls = fxtriage_telemetry::tls::https_config(&fxtriage_telemetry::tls::TlsFiles {
        certificate_chain: &pki.server.certificate,
        private_key: &pki.server.key,
        client_ca: None,
    })
    .expect("HTTPS configuration");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir.path().join("objects")));
    let Some(server) = serve_over(store, dir, StowLimits::default(), Some(tls)).await else {
        return;
    };
    let port = server
        .base
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("port")
        .to_owned();
    let body_dir = tempfile::tempdir().expect("tempdir");
    let body = body_dir.path().join("body.bin");
    std::fs::write(&body, dicom_parts(&[&small_wrist().to_part10()])).expect("write");
    let url = |scheme: &str| format!("{scheme}://localhost:{port}/dicomweb/sites/st-marys/studies");
    // curl runs as a child process while this test's runtime serves it.
    let curl = |extra: Vec<String>| {
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "30".into(),
            "--resolve".into(),
            format!("localhost:{port}:127.0.0.1"),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "-H".into(),
            format!("Authorization: Bearer {}", server.tokens.st_marys),
            "-H".into(),
            format!("Content-Type: {DICOM_MULTIPART}"),
            "-H".into(),
            "Accept: application/dicom+json".into(),
            "--data-binary".into(),
            format!("@{}", body.display()),
        ];
        args.extend(extra);
        let mut command = tokio::process::Command::new("curl");
        command.args(args).kill_on_drop(true);
        async move { command.output().await.expect("curl runs") }
    };
    // Trusting the test's CA: stored, answered 200.
    let stored = curl(vec![
        "--cacert".into(),
        pki.ca.display().to_string(),
        url("https"),
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    // Without the CA, curl refuses the server's certificate (exit 60); in
    // plain HTTP the server answers nothing usable.
    let untrusted = curl(vec![url("https")]).await;
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    let plain = curl(vec![url("http")]).await;
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200", "{plain:?}");
    assert_eq!(
        server.published().await.len(),
        1,
        "only the HTTPS request stored"
    );
}
