//! A synthetic DX encoded in each transfer syntax by real tools (dcmtk, gdcm)
//! decodes to the same windowed image as the uncompressed original: exactly for
//! lossless syntaxes, within a stated tolerance for lossy ones; syntaxes without
//! a built-in decoder give a typed error.

use std::path::Path;
use std::process::Command;

use fxtriage_dicom::pixels::{GreyImage, PixelErrorKind, decode_windowed};
use fxtriage_dicom::synthetic::SyntheticInstance;

const TOOLS: [&str; 5] = ["dcmconv", "dcmcjpeg", "dcmcrle", "dcmcjpls", "gdcmconv"];

fn tools_present() -> bool {
    // dcmtk's converters and codecs, and gdcm's (scripts/bootstrap installs both).
    TOOLS
        .into_iter()
        .all(|tool| fxtriage_testkit::stack::tool(tool, "dcmtk or libgdcm-tools"))
}

fn encode(
    directory: &Path,
    original: &Path,
    name: &str,
    tool: &str,
    arguments: &[&str],
) -> Vec<u8> {
    let output = directory.join(name);
    let status = Command::new(tool)
        .args(arguments)
        .arg(original)
        .arg(&output)
        .status()
        .expect("tool runs");
    assert!(status.success(), "{tool} {arguments:?} failed");
    std::fs::read(output).expect("encoded file")
}

fn mean_absolute_difference(a: &GreyImage, b: &GreyImage) -> f32 {
    a.pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / a.pixels.len() as f32
}

#[test]
fn every_supported_syntax_decodes_like_the_original() {
    if !tools_present() {
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let (instance, _) = SyntheticInstance::radiograph(42, true, "WRIST");
    let instance = SyntheticInstance {
        bits_stored: 12,
        pixels: instance
            .pixels
            .map(|p| p.into_iter().map(|v| v >> 4).collect()),
        ..instance
    };
    let original_path = directory.path().join("original.dcm");
    std::fs::write(&original_path, instance.to_part10()).expect("write");
    let (reference, _) = decode_windowed(&std::fs::read(&original_path).expect("read"))
        .expect("uncompressed decodes");

    let lossless: [(&str, &str, &[&str]); 7] = [
        ("implicit.dcm", "dcmconv", &["+ti"]),
        ("big-endian.dcm", "dcmconv", &["+tb"]),
        ("deflate.dcm", "dcmconv", &["+td"]),
        ("rle.dcm", "dcmcrle", &[]),
        ("jpeg-lossless.dcm", "dcmcjpeg", &["+e1"]),
        ("j2k-lossless.dcm", "gdcmconv", &["--j2k"]),
        ("jpeg-ls-lossless.dcm", "dcmcjpls", &["+el"]),
    ];
    for (name, tool, arguments) in lossless {
        let bytes = encode(directory.path(), &original_path, name, tool, arguments);
        let (decoded, _) =
            decode_windowed(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(
            decoded.pixels, reference.pixels,
            "{name} is lossless, so identical"
        );
    }

    // Lossy JPEG 2000: our decode matches gdcm's own decompression of the same
    // codestream to within 0.2% of full scale on average (the encoder, not the
    // decoder, decides how far it is from the original).
    let lossy = encode(
        directory.path(),
        &original_path,
        "j2k-lossy.dcm",
        "gdcmconv",
        &["--j2k", "--lossy", "-q", "40"],
    );
    let lossy_path = directory.path().join("j2k-lossy.dcm");
    let gdcm_decoded = encode(
        directory.path(),
        &lossy_path,
        "j2k-lossy-raw.dcm",
        "gdcmconv",
        &["--raw"],
    );
    let (decoded, _) = decode_windowed(&lossy).expect("lossy JPEG 2000 decodes");
    let (reference_decode, _) =
        decode_windowed(&gdcm_decoded).expect("gdcm's decompression decodes");
    let difference = mean_absolute_difference(&reference_decode, &decoded);
    assert!(
        difference < 0.002,
        "lossy JPEG 2000: mean difference {difference} from gdcm's decode"
    );
    assert_ne!(decoded.pixels, reference.pixels, "lossy really is lossy");

    // Near-lossless JPEG-LS: every stored value within NEAR = 2 of the original,
    // so, in the windowed image, within 2 / (window width) plus the rounding of
    // the window, which is itself taken from the (almost identical) pixels.
    let near = encode(
        directory.path(),
        &original_path,
        "jpeg-ls-near.dcm",
        "dcmcjpls",
        &["+en", "+md", "2"],
    );
    let (decoded, _) = decode_windowed(&near).expect("near-lossless JPEG-LS decodes");
    let largest = decoded
        .pixels
        .iter()
        .zip(&reference.pixels)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0_f32, f32::max);
    assert!(
        largest < 0.01,
        "near-lossless JPEG-LS: largest difference {largest}"
    );
    assert_ne!(
        decoded.pixels, reference.pixels,
        "near-lossless really is lossy"
    );

    // No built-in decoder: 12-bit lossy JPEG gives a typed error.
    let bytes = encode(
        directory.path(),
        &original_path,
        "jpeg-12bit.dcm",
        "dcmcjpeg",
        &["+ee"],
    );
    let error = decode_windowed(&bytes).expect_err("12-bit lossy JPEG");
    assert_eq!(
        error.kind,
        PixelErrorKind::UnsupportedTransferSyntax,
        "{error}"
    );
    assert!(error.message.contains("1.2.840.10008.1.2.4.51"), "{error}");
}
