//! Commands for trying fxtriage out: `samples` writes synthetic sample studies,
//! `worklist` prints a site's worklist in reading order.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};
use fxtriage_prioritizer::study::WorklistState;
use fxtriage_prioritizer::worklist_store::worklist_page;
use time::OffsetDateTime;

#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Directory to write the DICOM files (and samples.csv, the ground truth) into.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of studies.
    #[arg(long, default_value_t = 24)]
    pub studies: usize,
    /// Seed of the synthetic images.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Body parts of the samples; the chest is stored but not analysed.
const BODY_PARTS: [&str; 7] = ["WRIST", "ANKLE", "FOREARM", "HAND", "HIP", "LEG", "CHEST"];
/// RequestedProcedurePriority of the samples: STAT is an emergency, HIGH an inpatient.
const PRIORITIES: [&str; 4] = ["ROUTINE", "STAT", "", "HIGH"];

#[allow(clippy::print_stdout)]
pub fn samples(args: &SamplesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut truth = std::fs::File::create(args.out.join("samples.csv"))?;
    writeln!(
        truth,
        "file,study_instance_uid,accession,body_part,requested_priority,fracture"
    )?;
    let mut files = 0;
    for index in 0..args.studies {
        let study = new_uid();
        let body_part = BODY_PARTS[index % BODY_PARTS.len()];
        let priority = PRIORITIES[(index / 2) % PRIORITIES.len()];
        let fractured = index % 3 == 0;
        for image in 0..(1 + index % 2) {
            let seed = args
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((index * 8 + image) as u64);
            let (mut instance, _box) =
                SyntheticInstance::radiograph(seed, fractured && image == 0, body_part);
            instance.study_instance_uid = study.clone();
            instance.series_instance_uid = format!("{study}.1");
            instance.sop_instance_uid = format!("{study}.1.{}", image + 1);
            instance.accession_number = format!("DEMO{index:04}");
            instance.requested_priority = priority.into();
            let name = format!("study-{index:03}-{}.dcm", image + 1);
            std::fs::write(args.out.join(&name), instance.to_part10())?;
            writeln!(
                truth,
                "{name},{study},DEMO{index:04},{body_part},{priority},{}",
                fractured && image == 0
            )?;
            files += 1;
        }
    }
    println!(
        "wrote {files} synthetic images of {} studies to {} (ground truth in samples.csv)",
        args.studies,
        args.out.display()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct WorklistArgs {
    #[arg(long, default_value = "demo")]
    pub site: String,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// PostgreSQL URL.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

fn minutes(duration: time::Duration) -> String {
    let total = duration.whole_minutes();
    let (sign, total) = if total < 0 {
        ("-", -total)
    } else {
        ("", total)
    };
    if total >= 60 {
        format!("{sign}{}h{:02}m", total / 60, total % 60)
    } else {
        format!("{sign}{total}m")
    }
}

#[allow(clippy::print_stdout)]
pub async fn worklist(args: &WorklistArgs) -> anyhow::Result<()> {
    let site = fxtriage_core::SiteId::parse(args.site.as_str())?;
    let client = fxtriage_db::DbConfig::from_url(&args.database_url)?
        .connect()
        .await?;
    let rows = worklist_page(&client, &site, WorklistState::Open, None, args.limit).await?;
    let now = OffsetDateTime::now_utc();
    println!(
        "worklist of site {site}, earliest deadline first ({} open studies shown)",
        rows.len()
    );
    println!(
        "{:>3}  {:<10} {:<11} {:<17} {:>6}  {:>8}  {:>11}  study",
        "#", "accession", "urgency", "AI result", "prob.", "waited", "due in"
    );
    for (position, row) in rows.iter().enumerate() {
        let probability = row
            .probability
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>3}  {:<10} {:<11} {:<17} {:>6}  {:>8}  {:>11}  {}",
            position + 1,
            row.accession_number,
            row.urgency.as_str(),
            row.ai_result.as_str(),
            probability,
            minutes(now - row.arrived_at),
            minutes(row.deadline - now),
            row.study_instance_uid
        );
    }
    Ok(())
}
