//! Loading models and decoding each output format, on small hand-built ONNX models
//! with known outputs (models/testdata, made by models/testdata/make_test_models.py),
//! run by the real ONNX Runtime library of the local stack (ORT_DYLIB_PATH).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fxtriage_inference::{
    BatchConfig, Batcher, ExecutionProvider, Model, ModelError, RuntimeConfig,
};

fn ort_library() -> Option<PathBuf> {
    let path = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH")?;
    Some(PathBuf::from(path))
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/testdata")
        .join(name)
}

fn runtime(library: PathBuf) -> RuntimeConfig {
    RuntimeConfig {
        library,
        provider: ExecutionProvider::Cpu,
        sessions: 2,
        intra_threads: 1,
        spinning: false,
    }
}

/// A 64x64 black image with a white 16x16 square whose top-left corner is at (x, y).
fn square_at(x: usize, y: usize) -> Vec<f32> {
    let mut image = vec![0.0; 64 * 64];
    for row in y..y + 16 {
        for column in x..x + 16 {
            image[row * 64 + column] = 1.0;
        }
    }
    image
}

#[test]
fn a_heatmap_model_gives_boxes_where_the_hot_cells_are() {
    let Some(library) = ort_library() else { return };
    let model = Model::load(&testdata("heatmap"), &runtime(library)).expect("loads");
    // The test model averages 8x8 cells: a square at (16, 32) fills cells x 2-3, y 4-5.
    let outputs = model
        .run_batch(&[square_at(16, 32), vec![0.0; 64 * 64]])
        .expect("runs");
    assert_eq!(outputs.len(), 2, "one output per image of the batch");
    assert!((outputs[0].probability - 1.0).abs() < 1e-5);
    assert_eq!(outputs[0].boxes.len(), 1);
    let found = &outputs[0].boxes[0];
    assert_eq!(
        (found.x_min, found.y_min, found.x_max, found.y_max),
        (16.0, 32.0, 32.0, 48.0)
    );
    assert_eq!(outputs[1].probability, 0.0);
    assert!(outputs[1].boxes.is_empty());
}

#[test]
fn a_classifier_model_gives_its_probability() {
    let Some(library) = ort_library() else { return };
    let model = Model::load(&testdata("classifier"), &runtime(library)).expect("loads");
    // The test model computes sigmoid(8 * mean(image) - 4).
    let outputs = model
        .run_batch(&[vec![0.0; 64 * 64], vec![0.5; 64 * 64], vec![1.0; 64 * 64]])
        .expect("runs");
    let probabilities: Vec<f32> = outputs.iter().map(|output| output.probability).collect();
    for (actual, expected) in probabilities.iter().zip([0.017_986_21, 0.5, 0.982_013_8]) {
        assert!((actual - expected).abs() < 1e-5, "{probabilities:?}");
    }
    assert!(
        outputs.iter().all(|output| output.boxes.is_empty()),
        "a classifier gives no boxes"
    );
}

#[test]
fn a_yolo_model_is_decoded_with_non_maximum_suppression() {
    let Some(library) = ort_library() else { return };
    let model = Model::load(&testdata("yolo"), &runtime(library)).expect("loads");
    // The test model emits four fixed candidates; see its manifest.
    let outputs = model
        .run_batch(&[vec![0.0; 64 * 64], vec![1.0; 64 * 64]])
        .expect("runs");
    for output in outputs {
        assert!((output.probability - 0.9).abs() < 1e-6);
        let boxes: Vec<(f32, f32, f32, f32)> = output
            .boxes
            .iter()
            .map(|found| (found.x_min, found.y_min, found.x_max, found.y_max))
            .collect();
        assert_eq!(
            boxes,
            vec![(12.0, 12.0, 28.0, 28.0), (43.0, 38.0, 53.0, 50.0)],
            "overlap suppressed, low score dropped"
        );
    }
}

#[test]
fn weights_that_do_not_match_the_manifest_are_refused() {
    let Some(library) = ort_library() else { return };
    let directory = tempfile::tempdir().expect("tempdir");
    for file in ["model.onnx", "manifest.toml"] {
        std::fs::copy(testdata("heatmap").join(file), directory.path().join(file)).expect("copy");
    }
    let mut weights = std::fs::read(directory.path().join("model.onnx")).expect("read");
    weights.push(0);
    std::fs::write(directory.path().join("model.onnx"), weights).expect("write");
    let error = Model::load(directory.path(), &runtime(library)).expect_err("tampered weights");
    assert!(matches!(error, ModelError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("sha256"), "{error}");
}

#[test]
fn a_manifest_that_misdescribes_the_input_is_refused() {
    let Some(library) = ort_library() else { return };
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        testdata("heatmap").join("model.onnx"),
        directory.path().join("model.onnx"),
    )
    .expect("copy");
    let manifest =
        std::fs::read_to_string(testdata("heatmap").join("manifest.toml")).expect("read");
    let wrong = manifest.replace("size = 64", "size = 128");
    assert_ne!(wrong, manifest, "the test manifest states size = 64");
    std::fs::write(directory.path().join("manifest.toml"), wrong).expect("write");
    let error = Model::load(directory.path(), &runtime(library)).expect_err("wrong input size");
    assert!(error.to_string().contains("input"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batcher_groups_concurrent_images_into_one_batch() {
    let Some(library) = ort_library() else { return };
    let model = Arc::new(Model::load(&testdata("heatmap"), &runtime(library)).expect("loads"));
    let config = BatchConfig {
        max_batch: 4,
        max_wait: Duration::from_millis(200),
        queue_capacity: 16,
        concurrent_batches: 1,
        pad_to_max_batch: false,
    };
    let batcher = Batcher::start(model, config);
    let jobs: Vec<_> = (0..4)
        .map(|index| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.infer(square_at(index * 16, 0)).await })
        })
        .collect();
    for (index, job) in jobs.into_iter().enumerate() {
        let (output, timing) = job.await.expect("join").expect("inference");
        assert_eq!(
            timing.batch_size, 4,
            "four images arriving together run as one batch"
        );
        assert_eq!(
            output.boxes[0].x_min,
            (index * 16) as f32,
            "each image gets its own output back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_a_batch_to_one_shape_leaves_each_image_its_own_output() {
    let Some(library) = ort_library() else { return };
    let model = Arc::new(Model::load(&testdata("heatmap"), &runtime(library)).expect("loads"));
    let config = |pad_to_max_batch| BatchConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(200),
        queue_capacity: 16,
        concurrent_batches: 1,
        pad_to_max_batch,
    };
    let mut answers = Vec::new();
    for pad in [false, true] {
        let batcher = Batcher::start(Arc::clone(&model), config(pad));
        let jobs: Vec<_> = (0..3)
            .map(|index| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.infer(square_at(index * 16, 8)).await })
            })
            .collect();
        let mut outputs = Vec::new();
        for job in jobs {
            let (output, timing) = job.await.expect("join").expect("inference");
            assert_eq!(
                timing.batch_size, 3,
                "the batch size counts real images only"
            );
            outputs.push(output);
        }
        answers.push(outputs);
    }
    assert_eq!(answers[0], answers[1], "blank rows change nothing");
    for (index, output) in answers[1].iter().enumerate() {
        assert_eq!(output.boxes.len(), 1);
        assert_eq!(output.boxes[0].x_min, (index * 16) as f32);
    }
}

/// JPEG 2000 decoded at the resolution level the model needs gives the demo
/// model's probability within 0.04 of a full-resolution decode on the real CR
/// samples, lossless and lossy (measured: 0.016 to 0.032; the wavelet's
/// low-pass band is not the area average of the full image), and `analyse`
/// takes that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduced_jpeg_2000_decode_gives_the_full_decodes_probability() {
    use fxtriage_dicom::pixels::{decode_for_input, decode_windowed, letterbox, letterbox_model};
    let (Some(library), Some(samples)) = (
        ort_library(),
        fxtriage_testkit::stack::setting("FXTRIAGE_SAMPLE_DICOM_DIR"),
    ) else {
        return;
    };
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fxtriage-demo");
    let model = Arc::new(Model::load(&demo, &runtime(library)).expect("loads"));
    let size = model.input_size();
    let batcher = Batcher::start(
        Arc::clone(&model),
        BatchConfig {
            max_batch: 1,
            max_wait: Duration::ZERO,
            queue_capacity: 4,
            concurrent_batches: 1,
            pad_to_max_batch: false,
        },
    );
    for name in [
        "RG1_J2KR.dcm",
        "RG3_J2KR.dcm",
        "RG1_J2KI.dcm",
        "RG3_J2KI.dcm",
    ] {
        let bytes = std::fs::read(Path::new(&samples).join(name)).expect("sample");
        let (full, _) = decode_windowed(&bytes).expect("decodes");
        let (reduced, _) = decode_for_input(&bytes, size).expect("decodes");
        assert!(reduced.level > 0, "{name}: decoded at full resolution");
        let outputs = model
            .run_batch(&[letterbox(&full, size).0, letterbox_model(&reduced, size).0])
            .expect("runs");
        let (at_full, at_level) = (outputs[0].probability, outputs[1].probability);
        eprintln!(
            "{name}: probability {at_full} at full resolution, {at_level} at level {}",
            reduced.level
        );
        assert!(
            (at_full - at_level).abs() < 0.04,
            "{name}: {at_full} at full resolution, {at_level} at level {}",
            reduced.level
        );
        let analysis = fxtriage_inference::analyse::analyse(bytes, &batcher, size, &[])
            .await
            .expect("analyses");
        assert_eq!(analysis.resolution_level, reduced.level, "{name}");
        assert_eq!(
            (analysis.columns, analysis.rows),
            (full.columns, full.rows),
            "{name}"
        );
        assert!((analysis.probability - at_level).abs() < 1e-6, "{name}");
    }
}
