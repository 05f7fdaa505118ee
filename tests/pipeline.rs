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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fxtriage_bus::{Bus, Record};
use fxtriage_proto::topics;
use fxtriage_testkit::{Progress, eventually};
use support::deployment::{
    Deployment, Study, assert_listed_once_in_policy_order, assert_quarantined, expected_images,
    write_studies,
};
use support::prometheus::{Prometheus, dashboard_queries, selectors};
use support::{
    dcmsend, dcmsend_all, dead_letters_counted, describe_dead_letters, metric_sum,
    promtool_check_metrics, read_topics, scrape,
};

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
    assert_service_metrics(&deployment, &studies).await;
    assert_dashboards_have_data(&deployment).await;
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

/// Selectors of the dashboards' queries that may have no data in this run
/// (nothing of the kind happens in it), with the reason.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    ("outcome=\"failed\"", "no image fails inference here"),
    (
        "fxtriage_inference_fetch_retries_total",
        "the object store never fails here",
    ),
    (
        "fxtriage_deliveries_",
        "no dispatch service in this deployment",
    ),
];

/// The chart's Grafana dashboards against a live Prometheus scraping this
/// deployment and an API on its database: every query is valid PromQL for
/// Prometheus, and every query has data unless one of its selectors has none
/// for a reason in [`MAY_BE_EMPTY`]; so a dashboard that names a metric or a
/// label the services do not export fails here.
async fn assert_dashboards_have_data(deployment: &Deployment) {
    let api_address = format!("127.0.0.1:{}", support::free_loopback_port());
    let api = support::Service::start(
        "api",
        &[
            "api".to_owned(),
            "--http-address".to_owned(),
            api_address.clone(),
        ],
        &deployment.stack.environment,
        deployment.directory.path(),
    );
    support::wait_for_status(&format!("http://{api_address}/health/ready"), 200).await;
    let jobs = ["ingest", "inference", "prioritizer"];
    let mut targets: Vec<(&str, String)> = jobs
        .iter()
        .map(|job| (*job, deployment.health_address(job)))
        .collect();
    targets.push(("api", api_address));
    let Some(prometheus) = Prometheus::start(&targets) else {
        return;
    };
    prometheus
        .wait_for_scrapes(&["ingest", "inference", "prioritizer", "api"], 3)
        .await;
    let queries = dashboard_queries();
    assert!(queries.len() >= 30, "{} dashboard queries", queries.len());
    let mut with_data = 0;
    let mut problems = Vec::new();
    for (file, panel, query) in &queries {
        if !prometheus.query(query).await.is_empty() {
            with_data += 1;
            continue;
        }
        let mut empty = Vec::new();
        for selector in selectors(query) {
            if prometheus
                .query(&format!("count({selector})"))
                .await
                .is_empty()
            {
                empty.push(selector);
            }
        }
        let unexplained: Vec<&String> = empty
            .iter()
            .filter(|selector| {
                !MAY_BE_EMPTY
                    .iter()
                    .any(|(pattern, _)| selector.contains(pattern))
            })
            .collect();
        if empty.is_empty() || !unexplained.is_empty() {
            problems.push(format!(
                "{file} \"{panel}\": {query}: no data; selectors without data: {unexplained:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "dashboards: {with_data} of {} queries have data from the live services; the rest only lack what does not happen here",
        queries.len()
    );
    api.stop().await;
}

/// What each service's `/metrics` says about the 20 studies and 2 invalid
/// instances sent: what ingest stored and refused, what inference analysed and
/// how long its stages took, what the prioritizer applied and its groups' lag;
/// each exposition passes `promtool check metrics`.
async fn assert_service_metrics(deployment: &Deployment, studies: &[Study]) {
    let images = expected_images(studies) as f64;
    let eligible: f64 = studies
        .iter()
        .filter(|study| study.eligible)
        .map(|study| study.images as f64)
        .sum();
    let ingest = scrape(&deployment.health_address("ingest")).await;
    let inference = scrape(&deployment.health_address("inference")).await;
    let prioritizer = scrape(&deployment.health_address("prioritizer")).await;
    for (service, text) in [
        ("ingest", &ingest),
        ("inference", &inference),
        ("prioritizer", &prioritizer),
    ] {
        promtool_check_metrics(service, text);
        assert_eq!(
            metric_sum(text, "fxtriage_dependency_up", &[]).map(|up| up > 0.0),
            Some(true),
            "{service} reports its dependencies"
        );
    }
    // dcmsend sends each file once, over C-STORE.
    let stored = [("channel", "dimse"), ("outcome", "stored")];
    assert_eq!(
        metric_sum(&ingest, "fxtriage_ingest_instances_total", &stored),
        Some(images),
        "{ingest}"
    );
    let refused = [("channel", "dimse"), ("outcome", "refused")];
    assert_eq!(
        metric_sum(&ingest, "fxtriage_ingest_instances_total", &refused),
        Some(2.0),
        "the two invalid instances: {ingest}"
    );
    assert!(
        metric_sum(
            &ingest,
            "fxtriage_ingest_bytes_total",
            &[("channel", "dimse")]
        )
        .is_some_and(|bytes| bytes > images * 1000.0),
        "{ingest}"
    );
    for histogram in [
        "fxtriage_ingest_store_seconds_count",
        "fxtriage_ingest_publish_seconds_count",
    ] {
        assert_eq!(
            metric_sum(&ingest, histogram, &[]),
            Some(images),
            "{histogram}"
        );
    }
    assert!(
        metric_sum(
            &ingest,
            "fxtriage_ingest_associations_total",
            &[("outcome", "accepted")]
        )
        .is_some_and(|count| count >= 1.0),
        "{ingest}"
    );
    // A redelivered message may be handled twice (with the same effect).
    let analysed = metric_sum(
        &inference,
        "fxtriage_inference_images_total",
        &[("outcome", "analysed")],
    )
    .unwrap_or_default();
    assert!(
        analysed >= eligible,
        "{analysed} of {eligible}: {inference}"
    );
    assert_eq!(
        metric_sum(
            &inference,
            "fxtriage_inference_images_total",
            &[("outcome", "failed")]
        )
        .unwrap_or_default(),
        0.0,
        "{inference}"
    );
    assert!(
        metric_sum(
            &inference,
            "fxtriage_inference_images_total",
            &[("outcome", "not-eligible")]
        )
        .is_some_and(|count| count >= images - eligible),
        "{inference}"
    );
    for stage in ["fetch", "decode", "preprocess", "queue", "inference"] {
        assert!(
            metric_sum(
                &inference,
                "fxtriage_inference_stage_seconds_count",
                &[("stage", stage)]
            )
            .is_some_and(|count| count >= eligible),
            "stage {stage}: {inference}"
        );
    }
    assert!(
        metric_sum(&inference, "fxtriage_inference_batch_size_count", &[])
            .is_some_and(|runs| runs >= 1.0 && runs <= analysed),
        "{inference}"
    );
    assert!(
        metric_sum(
            &prioritizer,
            "fxtriage_prioritizer_applied_total",
            &[("event", "instance")]
        )
        .is_some_and(|count| count >= images),
        "{prioritizer}"
    );
    assert!(
        metric_sum(
            &prioritizer,
            "fxtriage_prioritizer_applied_total",
            &[("event", "finding")]
        )
        .is_some_and(|count| count >= eligible),
        "{prioritizer}"
    );
    // Each group's lag, from librdkafka's statistics (every 5 s).
    let namespace = deployment.stack.namespace.name();
    for (service, group) in [
        ("inference", format!("{namespace}.fxtriage-inference")),
        ("prioritizer", format!("{namespace}.fxtriage-prioritizer")),
    ] {
        let address = deployment.health_address(service);
        eventually(
            &format!("{service} to report the lag of {group}"),
            Duration::from_secs(60),
            || async {
                let text = scrape(&address).await;
                match metric_sum(&text, "fxtriage_consumer_lag", &[("group", &group)]) {
                    Some(_) => Progress::Done(()),
                    None => Progress::NotYet("no fxtriage_consumer_lag sample yet".into()),
                }
            },
        )
        .await;
    }
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

#[test]
fn the_selectors_of_a_dashboard_query_are_found() {
    assert_eq!(
        selectors(
            "sum(rate(fxtriage_a_total{outcome=\"x\", site=~\".+\"}[1m])) / sum(rate(fxtriage_b_total[1m])) + up{job=~\"a|b\"}"
        ),
        [
            "fxtriage_a_total{outcome=\"x\", site=~\".+\"}",
            "fxtriage_b_total",
            "up{job=~\"a|b\"}"
        ]
    );
}
