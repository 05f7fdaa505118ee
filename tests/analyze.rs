//! `fxtriage analyze` runs the pipeline on local files: probability, class, boxes
//! and timings per file, and an overlay PNG a person can look at.

mod support;

use std::process::Command;

use fxtriage_dicom::synthetic::SyntheticInstance;
use support::repository_path;

#[test]
fn analyze_prints_each_file_and_writes_the_overlay() {
    let Some(library) = fxtriage_testkit::stack::setting("ORT_DYLIB_PATH") else {
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let (instance, _) = SyntheticInstance::radiograph(3, true, "WRIST");
    let image = directory.path().join("wrist.dcm");
    std::fs::write(&image, instance.to_part10()).expect("write");
    let garbage = directory.path().join("garbage.dcm");
    std::fs::write(&garbage, b"not an image").expect("write");
    let overlay = directory.path().join("overlay.png");

    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args([
            "analyze",
            "--model",
            &repository_path("models/testdata/heatmap")
                .display()
                .to_string(),
        ])
        .arg("--overlay")
        .arg(&overlay)
        .arg(&image)
        .env("ORT_DYLIB_PATH", &library)
        .output()
        .expect("run");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("wrist.dcm: probability"), "{printed}");
    assert!(printed.contains("256x256"), "{printed}");
    assert!(printed.contains("fracture"), "boxes are listed: {printed}");
    let png = std::fs::read(&overlay).expect("overlay written");
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(
        u32::from_be_bytes([png[16], png[17], png[18], png[19]]),
        256,
        "the original width"
    );

    let output = Command::new(fxtriage_testkit::fxtriage_bin())
        .args([
            "analyze",
            "--model",
            &repository_path("models/testdata/heatmap")
                .display()
                .to_string(),
        ])
        .arg(&garbage)
        .env("ORT_DYLIB_PATH", &library)
        .output()
        .expect("run");
    assert!(
        !output.status.success(),
        "a file that cannot be analysed fails the command"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("not analysed (unreadable)"));
}
