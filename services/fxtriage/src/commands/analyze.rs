//! `fxtriage analyze FILE...`: the model on local files, with probability, class,
//! boxes and timings printed, and an optional overlay image.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use fxtriage_inference::Batcher;
use fxtriage_inference::analyse::{Analysis, analyse};

use crate::model_args::ModelArgs;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// DICOM files to analyse.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write each image with its boxes drawn as a PNG here (a file for one input, a directory for several).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[allow(clippy::print_stdout)]
pub async fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let (model, mut batch) = args.model.load()?;
    // The files are analysed one after another: a batch never has a second
    // image to wait for, so no batching window.
    batch.max_batch = 1;
    batch.max_wait = std::time::Duration::ZERO;
    let manifest = model.manifest.clone();
    let batcher = Batcher::start(Arc::clone(&model), batch);
    let points = manifest.operating_points;
    println!(
        "model {} {} ({}); {}",
        manifest.name,
        manifest.version,
        model.sha256(),
        manifest.intended_use.trim()
    );
    let mut failures = 0;
    for (index, file) in args.files.iter().enumerate() {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        match analyse(
            bytes,
            &batcher,
            model.input_size(),
            &manifest.output.classes,
        )
        .await
        {
            Ok(analysis) => {
                let class = if analysis.probability >= points.suspected.threshold {
                    "suspected"
                } else if analysis.probability >= points.possible.threshold {
                    "possible"
                } else {
                    "no finding"
                };
                println!(
                    "{}: probability {:.3} ({class}); {}x{}; decode {} ms, preprocess {} ms, inference {} ms (batch of {})",
                    file.display(),
                    analysis.probability,
                    analysis.columns,
                    analysis.rows,
                    analysis.decode_us / 1000,
                    analysis.preprocess_us / 1000,
                    analysis.timing.inference_us / 1000,
                    analysis.timing.batch_size
                );
                for found in &analysis.detections {
                    println!(
                        "  {} {:.3} at x {:.0}-{:.0}, y {:.0}-{:.0}",
                        found.class_name,
                        found.score,
                        found.bounding_box.x_min,
                        found.bounding_box.x_max,
                        found.bounding_box.y_min,
                        found.bounding_box.y_max
                    );
                }
                if let Some(overlay) = &args.overlay {
                    let path = if args.files.len() == 1 {
                        overlay.clone()
                    } else {
                        std::fs::create_dir_all(overlay)?;
                        overlay.join(format!("{index:03}.png"))
                    };
                    let bytes = std::fs::read(file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    write_overlay(&bytes, &analysis, &path)?;
                    println!("  overlay: {}", path.display());
                }
            }
            Err(error) => {
                failures += 1;
                println!(
                    "{}: not analysed ({}): {error}",
                    file.display(),
                    error.kind()
                );
            }
        }
    }
    anyhow::ensure!(
        failures == 0,
        "{failures} of {} files could not be analysed",
        args.files.len()
    );
    Ok(())
}

/// The windowed image at full resolution (the analysis may have decoded a
/// reduced level) with each box drawn in red, as PNG (the API's renderer).
pub fn write_overlay(
    bytes: &[u8],
    analysis: &Analysis,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let (image, _window) = fxtriage_dicom::pixels::decode_windowed(bytes)?;
    let boxes: Vec<fxtriage_core::BoundingBox> = analysis
        .detections
        .iter()
        .map(|found| found.bounding_box)
        .collect();
    let png = fxtriage_dicom::overlay::render_overlay(&image, &boxes)?;
    std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
