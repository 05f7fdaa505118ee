//! The pixel pipeline on real radiographs (pydicom-data, installed by the local
//! stack: FXTRIAGE_SAMPLE_DICOM_DIR) and on synthetic images: lossless encodings
//! decode to exactly the uncompressed image, lossy ones within a stated tolerance,
//! MONOCHROME1 comes out inverted, unsupported syntaxes give a typed error.

use std::path::PathBuf;

use fxtriage_dicom::pixels::{GreyImage, PixelErrorKind, WindowSource, decode_windowed, letterbox};
use fxtriage_dicom::synthetic::SyntheticInstance;

fn samples() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("FXTRIAGE_SAMPLE_DICOM_DIR") else {
        let required = std::env::var_os("FXTRIAGE_REQUIRE_STACK").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "FXTRIAGE_SAMPLE_DICOM_DIR is not set but the real stack is required"
        );
        eprintln!(
            "skipped: FXTRIAGE_SAMPLE_DICOM_DIR is not set (run under `infra/local/stack env`)"
        );
        return None;
    };
    Some(PathBuf::from(dir))
}

fn decode(dir: &std::path::Path, name: &str) -> GreyImage {
    let bytes = std::fs::read(dir.join(name)).expect("sample file");
    decode_windowed(&bytes)
        .unwrap_or_else(|error| panic!("{name}: {error}"))
        .0
}

fn mean_absolute_difference(a: &GreyImage, b: &GreyImage) -> f32 {
    assert_eq!((a.rows, a.columns), (b.rows, b.columns));
    a.pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / a.pixels.len() as f32
}

#[test]
fn jpeg_2000_lossless_decodes_exactly_like_the_uncompressed_original() {
    let Some(dir) = samples() else { return };
    for (uncompressed, lossless) in [
        ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),
        ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
    ] {
        let reference = decode(&dir, uncompressed);
        let decoded = decode(&dir, lossless);
        assert_eq!(
            decoded.pixels, reference.pixels,
            "{lossless} differs from {uncompressed}"
        );
    }
}

/// Lossy JPEG 2000 (about 10:1 here): windowed pixels stay within 2% of full scale
/// of the original on average; and they equal the samples' own decompression of
/// the same codestream (`*_UNCI`), made by another decoder.
#[test]
fn jpeg_2000_lossy_decodes_within_tolerance() {
    let Some(dir) = samples() else { return };
    for (original, lossy, reference_decode) in [
        ("RG1_UNCR.dcm", "RG1_J2KI.dcm", "RG1_UNCI.dcm"),
        ("RG3_UNCR.dcm", "RG3_J2KI.dcm", "RG3_UNCI.dcm"),
    ] {
        let decoded = decode(&dir, lossy);
        let difference = mean_absolute_difference(&decode(&dir, original), &decoded);
        assert!(
            difference < 0.02,
            "{lossy}: mean difference {difference} from {original}"
        );
        assert!(
            difference > 0.0,
            "{lossy} is lossy, so not identical to {original}"
        );
        let from_other_decoder =
            mean_absolute_difference(&decode(&dir, reference_decode), &decoded);
        assert!(
            from_other_decoder < 0.002,
            "{lossy}: mean difference {from_other_decoder} from {reference_decode}"
        );
    }
}

/// The samples are MONOCHROME1: relabelled MONOCHROME2, the same stored values
/// give the inverse image.
#[test]
fn monochrome1_radiographs_come_out_inverted() {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    let Some(dir) = samples() else { return };
    let path = dir.join("RG3_UNCR.dcm");
    let mut object = dicom_object::open_file(&path).expect("opens");
    object.put(DataElement::new(
        dicom_dictionary_std::tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME2"),
    ));
    let mut relabelled = Vec::new();
    object.write_all(&mut relabelled).expect("writes");
    let (as_monochrome1, window1) =
        decode_windowed(&std::fs::read(&path).expect("reads")).expect("decodes");
    let (as_monochrome2, window2) = decode_windowed(&relabelled).expect("decodes");
    assert_eq!(window1, window2, "the same window applies");
    let worst = as_monochrome1
        .pixels
        .iter()
        .zip(&as_monochrome2.pixels)
        .map(|(a, b)| (a + b - 1.0).abs())
        .fold(0.0_f32, f32::max);
    assert!(worst < 1e-6, "largest deviation from inversion: {worst}");
}

#[test]
fn monochrome1_is_the_inverse_of_monochrome2() {
    let monochrome2 = SyntheticInstance::wrist();
    let monochrome1 = SyntheticInstance {
        photometric_interpretation: "MONOCHROME1".into(),
        ..monochrome2.clone()
    };
    let (normal, window) = decode_windowed(&monochrome2.to_part10()).expect("decodes");
    let (inverted, _) = decode_windowed(&monochrome1.to_part10()).expect("decodes");
    assert!(
        matches!(window, WindowSource::Percentile { .. }),
        "no window in the dataset: {window:?}"
    );
    for (a, b) in normal.pixels.iter().zip(&inverted.pixels) {
        assert!((a + b - 1.0).abs() < 1e-6);
    }
    let bone = normal.pixels[(128 * 256 + 128) as usize];
    let background = normal.pixels[(128 * 256 + 10) as usize];
    assert!(bone > background);
}

#[test]
fn jpeg_ls_gives_a_typed_unsupported_transfer_syntax_error() {
    let Some(dir) = samples() else { return };
    let bytes = std::fs::read(dir.join("emri_small_jpeg_ls_lossless.dcm")).expect("sample");
    let error = decode_windowed(&bytes).expect_err("JPEG-LS is not built in");
    assert_eq!(
        error.kind,
        PixelErrorKind::UnsupportedTransferSyntax,
        "{error}"
    );
    assert!(error.message.contains("1.2.840.10008.1.2.4.80"), "{error}");
}

#[test]
fn a_real_radiograph_letterboxes_into_the_model_input() {
    let Some(dir) = samples() else { return };
    let image = decode(&dir, "RG1_UNCR.dcm");
    let (input, transform) = letterbox(&image, 512);
    assert_eq!(input.len(), 512 * 512);
    let (x, y) = transform.to_original(256.0, 256.0);
    assert!(
        (x - image.columns as f32 / 2.0).abs() < 2.0 && (y - image.rows as f32 / 2.0).abs() < 2.0
    );
}
