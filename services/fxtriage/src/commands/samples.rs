//! `fxtriage samples`: synthetic sample studies (radiographs with and without
//! fractures, of several body parts and urgencies) as DICOM files, with their
//! ground truth in samples.csv; or the same images as a labelled dataset in
//! either layout of `fxtriage models evaluate` (docs/evaluation.md).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
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
    /// How to write them: DICOM files with samples.csv (dicom); DICOM files
    /// with labels.csv, the table layout of `models evaluate` (table); or PNG
    /// pictures with YOLO labels (images/, labels/, classes.txt,
    /// metadata.csv), as public fracture datasets ship them (yolo).
    #[arg(long, value_enum, default_value_t = Layout::Dicom)]
    pub layout: Layout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    Dicom,
    Table,
    Yolo,
}

/// Synthetic patients' sex and age (years) by study, paediatric ones included:
/// the subgroups of an evaluation.
const SEXES: [&str; 2] = ["F", "M"];
const AGES: [u32; 5] = [8, 34, 71, 15, 52];

/// Body parts of the samples; the chest is stored but not analysed.
const BODY_PARTS: [&str; 7] = ["WRIST", "ANKLE", "FOREARM", "HAND", "HIP", "LEG", "CHEST"];
/// RequestedProcedurePriority of the samples: STAT is an emergency, HIGH an inpatient.
const PRIORITIES: [&str; 4] = ["ROUTINE", "STAT", "", "HIGH"];

#[allow(clippy::print_stdout)]
pub fn run(args: &SamplesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut writer = Writer::new(args)?;
    let mut files = 0;
    for index in 0..args.studies {
        let study = new_uid();
        let body_part = BODY_PARTS[index % BODY_PARTS.len()];
        let priority = PRIORITIES[(index / 2) % PRIORITIES.len()];
        let fractured = index % 3 == 0;
        let patient = (SEXES[(index / 3) % SEXES.len()], AGES[index % AGES.len()]);
        for image in 0..(1 + index % 2) {
            let seed = args
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((index * 8 + image) as u64);
            let (mut instance, fracture_box) =
                SyntheticInstance::radiograph(seed, fractured && image == 0, body_part);
            instance.study_instance_uid = study.clone();
            instance.series_instance_uid = format!("{study}.1");
            instance.sop_instance_uid = format!("{study}.1.{}", image + 1);
            instance.accession_number = format!("DEMO{index:04}");
            instance.requested_priority = priority.into();
            let name = format!("study-{index:03}-{}", image + 1);
            writer.write(&name, &instance, fracture_box, patient)?;
            files += 1;
        }
    }
    println!(
        "wrote {files} synthetic images of {} studies to {} ({})",
        args.studies,
        args.out.display(),
        match args.layout {
            Layout::Dicom => "ground truth in samples.csv",
            Layout::Table => "labels in labels.csv",
            Layout::Yolo => "PNG pictures in images/, YOLO labels in labels/",
        }
    );
    Ok(())
}

/// The files of one layout.
enum Writer {
    Dicom {
        out: PathBuf,
        truth: std::fs::File,
    },
    Table {
        out: PathBuf,
        labels: std::fs::File,
    },
    Yolo {
        out: PathBuf,
        metadata: std::fs::File,
    },
}

impl Writer {
    fn new(args: &SamplesArgs) -> anyhow::Result<Self> {
        let out = args.out.clone();
        match args.layout {
            Layout::Dicom => {
                let mut truth = std::fs::File::create(out.join("samples.csv"))?;
                writeln!(
                    truth,
                    "file,study_instance_uid,accession,body_part,requested_priority,fracture"
                )?;
                Ok(Writer::Dicom { out, truth })
            }
            Layout::Table => {
                // Body part and view are left to the DICOM headers.
                let mut labels = std::fs::File::create(out.join("labels.csv"))?;
                writeln!(labels, "file,study,fracture,sex,age")?;
                Ok(Writer::Table { out, labels })
            }
            Layout::Yolo => {
                std::fs::create_dir_all(out.join("images"))?;
                std::fs::create_dir_all(out.join("labels"))?;
                std::fs::write(out.join("classes.txt"), "fracture\ntext\n")?;
                let mut metadata = std::fs::File::create(out.join("metadata.csv"))?;
                writeln!(metadata, "file,study,body_part,view,sex,age")?;
                Ok(Writer::Yolo { out, metadata })
            }
        }
    }

    fn write(
        &mut self,
        name: &str,
        instance: &SyntheticInstance,
        fracture_box: Option<[f32; 4]>,
        (sex, age): (&str, u32),
    ) -> anyhow::Result<()> {
        let study = &instance.study_instance_uid;
        let fracture = fracture_box.is_some();
        match self {
            Writer::Dicom { out, truth } => {
                let file = format!("{name}.dcm");
                std::fs::write(out.join(&file), instance.to_part10())?;
                writeln!(
                    truth,
                    "{file},{study},{},{},{},{fracture}",
                    instance.accession_number, instance.body_part, instance.requested_priority
                )?;
            }
            Writer::Table { out, labels } => {
                let file = format!("{name}.dcm");
                std::fs::write(out.join(&file), instance.to_part10())?;
                writeln!(labels, "{file},{study},{},{sex},{age}", yes_no(fracture))?;
            }
            Writer::Yolo { out, metadata } => {
                let file = format!("{name}.png");
                // The picture as the DICOM path windows it, quantised to 8
                // bits, as public datasets ship radiographs.
                let (image, _window) =
                    fxtriage_dicom::pixels::decode_windowed(&instance.to_part10())?;
                std::fs::write(
                    out.join("images").join(&file),
                    fxtriage_dicom::picture::encode_png(&image)?,
                )?;
                let (columns, rows) = (image.columns as f32, image.rows as f32);
                // A marker of another class on every picture, as datasets
                // label the side marker: it is not a fracture.
                let mut label = String::from("1 0.060000 0.040000 0.080000 0.040000\n");
                if let Some([x0, y0, x1, y1]) = fracture_box {
                    label += &format!(
                        "0 {:.6} {:.6} {:.6} {:.6}\n",
                        (x0 + x1) / 2.0 / columns,
                        (y0 + y1) / 2.0 / rows,
                        (x1 - x0) / columns,
                        (y1 - y0) / rows
                    );
                }
                std::fs::write(out.join("labels").join(format!("{name}.txt")), label)?;
                writeln!(
                    metadata,
                    "{file},{study},{},{},{sex},{age}",
                    instance.body_part, instance.view_position
                )?;
            }
        }
        Ok(())
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
