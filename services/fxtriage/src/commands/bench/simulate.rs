//! `fxtriage bench simulate`: the simulator's speed on the QuCAD example scaled
//! to a million patients (issue 16's goal: under 10 s), next to a baseline
//! measured in the same run: drawing the same patients without reading them,
//! the floor that any simulation of them pays.

use std::time::Instant;

use clap::Args;
use fxtriage_sim::{Scenario, engine};

use super::Samples;

#[derive(Debug, Args)]
pub struct SimulateBenchArgs {
    /// Patients in all (counted ones, over every replication).
    #[arg(long, default_value_t = 1_000_000)]
    pub patients: u64,
    /// Replications the patients are split into.
    #[arg(long, default_value_t = 10)]
    pub replications: u32,
    /// Rounds; the medians are printed.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// The QuCAD user manual's example (docs/simulator.md), with two policies.
fn scenario(args: &SimulateBenchArgs) -> anyhow::Result<Scenario> {
    let per_replication = args.patients / u64::from(args.replications.max(1));
    let policies = r#"
[[policy]]
name = "FIFO"
kind = "fifo"
[[policy]]
name = "deadline + AI"
kind = "deadline"
"#;
    let text = format!(
        "{}{policies}",
        fxtriage_sim::qucad_example(1, args.replications.max(2), per_replication, 0)
    );
    Ok(Scenario::parse(&text)?)
}

#[allow(clippy::print_stdout)]
pub fn run(args: SimulateBenchArgs) -> anyhow::Result<()> {
    let scenario = scenario(&args)?;
    let patients = u64::from(scenario.replications) * scenario.patients;
    let ai = scenario.ai.binormal();
    let mut simulate = Samples::default();
    let mut draw = Samples::default();
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let mut drawn = 0;
        for replication in 0..scenario.replications {
            drawn += engine::generate(&scenario, &ai, None, replication).len();
        }
        std::hint::black_box(drawn);
        draw.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::hint::black_box(fxtriage_sim::run(&scenario)?);
        simulate.push(started.elapsed().as_secs_f64());
    }
    let simulate = simulate.quantile(0.5);
    let draw = draw.quantile(0.5);
    println!(
        "simulate: {patients} patients ({} replications), 2 policies, preemptive-resume, 2 readers, load 0.8; medians of {} rounds",
        scenario.replications,
        args.rounds.max(1)
    );
    println!("  drawing the patients only (baseline): {:>8.3} s", draw);
    println!(
        "  simulating both policies:             {:>8.3} s  ({:.2} M patient-policies/s; {:.1}x the baseline; goal under 10 s)",
        simulate,
        2.0 * patients as f64 / simulate / 1e6,
        simulate / draw
    );
    Ok(())
}
