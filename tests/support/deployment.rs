//! The distributed mode's three services (ingest, inference, the prioritizer)
//! as processes of the built binary for one site, the studies sent to them, and
//! what the worklist must show afterwards: shared by the end-to-end tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_testkit::{Progress, poll_until};

use super::changes::{self, FinalStudy};
use super::{
    Service, Stack, describe_dead_letters, free_loopback_port, object_keys, read_topics,
    repository_path, wait_for_status,
};

/// How long the studies of a test may take to settle once sent, on a busy
/// 2-core machine (a settled run takes a small part of it).
pub const SETTLE: Duration = Duration::from_secs(420);

#[derive(Debug, Clone)]
pub struct Study {
    pub uid: String,
    pub eligible: bool,
    pub emergency: bool,
    pub images: usize,
}

/// `count` new studies of one or two images each, of several body parts and
/// urgencies, with their instances.
pub fn plan_studies(count: usize) -> Vec<(Study, Vec<SyntheticInstance>)> {
    let body_parts = ["WRIST", "ANKLE", "HAND", "CHEST", "HIP"];
    let priorities = ["STAT", "ROUTINE", "", "HIGH"];
    (0..count)
        .map(|index| {
            let study = new_uid();
            let body_part = body_parts[index % body_parts.len()];
            let priority = priorities[index % priorities.len()];
            let images = 1 + index % 2;
            let instances = (0..images)
                .map(|image| SyntheticInstance {
                    study_instance_uid: study.clone(),
                    series_instance_uid: format!("{study}.1"),
                    sop_instance_uid: format!("{study}.1.{}", image + 1),
                    body_part: body_part.into(),
                    requested_priority: priority.into(),
                    accession_number: format!("E2E{index:04}"),
                    ..SyntheticInstance::wrist()
                })
                .collect();
            let study = Study {
                uid: study,
                eligible: body_part != "CHEST",
                emergency: priority == "STAT",
                images,
            };
            (study, instances)
        })
        .collect()
}

/// Writes `count` studies (see [`plan_studies`]) as files, plus two invalid
/// instances (a malformed study UID) when `invalid`.
pub fn write_studies(directory: &Path, count: usize, invalid: bool) -> Vec<Study> {
    std::fs::create_dir_all(directory).expect("mkdir");
    let mut studies = Vec::new();
    for (index, (study, instances)) in plan_studies(count).into_iter().enumerate() {
        for (image, instance) in instances.iter().enumerate() {
            std::fs::write(
                directory.join(format!("{index:03}-{image}.dcm")),
                instance.to_part10(),
            )
            .expect("write");
        }
        studies.push(study);
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
pub struct Deployment {
    pub stack: Stack,
    pub site: String,
    pub ae_title: String,
    pub directory: tempfile::TempDir,
    sites_file: PathBuf,
    pub dimse_port: u16,
    pub services: BTreeMap<&'static str, (Service, u16)>,
    starts: usize,
    /// Runs the services from this image (podman) instead of the built binary.
    image: Option<String>,
}

impl Deployment {
    /// The three services on the local stack, in a namespace and database of
    /// their own; `None` when the test is skipped.
    pub async fn start(prefix: &str) -> Option<Self> {
        Some(Self::start_with(Stack::start(prefix).await?).await)
    }

    /// The three services on `stack`.
    pub async fn start_with(stack: Stack) -> Self {
        Self::start_from(stack, None).await
    }

    /// The three services on `stack`, run from `image` (podman) when given.
    pub async fn start_from(stack: Stack, image: Option<String>) -> Self {
        let prefix = stack.prefix.clone();
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
            image,
        };
        if deployment.image.is_some() {
            // The image's non-root user reads the sites file in there.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                deployment.directory.path(),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
        }
        // The prioritizer first, so its group exists before anything is announced.
        for name in ["prioritizer", "inference", "ingest"] {
            deployment.start_service(name).await;
        }
        deployment
    }

    fn arguments(&self, name: &str, port: u16) -> Vec<String> {
        let health = format!("127.0.0.1:{port}");
        match name {
            "prioritizer" => vec!["prioritizer".into(), "--health-address".into(), health],
            "inference" => vec![
                "inference".into(),
                "--model".into(),
                // Canonical: the same path inside the image, where models/ is mounted.
                repository_path("models/testdata/heatmap")
                    .canonicalize()
                    .expect("the test model")
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

    pub async fn start_service(&mut self, name: &'static str) {
        let port = free_loopback_port();
        self.starts += 1;
        let name_and_start = format!("{name}-{}", self.starts);
        let service = match &self.image {
            None => Service::start(
                &name_and_start,
                &self.arguments(name, port),
                &self.stack.environment,
                self.directory.path(),
            ),
            // The sites file and the test models, at the same paths inside.
            Some(image) => Service::start_in_image(
                image,
                &name_and_start,
                &self.arguments(name, port),
                &self.stack.environment,
                &[
                    self.directory.path(),
                    &repository_path("models").canonicalize().expect("models"),
                ],
                self.directory.path(),
            ),
        };
        wait_for_status(&format!("http://127.0.0.1:{port}/health/ready"), 200).await;
        self.services.insert(name, (service, port));
    }

    /// SIGKILL, as a crash, then start again.
    pub async fn crash_and_restart(&mut self, name: &'static str) {
        if let Some((service, _)) = self.services.remove(name) {
            service.kill();
        }
        self.start_service(name).await;
    }

    pub fn health_address(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.services[name].1)
    }

    pub fn logs(&self) -> String {
        self.services
            .values()
            .map(|(service, _)| format!("{}:\n{}\n", service.name, service.log_tail()))
            .collect()
    }

    pub async fn stop(mut self) {
        for name in ["ingest", "inference", "prioritizer"] {
            if let Some((service, _)) = self.services.remove(name) {
                service.stop().await;
            }
        }
        self.stack.finish().await;
    }

    /// (studies listed, images recorded, findings recorded, studies awaiting analysis).
    pub async fn progress(&self, client: &tokio_postgres::Client) -> (i64, i64, i64, i64) {
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
    pub async fn settled(
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
            // A study may be listed and classed before all its images are
            // recorded (a message retried after a database outage can come
            // late; one suspected image suffices for the class): wait for every
            // image, and every image's finding, too.
            let images = client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE analysis = 'awaiting') \
                     FROM instances WHERE site_id = $1",
                    &[&self.site],
                )
                .await
                .expect("count");
            let (recorded, images_awaiting): (i64, i64) = (images.get(0), images.get(1));
            let expected = expected_images(studies);
            if rows.len() == studies.len()
                && awaiting == 0
                && recorded >= expected
                && images_awaiting == 0
            {
                Progress::Done(rows)
            } else {
                Progress::NotYet(format!(
                    "{} of {} studies listed, {awaiting} awaiting analysis, {recorded} of {expected} images recorded, {images_awaiting} images without a finding",
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

    /// Waits until `studies` are settled, then asserts each is listed once in
    /// policy order and each image recorded once; returns the rows.
    pub async fn settled_once(
        &self,
        client: &tokio_postgres::Client,
        studies: &[Study],
    ) -> Vec<tokio_postgres::Row> {
        let rows = self.settled(client, studies).await;
        assert_listed_once_in_policy_order(&rows, studies);
        let (_, images, _, _) = self.progress(client).await;
        assert_eq!(images, expected_images(studies), "each image recorded once");
        rows
    }

    /// Where each study that is not settled is: stored, quarantined,
    /// dead-lettered, recorded without a finding.
    pub async fn diagnose(&self, client: &tokio_postgres::Client, studies: &[Study]) -> String {
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
    pub async fn check_topics(&self, client: &tokio_postgres::Client, poison: &[&str]) {
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

pub fn expected_images(studies: &[Study]) -> i64 {
    studies.iter().map(|study| study.images as i64).sum()
}

pub fn assert_listed_once_in_policy_order(rows: &[tokio_postgres::Row], studies: &[Study]) {
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

pub async fn assert_quarantined(deployment: &Deployment, expected: usize) {
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
