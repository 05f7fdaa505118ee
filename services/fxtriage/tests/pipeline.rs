//! The distributed mode end to end: ingest, inference and the prioritizer as
//! separate processes of the built binary, over the real broker, object store and
//! database of the local stack, each test in a namespace and database of its own.
//! Studies sent by C-STORE (dcmtk's dcmsend) reach the site's worklist exactly
//! once each, analysed, in policy order; invalid ones end in quarantine; what a
//! consumer of the worklist topic sees has every change once in effect and in
//! order; a poison message on the instances and on the findings topic is
//! dead-lettered once by each of its consumers while the rest flows; nothing
//! else is dead-lettered.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fxtriage_bus::{Bus, Record};
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_proto::topics;
use fxtriage_testkit::{Progress, poll_until};
use support::changes::{self, FinalStudy};
use support::{
    Service, Stack, dcmsend, dcmsend_all, dead_letters_counted, describe_dead_letters,
    free_loopback_port, object_keys, read_topics, repository_path, wait_for_status,
};

/// How long the studies of a test may take to settle once sent, on a busy
/// 2-core machine (a settled run takes a small part of it).
const SETTLE: Duration = Duration::from_secs(420);

struct Study {
    uid: String,
    eligible: bool,
    emergency: bool,
    images: usize,
}

/// Writes `count` studies of one or two images each, of several body parts and
/// urgencies, plus two invalid instances (a malformed study UID) when `invalid`.
fn write_studies(directory: &Path, count: usize, invalid: bool) -> Vec<Study> {
    std::fs::create_dir_all(directory).expect("mkdir");
    let body_parts = ["WRIST", "ANKLE", "HAND", "CHEST", "HIP"];
    let priorities = ["STAT", "ROUTINE", "", "HIGH"];
    let mut studies = Vec::new();
    for index in 0..count {
        let study = new_uid();
        let body_part = body_parts[index % body_parts.len()];
        let priority = priorities[index % priorities.len()];
        let images = 1 + index % 2;
        for image in 0..images {
            let instance = SyntheticInstance {
                study_instance_uid: study.clone(),
                series_instance_uid: format!("{study}.1"),
                sop_instance_uid: format!("{study}.1.{}", image + 1),
                body_part: body_part.into(),
                requested_priority: priority.into(),
                accession_number: format!("E2E{index:04}"),
                ..SyntheticInstance::wrist()
            };
            std::fs::write(
                directory.join(format!("{index:03}-{image}.dcm")),
                instance.to_part10(),
            )
            .expect("write");
        }
        studies.push(Study {
            uid: study,
            eligible: body_part != "CHEST",
            emergency: priority == "STAT",
            images,
        });
    }
    if invalid {
        for number in 0..2 {
            let instance = SyntheticInstance {
                study_instance_uid: format!("1.2.0{number}.bad"),
                ..SyntheticInstance::wrist()
            };
            std::fs::write(
                directory.join(format!("invalid-{number}.dcm")),
                instance.to_part10(),
            )
            .expect("write");
        }
    }
    studies
}

/// The three services of the distributed mode for one site, each restartable.
struct Deployment {
    stack: Stack,
    site: String,
    ae_title: String,
    directory: tempfile::TempDir,
    sites_file: PathBuf,
    dimse_port: u16,
    services: BTreeMap<&'static str, (Service, u16)>,
    starts: usize,
}

impl Deployment {
    async fn start(prefix: &str) -> Option<Self> {
        let stack = Stack::start(prefix).await?;
        // FXTRIAGE_TEST_KEEP_LOGS keeps the services' logs after the test, to diagnose.
        let directory = tempfile::Builder::new()
            .prefix("fxtriage-e2e-")
            .disable_cleanup(std::env::var_os("FXTRIAGE_TEST_KEEP_LOGS").is_some())
            .tempdir()
            .expect("tempdir");
        // The bucket is shared by every run: the site (and so its quarantine
        // prefix) is the namespace's unique name.
        let site = stack.namespace.name().to_owned();
        let ae_title: String = format!("{prefix}{}", &site[site.len() - 6..])
            .to_uppercase()
            .replace('-', "");
        stack.add_site(&site).await;
        let sites_file = directory.path().join("sites.toml");
        std::fs::write(
            &sites_file,
            format!("[[site]]\nid = \"{site}\"\nae_titles = [\"{ae_title}\"]\n"),
        )
        .expect("sites file");
        let mut deployment = Self {
            stack,
            site,
            ae_title,
            directory,
            sites_file,
            dimse_port: free_loopback_port(),
            services: BTreeMap::new(),
            starts: 0,
        };
        // The prioritizer first, so its group exists before anything is announced.
        for name in ["prioritizer", "inference", "ingest"] {
            deployment.start_service(name).await;
        }
        Some(deployment)
    }

    fn arguments(&self, name: &str, port: u16) -> Vec<String> {
        let health = format!("127.0.0.1:{port}");
        match name {
            "prioritizer" => vec!["prioritizer".into(), "--health-address".into(), health],
            "inference" => vec![
                "inference".into(),
                "--model".into(),
                repository_path("models/testdata/heatmap")
                    .display()
                    .to_string(),
                "--health-address".into(),
                health,
            ],
            _ => vec![
                "ingest".into(),
                "--sites".into(),
                self.sites_file.display().to_string(),
                "--dimse-address".into(),
                format!("127.0.0.1:{}", self.dimse_port),
                "--http-address".into(),
                health,
            ],
        }
    }

    async fn start_service(&mut self, name: &'static str) {
        let port = free_loopback_port();
        self.starts += 1;
        let service = Service::start(
            &format!("{name}-{}", self.starts),
            &self.arguments(name, port),
            &self.stack.environment,
            self.directory.path(),
        );
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
        self.services.insert(name, (service, port));
    }

    /// SIGKILL, as a crash, then start again.
    async fn crash_and_restart(&mut self, name: &'static str) {
        if let Some((service, _)) = self.services.remove(name) {
            service.kill();
        }
        self.start_service(name).await;
    }

    fn health_address(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.services[name].1)
    }

    fn logs(&self) -> String {
        self.services
            .values()
            .map(|(service, _)| format!("{}:\n{}\n", service.name, service.log_tail()))
            .collect()
    }

    async fn stop(mut self) {
        for name in ["ingest", "inference", "prioritizer"] {
            if let Some((service, _)) = self.services.remove(name) {
                service.stop().await;
            }
        }
        self.stack.finish().await;
    }

    /// (studies listed, images recorded, findings recorded, studies awaiting analysis).
    async fn progress(&self, client: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM studies WHERE site_id = $1), \
                        (SELECT count(*) FROM instances WHERE site_id = $1), \
                        (SELECT count(*) FROM findings WHERE site_id = $1), \
                        (SELECT count(*) FROM studies WHERE site_id = $1 \
                           AND ai_result = 'awaiting-analysis')",
                &[&self.site],
            )
            .await
            .expect("progress");
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    /// Waits until every one of `studies` is on the worklist with its AI result,
    /// and returns the rows in reading order; on a timeout, fails with where each
    /// missing study is.
    async fn settled(
        &self,
        client: &tokio_postgres::Client,
        studies: &[Study],
    ) -> Vec<tokio_postgres::Row> {
        let outcome = poll_until(SETTLE, || async {
            let rows = client
                .query(
                    "SELECT study_instance_uid, urgency, ai_result FROM studies WHERE site_id = $1 \
                     ORDER BY deadline, arrived_at, study_instance_uid",
                    &[&self.site],
                )
                .await
                .expect("query");
            let awaiting = rows
                .iter()
                .filter(|row| row.get::<_, String>(2) == "awaiting-analysis")
                .count();
            // A study may be classed before all its images are (one suspected
            // image suffices): wait for every image's finding too.
            let images_awaiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM instances WHERE site_id = $1 AND analysis = 'awaiting'",
                    &[&self.site],
                )
                .await
                .expect("count")
                .get(0);
            if rows.len() == studies.len() && awaiting == 0 && images_awaiting == 0 {
                Progress::Done(rows)
            } else {
                Progress::NotYet(format!(
                    "{} of {} studies listed, {awaiting} awaiting analysis, {images_awaiting} images without a finding",
                    rows.len(),
                    studies.len()
                ))
            }
        })
        .await;
        match outcome {
            Ok(rows) => rows,
            Err(state) => {
                let diagnosis = self.diagnose(client, studies).await;
                panic!(
                    "not settled after {} s: {state}\n{diagnosis}\n{}",
                    SETTLE.as_secs(),
                    self.logs()
                )
            }
        }
    }

    /// Where each study that is not settled is: stored, quarantined,
    /// dead-lettered, recorded without a finding.
    async fn diagnose(&self, client: &tokio_postgres::Client, studies: &[Study]) -> String {
        let store = self.stack.s3().await;
        let quarantined = object_keys(&store, &format!("quarantine/{}/", self.site)).await;
        let bus = self.stack.kafka().await;
        let dead_letters = read_topics(
            &bus,
            &self.stack.namespace,
            &self.stack.namespace.dead_letter_topics(),
            Duration::from_secs(3),
        )
        .await;
        let mut report = format!(
            "quarantine: {} objects; dead letters: {:?}\n",
            quarantined.len(),
            describe_dead_letters(&dead_letters)
        );
        for study in studies {
            let listed = client
                .query_opt(
                    "SELECT ai_result FROM studies WHERE site_id = $1 AND study_instance_uid = $2",
                    &[&self.site, &study.uid],
                )
                .await
                .expect("study");
            let ai_result: Option<String> = listed.map(|row| row.get(0));
            if ai_result
                .as_deref()
                .is_some_and(|result| result != "awaiting-analysis")
            {
                continue;
            }
            let images = client
                .query(
                    "SELECT i.sop_instance_uid, i.analysis, count(f.sop_instance_uid) \
                     FROM instances i LEFT JOIN findings f \
                       ON f.site_id = i.site_id AND f.sop_instance_uid = i.sop_instance_uid \
                     WHERE i.site_id = $1 AND i.study_instance_uid = $2 \
                     GROUP BY i.sop_instance_uid, i.analysis",
                    &[&self.site, &study.uid],
                )
                .await
                .expect("images");
            let stored = object_keys(&store, &format!("{}/{}/", self.site, study.uid)).await;
            let dead: Vec<String> = describe_dead_letters(&dead_letters)
                .into_iter()
                .filter(|line| line.contains(&study.uid))
                .collect();
            let recorded: Vec<String> = images
                .iter()
                .map(|row| {
                    format!(
                        "{} {} with {} findings",
                        row.get::<_, String>(0),
                        row.get::<_, String>(1),
                        row.get::<_, i64>(2)
                    )
                })
                .collect();
            report.push_str(&format!(
                "study {}: worklist {:?}; {} of {} images stored; recorded: {recorded:?}; dead letters: {dead:?}\n",
                study.uid,
                ai_result.as_deref().unwrap_or("not listed"),
                stored.len(),
                study.images
            ));
        }
        report
    }

    /// Asserts what a consumer of the worklist topic sees (see support::changes)
    /// and that every dead letter in the namespace is one of `poison` keys.
    async fn check_topics(&self, client: &tokio_postgres::Client, poison: &[&str]) {
        let bus = self.stack.kafka().await;
        let namespace = &self.stack.namespace;
        let final_studies: BTreeMap<String, FinalStudy> =
            changes::final_studies(client, &self.site).await;
        let worklist = read_topics(
            &bus,
            namespace,
            &[namespace.worklist_topic()],
            Duration::from_secs(5),
        )
        .await;
        match changes::check(&worklist, &self.site, &final_studies) {
            Ok(seen) => eprintln!(
                "worklist topic: {} changes, {} exact repeats",
                seen.messages, seen.repeats
            ),
            Err(problems) => panic!(
                "the worklist topic is wrong for a consumer:\n{}",
                problems.join("\n")
            ),
        }
        let dead_letters = read_topics(
            &bus,
            namespace,
            &namespace.dead_letter_topics(),
            Duration::from_secs(3),
        )
        .await;
        let unexpected: Vec<String> = describe_dead_letters(&dead_letters)
            .into_iter()
            .zip(&dead_letters)
            .filter(|(_, message)| !poison.contains(&message.key_text().as_str()))
            .map(|(line, _)| line)
            .collect();
        assert!(
            unexpected.is_empty(),
            "dead letters the test did not cause: {unexpected:?}"
        );
    }
}

fn expected_images(studies: &[Study]) -> i64 {
    studies.iter().map(|study| study.images as i64).sum()
}

fn assert_listed_once_in_policy_order(rows: &[tokio_postgres::Row], studies: &[Study]) {
    let on_worklist: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    let unique: BTreeSet<&String> = on_worklist.iter().collect();
    assert_eq!(unique.len(), on_worklist.len(), "each study once");
    let expected: BTreeSet<&String> = studies.iter().map(|study| &study.uid).collect();
    assert_eq!(unique, expected, "every accepted study, and nothing else");
    for study in studies {
        let row = rows
            .iter()
            .find(|row| row.get::<_, String>(0) == study.uid)
            .expect("row");
        let (urgency, ai_result): (String, String) = (row.get(1), row.get(2));
        if study.emergency {
            assert_eq!(urgency, "emergency", "STAT orders are emergencies");
        }
        if study.eligible {
            assert!(
                ["suspected", "possible", "no-finding"].contains(&ai_result.as_str()),
                "{}: {ai_result}",
                study.uid
            );
        } else {
            assert_eq!(
                ai_result, "not-analysed",
                "a chest radiograph is not analysed"
            );
        }
    }
    let first = rows.first().expect("a first study");
    assert_eq!(
        first.get::<_, String>(1),
        "emergency",
        "an emergency study is read first"
    );
}

async fn assert_quarantined(deployment: &Deployment, expected: usize) {
    let store = deployment.stack.s3().await;
    let quarantined = object_keys(&store, &format!("quarantine/{}/", deployment.site)).await;
    let records = quarantined
        .iter()
        .filter(|key| key.ends_with(".json"))
        .count();
    assert_eq!(
        records, expected,
        "the invalid instances are quarantined, once each: {quarantined:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studies_sent_by_c_store_reach_the_worklist_once_each_in_policy_order() {
    let Some(deployment) = Deployment::start("e2e").await else {
        return;
    };
    let client = deployment.stack.client().await;
    // A poison message on the instances topic and one on the findings topic:
    // each consumer dead-letters it (kind malformed-message) once and moves on.
    let poison = "poison-e2e";
    let findings_poison = "poison-e2e-finding";
    let kafka = deployment.stack.kafka().await;
    for (topic, key) in [
        (deployment.stack.namespace.instances_topic(), poison),
        (deployment.stack.namespace.findings_topic(), findings_poison),
    ] {
        kafka
            .produce(&topic, Record::new(key, b"\xff\xffnot a message".to_vec()))
            .await
            .expect("produce the poison message");
    }

    let inputs = deployment.directory.path().join("studies");
    let studies = write_studies(&inputs, 20, true);
    dcmsend_all(&deployment.ae_title, deployment.dimse_port, &inputs).await;

    let rows = deployment.settled(&client, &studies).await;
    assert_listed_once_in_policy_order(&rows, &studies);
    let images: i64 = client
        .query_one(
            "SELECT count(*) FROM instances WHERE site_id = $1",
            &[&deployment.site],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        images,
        expected_images(&studies),
        "each image recorded once"
    );
    assert_quarantined(&deployment, 2).await;
    deployment
        .check_topics(&client, &[poison, findings_poison])
        .await;

    // Each consumer counted each poison message of its topics once, and no
    // service counted any other dead letter.
    let instances_topic = deployment.stack.namespace.instances_topic();
    let findings_topic = deployment.stack.namespace.findings_topic();
    let malformed = |topic: &String| ((topic.clone(), "malformed-message".to_owned()), 1.0);
    let counted = dead_letters_counted(&deployment.health_address("inference")).await;
    assert_eq!(
        counted,
        BTreeMap::from([malformed(&instances_topic)]),
        "dead letters counted by inference"
    );
    let counted = dead_letters_counted(&deployment.health_address("prioritizer")).await;
    assert_eq!(
        counted,
        BTreeMap::from([malformed(&instances_topic), malformed(&findings_topic)]),
        "dead letters counted by the prioritizer"
    );
    let counted = dead_letters_counted(&deployment.health_address("ingest")).await;
    assert!(counted.is_empty(), "ingest dead-lettered {counted:?}");
    let dead_lettered = read_topics(
        &deployment.stack.kafka().await,
        &deployment.stack.namespace,
        &[topics::dead_letter_topic(&instances_topic)],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        dead_lettered.len(),
        2,
        "the poison message is dead-lettered once by each consumer group: {:?}",
        describe_dead_letters(&dead_lettered)
    );
    let dead_lettered = read_topics(
        &kafka,
        &deployment.stack.namespace,
        &[topics::dead_letter_topic(&findings_topic)],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        dead_lettered.len(),
        1,
        "the poisoned finding is dead-lettered once, by the prioritizer: {:?}",
        describe_dead_letters(&dead_lettered)
    );
    deployment.stop().await;
}

/// Batches of new studies written on demand, each in a directory of its own.
struct Workload {
    root: PathBuf,
    studies: Vec<Study>,
    written: usize,
}

/// One batch: its studies' UIDs, its images and how many of them are eligible.
struct Batch {
    directory: PathBuf,
    uids: Vec<String>,
    images: i64,
    eligible_images: i64,
}

impl Workload {
    fn next_batch(&mut self, count: usize) -> Batch {
        let directory = self.root.join(format!("batch-{}", self.written));
        self.written += 1;
        let studies = write_studies(&directory, count, false);
        let batch = Batch {
            directory,
            uids: studies.iter().map(|study| study.uid.clone()).collect(),
            images: expected_images(&studies),
            eligible_images: studies
                .iter()
                .filter(|study| study.eligible)
                .map(|study| study.images as i64)
                .sum(),
        };
        self.studies.extend(studies);
        batch
    }
}

/// Where a batch is, as the database shows it.
#[derive(Debug)]
struct BatchProgress {
    recorded: i64,
    eligible_recorded: i64,
    eligible_done: i64,
}

async fn batch_progress(
    client: &tokio_postgres::Client,
    site: &str,
    batch: &Batch,
) -> BatchProgress {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE eligible), \
                    count(*) FILTER (WHERE eligible AND analysis <> 'awaiting') \
             FROM instances WHERE site_id = $1 AND study_instance_uid = ANY($2)",
            &[&site, &batch.uids],
        )
        .await
        .expect("batch progress");
    BatchProgress {
        recorded: row.get(0),
        eligible_recorded: row.get(1),
        eligible_done: row.get(2),
    }
}

/// What the service about to be killed is doing with a batch.
enum Work {
    NotStarted,
    InFlight(String),
    Finished,
}

/// Whether `name` has work of `batch` observably in flight.
fn work_of(name: &str, progress: &BatchProgress, batch: &Batch, sender_running: bool) -> Work {
    let state = format!(
        "{progress:?} of {} images ({} eligible); sender running: {sender_running}",
        batch.images, batch.eligible_images
    );
    match name {
        // Images recorded, some of them still waiting for a finding to apply.
        "prioritizer"
            if progress.recorded > 0 && progress.eligible_done < batch.eligible_images =>
        {
            Work::InFlight(state)
        }
        "prioritizer" if progress.eligible_done == batch.eligible_images => Work::Finished,
        // Findings arriving, and recorded eligible images still without one.
        "inference"
            if progress.eligible_done > 0
                && progress.eligible_done < progress.eligible_recorded =>
        {
            Work::InFlight(state)
        }
        "inference" if progress.eligible_done == batch.eligible_images => Work::Finished,
        // Images arriving while the sender is still in its association.
        "ingest" if progress.recorded > 0 && sender_running => Work::InFlight(state),
        "ingest" if !sender_running => Work::Finished,
        _ => Work::NotStarted,
    }
}

/// Sends new batches of 50 studies until `name` is caught with work of one
/// observably in flight, SIGKILLs it then, restarts it, and sends that batch
/// again, as a modality whose association broke would.
async fn kill_mid_batch(
    deployment: &mut Deployment,
    workload: &mut Workload,
    client: &tokio_postgres::Client,
    name: &'static str,
) {
    for attempt in 1..=4 {
        let batch = workload.next_batch(50);
        let mut sender = dcmsend(
            &deployment.ae_title,
            deployment.dimse_port,
            &batch.directory,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let killed = loop {
            let sender_running = sender.try_wait().is_none();
            let progress = batch_progress(client, &deployment.site, &batch).await;
            match work_of(name, &progress, &batch, sender_running) {
                Work::InFlight(state) => {
                    eprintln!("killing {name} (attempt {attempt}) with work in flight: {state}");
                    deployment.crash_and_restart(name).await;
                    break true;
                }
                Work::Finished => {
                    eprintln!(
                        "{name}: batch {attempt} finished before work was seen in flight: {progress:?}"
                    );
                    break false;
                }
                Work::NotStarted => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: no progress on a batch within 180 s: {progress:?}\n{}",
                deployment.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _interrupted_or_done = sender.wait_for(Duration::from_secs(300)).await;
        dcmsend_all(
            &deployment.ae_title,
            deployment.dimse_port,
            &batch.directory,
        )
        .await;
        if killed {
            return;
        }
    }
    panic!("{name} was never caught with work in flight in four batches");
}

/// At least 200 studies (and two invalid instances) while each service is
/// SIGKILLed once with work observably in flight, and restarted; each batch is
/// sent again after its kill. Every study and image ends on the worklist exactly
/// once, in policy order, the invalid instances in quarantine once each, and a
/// consumer of the worklist topic sees every study's changes in order with no
/// change lost and no effect twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_duplicated_when_each_service_is_killed_mid_run() {
    let Some(mut deployment) = Deployment::start("e2e-kill").await else {
        return;
    };
    let client = deployment.stack.client().await;
    let mut workload = Workload {
        root: deployment.directory.path().join("batches"),
        studies: Vec::new(),
        written: 0,
    };
    for name in ["prioritizer", "inference", "ingest"] {
        kill_mid_batch(&mut deployment, &mut workload, &client, name).await;
    }
    let last = workload.next_batch(50);
    dcmsend_all(&deployment.ae_title, deployment.dimse_port, &last.directory).await;
    let invalid = deployment.directory.path().join("invalid");
    write_studies(&invalid, 0, true);
    dcmsend_all(&deployment.ae_title, deployment.dimse_port, &invalid).await;

    let studies = &workload.studies;
    assert!(studies.len() >= 200, "{} studies", studies.len());
    let rows = deployment.settled(&client, studies).await;
    assert_listed_once_in_policy_order(&rows, studies);
    let (_, images, _, _) = deployment.progress(&client).await;
    assert_eq!(images, expected_images(studies), "each image recorded once");
    let missing_findings: i64 = client
        .query_one(
            "SELECT count(*) FROM instances i WHERE i.site_id = $1 AND i.eligible \
               AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.site_id = i.site_id \
                                AND f.sop_instance_uid = i.sop_instance_uid)",
            &[&deployment.site],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(missing_findings, 0, "every eligible image has its finding");
    assert_quarantined(&deployment, 2).await;
    deployment.check_topics(&client, &[]).await;
    deployment.stop().await;
}
