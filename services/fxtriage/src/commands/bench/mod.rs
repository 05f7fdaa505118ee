//! `fxtriage bench analytics`, `bench decode`, `bench ingest`, `bench inference`, `bench pipeline`, `bench simulate` and `bench worklist`: load
//! generators that print throughput and latency figures. Performance targets live here, not in
//! timed tests. Each figure is a median over repeated rounds or a percentile
//! over every request, and each pipeline figure is printed next to a baseline
//! measured in the same run.

pub mod analytics;
pub mod decode;
pub mod inference;
pub mod ingest;
pub mod pipeline;
pub mod simulate;
pub mod worklist;

use std::time::Duration;

use anyhow::Context as _;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

// Parsed once per run: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Decoding and preprocessing real radiographs into the model input, in
    /// every compressed encoding, next to pydicom + numpy on the same files.
    Decode(decode::DecodeBenchArgs),
    /// Images per second and per-stage latency of the inference pipeline, next to
    /// ONNX Runtime alone on the same model and tensors.
    Inference(inference::InferenceBenchArgs),
    /// C-STORE instances per second into fxtriage's SCP, next to dcmtk's
    /// storescp on the same files from the same senders.
    Ingest(ingest::IngestBenchArgs),
    /// The whole product fed by C-STORE at fixed rates: latency from C-STORE
    /// success to the worklist, the highest rate sustained, CPU per instance
    /// of each process; distributed (separate processes on the local stack)
    /// and standalone.
    Pipeline(pipeline::PipelineBenchArgs),
    /// The turnaround figures of a 20-site network over a year (2 million
    /// studies), next to reading the same studies alone.
    Analytics(analytics::AnalyticsBenchArgs),
    /// The queue simulator on a million patients, next to drawing them alone.
    Simulate(simulate::SimulateBenchArgs),
    /// Worklist reads per second with their latency over the HTTP API, and
    /// instances and findings applied per second, on a seeded database.
    Worklist(worklist::WorklistBenchArgs),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Decode(args) => decode::run(args),
        BenchCommand::Inference(args) => inference::run(args).await,
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Pipeline(args) => pipeline::run(args).await,
        BenchCommand::Simulate(args) => simulate::run(args),
        BenchCommand::Analytics(args) => analytics::run(args).await,
        BenchCommand::Worklist(args) => worklist::run(args).await,
    }
}

/// The CPU time so far of process `pid` (a number, or `self`), every thread,
/// user and system: utime and stime of /proc/PID/stat, in Linux's fixed 100
/// ticks per second.
pub fn process_cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces) start at field 3;
    // utime and stime are fields 14 and 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path} without a command name"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("{path} without CPU times"))
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Sorted samples, for percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
        self.sorted = false;
    }

    pub fn push_duration_ms(&mut self, value: Duration) {
        self.push(value.as_secs_f64() * 1000.0);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The `q`-quantile (0..=1) by the nearest-rank method; NaN when empty.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.values.sort_by(f64::total_cmp);
            self.sorted = true;
        }
        let rank = (q.clamp(0.0, 1.0) * self.values.len() as f64).ceil() as usize;
        self.values[rank.clamp(1, self.values.len()) - 1]
    }

    pub fn median(&mut self) -> f64 {
        self.quantile(0.5)
    }
}

/// Resets the peak resident memory of process `pid` (a number, or `self`):
/// "5" to its clear_refs (Linux).
pub fn reset_peak_memory(pid: &str) {
    if let Err(error) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        tracing::warn!(%error, pid, "cannot reset the peak resident memory; the figure covers the whole run");
    }
}

/// A memory figure of process `pid` (a number, or `self`) from
/// /proc/PID/status, in bytes: `VmHWM` (the peak resident memory since the
/// last reset) or `VmRSS` (now).
pub fn memory(pid: &str, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))?;
    Ok(kilobytes * 1024)
}

/// A small deterministic generator (SplitMix64) for the load generators' choices.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut samples = Samples::default();
        for value in (1..=100).rev() {
            samples.push(f64::from(value));
        }
        assert_eq!(samples.median(), 50.0);
        assert_eq!(samples.quantile(0.99), 99.0);
        assert_eq!(samples.quantile(1.0), 100.0);
        assert_eq!(samples.quantile(0.0), 1.0);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn split_mix_is_deterministic_and_spread() {
        let mut a = SplitMix::new(7);
        let mut b = SplitMix::new(7);
        let drawn: Vec<u64> = (0..1000).map(|_| a.below(10)).collect();
        assert_eq!(drawn, (0..1000).map(|_| b.below(10)).collect::<Vec<_>>());
        for bucket in 0..10 {
            let count = drawn.iter().filter(|&&value| value == bucket).count();
            assert!((60..140).contains(&count), "bucket {bucket}: {count}");
        }
    }
}
