//! `fxtriage simulate SCENARIO.toml`: what a policy will do to a reading list
//! before go-live (docs/simulator.md). The list is ordered by the prioritizer's
//! own policy code; the figures are a model's, not a measurement of a site.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use fxtriage_sim::{Scenario, report};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The scenario (TOML; see docs/simulator.md and docs/scenarios/).
    pub scenario: PathBuf,
    /// What to print: a table, or every figure as JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write the Markdown report (report.md) and its SVG plots into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    let started = Instant::now();
    let simulation = fxtriage_sim::run(&scenario)?;
    let elapsed = started.elapsed();
    match args.format {
        Format::Table => print!("{}", report::table(&simulation)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&simulation)?),
    }
    if let Some(directory) = &args.report {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("cannot create {}", directory.display()))?;
        let markdown = report::markdown(&simulation, &scenario.description);
        std::fs::write(directory.join("report.md"), markdown)?;
        for (name, svg) in report::plots(&simulation) {
            std::fs::write(directory.join(name), svg)?;
        }
        eprintln!(
            "report written to {}",
            directory.join("report.md").display()
        );
    }
    let patients =
        u64::from(scenario.replications) * (scenario.patients + 2 * scenario.warmup_patients);
    eprintln!(
        "simulated {patients} patients under {} policies in {:.2} s",
        scenario.policies.len(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
