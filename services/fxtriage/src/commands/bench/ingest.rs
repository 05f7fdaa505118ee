//! `fxtriage bench ingest`: instances per second through fxtriage's C-STORE
//! SCP (the ingest service's own `dimse::serve`: validation, the object store
//! with its durability, the `InstanceStored` event, then the C-STORE response),
//! next to dcmtk's storescp receiving the same files from the same senders in
//! the same run. Each sender is one dcmtk `storescu` process, one association;
//! with several associations the files are split between them.
//!
//! storescp listens on every interface, so it runs in a private network
//! namespace (`ingest_baseline.sh` under `unshare`); fxtriage listens on
//! 127.0.0.1 of this namespace. Both are loopback. The event goes to the
//! in-process bus here (a consumer takes and counts every one, so a round only
//! counts when every instance was announced); the store is a local directory,
//! and also S3 when --s3-bucket is given.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use fxtriage_bus::{Bus, InProcessBus};
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_ingest::dimse::{self, DimseOptions};
use fxtriage_ingest::{Ingestor, SiteRegistry, Sites};
use fxtriage_objstore::{LocalDirStore, ObjectStore};
use fxtriage_proto::Namespace;
use tokio_util::sync::CancellationToken;

use super::{Samples, memory, reset_peak_memory};
use crate::clients::StoreArgs;

const BASELINE: &str = include_str!("ingest_baseline.sh");
const AE_TITLE: &str = "FXTRIAGE";

#[derive(Debug, Args)]
pub struct IngestBenchArgs {
    /// Instances sent per round (split between the associations).
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Concurrent associations to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub associations: Vec<usize>,
    /// Timed rounds per receiver and association count, interleaved; each
    /// figure is their median.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Side of the synthetic DX images (16 bits, uncompressed): 256 gives
    /// instances of about 130 KB.
    #[arg(long, default_value_t = 256)]
    pub image_side: u16,
    /// How fxtriage holds instances while they arrive, comma-separated:
    /// `memory` (the default budget: parsed and stored from one copy in
    /// memory) and `file` (no memory budget: every instance through a buffer
    /// file, as before the budget existed).
    #[arg(long, value_delimiter = ',', default_value = "memory,file")]
    pub buffering: Vec<Buffering>,
    /// Also measure fxtriage with this S3 store (as the other commands).
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Buffering {
    Memory,
    File,
}

impl Buffering {
    fn options(self, buffer: &Path, associations: usize) -> DimseOptions {
        let defaults = DimseOptions::default();
        DimseOptions {
            temp_dir: Some(buffer.to_owned()),
            max_associations: defaults.max_associations.max(associations),
            memory_budget_bytes: match self {
                Buffering::Memory => defaults.memory_budget_bytes,
                Buffering::File => 0,
            },
            ..defaults
        }
    }

    fn name(self) -> &'static str {
        match self {
            Buffering::Memory => "memory",
            Buffering::File => "buffer file",
        }
    }
}

/// Writes the instances, one study per 4 images, as Part 10 files in `directory`.
fn write_instances(directory: &Path, count: usize, side: u16) -> anyhow::Result<u64> {
    std::fs::create_dir_all(directory)?;
    let mut bytes = 0;
    let mut study = new_uid();
    for index in 0..count {
        if index % 4 == 0 {
            study = new_uid();
        }
        let instance = SyntheticInstance {
            study_instance_uid: study.clone(),
            series_instance_uid: format!("{study}.1"),
            sop_instance_uid: format!("{study}.1.{}", index % 4 + 1),
            rows: side,
            columns: side,
            ..SyntheticInstance::wrist()
        };
        let part10 = instance.to_part10();
        bytes += part10.len() as u64;
        std::fs::write(directory.join(format!("{index:06}.dcm")), part10)?;
    }
    Ok(bytes)
}

/// The files split into `associations` directories of hard links.
fn split(files: &Path, associations: usize, into: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let directories: Vec<PathBuf> = (0..associations)
        .map(|index| into.join(format!("sender-{index}")))
        .collect();
    for directory in &directories {
        std::fs::create_dir_all(directory)?;
    }
    let mut names: Vec<_> = std::fs::read_dir(files)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for (index, name) in names.iter().enumerate() {
        std::fs::hard_link(
            files.join(name),
            directories[index % associations].join(name),
        )?;
    }
    Ok(directories)
}

/// `unshare` options for private network and PID namespaces: as root
/// directly, else in a new user namespace.
fn unshare_options() -> anyhow::Result<Vec<&'static str>> {
    const NAMESPACES: [&str; 4] = ["--net", "--pid", "--fork", "--kill-child"];
    for user in [&[][..], &["--user", "--map-root-user"][..]] {
        let options: Vec<&str> = user.iter().chain(&NAMESPACES).copied().collect();
        let works = Command::new("unshare")
            .args(&options)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if works {
            return Ok(options);
        }
    }
    bail!(
        "cannot create a private network namespace for storescp (needs root or unprivileged user namespaces)"
    )
}

/// One baseline round: storescp in its namespace, one storescu per directory,
/// into `output` (new and empty).
fn baseline_round(
    options: &[&str],
    script: &Path,
    output: &Path,
    senders: &[PathBuf],
    expected: usize,
) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(output)?;
    let result = Command::new("unshare")
        .args(options)
        .arg("sh")
        .arg(script)
        .arg("11112")
        .arg(output)
        .args(senders)
        .stdin(Stdio::null())
        .output()
        .context("cannot run the storescp baseline")?;
    let printed = String::from_utf8_lossy(&result.stdout);
    ensure!(
        result.status.success(),
        "the storescp baseline failed ({}): {}{}",
        result.status,
        printed,
        String::from_utf8_lossy(&result.stderr)
    );
    let nanoseconds: u64 = printed
        .lines()
        .find_map(|line| line.strip_prefix("elapsed_ns "))
        .and_then(|value| value.trim().parse().ok())
        .context("the baseline printed no time")?;
    let received = std::fs::read_dir(output)?.count();
    ensure!(
        received == expected,
        "storescp wrote {received} of {expected} instances"
    );
    Ok(Duration::from_nanos(nanoseconds))
}

/// fxtriage's C-STORE SCP on `store`, served until dropped.
struct Receiver {
    port: u16,
    announced: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Receiver {
    async fn start(
        store: Arc<dyn ObjectStore>,
        buffering: Buffering,
        buffer: &Path,
        associations: usize,
    ) -> anyhow::Result<Self> {
        let bus = Arc::new(InProcessBus::default());
        let namespace = Namespace::none();
        let ingestor = Ingestor::new(store, bus.clone() as Arc<dyn Bus>, &namespace);
        let sites = SiteRegistry::fixed(Sites::from_toml(&format!(
            "[[site]]\nid = \"bench\"\nae_titles = [\"{AE_TITLE}\"]\n"
        ))?);
        std::fs::create_dir_all(buffer)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shutdown = CancellationToken::new();
        let options = buffering.options(buffer, associations);
        let server = tokio::spawn(dimse::serve(
            listener,
            ingestor,
            sites,
            options,
            shutdown.clone(),
        ));
        // The downstream consumer: takes and counts every announcement.
        let announced = Arc::new(AtomicUsize::new(0));
        let consumer = bus
            .subscribe("bench-ingest", &[&namespace.instances_topic()])
            .await?;
        let counter = Arc::clone(&announced);
        tokio::spawn(async move {
            while let Ok(message) = consumer.next().await {
                if consumer.ack(&message).is_err() {
                    break;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Self {
            port,
            announced,
            shutdown,
            server,
        })
    }

    /// The time to receive every file of `senders`, and how much this
    /// process's resident memory rose meanwhile (its peak less what it held
    /// at the start).
    async fn round(&self, senders: &[PathBuf], expected: usize) -> anyhow::Result<(Duration, u64)> {
        let before = self.announced.load(Ordering::SeqCst);
        reset_peak_memory("self");
        let resident = memory("self", "VmRSS")?;
        let started = Instant::now();
        let mut children = Vec::new();
        for directory in senders {
            children.push(
                tokio::process::Command::new("storescu")
                    .args(["-aec", AE_TITLE, "-aet", "BENCH", "+sd"])
                    .args(["127.0.0.1", &self.port.to_string()])
                    .arg(directory)
                    .env("TCP_NODELAY", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    // A round that fails stops the other senders with it.
                    .kill_on_drop(true)
                    .spawn()
                    .context("cannot run dcmtk's storescu (scripts/bootstrap installs dcmtk)")?,
            );
        }
        for child in children {
            let output = child.wait_with_output().await?;
            ensure!(
                output.status.success(),
                "storescu failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let elapsed = started.elapsed();
        // Every instance was acknowledged after its event was produced; the
        // consumer may still be counting the last ones.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.announced.load(Ordering::SeqCst) - before < expected {
            ensure!(
                Instant::now() < deadline,
                "{} of {expected} instances announced",
                self.announced.load(Ordering::SeqCst) - before
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((elapsed, memory("self", "VmHWM")?.saturating_sub(resident)))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await??;
        Ok(())
    }
}

#[allow(clippy::print_stdout)]
pub async fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    ensure!(args.instances > 0, "--instances must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.associations
            .iter()
            .all(|&count| count > 0 && count <= args.instances),
        "each association count must be between 1 and --instances"
    );
    let options = unshare_options()?;
    let work = tempfile::tempdir()?;
    let files = work.path().join("files");
    let bytes = write_instances(&files, args.instances, args.image_side)?;
    let script = work.path().join("ingest_baseline.sh");
    std::fs::write(&script, BASELINE)?;

    let s3 = match &args.store.s3_bucket {
        Some(bucket) => Some((format!("S3 bucket {bucket}"), args.store.connect().await?)),
        None => None,
    };
    println!(
        "fxtriage bench ingest: {} synthetic DX instances per round ({} KB each on average), sent by dcmtk's storescu (one process per association, TCP_NODELAY), {} rounds per figure (median), interleaved",
        args.instances,
        bytes / args.instances as u64 / 1024,
        args.rounds
    );
    println!(
        "fxtriage: its C-STORE SCP (validate, store durably, announce on the in-process bus, then answer); baseline: dcmtk's storescp writing files (no fsync), in a private network namespace"
    );
    println!(
        "Every round writes into new directories and nothing is deleted until the end (deleting makes the next file creations slower on ext4)."
    );
    println!(
        "{:<13} {:<24} {:<12} {:>14} {:>14} {:>7} {:>14}",
        "associations",
        "fxtriage store",
        "buffering",
        "fxtriage /s",
        "storescp /s",
        "ratio",
        "fxtriage RSS+"
    );
    let mut run = 0;
    let mut senders = Vec::new();
    for &associations in &args.associations {
        senders.push(split(
            &files,
            associations,
            &work.path().join(format!("senders-{associations}")),
        )?);
    }
    for store_name in
        std::iter::once("local directory").chain(s3.as_ref().map(|(name, _)| name.as_str()))
    {
        for (&associations, senders) in args.associations.iter().zip(&senders) {
            for &buffering in &args.buffering {
                let mut ours = Samples::default();
                let mut theirs = Samples::default();
                let mut peak = 0;
                for _ in 0..args.rounds {
                    run += 1;
                    let store: Arc<dyn ObjectStore> = match &s3 {
                        Some((name, store)) if name == store_name => Arc::clone(store),
                        _ => Arc::new(LocalDirStore::new(work.path().join(format!("store-{run}")))),
                    };
                    let receiver = Receiver::start(
                        store,
                        buffering,
                        &work.path().join(format!("buffer-{run}")),
                        associations,
                    )
                    .await?;
                    let (elapsed, memory) = receiver.round(senders, args.instances).await?;
                    peak = peak.max(memory);
                    receiver.stop().await?;
                    ours.push(args.instances as f64 / elapsed.as_secs_f64());
                    let elapsed = baseline_round(
                        &options,
                        &script,
                        &work.path().join(format!("storescp-{run}")),
                        senders,
                        args.instances,
                    )?;
                    theirs.push(args.instances as f64 / elapsed.as_secs_f64());
                }
                let (ours, theirs) = (ours.median(), theirs.median());
                println!(
                    "{associations:<13} {store_name:<24} {:<12} {ours:>14.1} {theirs:>14.1} {:>6.2}x {:>10.0} MiB",
                    buffering.name(),
                    ours / theirs,
                    peak as f64 / f64::from(1 << 20)
                );
            }
        }
    }
    // What bounds one association: the local store's durable write alone
    // (temporary file, fsync, directories created and fsynced, rename,
    // directory fsync), one instance after another, same bytes and keys.
    let instances: Vec<(fxtriage_objstore::ObjectKey, bytes::Bytes)> = {
        let mut names: Vec<_> = std::fs::read_dir(&files)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        names
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path)?;
                let info = fxtriage_dicom::inspect_bytes(&bytes)
                    .map_err(|rejection| anyhow::anyhow!("{rejection}"))?;
                let key = format!(
                    "bench/{}/{}/{}.dcm",
                    info.study_instance_uid.unwrap_or_default(),
                    info.series_instance_uid.unwrap_or_default(),
                    info.sop_instance_uid.unwrap_or_default()
                );
                Ok((
                    fxtriage_objstore::ObjectKey::parse(&key)?,
                    bytes::Bytes::from(bytes),
                ))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut alone = Samples::default();
    for _ in 0..args.rounds {
        run += 1;
        let store = LocalDirStore::new(work.path().join(format!("store-{run}")));
        let started = Instant::now();
        for (key, bytes) in &instances {
            store.put(key, bytes.clone()).await?;
        }
        alone.push(instances.len() as f64 / started.elapsed().as_secs_f64());
    }
    println!(
        "the local store's durable write alone, one instance at a time (what bounds one association): {:.1} /s (median)",
        alone.median()
    );
    if let Some((_, store)) = &s3 {
        // The benchmark's objects are its own.
        for object in store.list("bench/").await? {
            let _ = store.delete(&object.key).await;
        }
    }
    println!(
        "ratio: fxtriage instances/s / storescp instances/s. fxtriage RSS+: how far the benchmark process's resident memory rose above what it held before the round while fxtriage received (largest over the rounds)"
    );
    Ok(())
}
