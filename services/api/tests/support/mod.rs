//! Test helpers of the API: a fresh PostgreSQL database per test (from
//! FXTRIAGE_DATABASE_URL, as the local stack sets it) with two sites and a token
//! of every role, the API served on a loopback port with the in-process bus and a
//! local-directory object store, studies put on the worklist through the
//! prioritizer's own apply functions, and an HTTP client.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_api::{Config, Role, Scope, create_token};
use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_core::{SiteId, Urgency};
use fxtriage_db::DbConfig;
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore};
use fxtriage_prioritizer::apply::{apply_finding, apply_instance};
use fxtriage_prioritizer::incoming::{ImageFinding, StoredInstance, to_timestamp};
use fxtriage_prioritizer::policy::Policy;
use fxtriage_proto::v1 as proto;
use reqwest::{Response, StatusCode};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The site the tests mostly use, and another one that must stay invisible to it.
pub const SITE: &str = "demo";
pub const OTHER_SITE: &str = "other";
/// A reading network of both sites.
pub const GROUP: &str = "network";

/// The registry of every API test: two sites and a group of both.
pub const SITES_FILE: &str = r#"
[[site]]
id = "demo"
name = "Demo hospital"

[[site]]
id = "other"
name = "Other hospital"

[[group]]
id = "network"
name = "Demo network"
sites = ["demo", "other"]
"#;

/// Tokens of one site (or of the group), one per role.
#[derive(Debug, Clone)]
pub struct SiteTokens {
    pub viewer: String,
    pub reader: String,
    pub admin: String,
    pub sender: String,
    pub reader_id: String,
}

/// The API serving a fresh database.
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: Pool,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn ObjectStore>,
    pub demo: SiteTokens,
    pub other: SiteTokens,
    /// Tokens of [`GROUP`], a reading network of both sites.
    pub network: SiteTokens,
    /// A deployment admin token: the admin API.
    pub deployment_admin: String,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    database: fxtriage_testkit::FreshDatabase,
    _store_dir: tempfile::TempDir,
}

/// The API with the default configuration.
pub async fn start_api() -> Option<TestApi> {
    start_api_with(|_| {}).await
}

/// The API with `adjust` applied to its configuration.
pub async fn start_api_with(adjust: impl FnOnce(&mut Config)) -> Option<TestApi> {
    start(adjust, None).await
}

/// The API over HTTPS with `tls`, its base URL `https://localhost:PORT` and its
/// client trusting the CA `ca_pem`.
pub async fn start_api_over_https(tls: Arc<rustls::ServerConfig>, ca_pem: &str) -> Option<TestApi> {
    start(|config| config.tls = Some(tls), Some(ca_pem)).await
}

async fn start(adjust: impl FnOnce(&mut Config), https_ca_pem: Option<&str>) -> Option<TestApi> {
    let database = fxtriage_testkit::FreshDatabase::create("fxt_api").await?;
    let mut config = DbConfig::from_url(&database.url).expect("URL");
    config.max_connections = 24;
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    fxtriage_sites::store::apply_text(&pool, SITES_FILE, Default::default())
        .await
        .expect("the sites and the group");
    let demo = site_tokens(&pool, Scope::Site(site_id(SITE))).await;
    let other = site_tokens(&pool, Scope::Site(site_id(OTHER_SITE))).await;
    let network = site_tokens(
        &pool,
        Scope::Group(fxtriage_core::GroupId::parse(GROUP).expect("group id")),
    )
    .await;
    let deployment_admin = create_token(&pool, &Scope::Deployment, Role::Admin, "test")
        .await
        .expect("deployment token")
        .token
        .reveal()
        .to_owned();

    let store_dir = tempfile::tempdir().expect("store directory");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(store_dir.path().to_owned()));
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let mut api_config = Config::new(address);
    adjust(&mut api_config);
    let shutdown = CancellationToken::new();
    let clients = fxtriage_clients::Clients {
        bus: Arc::clone(&bus),
        namespace: fxtriage_proto::Namespace::none(),
        store: Some(Arc::clone(&store)),
        database: Some(pool.clone()),
    };
    let server_task = tokio::spawn(fxtriage_api::serve(
        listener,
        api_config,
        clients,
        shutdown.clone(),
    ));
    let (base, http) = match https_ca_pem {
        None => (format!("http://{address}"), reqwest::Client::new()),
        Some(ca_pem) => (
            format!("https://localhost:{}", address.port()),
            reqwest::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate"),
                )
                .resolve("localhost", address)
                .build()
                .expect("HTTPS client"),
        ),
    };
    let api = TestApi {
        base,
        http,
        pool,
        bus,
        store,
        demo,
        other,
        network,
        deployment_admin,
        shutdown,
        server: server_task,
        database,
        _store_dir: store_dir,
    };
    api.wait_until_ready().await;
    Some(api)
}

async fn site_tokens(pool: &Pool, scope: Scope) -> SiteTokens {
    let token = |role| {
        let scope = scope.clone();
        async move {
            create_token(pool, &scope, role, "test")
                .await
                .expect("create token")
        }
    };
    let reader = token(Role::Reader).await;
    SiteTokens {
        viewer: token(Role::Viewer).await.token.reveal().to_owned(),
        admin: token(Role::Admin).await.token.reveal().to_owned(),
        sender: token(Role::Sender).await.token.reveal().to_owned(),
        reader_id: reader.credential.token_id.clone(),
        reader: reader.token.reveal().to_owned(),
    }
}

impl TestApi {
    async fn wait_until_ready(&self) {
        eventually(Duration::from_secs(20), "the API is ready", || async {
            self.http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                .is_ok_and(|response| response.status() == StatusCode::OK)
        })
        .await;
    }

    /// Stops the API (it must drain and end cleanly) and drops the database.
    pub async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.server)
            .await
            .expect("the API stops within 20 s")
            .expect("the API task does not panic")
            .expect("the API ends without error");
        self.pool.close();
        self.database.drop_database().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/api/v1/sites/{site}{rest}`.
    pub fn site_url(&self, site: &str, rest: &str) -> String {
        self.url(&format!("/api/v1/sites/{site}{rest}"))
    }

    pub async fn get(&self, token: &str, site: &str, rest: &str) -> Response {
        self.http
            .get(self.site_url(site, rest))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(
        &self,
        token: &str,
        site: &str,
        rest: &str,
        body: serde_json::Value,
    ) -> Response {
        self.http
            .post(self.site_url(site, rest))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Claims `study` at the demo site for `reader`.
    pub async fn claim(&self, study: &str, reader: &str) -> Response {
        self.post(
            &self.demo.reader,
            SITE,
            &format!("/studies/{study}/claim"),
            serde_json::json!({ "reader": reader }),
        )
        .await
    }

    /// Releases `study` at the demo site with `token`, as `reader`.
    pub async fn release(&self, token: &str, study: &str, reader: &str) -> Response {
        self.post(
            token,
            SITE,
            &format!("/studies/{study}/release"),
            serde_json::json!({ "reader": reader }),
        )
        .await
    }

    /// Reports `study` at the demo site with `token`, as `reader`.
    pub async fn report(&self, token: &str, study: &str, reader: &str) -> Response {
        self.post(
            token,
            SITE,
            &format!("/studies/{study}/report"),
            serde_json::json!({ "reader": reader }),
        )
        .await
    }

    /// The demo site's worklist with `query` (e.g. `?state=all`).
    pub async fn worklist(&self, query: &str) -> serde_json::Value {
        let response = self
            .get(&self.demo.viewer, SITE, &format!("/worklist{query}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "worklist{query}");
        response.json().await.expect("worklist JSON")
    }

    /// The study UIDs of the demo worklist with `query`, in the order answered.
    pub async fn worklist_order(&self, query: &str) -> Vec<String> {
        uids(&self.worklist(query).await)
    }

    pub async fn count(&self, query: &str) -> i64 {
        let client = self.pool.get().await.expect("connection");
        client.query_one(query, &[]).await.expect("count").get(0)
    }
}

pub fn uids(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["study_instance_uid"].as_str().expect("uid").to_owned())
        .collect()
}

pub fn site_id(id: &str) -> SiteId {
    SiteId::parse(id).expect("site id")
}

pub fn minutes(count: i64) -> time::Duration {
    time::Duration::minutes(count)
}

/// Now, to the microsecond PostgreSQL keeps.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .expect("valid nanosecond")
}

/// What a test study is made of.
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub site: &'static str,
    pub study: String,
    pub urgency: Urgency,
    pub arrived_at: OffsetDateTime,
    pub body_part: &'static str,
    /// The model's probability; `None`: awaiting analysis.
    pub probability: Option<f32>,
    pub rows: u32,
    pub columns: u32,
    /// When the image was acquired, as ingest would announce it.
    pub acquired_at: Option<OffsetDateTime>,
    /// The monitoring subgroups, as ingest would announce them.
    pub patient_sex: &'static str,
    pub patient_age_years: Option<u32>,
    pub manufacturer: &'static str,
}

impl StudySpec {
    pub fn new(study: &str, urgency: Urgency, arrived_at: OffsetDateTime) -> Self {
        Self {
            site: SITE,
            study: study.to_owned(),
            urgency,
            arrived_at,
            body_part: "WRIST",
            probability: None,
            rows: 256,
            columns: 256,
            acquired_at: None,
            patient_sex: "",
            patient_age_years: None,
            manufacturer: "",
        }
    }

    /// The patient's sex and age, and the equipment, as the dataset states them.
    pub fn patient(
        mut self,
        sex: &'static str,
        age_years: u32,
        manufacturer: &'static str,
    ) -> Self {
        self.patient_sex = sex;
        self.patient_age_years = Some(age_years);
        self.manufacturer = manufacturer;
        self
    }

    pub fn acquired(mut self, at: OffsetDateTime) -> Self {
        self.acquired_at = Some(at);
        self
    }

    pub fn analysed(mut self, probability: f32) -> Self {
        self.probability = Some(probability);
        self
    }

    pub fn body_part(mut self, body_part: &'static str) -> Self {
        self.body_part = body_part;
        self
    }

    pub fn at_site(mut self, site: &'static str) -> Self {
        self.site = site;
        self
    }

    pub fn sop(&self) -> String {
        format!("{}.1.1", self.study)
    }

    pub fn object_key(&self) -> String {
        format!(
            "{}/{}/{}.1/{}.dcm",
            self.site,
            self.study,
            self.study,
            self.sop()
        )
    }

    fn instance_event(&self) -> proto::InstanceStored {
        proto::InstanceStored {
            instance: Some(proto::InstanceRef {
                site_id: self.site.into(),
                study_instance_uid: self.study.clone(),
                series_instance_uid: format!("{}.1", self.study),
                sop_instance_uid: self.sop(),
            }),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            modality: "DX".into(),
            body_part: self.body_part.into(),
            view_position: "PA".into(),
            laterality: "L".into(),
            accession_number: format!("ACC{}", self.study.replace('.', "")),
            urgency: (match self.urgency {
                Urgency::Emergency => proto::Urgency::Emergency,
                Urgency::Inpatient => proto::Urgency::Inpatient,
                Urgency::Outpatient => proto::Urgency::Outpatient,
            }) as i32,
            urgency_source: proto::UrgencySource::Dataset as i32,
            object_key: self.object_key(),
            byte_size: 1234,
            sha256: "00".repeat(32),
            received_at: Some(to_timestamp(self.arrived_at)),
            eligible: true,
            not_eligible_reason: String::new(),
            received_via: "dimse".into(),
            sender: "TEST_SCU".into(),
            expected_instances: 0,
            acquired_at: self.acquired_at.map(to_timestamp),
            patient_sex: self.patient_sex.into(),
            patient_age_years: self.patient_age_years,
            manufacturer: self.manufacturer.into(),
            manufacturer_model: String::new(),
        }
    }

    fn finding_event(&self, probability: f32) -> proto::Finding {
        let instance = self.instance_event();
        proto::Finding {
            instance: instance.instance,
            status: proto::FindingStatus::Analysed as i32,
            failure_reason: String::new(),
            failure_kind: String::new(),
            probability,
            detections: vec![proto::Detection {
                r#box: Some(DETECTION_BOX),
                class_name: "fracture".into(),
                score: probability,
            }],
            model: Some(proto::ModelIdentity {
                name: "fxtriage-demo".into(),
                version: "1.0.0".into(),
                sha256: "5e0d8f2cbd1fa3c6d0f0a8a1b3c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5".into(),
            }),
            timings: None,
            analysed_at: Some(to_timestamp(self.arrived_at + time::Duration::seconds(30))),
            image_rows: self.rows,
            image_columns: self.columns,
        }
    }
}

/// The box every analysed test image has, in pixel coordinates of a 256x256 image.
pub const DETECTION_BOX: proto::BoundingBox = proto::BoundingBox {
    x_min: 40.0,
    y_min: 60.0,
    x_max: 120.0,
    y_max: 180.0,
};

/// Puts `spec` on its site's worklist as the prioritizer would: the instance,
/// then (when analysed) its finding.
pub async fn add_study(pool: &Pool, spec: &StudySpec) {
    let instance = StoredInstance::from_proto(&spec.instance_event()).expect("a valid instance");
    apply_instance(pool, &Policy::default(), &instance)
        .await
        .expect("instance applied");
    if let Some(probability) = spec.probability {
        let finding =
            ImageFinding::from_proto(&spec.finding_event(probability)).expect("a valid finding");
        apply_finding(pool, &Policy::default(), &finding)
            .await
            .expect("finding applied");
    }
}

/// Stores a synthetic 256x256 radiograph under the spec's object key.
pub async fn store_image(store: &dyn ObjectStore, spec: &StudySpec) {
    let mut image = fxtriage_dicom::synthetic::SyntheticInstance::wrist();
    image.study_instance_uid = spec.study.clone();
    image.series_instance_uid = format!("{}.1", spec.study);
    image.sop_instance_uid = spec.sop();
    let key = ObjectKey::parse(&spec.object_key()).expect("key");
    store
        .put(&key, image.to_part10().into())
        .await
        .expect("store the image");
}

/// Waiting on a yes-or-no condition (crates/testkit).
#[allow(unused_imports)]
pub use fxtriage_testkit::until as eventually;

/// Asserts a JSON error answer with `status` and `kind`, returning the body.
pub async fn expect_error(response: Response, status: StatusCode, kind: &str) -> serde_json::Value {
    assert_eq!(response.status(), status, "{:?}", response.url().path());
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}
