//! Outages of what the distributed mode depends on, while studies flow: the
//! broker stopped for 30 s and started again with its data kept (tansu keeping
//! its topics in S3), the object store stopped for 30 s, PostgreSQL stopped for
//! 30 s, and PostgreSQL restarted with a fast shutdown.
//!
//! Each test runs a private stack of its own (`infra/local/stack` with its own
//! directory and ports), so stopping a server disturbs no other test, and the
//! three services of one site on it. 200 studies (mixed body parts and
//! urgencies, one or two images each) are sent over C-STORE, as a modality
//! does: one association per study, a study that is not stored is sent again
//! later. The tests assert that:
//! - during the outage, every service that needs the server says so on
//!   `/health/ready` (503, naming it), and C-STORE never refuses for good: what
//!   cannot be stored is refused with a retryable status (0xA7xx), or not
//!   answered in time, and sent again; STOW-RS answers 503 (with Retry-After
//!   when the broker or the object store is away) and stores nothing;
//! - afterwards every service is ready again without a restart (the same
//!   processes);
//! - every study is on the worklist exactly once, every image recorded once and
//!   analysed (none "not analysed" because of the outage), nothing is in
//!   quarantine and nothing was dead-lettered.
//!
//! At most two tests run at once (each is a whole deployment; most of a test is
//! waiting: the outage itself, the consumers rejoining their groups).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_object::InMemDicomObject;
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_dispatch::dicom_out::{self, StoreError, Stored};
use fxtriage_sites::destinations::DicomPeer;
use fxtriage_testkit::{Progress, eventually};
use support::deployment::{Deployment, Study, assert_quarantined, plan_studies};
use support::{Stack, create_token, free_loopback_port, repository_path, stack_env, stow};
use tokio::sync::Semaphore;

/// Outage tests running at once.
static SLOTS: Semaphore = Semaphore::const_new(2);

/// How long each server stays down.
const OUTAGE: Duration = Duration::from_secs(30);
const STUDIES: usize = 200;
/// The studies are sent over this long, so the outage falls in the middle of
/// the flow.
const SENDING: Duration = Duration::from_secs(40);

/// A stack of the test's own: PostgreSQL, tansu and SeaweedFS on free ports,
/// with their data in a temporary directory; purged when dropped.
struct PrivateStack {
    directory: tempfile::TempDir,
    settings: Vec<(String, String)>,
    /// The services' settings: the servers above, and the ONNX Runtime library
    /// of the local stack.
    environment: Vec<(String, String)>,
}

impl PrivateStack {
    fn up(tansu_storage: &str, local: &[(String, String)]) -> Self {
        let directory = tempfile::Builder::new()
            .prefix("fxtriage-outage-")
            .tempdir()
            .expect("tempdir");
        let settings = vec![
            (
                "FXTRIAGE_STACK_DIR".to_owned(),
                directory.path().join("stack").display().to_string(),
            ),
            (
                "FXTRIAGE_PG_PORT".to_owned(),
                free_loopback_port().to_string(),
            ),
            (
                "FXTRIAGE_KAFKA_PORT".to_owned(),
                free_loopback_port().to_string(),
            ),
            ("FXTRIAGE_S3_PORT".to_owned(), free_s3_port().to_string()),
            (
                "FXTRIAGE_TANSU_STORAGE".to_owned(),
                tansu_storage.to_owned(),
            ),
            (
                "FXTRIAGE_STACK_SKIP".to_owned(),
                "onnxruntime,samples,hl7apy,medplum,benchpy".to_owned(),
            ),
        ];
        let mut stack = Self {
            directory,
            settings,
            environment: Vec::new(),
        };
        let printed = stack.run(&["up"]);
        let mut environment: Vec<(String, String)> = printed
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .filter(|(name, _)| {
                name.starts_with("FXTRIAGE_KAFKA")
                    || name.starts_with("FXTRIAGE_S3")
                    || name == "FXTRIAGE_DATABASE_URL"
            })
            .collect();
        assert_eq!(
            environment.len(),
            7,
            "the private stack's settings: {printed}"
        );
        environment.extend(
            local
                .iter()
                .filter(|(name, _)| name == "ORT_DYLIB_PATH")
                .cloned(),
        );
        stack.environment = environment;
        stack
    }

    /// Runs `infra/local/stack ARGS` on this stack; returns its standard output.
    fn run(&self, arguments: &[&str]) -> String {
        let output = Command::new(repository_path("infra/local/stack"))
            .args(arguments)
            .envs(self.settings.iter().map(|(name, value)| (name, value)))
            .output()
            .expect("run infra/local/stack");
        assert!(
            output.status.success(),
            "infra/local/stack {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn log(&self, server: &str) -> PathBuf {
        self.directory
            .path()
            .join("stack")
            .join(format!("{server}.log"))
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = Command::new(repository_path("infra/local/stack"))
            .args(["down", "--purge"])
            .envs(self.settings.iter().map(|(name, value)| (name, value)))
            .output();
    }
}

/// A port P for SeaweedFS's S3 API such that P..=P+7 and P+10000..=P+10004
/// (its other listeners) are all free.
fn free_s3_port() -> u16 {
    // Each call starts elsewhere, so tests running at once do not pick the same
    // range before either has bound it.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = (std::process::id() % 100) as u16 * 20 + call * 2_000;
    (0..400u16)
        .map(|step| 20_000 + (start + step * 20) % 8_000)
        .find(|&port| {
            (port..=port + 7)
                .chain(port + 10_000..=port + 10_004)
                .all(free)
        })
        .expect("a free range of ports for SeaweedFS")
}

/// What the sender saw.
#[derive(Debug, Default)]
struct SendLog {
    /// Studies stored, each image acknowledged.
    stored: usize,
    /// Attempts that failed in a way worth retrying, with why.
    retried: Vec<String>,
    /// Attempts refused for good (must stay empty).
    refused: Vec<String>,
}

/// Sends each study over its own association, at an even pace over `SENDING`,
/// and sends a study again (after a second) until every image is stored.
async fn send(peer: DicomPeer, studies: Vec<Vec<InMemDicomObject>>, log: Arc<Mutex<SendLog>>) {
    let interval = SENDING / studies.len().max(1) as u32;
    let associations = Arc::new(Semaphore::new(8));
    let peer = Arc::new(peer);
    let started = tokio::time::Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for (index, datasets) in studies.into_iter().enumerate() {
        tokio::time::sleep_until(started + interval * index as u32).await;
        let (peer, log, associations) = (
            Arc::clone(&peer),
            Arc::clone(&log),
            Arc::clone(&associations),
        );
        senders.spawn(async move {
            loop {
                let permit = associations.acquire().await.expect("semaphore");
                let result = dicom_out::store_all(&peer, &datasets, |_, _: Stored| {}).await;
                drop(permit);
                {
                    let mut log = log.lock().expect("send log");
                    match result {
                        Ok(()) => {
                            log.stored += 1;
                            return;
                        }
                        Err(StoreError::Retry(why)) => log.retried.push(why),
                        Err(StoreError::Refused(why)) => {
                            log.refused.push(why);
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    while let Some(joined) = senders.join_next().await {
        joined.expect("a sender task");
    }
}

/// Waits until `/health/ready` of `service` answers 503 naming `dependency`.
async fn reports_unavailable(deployment: &Deployment, service: &str, dependency: &str) {
    let url = format!("http://{}/health/ready", deployment.health_address(service));
    let expected = format!("{dependency} unavailable");
    eventually(
        &format!("{service} to report {expected}"),
        Duration::from_secs(25),
        || async {
            match reqwest::get(&url).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    if status == 503 && body.contains(&expected) {
                        Progress::Done(())
                    } else {
                        Progress::NotYet(format!("{status}: {body}"))
                    }
                }
                Err(error) => Progress::NotYet(error.to_string()),
            }
        },
    )
    .await;
}

/// How the server goes away.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Stopped for [`OUTAGE`], then started again on the same data.
    Stopped,
    /// PostgreSQL's fast shutdown, then started again at once.
    FastRestart,
}

/// 200 studies flow while `server` of a private stack goes away as `outage`
/// says; `affected` are the services whose readiness must name `dependency`
/// meanwhile; `refusals_expected`: whether C-STORE must have refused (or not
/// answered) some attempt, as it must when it cannot store or announce.
async fn studies_flow_through(
    prefix: &str,
    server: &str,
    outage: Outage,
    tansu_storage: &str,
    dependency: &str,
    affected: &[&str],
    refusals_expected: bool,
) {
    let Some(local) = stack_env() else {
        return;
    };
    let _slot = SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let private = PrivateStack::up(tansu_storage, &local);
    let stack = Stack::start_on(prefix, private.environment.clone()).await;
    let mut deployment = Deployment::start_with(stack).await;

    let plan = plan_studies(STUDIES);
    let studies: Vec<Study> = plan.iter().map(|(study, _)| study.clone()).collect();
    let datasets: Vec<Vec<InMemDicomObject>> = plan
        .iter()
        .map(|(_, instances)| {
            instances
                .iter()
                .map(|instance| instance.dataset())
                .collect()
        })
        .collect();
    let peer = DicomPeer {
        name: "outage-test".into(),
        // The site is known by the AE title it is called by.
        ae_title: deployment.ae_title.clone(),
        host: "127.0.0.1".into(),
        port: deployment.dimse_port,
        calling_ae_title: "OUTAGESENDER".into(),
        objects: Vec::new(),
    };
    let log = Arc::new(Mutex::new(SendLog::default()));
    let sender = tokio::spawn(send(peer, datasets, Arc::clone(&log)));

    // The outage starts once the flow has: a tenth of the studies stored.
    eventually(
        "the first studies to be stored",
        Duration::from_secs(120),
        || async {
            let stored = log.lock().expect("send log").stored;
            if stored >= STUDIES / 10 {
                Progress::Done(())
            } else {
                Progress::NotYet(format!("{stored} studies stored"))
            }
        },
    )
    .await;
    let stored_before = log.lock().expect("send log").stored;
    let stow_token = create_token(
        &deployment.stack.setting("FXTRIAGE_DATABASE_URL"),
        &["--site", &deployment.site, "--role", "sender"],
    );
    let mut refused_stow = None;
    private.run(&["stop", server]);
    let stopped_at = tokio::time::Instant::now();
    eprintln!("{server} stopped ({outage:?}) after {stored_before} studies were stored");
    match outage {
        Outage::Stopped => {
            for service in affected {
                reports_unavailable(&deployment, service, dependency).await;
            }
            // STOW-RS refuses with a retryable status too: what it cannot
            // store or announce (the broker or the object store away), or
            // whose sender it cannot check (the database away).
            let stow_url = format!(
                "http://{}/dicomweb/sites/{}/studies",
                deployment.health_address("ingest"),
                deployment.site
            );
            let refused_study = new_uid();
            let (status, retry_after) = stow(
                &stow_url,
                &stow_token,
                &SyntheticInstance {
                    study_instance_uid: refused_study.clone(),
                    series_instance_uid: format!("{refused_study}.1"),
                    sop_instance_uid: format!("{refused_study}.1.1"),
                    ..SyntheticInstance::wrist()
                }
                .to_part10(),
            )
            .await;
            assert_eq!(status, 503, "STOW-RS while {server} is down");
            if refusals_expected {
                assert!(retry_after.is_some(), "503 with Retry-After");
            }
            refused_stow = Some(refused_study);
            // The outage lasts its whole length, whatever the checks took.
            tokio::time::sleep_until(stopped_at + OUTAGE).await;
        }
        Outage::FastRestart => {}
    }
    private.run(&["start", server]);
    eprintln!(
        "{server} started again after {:.1} s",
        stopped_at.elapsed().as_secs_f64()
    );

    // Ready again without a restart: the same processes answer.
    for (name, (service, port)) in deployment.services.iter_mut() {
        assert!(
            service.child.try_wait().is_none(),
            "{name} exited during the outage:\n{}",
            service.log_tail()
        );
        support::wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
    }

    tokio::time::timeout(Duration::from_secs(300), sender)
        .await
        .expect("every study sent within 300 s")
        .expect("the sender");
    {
        let log = log.lock().expect("send log");
        eprintln!(
            "sender: {} studies stored, {} attempts to retry; first: {:?}",
            log.stored,
            log.retried.len(),
            log.retried.first()
        );
        assert!(
            log.refused.is_empty(),
            "refused for good during an outage: {:?}",
            log.refused
        );
        assert_eq!(log.stored, STUDIES, "every study stored in the end");
        if refusals_expected {
            assert!(
                !log.retried.is_empty(),
                "C-STORE accepted everything while {server} was down"
            );
            assert!(
                log.retried
                    .iter()
                    .all(|why| why.contains("(status 0xA7") || !why.contains("status 0x")),
                "a refusal with a status that is not 'out of resources': {:?}",
                log.retried
            );
        }
    }

    let client = deployment.stack.client().await;
    deployment.settled_once(&client, &studies).await;
    // With each image's findings (kind and reason of a failure), to tell why.
    let not_analysed: Vec<(String, String, String)> = client
        .query(
            "SELECT i.sop_instance_uid, i.analysis, \
                 COALESCE(string_agg(f.status || ' ' || f.failure_kind || ': ' \
                     || f.failure_reason, '; '), 'no finding') \
             FROM instances i LEFT JOIN findings f \
                 ON f.site_id = i.site_id AND f.sop_instance_uid = i.sop_instance_uid \
             WHERE i.site_id = $1 AND i.eligible AND i.analysis <> 'analysed' \
             GROUP BY i.sop_instance_uid, i.analysis",
            &[&deployment.site],
        )
        .await
        .expect("query")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert!(
        not_analysed.is_empty(),
        "eligible images not analysed after the outage: {not_analysed:?}\n{}",
        deployment.logs()
    );
    assert_quarantined(&deployment, 0).await;
    if let Some(refused) = &refused_stow {
        let recorded: i64 = client
            .query_one(
                "SELECT count(*) FROM instances WHERE study_instance_uid = $1",
                &[refused],
            )
            .await
            .expect("query")
            .get(0);
        assert_eq!(recorded, 0, "the study STOW-RS refused was not stored");
    }
    deployment.check_topics(&client, &[]).await;
    eprintln!(
        "{server} outage: all {STUDIES} studies listed once (server log: {})",
        private.log(server).display()
    );
    drop(client);
    deployment.stop().await;
    drop(private);
}

/// The broker comes back at the same address with its data. This test caught
/// consumers that took many minutes to resume: the services paused after each
/// error a consumer returned, and the outage had queued hundreds of them ahead
/// of the new partition assignment (`fxtriage_bus`, `KafkaConsumer::next`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_for_30_s_loses_nothing() {
    studies_flow_through(
        "outbroker",
        "tansu",
        Outage::Stopped,
        "s3",
        "bus",
        &["ingest", "inference", "prioritizer"],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_store_stopped_for_30_s_loses_nothing() {
    studies_flow_through(
        "outstore",
        "seaweedfs",
        Outage::Stopped,
        "memory",
        "object-store",
        &["ingest", "inference"],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_for_30_s_loses_nothing() {
    studies_flow_through(
        "outdb",
        "postgres",
        Outage::Stopped,
        "memory",
        "database",
        &["prioritizer"],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_with_a_fast_shutdown_loses_nothing() {
    studies_flow_through(
        "outdbfast",
        "postgres",
        Outage::FastRestart,
        "memory",
        "database",
        &["prioritizer"],
        false,
    )
    .await;
}
