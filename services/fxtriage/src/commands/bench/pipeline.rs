//! `fxtriage bench pipeline`: the whole product as it runs, fed by real C-STORE
//! associations at fixed rates, measured from the sender's side to the worklist.
//!
//! Two deployments, each on a fresh database of the given PostgreSQL server:
//! - `distributed`: ingest, inference and the prioritizer as separate
//!   processes of this binary, over the local stack's broker and object store
//!   (its settings from the environment, as `infra/local/stack env` prints
//!   them), in a namespace of their own;
//! - `standalone`: `fxtriage standalone` (in-process bus, local-directory
//!   store) on the same PostgreSQL server.
//!
//! For each rate, studies of `--images-per-study` synthetic DX images are sent
//! on a fixed schedule for `--duration-s`, one association per study (as a
//! modality sends one), at most `--max-associations` at once. A study's
//! latency runs from the C-STORE success of its last image (the response in
//! the sender's hands) to the database transaction that completed its
//! worklist item with every image analysed (its start, which PostgreSQL
//! records as the item's `updated_at`; the commit follows within
//! milliseconds; the prioritizer applies one message per transaction). The
//! database is not polled per study while it is measured: only the site's
//! analysed images are counted, every `--poll-ms`, for the backlog (images
//! acknowledged, not yet analysed) and the end of a rate. A rate is
//! sustained when the sender kept its schedule, nothing was refused, the
//! backlog did not grow during the last third of the window, and everything
//! was on the worklist within `--settle-s` after the last send.
//! Each process's CPU time (user and system, from /proc) over the window and
//! the drain, per instance: the services, the stack's servers (broker, object
//! store, PostgreSQL) and the load generator itself, which shares the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use deadpool_postgres::tokio_postgres::Client as PgClient;
use deadpool_postgres::tokio_postgres::types::ToSql;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_dispatch::dicom_out::{self, Stored};
use fxtriage_sites::destinations::DicomPeer;
use tokio::sync::Semaphore;

use super::{Samples, memory, process_cpu_time, reset_peak_memory};
use crate::clients::DatabaseArgs;

const AE_TITLE: &str = "BENCHPIPE";
const SITE: &str = "bench";
/// The stack's servers, by process name, whose CPU time is reported.
const STACK_PROCESSES: [&str; 3] = ["tansu", "weed", "postgres"];

#[derive(Debug, Args)]
pub struct PipelineBenchArgs {
    /// The deployments to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "distributed,standalone")]
    pub modes: Vec<Mode>,
    /// Instances per second to send, comma-separated, in increasing order; a
    /// deployment that does not drain one rate is not sent the next.
    #[arg(long, value_delimiter = ',', default_value = "10,40,80,160")]
    pub rates: Vec<f64>,
    /// Seconds of sending per rate.
    #[arg(long, default_value_t = 30.0)]
    pub duration_s: f64,
    /// Images per study (one association each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub images_per_study: u16,
    /// Side of the synthetic DX images (16 bits, uncompressed): 256 gives
    /// instances of about 130 KB.
    #[arg(long, default_value_t = 256)]
    pub image_side: u16,
    /// Associations open at once at most; a study due while all are busy waits
    /// (and the sender falls behind its schedule, which the figures show).
    #[arg(long, default_value_t = 16)]
    pub max_associations: usize,
    /// How often the analysed images are counted (for the backlog and the
    /// end of a rate), in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub poll_ms: u64,
    /// Seconds allowed, after the last send, for everything to reach the worklist.
    #[arg(long, default_value_t = 120.0)]
    pub settle_s: f64,
    /// The model directory the inference service (or standalone) runs.
    #[arg(long, default_value = "models/fxtriage-demo")]
    pub model: PathBuf,
    /// The PostgreSQL server: each deployment gets a fresh database on it,
    /// dropped at the end.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Distributed,
    Standalone,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Distributed => "distributed",
            Mode::Standalone => "standalone",
        }
    }
}

/// A fresh database on the benchmark's server, dropped by [`Database::drop`].
struct Database {
    server: fxtriage_db::DbConfig,
    name: String,
    url: String,
}

impl Database {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        let server = fxtriage_db::DbConfig::from_url(server_url)?;
        let name = format!("fxtriage_pipeline_bench_{}", std::process::id())
            + "_"
            + &new_uid().replace('.', "")[4..16];
        server
            .connect()
            .await?
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .with_context(|| format!("cannot create database {name} for the benchmark"))?;
        let (base, query) = match server_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (server_url, String::new()),
        };
        let host = base
            .rsplit_once('/')
            .filter(|(host, _)| host.contains("//"))
            .map_or(base, |(host, _)| host);
        Ok(Self {
            server,
            url: format!("{host}/{name}{query}"),
            name,
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        self.server
            .connect()
            .await?
            .execute(
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                &[],
            )
            .await?;
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One process of this binary, its log in a file; killed if still running when dropped.
struct Process {
    name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Process {
    fn start(
        name: &'static str,
        arguments: &[String],
        environment: &[(&str, String)],
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(arguments)
            .envs(environment.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start fxtriage {name}"))?;
        Ok(Self { name, child, log })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("{} has exited; its log: {}", self.name, self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits for `url` to answer 200 while the process runs.
    async fn wait_ready(&mut self, url: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}): {}", self.name, self.log_tail());
            }
            if let Ok(response) = client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{} not ready within 120 s: {}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then a clean exit within 30 s (else killed).
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(
                    status.success(),
                    "{} exited with {status}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
        }
        Ok(())
    }
}

/// A deployment under test: its processes, the DIMSE port and its database's URL.
struct Deployment {
    processes: Vec<Process>,
    dimse_port: u16,
    database_url: String,
    _work: tempfile::TempDir,
}

impl Deployment {
    /// Starts the processes of `mode` on the database at `database_url`, each
    /// ready; dropped, they are killed.
    async fn start(
        mode: Mode,
        args: &PipelineBenchArgs,
        database_url: &str,
    ) -> anyhow::Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("fxtriage-bench-pipeline-")
            .tempdir()?;
        let sites_file = work.path().join("sites.toml");
        std::fs::write(
            &sites_file,
            format!("[[site]]\nid = \"{SITE}\"\nae_titles = [\"{AE_TITLE}\"]\n"),
        )?;
        let dimse_port = free_port()?;
        let model = args.model.display().to_string();
        let mut environment = vec![("FXTRIAGE_DATABASE_URL", database_url.to_owned())];
        // Each process: its name, its arguments, and where it says it is ready.
        let mut plan: Vec<(&'static str, Vec<String>, String)> = Vec::new();
        match mode {
            Mode::Distributed => {
                ensure!(
                    std::env::var_os("FXTRIAGE_KAFKA_BROKERS").is_some()
                        && std::env::var_os("FXTRIAGE_S3_BUCKET").is_some(),
                    "the distributed mode needs the local stack's broker and object store: \
                     eval \"$(infra/local/stack env)\" first (or --modes standalone)"
                );
                environment.push((
                    "FXTRIAGE_NAMESPACE",
                    format!("bench-{}", &new_uid().replace('.', "")[4..14]),
                ));
                // The prioritizer first, so that its consumer group exists
                // before anything is announced.
                for name in ["prioritizer", "inference", "ingest"] {
                    let health = format!("127.0.0.1:{}", free_port()?);
                    let arguments: Vec<String> = match name {
                        "prioritizer" => {
                            vec![name.into(), "--health-address".into(), health.clone()]
                        }
                        "inference" => vec![
                            name.into(),
                            "--model".into(),
                            model.clone(),
                            "--health-address".into(),
                            health.clone(),
                        ],
                        _ => vec![
                            name.into(),
                            "--sites".into(),
                            sites_file.display().to_string(),
                            "--dimse-address".into(),
                            format!("127.0.0.1:{dimse_port}"),
                            "--http-address".into(),
                            health.clone(),
                        ],
                    };
                    plan.push((name, arguments, health));
                }
            }
            Mode::Standalone => {
                let http = format!("127.0.0.1:{}", free_port()?);
                let arguments: Vec<String> = vec![
                    "standalone".into(),
                    "--data-dir".into(),
                    work.path().join("data").display().to_string(),
                    "--sites".into(),
                    sites_file.display().to_string(),
                    "--model".into(),
                    model,
                    "--http-address".into(),
                    http.clone(),
                    "--dimse-address".into(),
                    format!("127.0.0.1:{dimse_port}"),
                    "--stow-address".into(),
                    format!("127.0.0.1:{}", free_port()?),
                ];
                plan.push(("standalone", arguments, http));
            }
        }
        let mut processes = Vec::new();
        for (name, arguments, ready_at) in plan {
            let mut process = Process::start(name, &arguments, &environment, work.path())?;
            process
                .wait_ready(&format!("http://{ready_at}/health/ready"))
                .await?;
            processes.push(process);
        }
        Ok(Self {
            processes,
            dimse_port,
            database_url: database_url.to_owned(),
            _work: work,
        })
    }

    /// One study end to end (model loaded, groups joined, pools open).
    async fn warm(&mut self, args: &PipelineBenchArgs) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let before = analysed_images(&client).await?;
        let warm = Run::new(args, 1.0, 1);
        warm.send(self, args).await?;
        warm.settle(&client, args, before, Duration::from_secs(120))
            .await?;
        self.check_running()?;
        ensure!(
            warm.done() == 1,
            "the warm-up study never reached the worklist"
        );
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<PgClient> {
        Ok(fxtriage_db::DbConfig::from_url(&self.database_url)?
            .connect()
            .await?)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if let Some(status) = process.child.try_wait()? {
                bail!("{} exited ({status}): {}", process.name, process.log_tail());
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| format!("--- {} ---\n{}", process.name, process.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// CPU time so far of each process of the deployment, of the stack's
    /// servers together, and of this process.
    fn cpu(&self) -> anyhow::Result<Vec<(String, Duration)>> {
        let mut times = Vec::new();
        for process in &self.processes {
            times.push((
                process.name.to_owned(),
                process_cpu_time(&process.pid()?.to_string())?,
            ));
        }
        for (server, time) in stack_cpu_times() {
            times.push((server.to_owned(), time));
        }
        times.push(("load generator".into(), process_cpu_time("self")?));
        Ok(times)
    }

    /// Starts a new peak resident memory for each process of the deployment.
    fn reset_peak_memory(&self) -> anyhow::Result<()> {
        for process in &self.processes {
            reset_peak_memory(&process.pid()?.to_string());
        }
        Ok(())
    }

    /// The peak resident memory of each process since the last reset, in MiB.
    fn peak_memory(&self) -> anyhow::Result<Vec<(String, f64)>> {
        self.processes
            .iter()
            .map(|process| {
                let bytes = memory(&process.pid()?.to_string(), "VmHWM")?;
                Ok((process.name.to_owned(), bytes as f64 / f64::from(1 << 20)))
            })
            .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        // In reverse: ingest first, so nothing arrives that is not analysed.
        for process in self.processes.into_iter().rev() {
            process.stop().await?;
        }
        Ok(())
    }
}

/// The CPU time so far of the processes of each of the stack's servers (a
/// server's processes together: PostgreSQL has one per connection).
fn stack_cpu_times() -> [(&'static str, Duration); 3] {
    let mut totals = STACK_PROCESSES.map(|name| (name, Duration::ZERO));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let command = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if let Some((_, total)) = totals.iter_mut().find(|(name, _)| *name == command.trim())
            && let Ok(time) = process_cpu_time(pid)
        {
            *total += time;
        }
    }
    totals
}

/// One study as sent.
struct SentStudy {
    uid: String,
    acknowledged: usize,
    /// When its last image's C-STORE response arrived, and the same in
    /// seconds since the Unix epoch.
    last_success: Option<(Instant, f64)>,
    /// When the database transaction that completed its worklist item (every
    /// image analysed) began, in seconds since the Unix epoch.
    listed: Option<f64>,
    /// Not every image was stored (refused, or the association failed).
    failed: bool,
}

#[derive(Default)]
struct RunState {
    studies: Vec<SentStudy>,
    refused: usize,
    first_refusal: Option<String>,
    /// Studies whose association has ended (stored or not).
    ended: usize,
    /// (seconds since the start, images acknowledged but not yet listed).
    backlog: Vec<(f64, usize)>,
}

/// One rate's sending and what came of it.
struct Run {
    rate: f64,
    studies: usize,
    images: usize,
    state: Arc<Mutex<RunState>>,
    started: Instant,
}

impl Run {
    fn new(args: &PipelineBenchArgs, rate: f64, studies: usize) -> Self {
        Self {
            rate,
            studies,
            images: usize::from(args.images_per_study),
            state: Arc::default(),
            started: Instant::now(),
        }
    }

    fn done(&self) -> usize {
        let state = self.state.lock().expect("run state");
        state
            .studies
            .iter()
            .filter(|study| study.listed.is_some())
            .count()
    }

    /// Sends the studies on schedule; returns when every association has ended.
    async fn send(&self, deployment: &Deployment, args: &PipelineBenchArgs) -> anyhow::Result<()> {
        let peer = Arc::new(DicomPeer {
            name: "fxtriage".into(),
            ae_title: AE_TITLE.into(),
            host: "127.0.0.1".into(),
            port: deployment.dimse_port,
            calling_ae_title: "BENCHSCU".into(),
            objects: Vec::new(),
        });
        let template = SyntheticInstance {
            rows: args.image_side,
            columns: args.image_side,
            ..SyntheticInstance::wrist()
        }
        .dataset();
        let interval = Duration::from_secs_f64(self.images as f64 / self.rate);
        let associations = Arc::new(Semaphore::new(args.max_associations.max(1)));
        let mut senders = tokio::task::JoinSet::new();
        for index in 0..self.studies {
            tokio::time::sleep_until((self.started + interval * index as u32).into()).await;
            let permit = Arc::clone(&associations).acquire_owned().await?;
            let uid = new_uid();
            let datasets = study_datasets(&template, &uid, self.images, index);
            let position = {
                let mut state = self.state.lock().expect("run state");
                state.studies.push(SentStudy {
                    uid,
                    acknowledged: 0,
                    last_success: None,
                    listed: None,
                    failed: false,
                });
                state.studies.len() - 1
            };
            let (peer, state) = (Arc::clone(&peer), Arc::clone(&self.state));
            senders.spawn(async move {
                let images = datasets.len();
                let result = dicom_out::store_all(&peer, &datasets, |_, _: Stored| {
                    let mut state = state.lock().expect("run state");
                    let study = &mut state.studies[position];
                    study.acknowledged += 1;
                    if study.acknowledged == images {
                        study.last_success = Some((Instant::now(), unix_now()));
                    }
                })
                .await;
                if let Err(error) = result {
                    let mut state = state.lock().expect("run state");
                    state.refused += images - state.studies[position].acknowledged;
                    state.studies[position].failed = true;
                    state.first_refusal.get_or_insert(error.to_string());
                }
                state.lock().expect("run state").ended += 1;
                drop(permit);
            });
        }
        while let Some(joined) = senders.join_next().await {
            joined?;
        }
        Ok(())
    }

    /// Counts the site's analysed images every `--poll-ms` (one cheap
    /// query: the reading must not load the database it measures) until every
    /// image acknowledged is analysed and every association has ended, or
    /// `within` has passed; each count records the backlog. Runs beside `send`.
    /// `before`: the site's analysed images before the first was sent.
    /// Then reads, once, when each study's worklist item was completed.
    async fn settle(
        &self,
        client: &PgClient,
        args: &PipelineBenchArgs,
        before: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let analysed = analysed_images(client).await?.saturating_sub(before);
            let read_at = Instant::now();
            {
                let mut state = self.state.lock().expect("run state");
                let acknowledged: u64 = state
                    .studies
                    .iter()
                    .map(|study| study.acknowledged as u64)
                    .sum();
                let backlog = acknowledged.saturating_sub(analysed);
                let elapsed = read_at.duration_since(self.started).as_secs_f64();
                state.backlog.push((elapsed, backlog as usize));
                if state.ended == self.studies && backlog == 0 {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
        }
        let sent: Vec<String> = {
            let state = self.state.lock().expect("run state");
            state
                .studies
                .iter()
                .filter(|study| study.last_success.is_some())
                .map(|study| study.uid.clone())
                .collect()
        };
        let images = self.images as i64;
        let parameters: [&(dyn ToSql + Sync); 3] = [&SITE, &sent, &images];
        let rows = client
            .query(
                "SELECT s.study_instance_uid, extract(epoch FROM s.updated_at)::float8 \
                 FROM studies s \
                 WHERE s.site_id = $1 AND s.study_instance_uid = ANY($2) \
                   AND s.ai_result <> 'awaiting-analysis' \
                   AND (SELECT count(*) FROM instances i \
                        WHERE i.site_id = s.site_id \
                          AND i.study_instance_uid = s.study_instance_uid \
                          AND i.analysis = 'analysed') = $3",
                &parameters,
            )
            .await?;
        let completed: std::collections::HashMap<String, f64> = rows
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, f64>(1)))
            .collect();
        let mut state = self.state.lock().expect("run state");
        for study in &mut state.studies {
            study.listed = completed.get(&study.uid).copied();
        }
        Ok(())
    }
}

/// Images of the benchmark's site analysed so far.
async fn analysed_images(client: &PgClient) -> anyhow::Result<u64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM instances WHERE site_id = $1 AND analysis = 'analysed'",
            &[&SITE],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The datasets of study `index`: copies of `template` with the study's UIDs.
fn study_datasets(
    template: &InMemDicomObject,
    uid: &str,
    images: usize,
    index: usize,
) -> Vec<InMemDicomObject> {
    (0..images)
        .map(|image| {
            let mut dataset = template.clone();
            for (tag, value) in [
                (tags::STUDY_INSTANCE_UID, uid.to_owned()),
                (tags::SERIES_INSTANCE_UID, format!("{uid}.1")),
                (tags::SOP_INSTANCE_UID, format!("{uid}.1.{}", image + 1)),
            ] {
                dataset.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
            }
            dataset.put(DataElement::new(
                tags::ACCESSION_NUMBER,
                VR::SH,
                PrimitiveValue::from(format!("BP{index:08}")),
            ));
            dataset
        })
        .collect()
}

/// What one rate came to.
struct Outcome {
    sent_rate: f64,
    acknowledged: usize,
    refused: usize,
    first_refusal: Option<String>,
    latency_ms: Samples,
    unlisted: usize,
    growing: bool,
    drain: Option<Duration>,
    cpu_ms: Vec<(String, f64)>,
    peak_mib: Vec<(String, f64)>,
}

impl Outcome {
    fn sustained(&self, target: f64) -> Result<(), String> {
        if self.refused > 0 {
            return Err(format!("{} refused", self.refused));
        }
        if self.sent_rate < 0.95 * target {
            return Err("sender behind".into());
        }
        if self.unlisted > 0 {
            return Err(format!("{} not listed", self.unlisted));
        }
        if self.growing {
            return Err("backlog grew".into());
        }
        Ok(())
    }
}

async fn measure(
    deployment: &mut Deployment,
    args: &PipelineBenchArgs,
    rate: f64,
) -> anyhow::Result<Outcome> {
    let images = usize::from(args.images_per_study);
    let studies = ((rate * args.duration_s) / images as f64).round().max(1.0) as usize;
    let client = deployment.connect().await?;
    let analysed_before = analysed_images(&client).await?;
    deployment.reset_peak_memory()?;
    let before = deployment.cpu()?;
    let run = Run::new(args, rate, studies);
    let window = Duration::from_secs_f64(args.duration_s);
    // Reading goes on while sending; it ends once everything is listed (or
    // the settle time has passed after the window).
    let (sent, settled) = tokio::join!(
        run.send(deployment, args),
        run.settle(
            &client,
            args,
            analysed_before,
            window + Duration::from_secs_f64(args.settle_s)
        ),
    );
    sent?;
    settled?;
    let after = deployment.cpu()?;
    let peak_mib = deployment.peak_memory()?;
    deployment.check_running()?;
    let state = run.state.lock().expect("run state");
    let acknowledged: usize = state.studies.iter().map(|study| study.acknowledged).sum();
    let last_success = state
        .studies
        .iter()
        .filter_map(|study| study.last_success.map(|(at, _)| at))
        .max()
        .unwrap_or(run.started);
    let last_success_unix = state
        .studies
        .iter()
        .filter_map(|study| study.last_success.map(|(_, unix)| unix))
        .fold(f64::NAN, f64::max);
    // Over the schedule's length (the last study was due one interval before
    // its end), or longer when the sender fell behind.
    let schedule = Duration::from_secs_f64(usize::from(args.images_per_study) as f64 / rate)
        * u32::try_from(run.studies).unwrap_or(u32::MAX);
    let sent_rate = acknowledged as f64
        / last_success
            .duration_since(run.started)
            .max(schedule)
            .as_secs_f64()
            .max(1e-3);
    let mut latency_ms = Samples::default();
    let mut unlisted = 0;
    for study in &state.studies {
        match (study.last_success, study.listed) {
            // The transaction may begin a moment before the response reaches
            // the sender: never below zero.
            (Some((_, sent)), Some(listed)) => latency_ms.push(((listed - sent) * 1000.0).max(0.0)),
            (Some(_), None) => unlisted += study.acknowledged,
            _ => {}
        }
    }
    let window_s = args.duration_s;
    let mean_backlog = |from: f64, to: f64| {
        let values: Vec<f64> = state
            .backlog
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, backlog)| *backlog as f64)
            .collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    // Growing: the last third's mean backlog is more than half a second of
    // arrivals above the middle third's.
    let growing = mean_backlog(2.0 * window_s / 3.0, window_s)
        > mean_backlog(window_s / 3.0, 2.0 * window_s / 3.0) + 0.5 * rate;
    let last_listed = state
        .studies
        .iter()
        .filter_map(|study| study.listed)
        .fold(f64::NAN, f64::max);
    let drain = (unlisted == 0 && last_listed.is_finite() && last_success_unix.is_finite())
        .then(|| Duration::from_secs_f64((last_listed - last_success_unix).max(0.0)));
    let cpu_ms = before
        .iter()
        .zip(&after)
        .map(|((name, before), (_, after))| {
            (
                name.clone(),
                after.saturating_sub(*before).as_secs_f64() * 1000.0 / acknowledged.max(1) as f64,
            )
        })
        .collect();
    Ok(Outcome {
        sent_rate,
        acknowledged,
        refused: state.refused,
        first_refusal: state.first_refusal.clone(),
        latency_ms,
        unlisted,
        growing,
        drain,
        cpu_ms,
        peak_mib,
    })
}

/// Every rate on one deployment of `mode`; the highest rate sustained.
#[allow(clippy::print_stdout)]
async fn measure_mode(
    mode: Mode,
    args: &PipelineBenchArgs,
    database_url: &str,
) -> anyhow::Result<Option<f64>> {
    let mut deployment = Deployment::start(mode, args, database_url).await?;
    if let Err(error) = deployment.warm(args).await {
        let logs = deployment.logs();
        let _ = deployment.stop().await;
        return Err(error.context(logs));
    }
    println!();
    println!(
        "{:<12} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}  {:<20} CPU ms per instance",
        "mode", "rate/s", "sent/s", "p50 ms", "p99 ms", "max ms", "drain s", "images", "sustained"
    );
    let mut highest = None;
    for &rate in &args.rates {
        let outcome = match measure(&mut deployment, args, rate).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let logs = deployment.logs();
                let _ = deployment.stop().await;
                return Err(error.context(logs));
            }
        };
        let mut latency = outcome.latency_ms.clone();
        let sustained = outcome.sustained(rate);
        if sustained.is_ok() {
            highest = Some(rate);
        }
        let cpu: Vec<String> = outcome
            .cpu_ms
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.1}"))
            .collect();
        println!(
            "{:<12} {rate:>7.0} {:>8.1} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>8}  {:<20} {}",
            mode.name(),
            outcome.sent_rate,
            latency.median(),
            latency.quantile(0.99),
            latency.quantile(1.0),
            outcome.drain.map_or_else(
                || "-".to_owned(),
                |drain| format!("{:.1}", drain.as_secs_f64())
            ),
            outcome.acknowledged,
            match &sustained {
                Ok(()) => "yes".to_owned(),
                Err(why) => format!("no ({why})"),
            },
            cpu.join(", ")
        );
        let peaks: Vec<String> = outcome
            .peak_mib
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0} MiB"))
            .collect();
        println!("  peak resident memory: {}", peaks.join(", "));
        if let Some(refusal) = &outcome.first_refusal {
            println!("  first refusal: {refusal}");
        }
        if outcome.unlisted > 0 {
            println!(
                "  {} images not on the worklist {:.0} s after the last send: the higher rates are skipped",
                outcome.unlisted, args.settle_s
            );
            break;
        }
    }
    deployment.stop().await?;
    Ok(highest)
}

#[allow(clippy::print_stdout)]
pub async fn run(args: PipelineBenchArgs) -> anyhow::Result<()> {
    ensure!(!args.rates.is_empty(), "--rates needs at least one rate");
    ensure!(
        args.rates.iter().all(|rate| *rate > 0.0) && args.rates.is_sorted(),
        "--rates must be positive and in increasing order"
    );
    ensure!(args.duration_s > 0.0, "--duration-s must be positive");
    println!(
        "fxtriage bench pipeline: studies of {} synthetic DX images ({}x{}, 16 bits, uncompressed), one C-STORE association per study (dicom-ul, at most {} at once), {:.0} s of sending per rate",
        args.images_per_study,
        args.image_side,
        args.image_side,
        args.max_associations,
        args.duration_s
    );
    println!(
        "latency: from a study's last C-STORE success (as the sender receives it) to the database transaction that completed its worklist item with every image analysed (its start, which PostgreSQL records as the item's updated_at, milliseconds before the commit)"
    );
    let mut best: Vec<(Mode, Option<f64>)> = Vec::new();
    for &mode in &args.modes {
        let database = Database::create(&args.database.database_url).await?;
        let measured = measure_mode(mode, &args, &database.url).await;
        database.drop().await?;
        best.push((mode, measured?));
    }
    println!();
    for (mode, highest) in best {
        match highest {
            Some(rate) => println!(
                "{}: highest rate sustained {rate:.0} instances/s",
                mode.name()
            ),
            None => println!("{}: no rate sustained", mode.name()),
        }
    }
    println!(
        "sustained: the sender kept 95% of the rate, nothing refused, the backlog (images acknowledged, not yet listed) over the last third of the window within half a second of arrivals of the middle third's, and everything listed within --settle-s. drain: last listing after the last send. CPU: user + system time of each process over the window and the drain, per instance acknowledged; peak resident memory: each process's highest over the window and the drain (VmHWM); {}: the stack's servers, each with all its processes (also serving anything else running); load generator: this process (sender and reader)",
        STACK_PROCESSES.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_studys_datasets_carry_its_uids() {
        let template = SyntheticInstance {
            rows: 8,
            columns: 8,
            ..SyntheticInstance::wrist()
        }
        .dataset();
        let datasets = study_datasets(&template, "1.2.3", 2, 7);
        assert_eq!(datasets.len(), 2);
        let text = |dataset: &InMemDicomObject, tag| {
            dataset
                .element(tag)
                .expect("element")
                .to_str()
                .expect("text")
                .trim_end_matches('\0')
                .to_owned()
        };
        assert_eq!(text(&datasets[1], tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(&datasets[1], tags::SOP_INSTANCE_UID), "1.2.3.1.2");
        assert_eq!(text(&datasets[0], tags::ACCESSION_NUMBER), "BP00000007");
    }

    #[test]
    fn sustained_names_what_failed() {
        let outcome = |sent_rate, refused, unlisted, growing| Outcome {
            sent_rate,
            acknowledged: 100,
            refused,
            first_refusal: None,
            latency_ms: Samples::default(),
            unlisted,
            growing,
            drain: None,
            cpu_ms: Vec::new(),
            peak_mib: Vec::new(),
        };
        assert!(outcome(40.0, 0, 0, false).sustained(40.0).is_ok());
        assert_eq!(
            outcome(30.0, 0, 0, false).sustained(40.0),
            Err("sender behind".into())
        );
        assert_eq!(
            outcome(40.0, 2, 0, false).sustained(40.0),
            Err("2 refused".into())
        );
        assert_eq!(
            outcome(40.0, 0, 3, false).sustained(40.0),
            Err("3 not listed".into())
        );
        assert_eq!(
            outcome(40.0, 0, 0, true).sustained(40.0),
            Err("backlog grew".into())
        );
    }
}
