//! `fxtriage models evaluate MODEL_DIR --dataset DIR`: a model measured on a
//! labelled dataset through the service's own pipeline (docs/evaluation.md).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use fxtriage_inference::Batcher;
use fxtriage_inference::evaluate::{self, DatasetOptions, EvaluateOptions};

use crate::model_args::ModelArgs;

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Measure a model on a labelled dataset: AUC, sensitivity and specificity at its operating points, subgroups, boxes, calibration.
    Evaluate(Box<EvaluateArgs>),
    /// Record a model's reference score distribution (written by `evaluate --reference`) for the drift monitoring.
    RegisterReference(RegisterReferenceArgs),
}

#[derive(Debug, Args)]
pub struct RegisterReferenceArgs {
    /// The reference file `models evaluate --reference` wrote.
    pub file: PathBuf,
    /// PostgreSQL URL.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// A model's reference score distribution: the shares of its image
/// probabilities in ten equal bins, on the data named.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub model_name: String,
    pub model_version: String,
    pub model_sha256: String,
    pub images: u64,
    pub bins: Vec<f64>,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model directory (model.onnx and manifest.toml).
    pub model_dir: PathBuf,
    /// The labelled dataset: labels.csv with the images, or images/ and labels/ (YOLO); see docs/evaluation.md.
    #[arg(long)]
    pub dataset: PathBuf,
    /// What the data is, printed with every figure in the card (default: the dataset's path).
    #[arg(long)]
    pub data_description: Option<String>,
    /// YOLO classes that are fractures, by index or by name in classes.txt (repeatable; default: the names containing "fracture", else class 0).
    #[arg(long = "fracture-class")]
    pub fracture_classes: Vec<String>,
    /// A detection finds a ground-truth box when their intersection over union reaches this.
    #[arg(long, default_value_t = 0.3)]
    pub iou: f32,
    /// Output format on standard output.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the measured section into this model card (between its markers, or appended).
    #[arg(long)]
    pub card: Option<PathBuf>,
    /// Write the distribution of the image probabilities here (JSON), the model's reference for the drift monitoring.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::Evaluate(args) => evaluate_command(*args).await,
        ModelsCommand::RegisterReference(args) => register_reference(args).await,
    }
}

/// The markers around the measured section of a model card.
pub const CARD_BEGIN: &str = "<!-- fxtriage models evaluate: begin -->";
pub const CARD_END: &str = "<!-- fxtriage models evaluate: end -->";

/// `card` with the text between its markers replaced by `section`, or
/// `section` appended within markers when it has none.
pub fn replace_card_section(card: &str, section: &str) -> String {
    let block = format!("{CARD_BEGIN}\n{}\n{CARD_END}", section.trim_end());
    match (card.find(CARD_BEGIN), card.find(CARD_END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &card[..begin], &card[end + CARD_END.len()..])
        }
        _ => format!("{}\n\n{block}\n", card.trim_end()),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
async fn evaluate_command(mut args: EvaluateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.iou) && args.iou > 0.0,
        "--iou must be in (0, 1], not {}",
        args.iou
    );
    let dataset = evaluate::load(
        &args.dataset,
        &DatasetOptions {
            fracture_classes: args.fracture_classes.clone(),
        },
    )?;
    anyhow::ensure!(
        !dataset.cases.is_empty(),
        "{}: no labelled image to evaluate ({} files left out: {})",
        args.dataset.display(),
        dataset.excluded.len(),
        dataset
            .excluded
            .iter()
            .take(5)
            .map(|left_out| format!("{} {}", left_out.file, left_out.reason))
            .collect::<Vec<_>>()
            .join("; ")
    );
    args.model.model = args.model_dir.clone();
    let (model, batch) = args.model.load()?;
    let batcher = Batcher::start(Arc::clone(&model), batch);
    let total = dataset.cases.len();
    eprintln!(
        "evaluating {} on {total} labelled images of {}",
        model.manifest.name,
        args.dataset.display()
    );
    let evaluation = evaluate::evaluate(
        &model,
        &batcher,
        dataset,
        &EvaluateOptions {
            iou_threshold: args.iou,
            ..EvaluateOptions::default()
        },
        |done| {
            if done % 500 == 0 {
                eprintln!("  {done} of {total}");
            }
        },
    )
    .await;
    anyhow::ensure!(
        evaluation.dataset.images_evaluated > 0,
        "no image of {} could be analysed: {:?}",
        args.dataset.display(),
        evaluation.dataset.excluded_by_reason
    );
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Table => write!(stdout, "{}", evaluate::table(&evaluation))?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut stdout, &evaluation)?;
            writeln!(stdout)?;
        }
    }
    let data = args
        .data_description
        .clone()
        .unwrap_or_else(|| format!("the dataset at {}", args.dataset.display()));
    if let Some(path) = &args.reference {
        let reference = Reference {
            model_name: evaluation.model.name.clone(),
            model_version: evaluation.model.version.clone(),
            model_sha256: evaluation.model.sha256.clone(),
            images: evaluation.dataset.images_evaluated,
            bins: evaluation.score_distribution.clone(),
            data: data.clone(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&reference)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "wrote the reference score distribution to {}",
            path.display()
        );
    }
    if let Some(card) = &args.card {
        let date = time::OffsetDateTime::now_utc().date().to_string();
        let section = evaluate::card_section(&evaluation, &data, &date);
        let existing = match std::fs::read_to_string(card) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", card.display()));
            }
        };
        std::fs::write(card, replace_card_section(&existing, &section))
            .with_context(|| format!("cannot write {}", card.display()))?;
        eprintln!("wrote the measured section into {}", card.display());
    }
    Ok(())
}

#[allow(clippy::print_stderr)]
async fn register_reference(args: RegisterReferenceArgs) -> anyhow::Result<()> {
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let reference: Reference = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a reference file", args.file.display()))?;
    let sum: f64 = reference.bins.iter().sum();
    anyhow::ensure!(
        reference.bins.len() == fxtriage_core::stats::SCORE_BINS
            && reference
                .bins
                .iter()
                .all(|share| (0.0..=1.0).contains(share))
            && (sum - 1.0).abs() < 1e-6
            && reference.images > 0,
        "{}: the bins must be {} shares summing to 1, of at least one image",
        args.file.display(),
        fxtriage_core::stats::SCORE_BINS
    );
    anyhow::ensure!(
        reference.model_sha256.len() == 64
            && reference
                .model_sha256
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "{}: model_sha256 must be 64 hex digits",
        args.file.display()
    );
    let config = fxtriage_db::DbConfig::from_url(&args.database_url)?;
    fxtriage_db::migrate(&config).await?;
    let client = config.connect().await?;
    client
        .execute(
            "INSERT INTO model_references (model_sha256, model_name, model_version, images, \
                 bins, data) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (model_sha256) DO UPDATE SET model_name = $2, model_version = $3, \
                 images = $4, bins = $5, data = $6, registered_at = now()",
            &[
                &reference.model_sha256.to_ascii_lowercase(),
                &reference.model_name,
                &reference.model_version,
                &(reference.images as i64),
                &serde_json::json!(reference.bins),
                &reference.data,
            ],
        )
        .await
        .context("cannot record the reference")?;
    eprintln!(
        "registered the reference of {} {} ({} images)",
        reference.model_name, reference.model_version, reference.images
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_section_is_replaced_between_its_markers_or_appended() {
        let appended = replace_card_section("# Card\n\nText.\n", "## Measured\nA");
        assert_eq!(
            appended,
            format!("# Card\n\nText.\n\n{CARD_BEGIN}\n## Measured\nA\n{CARD_END}\n")
        );
        let replaced = replace_card_section(&format!("{appended}\n## After\n"), "## Measured\nB");
        assert!(replaced.contains("## Measured\nB\n"), "{replaced}");
        assert!(!replaced.contains("\nA\n"), "{replaced}");
        assert!(replaced.starts_with("# Card\n\nText.\n"));
        assert!(replaced.ends_with("## After\n"), "{replaced}");
    }
}
