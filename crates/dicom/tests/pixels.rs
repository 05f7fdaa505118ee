//! The pixel pipeline on real radiographs (pydicom-data, installed by the local
//! stack: FXTRIAGE_SAMPLE_DICOM_DIR) and on synthetic images: lossless encodings
//! decode to exactly the uncompressed image, lossy ones within a stated tolerance,
//! MONOCHROME1 comes out inverted, a VOI LUT Sequence is applied, signed pixels
//! keep their sign.

use std::path::PathBuf;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_dicom::pixels::{
    GreyImage, PixelErrorKind, WindowSource, decode_for_input, decode_windowed,
    decode_windowed_per_value, letterbox, letterbox_model,
};
use fxtriage_dicom::synthetic::{SyntheticInstance, part10};

fn samples() -> Option<PathBuf> {
    let dir = fxtriage_testkit::stack::setting("FXTRIAGE_SAMPLE_DICOM_DIR")?;
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
        tags::PHOTOMETRIC_INTERPRETATION,
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
fn jpeg_ls_lossless_decodes_exactly_like_the_uncompressed_original() {
    let Some(dir) = samples() else { return };
    let uncompressed = decode(&dir, "emri_small.dcm");
    let jpeg_ls = decode(&dir, "emri_small_jpeg_ls_lossless.dcm");
    assert_eq!(
        (jpeg_ls.rows, jpeg_ls.columns),
        (uncompressed.rows, uncompressed.columns)
    );
    assert_eq!(jpeg_ls.pixels, uncompressed.pixels);
    assert!(
        jpeg_ls.pixels.iter().any(|value| *value > 0.5),
        "not a blank image"
    );
}

/// Part 10 bytes of a synthetic 4x4 image whose dataset `change` adjusts.
fn tiny_image(pixels: Vec<u16>, change: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
    let instance = SyntheticInstance {
        rows: 4,
        columns: 4,
        bits_stored: 12,
        pixels: Some(pixels),
        ..SyntheticInstance::wrist()
    };
    let mut dataset = instance.dataset();
    change(&mut dataset);
    part10(dataset)
}

fn us(tag: Tag, values: &[u16]) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(values.into()))
}

#[test]
fn a_voi_lut_sequence_is_applied_when_the_dataset_has_no_window() {
    // A non-linear LUT of 10-bit outputs for inputs 100..=355: the square root
    // curve, clamped below 100 and above 355.
    let lut: Vec<u16> = (0..256_u32)
        .map(|index| ((f64::from(index) / 255.0).sqrt() * 1023.0).round() as u16)
        .collect();
    let expected = |value: u16| {
        let index = (i64::from(value) - 100).clamp(0, 255) as usize;
        f32::from(lut[index]) / 1023.0
    };
    let pixels: Vec<u16> = vec![
        0, 99, 100, 101, 150, 200, 227, 300, 354, 355, 356, 1000, 4095, 164, 110, 340,
    ];
    let with_lut = |dataset: &mut InMemDicomObject| {
        let item = InMemDicomObject::from_element_iter([
            us(tags::LUT_DESCRIPTOR, &[256, 100, 10]),
            DataElement::new(
                tags::LUT_DATA,
                VR::OW,
                PrimitiveValue::U16(lut.clone().into()),
            ),
        ]);
        dataset.put(DataElement::new(
            tags::VOILUT_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    };
    let (image, window) = decode_windowed(&tiny_image(pixels.clone(), with_lut)).expect("decodes");
    assert_eq!(
        window,
        WindowSource::Lut {
            entries: 256,
            first_mapped: 100,
            bits: 10
        }
    );
    for (value, decoded) in pixels.iter().zip(&image.pixels) {
        assert!(
            (decoded - expected(*value)).abs() < 1e-6,
            "input {value}: {decoded} instead of {}",
            expected(*value)
        );
    }

    // A window in the dataset takes precedence over the LUT.
    let (_, window) = decode_windowed(&tiny_image(pixels.clone(), |dataset| {
        with_lut(dataset);
        dataset.put(DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            PrimitiveValue::from("200"),
        ));
        dataset.put(DataElement::new(
            tags::WINDOW_WIDTH,
            VR::DS,
            PrimitiveValue::from("100"),
        ));
    }))
    .expect("decodes");
    assert_eq!(
        window,
        WindowSource::Dataset {
            center: 200.0,
            width: 100.0
        }
    );

    // A LUT whose data does not match its descriptor is refused with the reason.
    let error = decode_windowed(&tiny_image(pixels, |dataset| {
        let item = InMemDicomObject::from_element_iter([
            us(tags::LUT_DESCRIPTOR, &[512, 100, 10]),
            DataElement::new(
                tags::LUT_DATA,
                VR::OW,
                PrimitiveValue::U16(lut.clone().into()),
            ),
        ]);
        dataset.put(DataElement::new(
            tags::VOILUT_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }))
    .expect_err("a LUT shorter than its descriptor says");
    assert_eq!(error.kind, PixelErrorKind::UnsupportedImage, "{error}");
    assert!(error.message.contains("VOI LUT"), "{error}");
}

#[test]
fn signed_pixels_keep_their_sign_through_rescale_and_window() {
    // 12-bit two's complement values, sign-extended to 16 bits as stored.
    let values: [i16; 16] = [
        -2048, -1500, -1000, -500, -100, -1, 0, 1, 100, 500, 1000, 1500, 2047, -2000, 250, -250,
    ];
    let stored: Vec<u16> = values.iter().map(|value| *value as u16).collect();
    let bytes = tiny_image(stored, |dataset| {
        dataset.put(us(tags::PIXEL_REPRESENTATION, &[1]));
        dataset.put(DataElement::new(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            PrimitiveValue::from("10"),
        ));
        dataset.put(DataElement::new(
            tags::RESCALE_SLOPE,
            VR::DS,
            PrimitiveValue::from("2"),
        ));
        dataset.put(DataElement::new(
            tags::WINDOW_CENTER,
            VR::DS,
            PrimitiveValue::from("0"),
        ));
        dataset.put(DataElement::new(
            tags::WINDOW_WIDTH,
            VR::DS,
            PrimitiveValue::from("4000"),
        ));
    });
    let (image, _) = decode_windowed(&bytes).expect("signed pixels decode");
    for (value, decoded) in values.iter().zip(&image.pixels) {
        // Modality rescale, then the DICOM linear window (center 0, width 4000).
        let rescaled = f64::from(*value) * 2.0 + 10.0;
        let expected = ((rescaled + 0.5) / 3999.0 + 0.5).clamp(0.0, 1.0) as f32;
        assert!(
            (decoded - expected).abs() < 1e-5,
            "stored {value}: {decoded} instead of {expected}"
        );
    }
    // The most negative value is darkest, the most positive brightest.
    let darkest = image.pixels.iter().copied().fold(f32::MAX, f32::min);
    let brightest = image.pixels.iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(darkest, image.pixels[0]);
    assert_eq!(brightest, image.pixels[12]);
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

/// The table path for 16-bit samples gives exactly what converting and windowing
/// every value gives, for each kind of 16-bit image the pipeline meets.
#[test]
fn the_16_bit_table_path_equals_the_per_value_path() {
    let (radiograph, _) = SyntheticInstance::radiograph(5, true, "WRIST");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("16-bit, percentile window".into(), radiograph.to_part10()),
        (
            "MONOCHROME1".into(),
            SyntheticInstance {
                photometric_interpretation: "MONOCHROME1".into(),
                ..radiograph.clone()
            }
            .to_part10(),
        ),
    ];
    let twelve_bit: Vec<u16> = (0..16_u16).map(|v| v * 273).collect();
    cases.push((
        "12-bit with a window".into(),
        tiny_image(twelve_bit.clone(), |dataset| {
            dataset.put(DataElement::new(
                tags::WINDOW_CENTER,
                VR::DS,
                PrimitiveValue::from("2000"),
            ));
            dataset.put(DataElement::new(
                tags::WINDOW_WIDTH,
                VR::DS,
                PrimitiveValue::from("1500"),
            ));
        }),
    ));
    // Bits above BitsStored are not part of the value.
    let with_high_bits: Vec<u16> = twelve_bit.iter().map(|v| v | 0xA000).collect();
    cases.push((
        "12-bit with stray high bits".into(),
        tiny_image(with_high_bits, |_| {}),
    ));
    let signed: Vec<u16> = [
        -2048_i16, -1000, -1, 0, 1, 999, 2047, -300, 5, 6, 7, 8, -9, 10, 11, 12,
    ]
    .iter()
    .map(|value| *value as u16)
    .collect();
    cases.push((
        "signed with rescale, percentile".into(),
        tiny_image(signed.clone(), |dataset| {
            dataset.put(us(tags::PIXEL_REPRESENTATION, &[1]));
            dataset.put(DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                PrimitiveValue::from("-1024"),
            ));
            dataset.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::DS,
                PrimitiveValue::from("0.5"),
            ));
        }),
    ));
    cases.push((
        "VOI LUT".into(),
        tiny_image(twelve_bit, |dataset| {
            let lut: Vec<u16> = (0..512_u16).map(|v| 511 - v).collect();
            let item = InMemDicomObject::from_element_iter([
                us(tags::LUT_DESCRIPTOR, &[512, 1000, 9]),
                DataElement::new(tags::LUT_DATA, VR::OW, PrimitiveValue::U16(lut.into())),
            ]);
            dataset.put(DataElement::new(
                tags::VOILUT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        }),
    ));
    if let Some(dir) = samples() {
        for name in [
            "RG1_UNCR.dcm",
            "RG3_UNCR.dcm",
            "RG1_J2KR.dcm",
            "MR2_UNCR.dcm",
        ] {
            cases.push((name.into(), std::fs::read(dir.join(name)).expect("sample")));
        }
    }
    for (name, bytes) in &cases {
        let table = decode_windowed(bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        let per_value =
            decode_windowed_per_value(bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(table.1, per_value.1, "{name}: window");
        assert_eq!(table.0, per_value.0, "{name}: pixels");
        assert!(
            table.0.pixels.iter().any(|value| *value > 0.0),
            "{name}: not a blank image"
        );
    }
}

/// JPEG 2000 is decoded at the resolution level a 256 px model needs (level 2
/// for these 1760-1955 px radiographs): the image is a quarter of each side,
/// its transform maps the input back to the original grid within one reduced
/// pixel of the full-resolution transform, and the model input differs from the
/// one made from a full decode by less than 1% of full scale on average (the
/// wavelet's low-pass band against area averaging of the full image).
#[test]
fn jpeg_2000_is_decoded_only_to_the_level_the_model_needs() {
    let Some(dir) = samples() else { return };
    for name in [
        "RG1_J2KR.dcm",
        "RG3_J2KR.dcm",
        "RG1_J2KI.dcm",
        "RG3_J2KI.dcm",
    ] {
        let bytes = std::fs::read(dir.join(name)).expect("sample");
        let (full, full_window) =
            decode_windowed(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        let (reduced, window) =
            decode_for_input(&bytes, 256).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(reduced.level, 2, "{name}");
        assert_eq!(
            (reduced.original_rows, reduced.original_columns),
            (full.rows, full.columns),
            "{name}"
        );
        assert_eq!(
            (reduced.image.rows, reduced.image.columns),
            (full.rows.div_ceil(4), full.columns.div_ceil(4)),
            "{name}"
        );
        let (full_input, full_transform) = letterbox(&full, 256);
        let (input, transform) = letterbox_model(&reduced, 256);
        for (x, y) in [(0.0, 0.0), (128.0, 128.0), (255.0, 255.0), (40.0, 200.0)] {
            let (a, b) = (
                transform.to_original(x, y),
                full_transform.to_original(x, y),
            );
            assert!(
                (a.0 - b.0).abs() <= 4.0 && (a.1 - b.1).abs() <= 4.0,
                "{name}: ({x}, {y}) maps to {a:?}, at full resolution {b:?}"
            );
        }
        let difference = full_input
            .iter()
            .zip(&input)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / input.len() as f32;
        let largest = full_input
            .iter()
            .zip(&input)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        eprintln!(
            "{name}: window {window:?} (full {full_window:?}), mean difference {difference}, largest {largest}"
        );
        assert!(difference < 0.01, "{name}: mean difference {difference}");
    }
}

/// Other transfer syntaxes, and images no larger than the input, are decoded
/// at full resolution.
#[test]
fn other_images_are_decoded_at_full_resolution() {
    let Some(dir) = samples() else { return };
    for (name, size) in [("RG3_UNCR.dcm", 256), ("RG3_J2KR.dcm", 2048)] {
        let bytes = std::fs::read(dir.join(name)).expect("sample");
        let (full, _) = decode_windowed(&bytes).expect("decodes");
        let (image, _) = decode_for_input(&bytes, size).expect("decodes");
        assert_eq!(image.level, 0, "{name}");
        assert_eq!(image.image, full, "{name}");
    }
}

/// A JPEG 2000 main header (SOC, SIZ, COD, then EOC) declaring
/// `width`x`height`, 16-bit greyscale, 5 decomposition levels.
fn j2k_header(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0x4F, 0xFF, 0x51];
    bytes.extend_from_slice(&41_u16.to_be_bytes()); // Lsiz: 38 + 3 per component
    bytes.extend_from_slice(&0_u16.to_be_bytes()); // Rsiz
    for value in [width, height, 0, 0, width, height, 0, 0] {
        bytes.extend_from_slice(&value.to_be_bytes()); // image, offset, tile, tile offset
    }
    bytes.extend_from_slice(&1_u16.to_be_bytes()); // Csiz
    bytes.extend_from_slice(&[15, 1, 1]); // 16 bits unsigned, no subsampling
    bytes.extend_from_slice(&[0xFF, 0x52, 0, 12, 0, 0, 0, 1, 0, 5, 4, 4, 0, 1]); // COD
    bytes.extend_from_slice(&[0xFF, 0xD9]); // EOC
    bytes
}

/// Part 10 bytes in JPEG 2000 (lossless) whose one frame is `codestream`,
/// with Rows and Columns `side`.
fn j2k_file(side: u16, codestream: Vec<u8>) -> Vec<u8> {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_object::meta::FileMetaTableBuilder;
    let mut dataset = SyntheticInstance {
        rows: side,
        columns: side,
        ..SyntheticInstance::wrist()
    }
    .dataset();
    dataset.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::value::Value::PixelSequence(PixelFragmentSequence::new(
            Vec::<u32>::new(),
            vec![codestream],
        )),
    ));
    let file = dataset
        .with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.4.90"))
        .expect("meta");
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).expect("write");
    bytes
}

/// A JPEG 2000 frame claiming 60000x60000 (OpenJPEG would allocate what it
/// declares: 14 GB of samples) in a 512x512 data set is refused from its
/// header with both sizes, on every decoding path, before any decoding. The
/// process would not survive the allocation, so reaching the assertion is
/// the proof of the bound.
#[test]
fn a_jpeg_2000_frame_claiming_another_size_is_refused_without_decoding() {
    let bomb = j2k_file(512, j2k_header(60_000, 60_000));
    for result in [
        decode_for_input(&bomb, 256).map(|_| ()),
        decode_windowed(&bomb).map(|_| ()),
        decode_windowed_per_value(&bomb).map(|_| ()),
    ] {
        let error = result.expect_err("refused");
        assert_eq!(error.kind, PixelErrorKind::DecodeFailed, "{error}");
        assert!(
            error.to_string().contains("declares 60000x60000")
                && error.to_string().contains("says 512x512"),
            "{error}"
        );
    }
    // The same header declaring the data set's own size passes the check and
    // reaches OpenJPEG, which finds no code blocks: a decoding error, not
    // the size refusal.
    let honest = j2k_file(512, j2k_header(512, 512));
    let error = decode_windowed(&honest).expect_err("no image data");
    assert!(!error.to_string().contains("declares"), "{error}");
}
