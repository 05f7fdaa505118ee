//! `fxtriage samples`: synthetic sample studies (radiographs with and without
//! fractures, of several body parts and urgencies) as DICOM files, with their
//! ground truth in samples.csv.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fxtriage_dicom::synthetic::{SyntheticInstance, new_uid};

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
pub fn run(args: &SamplesArgs) -> anyhow::Result<()> {
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
