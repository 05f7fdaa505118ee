//! `fxtriage bench decode`: decoding and preprocessing a real radiograph into
//! the model's input, in fxtriage (the function the inference service runs:
//! `decode_for_input` then `letterbox_model`) and in pydicom + numpy
//! (`decode_baseline.py`, run by the Python given, with the packages
//! `infra/local/stack` installs), on the same files, in the same run.
//!
//! The files are the local stack's real CR samples (pydicom-data: RG3, a lower
//! leg, 1760x1760, 10 bits; RG1, a chest, 1841x1955, 15 bits) as shipped
//! (uncompressed, JPEG 2000 lossless and lossy) and re-encoded here by dcmtk
//! (JPEG lossless, JPEG-LS lossless, RLE). Each figure is the median of
//! `--rounds` after one warm-up, one thread each: run under `taskset -c 0`
//! (as `scripts/bench` does) for the one-core comparison. Next to it, the
//! mean difference between the two inputs: near 0 where both decode the same
//! pixels, about 0.006 for JPEG 2000, which fxtriage decodes at a reduced
//! resolution level.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use fxtriage_dicom::pixels::{decode_for_input, decode_windowed, letterbox, letterbox_model};

use super::Samples;

const BASELINE: &str = include_str!("decode_baseline.py");

#[derive(Debug, Args)]
pub struct DecodeBenchArgs {
    /// The real CR samples (pydicom-data's data directory; `infra/local/stack env` sets it).
    #[arg(long, env = "FXTRIAGE_SAMPLE_DICOM_DIR")]
    pub samples: PathBuf,
    /// Which sample radiographs: RG3 (1760x1760, 10 bits), RG1 (1841x1955, 15 bits).
    #[arg(long, value_delimiter = ',', default_value = "RG3,RG1")]
    pub images: Vec<String>,
    /// The model input's side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Timed rounds per file, after one warm-up; each figure is their median.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// The Python that runs the baseline.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Where the baseline's packages are (pydicom, numpy, pylibjpeg and its
    /// plugins), prepended to its PYTHONPATH; `infra/local/stack env` sets it.
    #[arg(long, env = "FXTRIAGE_BENCH_PYTHONPATH")]
    pub python_path: Option<PathBuf>,
}

struct Input {
    image: String,
    encoding: &'static str,
    path: PathBuf,
}

/// The encodings measured: the sample as shipped, or made from the
/// uncompressed one by a dcmtk tool with its arguments.
const ENCODINGS: [(&str, Source); 6] = [
    ("uncompressed", Source::Shipped("UNCR")),
    ("JPEG lossless", Source::Dcmtk("dcmcjpeg", "+e1")),
    ("JPEG-LS lossless", Source::Dcmtk("dcmcjpls", "+el")),
    ("RLE", Source::Dcmtk("dcmcrle", "+un")),
    ("JPEG 2000 lossless", Source::Shipped("J2KR")),
    ("JPEG 2000 lossy", Source::Shipped("J2KI")),
];

#[derive(Debug, Clone, Copy)]
enum Source {
    Shipped(&'static str),
    Dcmtk(&'static str, &'static str),
}

fn prepare(args: &DecodeBenchArgs, directory: &Path) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for image in &args.images {
        ensure!(
            image.chars().all(|c| c.is_ascii_alphanumeric()),
            "--images: {image:?} is not a sample name"
        );
        let uncompressed = args.samples.join(format!("{image}_UNCR.dcm"));
        ensure!(
            uncompressed.is_file(),
            "{} does not exist (run `infra/local/stack up`, which installs the samples)",
            uncompressed.display()
        );
        for (encoding, source) in ENCODINGS {
            let path = match source {
                Source::Shipped(suffix) => args.samples.join(format!("{image}_{suffix}.dcm")),
                Source::Dcmtk(tool, argument) => {
                    let path = directory.join(format!("{image}-{tool}.dcm"));
                    let status = Command::new(tool)
                        .arg(argument)
                        .arg(&uncompressed)
                        .arg(&path)
                        .status()
                        .with_context(|| {
                            format!("cannot run dcmtk's {tool} (scripts/bootstrap installs dcmtk)")
                        })?;
                    ensure!(status.success(), "{tool} {argument} failed: {status}");
                    path
                }
            };
            inputs.push(Input {
                image: image.clone(),
                encoding,
                path,
            });
        }
    }
    Ok(inputs)
}

struct Measured {
    median_ms: f64,
    input: Vec<f32>,
}

/// Median time of `make` over the rounds after one warm-up, and its output.
fn measure(
    rounds: usize,
    mut make: impl FnMut() -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<Measured> {
    let mut input = make()?;
    let mut samples = Samples::default();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        input = make()?;
        samples.push_duration_ms(started.elapsed());
    }
    Ok(Measured {
        median_ms: samples.median(),
        input,
    })
}

struct BaselineLine {
    file: PathBuf,
    median_ms: f64,
    decoder: String,
}

fn run_baseline(
    args: &DecodeBenchArgs,
    directory: &Path,
    inputs: &[Input],
) -> anyhow::Result<Vec<(BaselineLine, Vec<f32>)>> {
    let script = directory.join("decode_baseline.py");
    std::fs::write(&script, BASELINE)?;
    let outputs = directory.join("baseline");
    std::fs::create_dir_all(&outputs)?;
    let mut command = Command::new(&args.python);
    command
        .arg(&script)
        .arg(args.size.to_string())
        .arg(args.rounds.max(1).to_string())
        .arg(&outputs)
        .args(inputs.iter().map(|input| &input.path));
    if let Some(path) = &args.python_path {
        let mut joined = std::ffi::OsString::from(path);
        if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|value| !value.is_empty()) {
            joined.push(":");
            joined.push(existing);
        }
        command.env("PYTHONPATH", joined);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", args.python.display()))?;
    if !output.status.success() {
        bail!(
            "the baseline failed ({}): {}\n(its packages: `infra/local/stack up` installs them and `infra/local/stack env` sets FXTRIAGE_BENCH_PYTHONPATH)",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let lines: Vec<BaselineLine> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(BaselineLine {
                file: PathBuf::from(value.get("file")?.as_str()?),
                median_ms: value.get("median_ms")?.as_f64()?,
                decoder: value.get("decoder")?.as_str()?.to_owned(),
            })
        })
        .collect::<Option<_>>()
        .context("the baseline printed something other than its JSON lines")?;
    ensure!(
        lines.len() == inputs.len(),
        "the baseline measured {} of {} files",
        lines.len(),
        inputs.len()
    );
    let side = args.size as usize;
    lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            ensure!(
                line.file == inputs[index].path,
                "the baseline's files are out of order"
            );
            let bytes = std::fs::read(outputs.join(format!("{index}.f32")))?;
            ensure!(
                bytes.len() == side * side * 4,
                "the baseline's input {index} has {} bytes",
                bytes.len()
            );
            let input = bytes
                .chunks_exact(4)
                .map(|word| f32::from_le_bytes([word[0], word[1], word[2], word[3]]))
                .collect();
            Ok((line, input))
        })
        .collect()
}

fn mean_difference(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .sum::<f64>()
        / a.len().max(1) as f64
}

#[allow(clippy::print_stdout)]
pub fn run(args: DecodeBenchArgs) -> anyhow::Result<()> {
    let directory = tempfile::tempdir()?;
    let inputs = prepare(&args, directory.path())?;
    let size = args.size;
    let mut ours = Vec::new();
    for input in &inputs {
        let bytes = std::fs::read(&input.path)
            .with_context(|| format!("cannot read {}", input.path.display()))?;
        let pipeline = measure(args.rounds, || {
            let (image, _) = decode_for_input(&bytes, size)?;
            Ok(letterbox_model(&image, size).0)
        })?;
        let full = measure(args.rounds, || {
            let (image, _) = decode_windowed(&bytes)?;
            Ok(letterbox(&image, size).0)
        })?;
        let (image, _) = decode_for_input(&bytes, size)?;
        ours.push((pipeline, full, image.level, bytes.len()));
    }
    let baseline = run_baseline(&args, directory.path(), &inputs)?;
    println!(
        "fxtriage bench decode: first frame to the {size}x{size} model input (decode, rescale, window, letterbox); median of {} rounds per file after a warm-up; one thread each",
        args.rounds.max(1)
    );
    println!(
        "baseline: pydicom + numpy (decoder plugins per file below), full-resolution decode, the same window and area averaging"
    );
    println!(
        "{:<5} {:<20} {:>9}  {:>10} {:>12} {:>11} {:>7}  {:>10}  baseline decoder",
        "image", "encoding", "bytes", "fxtriage", "(full res.)", "pydicom", "ratio", "mean |d|",
    );
    for ((input, (pipeline, full, level, bytes)), (line, theirs)) in
        inputs.iter().zip(&ours).zip(&baseline)
    {
        let ratio = line.median_ms / pipeline.median_ms;
        let level = if *level > 0 {
            format!(" (fxtriage: level {level})")
        } else {
            String::new()
        };
        println!(
            "{:<5} {:<20} {:>9}  {:>7.1} ms {:>9.1} ms {:>8.1} ms {:>6.2}x  {:>10.5}  {}{level}",
            input.image,
            input.encoding,
            bytes,
            pipeline.median_ms,
            full.median_ms,
            line.median_ms,
            ratio,
            mean_difference(&pipeline.input, theirs),
            line.decoder,
        );
    }
    println!(
        "ratio: pydicom + numpy time / fxtriage time. mean |d|: mean absolute difference between the two inputs (0..1 scale). (full res.): fxtriage decoding every resolution level."
    );
    Ok(())
}
