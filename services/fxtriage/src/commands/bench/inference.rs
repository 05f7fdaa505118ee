//! `fxtriage bench inference`: the inference pipeline (fetch from the object
//! store, decode, preprocess, batched inference, produce the finding) on
//! synthetic radiographs, at each batch size asked for, next to ONNX Runtime
//! alone running the same model on the same preprocessed tensors with the same
//! sessions. The ratio of the two is what the pipeline costs beyond the model.
//!
//! Each image goes through `consumer::analyse_instance`, the function the
//! service runs, so the stage timings are the ones a `Finding` carries; the
//! produce stage is timed around the bus's confirmed produce.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use fxtriage_bus::{Bus, InProcessBus, InProcessConfig, Record};
use fxtriage_dicom::pixels::{decode_for_input, letterbox_model};
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_inference::consumer::{Deps, analyse_instance};
use fxtriage_inference::model::InputTensor;
use fxtriage_inference::{BatchConfig, Batcher, Model};
use fxtriage_objstore::{LocalDirStore, ObjectKey, ObjectStore};
use fxtriage_proto::Message as _;
use fxtriage_proto::Namespace;
use fxtriage_proto::v1::{FindingStatus, InstanceRef, InstanceStored};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Samples, process_cpu_time};
use crate::clients::{BusArgs, StoreArgs};
use crate::model_args::ModelArgs;

#[derive(Debug, Args)]
pub struct InferenceBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes to measure, comma-separated; each is the batcher's largest batch
    /// (--max-batch is not used here).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub batch_sizes: Vec<usize>,
    /// Images per round.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Timed rounds per batch size, after one warm-up round; throughput is their median.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Side of the synthetic radiographs in pixels (16 bits, uncompressed explicit VR little endian).
    #[arg(long, default_value_t = 2048)]
    pub image_side: u16,
    /// Images in flight (default: twice the batch size times the sessions, at least the cores).
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Offered loads, images per second, comma-separated: after the batch sizes,
    /// images are sent at each rate for --rate-seconds (batches up to --max-batch)
    /// and the process's CPU time per image is reported (the ONNX Runtime
    /// threads' idle spinning included when --ort-spinning is given).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// How long each offered load of --rates lasts.
    #[arg(long, default_value_t = 10.0)]
    pub rate_seconds: f64,
    /// Kafka bootstrap servers for the produce stage; the in-process bus when unset.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// Where the images are stored and fetched from; a temporary directory when
    /// neither --s3-bucket nor --store-dir is given.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// One image's stage times in milliseconds.
#[derive(Debug, Clone, Copy)]
struct ImageStages {
    fetch: f64,
    decode_wait: f64,
    decode: f64,
    preprocess: f64,
    queue: f64,
    infer: f64,
    produce: f64,
    total: f64,
    batch_size: u32,
}

const STAGES: [&str; 8] = [
    "fetch",
    "decode_wait",
    "decode",
    "preprocess",
    "queue",
    "infer",
    "produce",
    "total",
];

impl ImageStages {
    fn stage(&self, name: &str) -> f64 {
        match name {
            "fetch" => self.fetch,
            "decode_wait" => self.decode_wait,
            "decode" => self.decode,
            "preprocess" => self.preprocess,
            "queue" => self.queue,
            "infer" => self.infer,
            "produce" => self.produce,
            _ => self.total,
        }
    }
}

#[allow(clippy::print_stdout)]
pub async fn run(args: InferenceBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        args.batch_sizes.iter().all(|&size| size > 0),
        "batch sizes must be at least 1"
    );
    anyhow::ensure!(args.image_side >= 64, "--image-side must be at least 64");
    let (model, base_batch) = args.model.load()?;
    let _temporary;
    let (store, store_name): (Arc<dyn ObjectStore>, String) =
        if args.store.s3_bucket.is_some() || args.store.store_dir.is_some() {
            let name = match &args.store.s3_bucket {
                Some(bucket) => format!("S3 bucket {bucket}"),
                None => "local directory".into(),
            };
            (args.store.connect().await?, name)
        } else {
            let directory = tempfile::tempdir().context("cannot create a temporary directory")?;
            let store = Arc::new(LocalDirStore::new(directory.path().to_path_buf()));
            _temporary = directory;
            (store, "local directory (temporary)".into())
        };
    let (bus, bus_name): (Arc<dyn Bus>, String) = match &args.kafka_brokers {
        Some(brokers) => {
            let bus_args = BusArgs {
                kafka_brokers: brokers.clone(),
                topic_partitions: 8,
                topic_replication: 1,
                namespace: bench_namespace(),
                kafka_properties: Vec::new(),
            };
            (
                bus_args.connect("fxtriage-bench").await?,
                format!("Kafka at {brokers}"),
            )
        }
        None => (
            Arc::new(InProcessBus::new(InProcessConfig::default())),
            "in-process".into(),
        ),
    };

    let (instances, tensors_source) = store_images(
        store.as_ref(),
        args.images,
        args.image_side,
        model.input_size(),
    )
    .await?;
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let manifest = &model.manifest;
    println!(
        "fxtriage bench inference: model {} {} (input {} px), provider {}, {} session(s); \
         {} synthetic {side}x{side} 16-bit images per round, {} timed rounds after a warm-up; \
         store: {store_name}; bus: {bus_name}; {cores} cores",
        manifest.name,
        manifest.version,
        manifest.input.size,
        model.provider,
        model.sessions(),
        args.images,
        args.rounds,
        side = args.image_side,
    );
    println!(
        "The model is the synthetic-data demonstration model unless --model says otherwise; these are speed figures only."
    );
    let setup = Setup {
        model,
        base_batch,
        store,
        bus,
        instances,
        cores,
    };
    let measured = measure(&args, &setup, &tensors_source).await;
    let Setup {
        store, instances, ..
    } = setup;
    // The images are the benchmark's own: removed also when it failed.
    for instance in &instances {
        let key = ObjectKey::parse(&instance.object_key)?;
        if let Err(error) = store.delete(&key).await {
            tracing::warn!(%error, key = %instance.object_key, "cannot remove a benchmark image");
        }
    }
    measured
}

#[allow(clippy::print_stdout)]
/// Its own topics: benchmark findings never reach a deployment's.
fn bench_namespace() -> Namespace {
    Namespace::new("bench").unwrap_or_default()
}

/// What every measurement shares: the model, its batching, the stored images
/// and where findings go.
struct Setup {
    model: Arc<Model>,
    base_batch: BatchConfig,
    store: Arc<dyn ObjectStore>,
    bus: Arc<dyn Bus>,
    instances: Vec<InstanceStored>,
    cores: usize,
}

impl Setup {
    /// The service's dependencies with a batcher of its own on `config`.
    fn deps(&self, config: BatchConfig) -> Deps {
        Deps {
            bus: Arc::clone(&self.bus),
            store: Arc::clone(&self.store),
            model: Arc::clone(&self.model),
            batcher: Batcher::start(Arc::clone(&self.model), config),
            namespace: bench_namespace(),
        }
    }
}

async fn measure(
    args: &InferenceBenchArgs,
    setup: &Setup,
    tensors_source: &[Vec<f32>],
) -> anyhow::Result<()> {
    measure_batch_sizes(args, setup, tensors_source).await?;
    if !args.rates.is_empty() {
        measure_rates(args, setup).await?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn measure_batch_sizes(
    args: &InferenceBenchArgs,
    setup: &Setup,
    tensors_source: &[Vec<f32>],
) -> anyhow::Result<()> {
    let Setup {
        model,
        base_batch,
        instances,
        cores,
        ..
    } = setup;
    let (base_batch, cores) = (*base_batch, *cores);
    for &batch in &args.batch_sizes {
        let in_flight = args
            .in_flight
            .unwrap_or((2 * batch * model.sessions()).max(cores))
            .max(1);
        let config = BatchConfig {
            max_batch: batch,
            queue_capacity: batch * 4,
            ..base_batch
        };
        let deps = setup.deps(config);
        let mut throughput = Samples::default();
        let mut stages: Vec<ImageStages> = Vec::new();
        for round in 0..=args.rounds {
            let (elapsed, measured) = pipeline_round(&deps, instances, in_flight).await?;
            if round > 0 {
                throughput.push(instances.len() as f64 / elapsed.as_secs_f64());
                stages.extend(measured);
            }
        }
        let tensors = Arc::new(batch_tensors(model, tensors_source, batch)?);
        let mut raw_throughput = Samples::default();
        let mut raw_batch_ms = Samples::default();
        for round in 0..=args.rounds {
            let (elapsed, per_batch) = raw_round(Arc::clone(model), Arc::clone(&tensors)).await?;
            if round > 0 {
                raw_throughput.push((tensors.len() * batch) as f64 / elapsed.as_secs_f64());
                raw_batch_ms.extend(&per_batch);
            }
        }
        let mut batch_sizes = Samples::default();
        for image in &stages {
            batch_sizes.push(f64::from(image.batch_size));
        }
        let pipeline = throughput.median();
        let raw = raw_throughput.median();
        println!();
        println!(
            "batch {batch} (max wait {} ms, {in_flight} images in flight, median batch formed {:.0}{})",
            config.max_wait.as_millis(),
            batch_sizes.median(),
            if config.pad_to_max_batch {
                ", padded to one shape"
            } else {
                ""
            }
        );
        println!(
            "  pipeline            {pipeline:>9.1} images/s   (median of {} rounds)",
            args.rounds
        );
        println!(
            "  ONNX Runtime alone  {raw:>9.1} images/s   (same tensors, batch {batch}; {:.2} ms per batch, median)",
            raw_batch_ms.median()
        );
        println!(
            "  ratio pipeline / ONNX Runtime alone: {:.3}",
            pipeline / raw
        );
        println!("  stage (ms)        p50       p95       p99");
        for name in STAGES {
            let mut values = Samples::default();
            for image in &stages {
                values.push(image.stage(name));
            }
            println!(
                "  {name:<12} {:>9.2} {:>9.2} {:>9.2}",
                values.median(),
                values.quantile(0.95),
                values.quantile(0.99)
            );
        }
    }
    Ok(())
}

/// Writes `count` synthetic radiographs (half with a fracture line), scaled up to
/// `side` pixels, to the store; returns the events announcing them and each
/// image decoded and letterboxed to `input_size` (outside the timings: the
/// tensors ONNX Runtime alone is measured on).
async fn store_images(
    store: &dyn ObjectStore,
    count: usize,
    side: u16,
    input_size: u32,
) -> anyhow::Result<(Vec<InstanceStored>, Vec<Vec<f32>>)> {
    let mut instances = Vec::with_capacity(count);
    let mut prepared = Vec::with_capacity(count);
    for index in 0..count {
        let (mut instance, _) =
            SyntheticInstance::radiograph(index as u64 + 1, index % 2 == 0, "WRIST");
        let source_side = usize::from(instance.columns);
        let source = instance.pixels.take().unwrap_or_default();
        let side_usize = usize::from(side);
        // Nearest-neighbour upscaling: the pixel content does not matter to the
        // cost of an uncompressed decode, the pixel count does.
        let pixels = (0..side_usize * side_usize)
            .map(|at| {
                let (row, column) = (at / side_usize, at % side_usize);
                source[(row * source_side / side_usize) * source_side
                    + column * source_side / side_usize]
            })
            .collect();
        instance.pixels = Some(pixels);
        instance.rows = side;
        instance.columns = side;
        let study = new_uid();
        instance.study_instance_uid = study.clone();
        instance.series_instance_uid = format!("{study}.1");
        instance.sop_instance_uid = format!("{study}.1.1");
        let bytes = instance.to_part10();
        let (image, _) = decode_for_input(&bytes, input_size)?;
        prepared.push(letterbox_model(&image, input_size).0);
        let key_text = format!("bench/{study}/{study}.1/{study}.1.1.dcm");
        let key = ObjectKey::parse(&key_text)?;
        let byte_size = bytes.len() as u64;
        store
            .put(&key, Bytes::from(bytes))
            .await
            .with_context(|| format!("cannot store {key_text}"))?;
        instances.push(InstanceStored {
            instance: Some(InstanceRef {
                site_id: "bench".into(),
                study_instance_uid: study.clone(),
                series_instance_uid: format!("{study}.1"),
                sop_instance_uid: format!("{study}.1.1"),
            }),
            modality: "DX".into(),
            body_part: "WRIST".into(),
            object_key: key_text,
            byte_size,
            eligible: true,
            ..Default::default()
        });
    }
    Ok((instances, prepared))
}

/// One round: every instance through the service's analysis and a confirmed
/// produce, `in_flight` at a time.
async fn pipeline_round(
    deps: &Deps,
    instances: &[InstanceStored],
    in_flight: usize,
) -> anyhow::Result<(Duration, Vec<ImageStages>)> {
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for instance in instances {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let deps = deps.clone();
        let instance = instance.clone();
        tasks.spawn(async move {
            let stages = one_image(&deps, &instance).await;
            drop(permit);
            stages
        });
    }
    let mut stages = Vec::with_capacity(instances.len());
    while let Some(outcome) = tasks.join_next().await {
        stages.push(outcome.context("a benchmark task failed")??);
    }
    Ok((started.elapsed(), stages))
}

/// Images sent at each of `--rates` for `--rate-seconds`, each through the
/// same path as the rounds; the process's CPU time over the period (from the
/// first send until the last image is done) per image, and its latency.
#[allow(clippy::print_stdout)]
async fn measure_rates(args: &InferenceBenchArgs, setup: &Setup) -> anyhow::Result<()> {
    let (base_batch, instances) = (setup.base_batch, &setup.instances);
    anyhow::ensure!(
        args.rates.iter().all(|rate| *rate > 0.0) && args.rate_seconds > 0.0,
        "--rates and --rate-seconds must be positive"
    );
    let deps = setup.deps(base_batch);
    println!();
    println!(
        "offered load ({} s each; batches up to {}, max wait {} ms; ONNX Runtime threads {}): CPU is this process's, every thread",
        args.rate_seconds,
        base_batch.max_batch,
        base_batch.max_wait.as_millis(),
        if args.model.ort_spinning {
            "spinning while idle"
        } else {
            "sleeping while idle"
        }
    );
    println!("  offered /s   done /s   CPU ms per image   latency p50 ms   p99 ms");
    // Settle: one image through first, so that start-up work is not counted.
    one_image(&deps, &instances[0]).await?;
    for &rate in &args.rates {
        let count = ((rate * args.rate_seconds).round() as usize).max(1);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut tasks = JoinSet::new();
        let cpu_before = process_cpu_time("self")?;
        let started = Instant::now();
        for index in 0..count {
            tokio::time::sleep_until((started + interval * index as u32).into()).await;
            let deps = deps.clone();
            let instance = instances[index % instances.len()].clone();
            tasks.spawn(async move { one_image(&deps, &instance).await });
        }
        let mut latency = Samples::default();
        while let Some(outcome) = tasks.join_next().await {
            latency.push(outcome.context("a benchmark task failed")??.total);
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu_time("self")?.saturating_sub(cpu_before);
        println!(
            "  {rate:>10.1} {:>9.1} {:>18.2} {:>16.2} {:>8.2}",
            count as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / count as f64,
            latency.median(),
            latency.quantile(0.99)
        );
    }
    Ok(())
}

/// One image through the function the service runs, then a confirmed produce
/// of its finding; its stage times.
async fn one_image(deps: &Deps, instance: &InstanceStored) -> anyhow::Result<ImageStages> {
    let image_started = Instant::now();
    let finding = analyse_instance(deps, instance).await;
    if finding.status != FindingStatus::Analysed as i32 {
        anyhow::bail!(
            "an image was not analysed ({}): {}",
            finding.failure_kind,
            finding.failure_reason
        );
    }
    let produce_started = Instant::now();
    let key = instance
        .instance
        .as_ref()
        .map(|image| image.study_instance_uid.clone())
        .unwrap_or_default();
    deps.bus
        .produce(
            &deps.namespace.findings_topic(),
            Record::new(key, finding.encode_to_vec()),
        )
        .await
        .context("producing the finding failed")?;
    let produce = produce_started.elapsed();
    let timings = finding.timings.unwrap_or_default();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(ImageStages {
        fetch: ms(timings.fetch_us),
        decode_wait: ms(timings.decode_wait_us),
        decode: ms(timings.decode_us),
        preprocess: ms(timings.preprocess_us),
        queue: ms(timings.queue_us),
        infer: ms(timings.inference_us),
        produce: produce.as_secs_f64() * 1000.0,
        total: image_started.elapsed().as_secs_f64() * 1000.0,
        batch_size: timings.batch_size,
    })
}

/// The preprocessed images in input tensors of `batch` images each, cycling
/// through the images so that every tensor is full.
fn batch_tensors(
    model: &Model,
    images: &[Vec<f32>],
    batch: usize,
) -> anyhow::Result<Vec<InputTensor>> {
    let batches = images.len().div_ceil(batch);
    (0..batches)
        .map(|index| {
            let chunk: Vec<Vec<f32>> = (0..batch)
                .map(|offset| images[(index * batch + offset) % images.len()].clone())
                .collect();
            Ok(model.input_tensor(&chunk)?)
        })
        .collect()
}

/// Every tensor through ONNX Runtime alone, one thread per session.
async fn raw_round(
    model: Arc<Model>,
    tensors: Arc<Vec<InputTensor>>,
) -> anyhow::Result<(Duration, Samples)> {
    tokio::task::spawn_blocking(move || {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let per_batch = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..model.sessions())
                .map(|_| {
                    scope.spawn(|| {
                        let mut times = Samples::default();
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed);
                            let Some(tensor) = tensors.get(index) else {
                                return Ok::<_, anyhow::Error>(times);
                            };
                            let batch_started = Instant::now();
                            model.run_prepared(tensor)?;
                            times.push_duration_ms(batch_started.elapsed());
                        }
                    })
                })
                .collect();
            let mut all = Samples::default();
            for worker in workers {
                let times = worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("an ONNX Runtime worker panicked"))??;
                all.extend(&times);
            }
            Ok::<_, anyhow::Error>(all)
        })?;
        Ok((started.elapsed(), per_batch))
    })
    .await
    .context("the ONNX Runtime benchmark task failed")?
}
