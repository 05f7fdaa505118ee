//! `fxtriage bench decode`, `bench ingest`, `bench inference`, `bench pipeline`
//! and `bench worklist` run end to end on small settings and print every
//! figure they promise; the decoding benchmark compares like with like (its
//! baseline makes the same model input); the pipeline benchmark gets every
//! study it sends onto the worklist in both deployments and drops its
//! databases; the worklist benchmark leaves the seeded items, the applied
//! findings, one audit row per page read and no usable token behind. (The
//! figures themselves are measured by running the benchmarks, not asserted
//! here.)

mod support;

use std::process::Command;

use fxtriage_testkit::FreshDatabase;
use support::{repository_path, stack_env};

fn value<'a>(environment: &'a [(String, String)], name: &str) -> &'a str {
    &environment
        .iter()
        .find(|(key, _)| key == name)
        .unwrap_or_else(|| panic!("{name} is not set"))
        .1
}

/// Runs `fxtriage --log-filter warn bench ARGS` with only PATH and
/// `environment` set, asserts that it succeeded, and returns what it printed.
fn bench<K, V>(args: &[&str], environment: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args(["--log-filter", "warn", "bench"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(environment)
        .output()
        .expect("run");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// The first number after `label` on the line that starts with it (after spaces).
fn figure(printed: &str, label: &str) -> Vec<f64> {
    printed
        .lines()
        .filter(|line| line.trim_start().starts_with(label))
        .map(|line| {
            line.trim_start()[label.len()..]
                .split_whitespace()
                .find_map(|word| word.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no number on {line:?}"))
        })
        .collect()
}

#[test]
fn inference_benchmark_prints_pipeline_and_onnx_runtime_figures_per_batch_size() {
    let Some(environment) = stack_env() else {
        return;
    };
    let model = repository_path("models/fxtriage-demo")
        .display()
        .to_string();
    let printed = bench(
        &[
            "inference",
            "--model",
            &model,
            "--images",
            "6",
            "--rounds",
            "2",
            "--image-side",
            "300",
            "--batch-sizes",
            "1,4",
            "--rates",
            "4",
            "--rate-seconds",
            "1",
        ],
        [("ORT_DYLIB_PATH", value(&environment, "ORT_DYLIB_PATH"))],
    );
    assert!(printed.contains("model fxtriage-demo"), "{printed}");
    assert!(printed.contains("provider cpu"), "{printed}");
    let batches: Vec<&str> = printed
        .lines()
        .filter(|line| line.starts_with("batch "))
        .collect();
    assert_eq!(batches.len(), 2, "{printed}");
    assert!(batches[0].starts_with("batch 1 ") && batches[1].starts_with("batch 4 "));
    for label in ["pipeline ", "ONNX Runtime alone "] {
        let rates = figure(&printed, label);
        assert_eq!(rates.len(), 2, "{label}: {printed}");
        assert!(rates.iter().all(|rate| *rate > 0.0), "{label}: {printed}");
    }
    let ratios = figure(&printed, "ratio pipeline / ONNX Runtime alone:");
    assert_eq!(ratios.len(), 2, "{printed}");
    // ONNX Runtime alone does a subset of the pipeline's work on the same tensors.
    assert!(
        ratios.iter().all(|ratio| *ratio > 0.0 && *ratio < 1.5),
        "{printed}"
    );
    for stage in [
        "fetch",
        "decode_wait",
        "decode",
        "preprocess",
        "queue",
        "infer",
        "produce",
        "total",
    ] {
        let rows = figure(&printed, &format!("{stage} "));
        assert_eq!(rows.len(), 2, "{stage}: {printed}");
    }
    let decode = figure(&printed, "decode ");
    let total = figure(&printed, "total ");
    assert!(
        decode
            .iter()
            .zip(&total)
            .all(|(decode, total)| decode > &0.0 && decode <= total)
    );
    // The offered load: 4 images in one second, each with its CPU time.
    let offered = printed
        .lines()
        .skip_while(|line| !line.starts_with("offered load"))
        .nth(2)
        .unwrap_or_else(|| panic!("no offered load row: {printed}"));
    let numbers: Vec<f64> = offered
        .split_whitespace()
        .map(|word| word.parse().unwrap_or_else(|_| panic!("{offered}")))
        .collect();
    assert_eq!(numbers.len(), 5, "{offered}");
    assert_eq!(numbers[0], 4.0, "{offered}");
    assert!(numbers[1..].iter().all(|value| *value > 0.0), "{offered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_benchmark_seeds_applies_and_reads_through_the_api() {
    let Some(environment) = stack_env() else {
        return;
    };
    let database = FreshDatabase::create_on(
        &support::setting(&environment, "FXTRIAGE_DATABASE_URL"),
        "fxtriage_bench",
    )
    .await;
    let run = |items: &str, findings: &str| {
        bench(
            &[
                "worklist",
                "--sites",
                "3",
                "--items",
                items,
                "--findings",
                findings,
                "--clients",
                "4",
                "--duration-s",
                "1",
                "--page-size",
                "20",
            ],
            [("FXTRIAGE_DATABASE_URL", database.url.as_str())],
        )
    };
    let printed = run("301", "120");
    assert_eq!(
        figure(&printed, "instances applied"),
        vec![301.0],
        "{printed}"
    );
    assert_eq!(
        figure(&printed, "findings applied"),
        vec![120.0],
        "{printed}"
    );
    let reads = figure(&printed, "worklist pages read");
    assert_eq!(reads.len(), 1, "{printed}");
    assert!(reads[0] >= 1.0, "{printed}");

    let db = database.connect().await;
    let per_site: Vec<(String, i64)> = db
        .query(
            "SELECT site_id, count(*) FROM studies WHERE state = 'open' GROUP BY site_id ORDER BY site_id",
            &[],
        )
        .await
        .expect("count")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        per_site,
        vec![
            ("bench-01".to_owned(), 101),
            ("bench-02".to_owned(), 100),
            ("bench-03".to_owned(), 100)
        ]
    );
    let findings: i64 = db
        .query_one(
            "SELECT count(*) FROM findings WHERE model_name = 'fxtriage-bench'",
            &[],
        )
        .await
        .expect("findings")
        .get(0);
    assert_eq!(findings, 120);
    let analysed: i64 = db
        .query_one(
            "SELECT count(*) FROM studies WHERE ai_result <> 'awaiting-analysis'",
            &[],
        )
        .await
        .expect("analysed")
        .get(0);
    assert!((1..=120).contains(&analysed), "{analysed} studies analysed");
    let audit: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'worklist.read'",
            &[],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(audit as f64, reads[0], "one audit row per page read");
    let usable_tokens: i64 = db
        .query_one(
            "SELECT count(*) FROM api_credentials WHERE revoked_at IS NULL",
            &[],
        )
        .await
        .expect("tokens")
        .get(0);
    assert_eq!(usable_tokens, 0, "the benchmark's tokens are revoked");

    // A rerun reuses the seeded items and applies new findings (a new model identity).
    let printed = run("301", "30");
    assert!(
        figure(&printed, "instances applied").is_empty(),
        "{printed}"
    );
    assert_eq!(
        figure(&printed, "findings applied"),
        vec![30.0],
        "{printed}"
    );
    let studies: i64 = db
        .query_one("SELECT count(*) FROM studies", &[])
        .await
        .expect("studies")
        .get(0);
    assert_eq!(studies, 301);
    drop(db);
    database.drop_database().await;
}

/// One sample radiograph in every encoding, one round: a figure per encoding
/// for fxtriage, its full-resolution decode and pydicom + numpy, with the two
/// model inputs equal where both decode every pixel (lossless, not JPEG 2000)
/// and within 1% of full scale on average for JPEG 2000, decoded by fxtriage at
/// resolution level 2.
#[test]
fn decode_benchmark_compares_with_pydicom_on_the_same_input() {
    let Some(settings) = fxtriage_testkit::stack::settings(&[
        "FXTRIAGE_SAMPLE_DICOM_DIR",
        "FXTRIAGE_BENCH_PYTHONPATH",
    ]) else {
        return;
    };
    if !fxtriage_testkit::stack::tool("dcmcjpls", "dcmtk") {
        return;
    }
    let printed = bench(&["decode", "--rounds", "1", "--images", "RG3"], settings);
    let rows: Vec<&str> = printed
        .lines()
        .filter(|line| line.starts_with("RG3 "))
        .collect();
    let encodings = [
        "uncompressed",
        "JPEG lossless",
        "JPEG-LS lossless",
        "RLE",
        "JPEG 2000 lossless",
        "JPEG 2000 lossy",
    ];
    assert_eq!(rows.len(), encodings.len(), "{printed}");
    for (row, encoding) in rows.iter().zip(encodings) {
        let rest = row["RG3".len()..].trim_start();
        assert!(rest.starts_with(encoding), "{row}");
        let words: Vec<&str> = rest[encoding.len()..].split_whitespace().collect();
        // bytes, fxtriage ms, full-resolution ms, pydicom ms, ratio, mean |d|.
        let times: Vec<f64> = [1, 3, 5]
            .iter()
            .map(|index| words[*index].parse().unwrap_or_else(|_| panic!("{row}")))
            .collect();
        assert!(times.iter().all(|time| *time > 0.0), "{row}");
        let ratio: f64 = words[7]
            .strip_suffix('x')
            .and_then(|ratio| ratio.parse().ok())
            .unwrap_or_else(|| panic!("{row}"));
        assert!(ratio > 0.0, "{row}");
        let difference: f64 = words[8].parse().unwrap_or_else(|_| panic!("{row}"));
        if encoding.starts_with("JPEG 2000") {
            assert!(row.ends_with("(fxtriage: level 2)"), "{row}");
            assert!(difference < 0.01, "{row}");
        } else {
            assert!(difference < 1e-4, "the same pixels, the same input: {row}");
        }
    }
}

/// A short ingest benchmark: fxtriage's C-STORE SCP and dcmtk's storescp (in
/// its private network namespace) each receive every instance of every round
/// (the benchmark fails otherwise), with a figure for each association count
/// and buffering, and the store's durable write alone.
#[test]
fn ingest_benchmark_compares_with_storescp_on_the_same_files() {
    for (tool, package) in [
        ("storescp", "dcmtk"),
        ("storescu", "dcmtk"),
        ("unshare", "util-linux"),
    ] {
        if !fxtriage_testkit::stack::tool(tool, package) {
            return;
        }
    }
    if fxtriage_testkit::private_network::unshare_options().is_none() {
        fxtriage_testkit::stack::skip("cannot create a private network namespace for storescp");
        return;
    }
    let printed = bench(
        &[
            "ingest",
            "--instances",
            "24",
            "--rounds",
            "1",
            "--associations",
            "1,3",
            "--image-side",
            "128",
        ],
        std::iter::empty::<(&str, &str)>(),
    );
    let rows: Vec<Vec<&str>> = printed
        .lines()
        .filter(|line| line.contains("local directory"))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{printed}");
    for (row, (associations, buffering)) in rows.iter().zip([
        ("1", "memory"),
        ("1", "buffer"),
        ("3", "memory"),
        ("3", "buffer"),
    ]) {
        assert_eq!(row[0], associations, "{printed}");
        assert_eq!(row[3], buffering, "{printed}");
        // fxtriage /s, storescp /s, the ratio, then the peak memory in MiB.
        assert_eq!(row[row.len() - 1], "MiB", "{printed}");
        let figures: Vec<f64> = row[row.len() - 5..row.len() - 1]
            .iter()
            .map(|word| word.trim_end_matches('x').parse().expect("a number"))
            .collect();
        // The rates and the ratio are positive; the memory rise may be 0 MiB
        // (instances buffered in a file, on a machine that had the pages already).
        assert!(figures[..3].iter().all(|value| *value > 0.0), "{printed}");
        assert!(figures[3] >= 0.0, "{printed}");
    }
    let alone = figure(&printed, "the local store's durable write alone");
    assert_eq!(alone.len(), 1, "{printed}");
}

/// The models of realistic size (random weights, made by
/// models/bench/make_bench_models.py) load and run through the inference
/// benchmark: a ResNet-50 classifier at 512 px and a YOLOv8s-sized detector at
/// 640 px, each with its pipeline and ONNX Runtime alone figures. Their
/// manifests say what they are: random weights, not a fracture model.
#[test]
fn inference_benchmark_runs_the_models_of_realistic_size() {
    let Some(settings) =
        fxtriage_testkit::stack::settings(&["FXTRIAGE_BENCH_PYTHONPATH", "ORT_DYLIB_PATH"])
    else {
        return;
    };
    let models = tempfile::tempdir().expect("tempdir");
    let made = Command::new("python3")
        .arg(repository_path("models/bench/make_bench_models.py"))
        .arg(models.path())
        .env("PYTHONPATH", &settings[0].1)
        .output()
        .expect("run python3");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for (name, size, parameters) in [
        ("resnet50-512", 512, 20_000_000),
        ("yolo-s-640", 640, 10_000_000),
    ] {
        let directory = models.path().join(name);
        let manifest = std::fs::read_to_string(directory.join("manifest.toml")).expect("manifest");
        assert!(manifest.contains("RANDOM weights"), "{manifest}");
        assert!(manifest.contains("not a fracture model"), "{manifest}");
        let printed = bench(
            &[
                "inference",
                "--model",
                &directory.display().to_string(),
                "--images",
                "2",
                "--rounds",
                "1",
                "--image-side",
                "700",
                "--batch-sizes",
                "1",
            ],
            [("ORT_DYLIB_PATH", settings[1].1.as_str())],
        );
        assert!(
            printed.contains(&format!("model {name} 0.0.1 (input {size} px)")),
            "{printed}"
        );
        let ratio = figure(&printed, "ratio pipeline / ONNX Runtime alone:");
        assert_eq!(ratio.len(), 1, "{printed}");
        assert!(ratio[0] > 0.0, "{printed}");
        let stated: u64 = manifest
            .split("RANDOM weights, ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .map(|count| count.replace(',', ""))
            .and_then(|count| count.parse().ok())
            .expect("a parameter count");
        assert!(stated > parameters, "{name}: {stated} parameters");
    }
}

/// A short pipeline benchmark on both deployments: the distributed mode as
/// separate processes on the local stack and standalone, each fed by C-STORE
/// at two small rates. Every image sent is acknowledged and every study
/// reaches the worklist analysed (a study never listed would leave the row
/// without a drain time and skip the next rate); each process's CPU share
/// is reported; each deployment's database is gone afterwards.
#[test]
fn pipeline_benchmark_measures_both_deployments_from_c_store_to_worklist() {
    let Some(environment) = stack_env() else {
        return;
    };
    let databases = || {
        let url = value(&environment, "FXTRIAGE_DATABASE_URL").to_owned();
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async move {
                let client = fxtriage_db::DbConfig::from_url(&url)
                    .expect("URL")
                    .connect()
                    .await
                    .expect("connect");
                client
                    .query(
                        "SELECT datname FROM pg_database WHERE datname LIKE 'fxtriage\\_pipeline\\_bench\\_%'",
                        &[],
                    )
                    .await
                    .expect("list databases")
                    .iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<std::collections::BTreeSet<_>>()
            })
    };
    let before = databases();
    let model = repository_path("models/fxtriage-demo")
        .display()
        .to_string();
    let printed = bench(
        &[
            "pipeline",
            "--rates",
            "4,8",
            "--duration-s",
            "3",
            "--images-per-study",
            "2",
            "--image-side",
            "96",
            "--model",
            &model,
        ],
        environment.iter().cloned(),
    );
    for (mode, processes) in [
        ("distributed", &["ingest", "inference", "prioritizer"][..]),
        ("standalone", &["standalone"][..]),
    ] {
        let rows: Vec<&str> = printed
            .lines()
            .filter(|line| line.starts_with(&format!("{mode} ")))
            .collect();
        assert_eq!(rows.len(), 2, "{printed}");
        for (row, (rate, images)) in rows.iter().zip([("4", "12"), ("8", "24")]) {
            let words: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(words[1], rate, "{printed}");
            // sent/s, p50, p99, max, drain: numbers; then every image sent.
            for word in &words[2..7] {
                let value: f64 = word.parse().unwrap_or_else(|_| panic!("{row}"));
                assert!(value >= 0.0, "{row}");
            }
            let p50: f64 = words[3].parse().expect("p50");
            let max: f64 = words[5].parse().expect("max");
            assert!(p50 > 0.0 && max >= p50, "{row}");
            assert_eq!(words[7], images, "{printed}");
            for process in processes
                .iter()
                .chain(&["tansu", "weed", "postgres", "load generator"])
            {
                assert!(row.contains(&format!("{process} ")), "{process}: {row}");
            }
        }
        let peaks: Vec<&str> = printed
            .lines()
            .filter(|line| line.starts_with("  peak resident memory: "))
            .collect();
        for process in processes {
            assert!(
                peaks
                    .iter()
                    .any(|line| line.contains(&format!("{process} "))),
                "{process}: {printed}"
            );
        }
        assert!(
            printed.contains(&format!("{mode}: highest rate sustained"))
                || printed.contains(&format!("{mode}: no rate sustained")),
            "{printed}"
        );
    }
    assert!(!printed.contains("not on the worklist"), "{printed}");
    assert_eq!(databases(), before, "the benchmark's databases are dropped");
}

/// `bench simulate` on a small run: both figures printed, the simulation slower
/// than drawing the patients it reads (the baseline is a floor, not a rival).
#[test]
fn simulate_benchmark_prints_the_simulation_next_to_its_baseline() {
    let printed = bench(
        &[
            "simulate",
            "--patients",
            "40000",
            "--replications",
            "4",
            "--rounds",
            "2",
        ],
        Vec::<(String, String)>::new(),
    );
    assert!(
        printed.contains("40000 patients (4 replications)"),
        "{printed}"
    );
    let draw = figure(&printed, "drawing the patients only (baseline):");
    let simulate = figure(&printed, "simulating both policies:");
    assert_eq!((draw.len(), simulate.len()), (1, 1), "{printed}");
    assert!(draw[0] > 0.0 && simulate[0] > draw[0], "{printed}");
}

/// `bench analytics` on a small network: it seeds the studies (once: a rerun
/// adds none), reads every timeline and prints its figures next to the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_benchmark_seeds_a_network_and_times_its_figures() {
    let Some(environment) = stack_env() else {
        return;
    };
    let database = FreshDatabase::create_on(
        &support::setting(&environment, "FXTRIAGE_DATABASE_URL"),
        "fxtriage_bench_analytics",
    )
    .await;
    let run = || {
        bench(
            &[
                "analytics",
                "--studies",
                "3000",
                "--sites",
                "4",
                "--rounds",
                "1",
            ],
            [("FXTRIAGE_DATABASE_URL", database.url.as_str())],
        )
    };
    let printed = run();
    assert!(
        printed.contains("analytics: 3000 studies of 4 sites over a year (3000 seeded now)"),
        "{printed}"
    );
    assert!(printed.contains("(3 groups)"), "one per urgency: {printed}");
    let baseline = figure(&printed, "reading studies and reports alone (baseline):");
    let timelines = figure(&printed, "reading the timelines:");
    let total = figure(&printed, "timelines and figures (the command's work):");
    assert_eq!(
        (baseline.len(), timelines.len(), total.len()),
        (1, 1, 1),
        "{printed}"
    );
    assert!(
        baseline[0] > 0.0 && timelines[0] > 0.0 && total[0] >= timelines[0],
        "{printed}"
    );
    let again = run();
    assert!(again.contains("(0 seeded now)"), "{again}");
    let client = database.connect().await;
    let opened: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'study.read'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(opened, 300, "a tenth of the studies opened");
}
