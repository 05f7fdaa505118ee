//! `fxtriage bench worklist`: seeds open worklist items across sites through the
//! prioritizer's own message handler, applies findings to them, then reads
//! worklists over the HTTP API with concurrent clients on loopback.
//!
//! Three figures, each with its latency percentiles: instances applied per second
//! (only for the items seeded in this run: a rerun on the same database reuses
//! them), findings applied per second (each run uses a new model identity, so no
//! finding is a duplicate and each one recomputes its study), and worklist pages
//! read per second. Every page read writes an audit row, as in production. The
//! API, PostgreSQL and the load generator share the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use fxtriage_bus::{Bus, Headers, InProcessBus, InProcessConfig, Received};
use fxtriage_core::SiteId;
use fxtriage_objstore::LocalDirStore;
use fxtriage_prioritizer::handler::{Handled, Prioritizer};
use fxtriage_prioritizer::incoming::to_timestamp;
use fxtriage_proto::Message as _;
use fxtriage_proto::topics;
use fxtriage_proto::v1::{
    BoundingBox, Detection, Finding, FindingStatus, InstanceRef, InstanceStored, ModelIdentity,
    Urgency, UrgencySource,
};
use fxtriage_sites::Role;
use fxtriage_sites::{Scope, SiteConfig};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Samples, SplitMix};
use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct WorklistBenchArgs {
    /// A database for the benchmark: it adds sites bench-01.. and their studies.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Sites the items are spread over.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub sites: u32,
    /// Open worklist items in all (each a study of one image); those missing are seeded.
    #[arg(long, default_value_t = 100_000)]
    pub items: u64,
    /// Findings applied, each to a different random item (at most --items).
    #[arg(long, default_value_t = 20_000)]
    pub findings: u64,
    /// Messages applied at once while seeding and applying findings.
    #[arg(long, default_value_t = 8)]
    pub apply_concurrency: usize,
    /// HTTP clients reading worklists at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of reading.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Items per worklist page read.
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
}

fn site_id(index: u32) -> anyhow::Result<SiteId> {
    Ok(SiteId::parse(format!("bench-{:02}", index + 1))?)
}

/// The study of item `item` of site `site`; one image each.
fn study_uid(site: u32, item: u64) -> String {
    format!("2.25.4242.{}.{item}", site + 1)
}

fn items_of_site(args: &WorklistBenchArgs, site: u32) -> u64 {
    let base = args.items / u64::from(args.sites);
    base + u64::from(u64::from(site) < args.items % u64::from(args.sites))
}

fn image_ref(site: &SiteId, study: &str) -> InstanceRef {
    InstanceRef {
        site_id: site.to_string(),
        study_instance_uid: study.to_owned(),
        series_instance_uid: format!("{study}.1"),
        sop_instance_uid: format!("{study}.1.1"),
    }
}

const BODY_PARTS: [&str; 6] = ["WRIST", "ANKLE", "HAND", "HIP", "LEG", "FOREARM"];

fn instance_event(site: &SiteId, study: &str, random: &mut SplitMix) -> InstanceStored {
    // About 5% emergencies, 20% inpatients, the rest outpatients, arrived in the
    // last three days.
    let draw = random.below(100);
    let urgency = match draw {
        0..5 => Urgency::Emergency,
        5..25 => Urgency::Inpatient,
        _ => Urgency::Outpatient,
    };
    InstanceStored {
        instance: Some(image_ref(site, study)),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        modality: "DX".into(),
        body_part: BODY_PARTS[random.below(BODY_PARTS.len() as u64) as usize].into(),
        view_position: "PA".into(),
        laterality: "L".into(),
        accession_number: format!("BENCH{}", random.below(1_000_000_000)),
        urgency: urgency as i32,
        urgency_source: UrgencySource::Dataset as i32,
        object_key: format!("{site}/{study}/{study}.1/{study}.1.1.dcm"),
        byte_size: 8 << 20,
        sha256: "0".repeat(64),
        received_at: Some(to_timestamp(
            OffsetDateTime::now_utc() - Duration::from_secs(random.below(3 * 24 * 3600)),
        )),
        eligible: true,
        received_via: "import".into(),
        sender: "fxtriage bench".into(),
        ..Default::default()
    }
}

fn finding_event(site: &SiteId, study: &str, model_sha256: &str, random: &mut SplitMix) -> Finding {
    let probability = random.unit() as f32;
    let detections = if probability >= 0.35 {
        vec![Detection {
            r#box: Some(BoundingBox {
                x_min: 800.0,
                y_min: 900.0,
                x_max: 1000.0,
                y_max: 1150.0,
            }),
            class_name: "fracture".into(),
            score: probability,
        }]
    } else {
        Vec::new()
    };
    Finding {
        instance: Some(image_ref(site, study)),
        model: Some(ModelIdentity {
            name: "fxtriage-bench".into(),
            version: "0".into(),
            sha256: model_sha256.to_owned(),
        }),
        status: FindingStatus::Analysed as i32,
        probability,
        detections,
        image_rows: 2048,
        image_columns: 2048,
        analysed_at: Some(to_timestamp(OffsetDateTime::now_utc())),
        ..Default::default()
    }
}

fn received(topic: &str, key: &str, payload: Vec<u8>) -> Received {
    Received {
        topic: topic.to_owned(),
        partition: 0,
        offset: 0,
        key: Some(key.as_bytes().to_vec()),
        payload,
        headers: Headers::new(),
        timestamp_ms: None,
    }
}

/// Applies `messages` through the prioritizer's handler, `concurrency` at a time;
/// returns the wall time and each message's latency in milliseconds.
async fn apply_all(
    prioritizer: &Prioritizer,
    messages: Vec<Received>,
    concurrency: usize,
) -> anyhow::Result<(Duration, Samples)> {
    let queue = Arc::new(std::sync::Mutex::new(messages));
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for _ in 0..concurrency.max(1) {
        let queue = Arc::clone(&queue);
        let prioritizer = prioritizer.clone();
        workers.spawn(async move {
            let mut latencies = Samples::default();
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .pop();
                let Some(message) = next else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let applied_started = Instant::now();
                match prioritizer.handle(&message).await? {
                    Handled::Applied(_) => {}
                    Handled::DeadLettered(reason) => {
                        anyhow::bail!("a benchmark message was refused: {}", reason.message)
                    }
                }
                latencies.push_duration_ms(applied_started.elapsed());
            }
        });
    }
    let mut all = Samples::default();
    while let Some(outcome) = workers.join_next().await {
        all.extend(&outcome.context("an apply worker failed")??);
    }
    Ok((started.elapsed(), all))
}

#[allow(clippy::print_stdout)]
fn print_rate(what: &str, count: usize, elapsed: Duration, latencies: &mut Samples) {
    println!(
        "{what:<22} {count:>8} in {:>7.1} s  {:>9.1} /s   latency p50 {:>7.2} ms  p99 {:>7.2} ms",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        latencies.median(),
        latencies.quantile(0.99)
    );
}

#[allow(clippy::print_stdout)]
pub async fn run(args: WorklistBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.items > 0, "--items must be at least 1");
    anyhow::ensure!(
        (1..=500).contains(&args.page_size),
        "--page-size must be 1 to 500"
    );
    let pool = args.database.migrated_pool().await?;
    let sites = (0..args.sites)
        .map(|site_index| {
            Ok(SiteConfig::new(
                site_id(site_index)?,
                format!("Benchmark site {}", site_index + 1),
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    fxtriage_sites::store::put_sites(&pool, sites).await?;
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(InProcessConfig::default()));
    let prioritizer = Prioritizer::new(
        Arc::clone(&bus),
        pool.clone(),
        fxtriage_sites::SiteRegistry::load(&pool).await?,
        fxtriage_proto::Namespace::none(),
    );

    // The API first: its event fan-out consumes the worklist changes the
    // prioritizer publishes while seeding, as in a deployment.
    let store_directory = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    let clients = fxtriage_clients::Clients {
        bus: Arc::clone(&bus),
        namespace: fxtriage_proto::Namespace::none(),
        store: Some(Arc::new(LocalDirStore::new(
            store_directory.path().to_path_buf(),
        ))),
        database: Some(pool.clone()),
    };
    let api = tokio::spawn(fxtriage_api::serve(
        listener,
        fxtriage_api::Config::new(address),
        clients,
        stop.clone(),
    ));
    let outcome = measure(&args, &pool, &prioritizer, address).await;
    stop.cancel();
    api.await.context("the API task failed")??;
    outcome
}

#[allow(clippy::print_stdout)]
async fn measure(
    args: &WorklistBenchArgs,
    pool: &deadpool_postgres::Pool,
    prioritizer: &Prioritizer,
    address: SocketAddr,
) -> anyhow::Result<()> {
    let mut random = SplitMix::new(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    );
    let client = pool.get().await?;
    let mut seeds = Vec::new();
    for site_index in 0..args.sites {
        let site = site_id(site_index)?;
        let present: i64 = client
            .query_one(
                "SELECT count(*) FROM studies WHERE site_id = $1",
                &[&site.as_str()],
            )
            .await?
            .get(0);
        for item in (present.max(0) as u64)..items_of_site(args, site_index) {
            let study = study_uid(site_index, item);
            let event = instance_event(&site, &study, &mut random);
            seeds.push(received(topics::INSTANCES, &study, event.encode_to_vec()));
        }
    }
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM studies WHERE site_id LIKE 'bench-%' AND state = 'open'",
            &[],
        )
        .await?
        .get(0);
    println!(
        "fxtriage bench worklist: {} sites, {} items wanted ({open} open before this run), \
         {} to seed; {} messages applied at once; {} cores shared by the API, PostgreSQL and the load generator",
        args.sites,
        args.items,
        seeds.len(),
        args.apply_concurrency,
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
    );
    // Every pooled connection for the measured work.
    drop(client);
    if !seeds.is_empty() {
        let count = seeds.len();
        // Popped from the end: reverse, so that items arrive in order per site.
        seeds.reverse();
        let (elapsed, mut latencies) =
            apply_all(prioritizer, seeds, args.apply_concurrency).await?;
        print_rate("instances applied", count, elapsed, &mut latencies);
    }

    // One finding per image, on distinct random items: a second finding of the
    // same image and model would be a duplicate, a no-op that flatters the rate.
    let model_sha256 = format!("{:016x}", random.next_u64()).repeat(4);
    let wanted = args.findings.min(args.items) as usize;
    let mut chosen = std::collections::HashSet::with_capacity(wanted);
    while chosen.len() < wanted {
        let site_index = random.below(u64::from(args.sites)) as u32;
        let item = random.below(items_of_site(args, site_index).max(1));
        chosen.insert((site_index, item));
    }
    let findings: Vec<Received> = chosen
        .into_iter()
        .map(|(site_index, item)| {
            let site = site_id(site_index)?;
            let study = study_uid(site_index, item);
            let event = finding_event(&site, &study, &model_sha256, &mut random);
            Ok(received(topics::FINDINGS, &study, event.encode_to_vec()))
        })
        .collect::<anyhow::Result<_>>()?;
    if !findings.is_empty() {
        let count = findings.len();
        let (elapsed, mut latencies) =
            apply_all(prioritizer, findings, args.apply_concurrency).await?;
        print_rate("findings applied", count, elapsed, &mut latencies);
    }

    let mut tokens = Vec::new();
    for site_index in 0..args.sites {
        let site = site_id(site_index)?;
        let created = fxtriage_sites::credentials::create_token(
            pool,
            &Scope::Site(site.clone()),
            Role::Viewer,
            "fxtriage bench worklist",
        )
        .await?;
        tokens.push((site, created));
    }
    let audit_rows = || async {
        let count: i64 = pool
            .get()
            .await?
            .query_one("SELECT count(*) FROM audit_log", &[])
            .await?
            .get(0);
        Ok::<_, anyhow::Error>(count)
    };
    let audit_before = audit_rows().await?;
    let read = read_worklists(args, address, &tokens).await;
    // Counted before the revocations, which are audited too.
    let audit_after = audit_rows().await;
    for (_, created) in &tokens {
        fxtriage_sites::credentials::revoke_token(pool, &created.credential.token_id).await?;
    }
    let (reads, elapsed, mut latencies) = read?;
    let audit_after = audit_after?;
    print_rate("worklist pages read", reads, elapsed, &mut latencies);
    println!(
        "  {} clients, {} items per page, first page of a random site each time; {} audit rows written",
        args.clients,
        args.page_size,
        audit_after - audit_before
    );
    Ok(())
}

/// `clients` loops reading the first page of a random site's worklist until the
/// time is up; returns the pages read, the time taken and each read's latency.
async fn read_worklists(
    args: &WorklistBenchArgs,
    address: SocketAddr,
    tokens: &[(SiteId, fxtriage_sites::CreatedToken)],
) -> anyhow::Result<(usize, Duration, Samples)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let ready = format!("http://{address}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "the API did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        tokens
            .iter()
            .map(|(site, created)| {
                (
                    format!(
                        "http://{address}/api/v1/sites/{site}/worklist?limit={}",
                        args.page_size
                    ),
                    format!("Bearer {}", created.token.reveal()),
                )
            })
            .collect(),
    );
    let duration = Duration::from_secs(args.duration_s.max(1));
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for client_index in 0..args.clients.max(1) {
        let http = http.clone();
        let targets = Arc::clone(&targets);
        let page_size = args.page_size as usize;
        clients.spawn(async move {
            let mut random = SplitMix::new(client_index as u64 + 1);
            let mut latencies = Samples::default();
            let mut first = true;
            while started.elapsed() < duration {
                let (url, authorization) = &targets[random.below(targets.len() as u64) as usize];
                let request_started = Instant::now();
                let response = http
                    .get(url)
                    .header("authorization", authorization)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                latencies.push_duration_ms(request_started.elapsed());
                anyhow::ensure!(
                    status.is_success(),
                    "a worklist read answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                if first {
                    // Once per client: the page holds what was asked for.
                    let page: serde_json::Value = serde_json::from_slice(&body)?;
                    let items = page["items"].as_array().map_or(0, Vec::len);
                    anyhow::ensure!(
                        items > 0 && items <= page_size,
                        "a worklist page held {items} items"
                    );
                    first = false;
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut all = Samples::default();
    while let Some(outcome) = clients.join_next().await {
        all.extend(&outcome.context("a reading client failed")??);
    }
    Ok((all.len(), started.elapsed(), all))
}
