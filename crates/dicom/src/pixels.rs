//! The pixel pipeline: decode (any transfer syntax dicom-pixeldata supports),
//! modality rescale, VOI transform (the dataset's window, else its VOI LUT
//! Sequence, else a robust percentile window), MONOCHROME1 inversion, then
//! letterbox to the model's square input with the transform kept, so that
//! detections map back to original pixels.

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, Lut, ModalityLutOption, PhotometricInterpretation, PixelDecoder,
    PixelRepresentation, VoiLutOption,
};

/// Why an image could not be turned into model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelErrorKind {
    /// Not parseable as DICOM.
    Unreadable,
    /// A transfer syntax no decoder here handles (e.g. 12-bit lossy JPEG).
    UnsupportedTransferSyntax,
    /// A pixel layout the pipeline does not handle (colour, planar, ...).
    UnsupportedImage,
    /// The codec failed on the data.
    DecodeFailed,
}

impl PixelErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PixelErrorKind::Unreadable => "unreadable",
            PixelErrorKind::UnsupportedTransferSyntax => "unsupported-transfer-syntax",
            PixelErrorKind::UnsupportedImage => "unsupported-image",
            PixelErrorKind::DecodeFailed => "decode-failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct PixelError {
    pub kind: PixelErrorKind,
    pub message: String,
}

impl PixelError {
    pub(crate) fn new(kind: PixelErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A greyscale image, windowed to 0..=1 with bright meaning dense (bone), in the
/// original pixel grid, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImage {
    pub rows: u32,
    pub columns: u32,
    pub pixels: Vec<f32>,
}

/// Which VOI transform was applied, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowSource {
    /// Window Center and Width (0028,1050/1051), first values.
    Dataset { center: f64, width: f64 },
    /// The first item of the VOI LUT Sequence (0028,3010): `entries` values, the
    /// first for input `first_mapped`, each of `bits` bits.
    Lut {
        entries: usize,
        first_mapped: i64,
        bits: u16,
    },
    /// The 1st and 99th percentiles of the image (no VOI in the dataset).
    Percentile { low: f64, high: f64 },
}

/// The VOI transform of an image.
pub(crate) enum Voi {
    Window(WindowSource),
    Lut(VoiLut),
}

impl Voi {
    /// A rescaled value windowed to 0..=1, inverted for MONOCHROME1.
    pub(crate) fn apply(&self, value: f64, invert: bool) -> f32 {
        match self {
            Voi::Window(window) => apply_window(value, *window, invert),
            Voi::Lut(lut) => {
                let scaled = lut.apply(value).clamp(0.0, 1.0) as f32;
                if invert { 1.0 - scaled } else { scaled }
            }
        }
    }

    pub(crate) fn source(&self) -> WindowSource {
        match self {
            Voi::Window(window) => *window,
            Voi::Lut(lut) => lut.source(),
        }
    }
}

/// A VOI LUT (PS3.3 C.11.2.1.1): inputs below the first mapped value take the
/// first entry, above the last the last entry; outputs scaled to 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VoiLut {
    first_mapped: i64,
    bits: u16,
    data: Vec<u16>,
}

impl VoiLut {
    fn source(&self) -> WindowSource {
        WindowSource::Lut {
            entries: self.data.len(),
            first_mapped: self.first_mapped,
            bits: self.bits,
        }
    }

    fn apply(&self, value: f64) -> f64 {
        let last = self.data.len() as i64 - 1;
        let index = (value.floor() as i64 - self.first_mapped).clamp(0, last);
        let maximum = ((1_u32 << self.bits) - 1) as f64;
        f64::from(self.data[index as usize]) / maximum
    }
}

/// The first item of the VOI LUT Sequence, when there is one. A malformed one is
/// an error: the sender said how the image is to be shown, and guessing another
/// window could hide what the radiologist would see.
fn voi_lut(object: &DefaultDicomObject) -> Result<Option<VoiLut>, PixelError> {
    let Some(sequence) = object.element_opt(tags::VOILUT_SEQUENCE).ok().flatten() else {
        return Ok(None);
    };
    let Some(item) = sequence.items().and_then(|items| items.first()) else {
        return Ok(None);
    };
    let malformed = |what: &str| {
        PixelError::new(
            PixelErrorKind::UnsupportedImage,
            format!("VOI LUT Sequence: {what}"),
        )
    };
    let descriptor: Vec<i64> = item
        .element_opt(tags::LUT_DESCRIPTOR)
        .ok()
        .flatten()
        .and_then(|element| element.to_multi_int::<i64>().ok())
        .ok_or_else(|| malformed("the LUT Descriptor (0028,3002) is missing or not numeric"))?;
    let [entries, first_mapped, bits] = descriptor[..] else {
        return Err(malformed("the LUT Descriptor does not have three values"));
    };
    let entries = if entries == 0 { 65_536 } else { entries } as usize;
    let bits = u16::try_from(bits)
        .ok()
        .filter(|bits| (8..=16).contains(bits))
        .ok_or_else(|| malformed(&format!("{bits} bits per entry (8 to 16 expected)")))?;
    // The first mapped value is US or SS as the pixels are: 16-bit two's
    // complement when the pixel data is signed.
    let signed = object
        .element_opt(tags::PIXEL_REPRESENTATION)
        .ok()
        .flatten()
        .and_then(|element| element.to_int::<u16>().ok())
        == Some(1);
    let first_mapped = if signed && first_mapped > i64::from(i16::MAX) {
        first_mapped - 65_536
    } else {
        first_mapped
    };
    let element = item
        .element_opt(tags::LUT_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| malformed("the LUT Data (0028,3006) is missing"))?;
    let mut data: Vec<u16> = element
        .to_multi_int::<u16>()
        .map_err(|error| malformed(&format!("the LUT Data is not readable: {error}")))?;
    if bits == 8 && data.len() * 2 == entries {
        // 8-bit entries packed two to a 16-bit word, low byte first.
        data = data
            .iter()
            .flat_map(|word| [word & 0xFF, word >> 8])
            .collect();
    }
    if data.len() != entries {
        return Err(malformed(&format!(
            "the LUT Data holds {} entries, the descriptor says {entries}",
            data.len()
        )));
    }
    Ok(Some(VoiLut {
        first_mapped,
        bits,
        data,
    }))
}

/// An image decoded for a model input, perhaps at a reduced resolution: JPEG
/// 2000 resolution level `level`, where each pixel stands for `2^level` x
/// `2^level` original pixels (level 0: the original grid).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelImage {
    pub image: GreyImage,
    pub level: u32,
    pub original_rows: u32,
    pub original_columns: u32,
}

/// Decodes the first frame of a Part 10 file for a model input of
/// `size`x`size`: a JPEG 2000 frame at the smallest resolution level whose
/// longer side is not smaller than `size` (its wavelet levels are decoded no
/// further), every other frame at full resolution. The VOI transform is the
/// same as [`decode_windowed`]'s; a percentile window is taken over the values
/// decoded. [`letterbox_model`] places it in the input with the transform back
/// to original pixels exact.
pub fn decode_for_input(bytes: &[u8], size: u32) -> Result<(ModelImage, WindowSource), PixelError> {
    let object = open(bytes)?;
    if let Some(reduced) = crate::j2k::decode_reduced(&object, size)? {
        return Ok(reduced);
    }
    let (image, window) = decode_object(&object, Path::Table)?;
    Ok((
        ModelImage {
            original_rows: image.rows,
            original_columns: image.columns,
            image,
            level: 0,
        },
        window,
    ))
}

/// Decodes the first frame of a Part 10 file held in memory, at full
/// resolution.
pub fn decode_windowed(bytes: &[u8]) -> Result<(GreyImage, WindowSource), PixelError> {
    let object = open(bytes)?;
    decode_object(&object, Path::Table)
}

/// [`decode_windowed`] without the lookup-table path for 16-bit samples: every
/// value converted by dicom-pixeldata, then windowed one by one. The two must
/// agree exactly; tests compare them.
#[doc(hidden)]
pub fn decode_windowed_per_value(bytes: &[u8]) -> Result<(GreyImage, WindowSource), PixelError> {
    let object = open(bytes)?;
    decode_object(&object, Path::PerValue)
}

/// Parses the file for decoding, after the checks every decoding path needs:
/// its structure walked within bounds, and a JPEG 2000 frame declaring the
/// data set's size.
fn open(bytes: &[u8]) -> Result<DefaultDicomObject, PixelError> {
    crate::structure::check_bytes(bytes)
        .map_err(|rejection| PixelError::new(PixelErrorKind::Unreadable, rejection.to_string()))?;
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(bytes)
        .map_err(|error| PixelError::new(PixelErrorKind::Unreadable, error.to_string()))?;
    crate::j2k::check_declared_size(&object)?;
    Ok(object)
}

pub(crate) fn first_decimal(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<f64> {
    let element = object.element_opt(tag).ok().flatten()?;
    let text = element.to_str().ok()?;
    text.split('\\').next()?.trim().parse::<f64>().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// 16-bit samples through one 65,536-entry table (rescale and VOI composed).
    Table,
    /// Every sample converted, then windowed.
    PerValue,
}

fn decode_object(
    object: &DefaultDicomObject,
    path: Path,
) -> Result<(GreyImage, WindowSource), PixelError> {
    let transfer_syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let failed = |error: String| {
        PixelError::new(
            PixelErrorKind::DecodeFailed,
            format!("transfer syntax {transfer_syntax}: {error}"),
        )
    };
    let decoded = object.decode_pixel_data().map_err(|error| {
        let text = error.to_string();
        let kind = if unsupported_transfer_syntax(&transfer_syntax)
            || text.contains("Unsupported TransferSyntax")
        {
            PixelErrorKind::UnsupportedTransferSyntax
        } else if text.contains("Unsupported") {
            PixelErrorKind::UnsupportedImage
        } else {
            PixelErrorKind::DecodeFailed
        };
        PixelError::new(kind, format!("transfer syntax {transfer_syntax}: {text}"))
    })?;
    if decoded.samples_per_pixel() != 1 {
        return Err(PixelError::new(
            PixelErrorKind::UnsupportedImage,
            format!(
                "{} samples per pixel; only greyscale is analysed",
                decoded.samples_per_pixel()
            ),
        ));
    }
    let (rows, columns) = (decoded.rows(), decoded.columns());
    let count = rows as usize * columns as usize;
    let invert = matches!(
        decoded.photometric_interpretation(),
        PhotometricInterpretation::Monochrome1
    );
    let table_path = path == Path::Table
        && decoded.bits_allocated() == 16
        && (1..=16).contains(&decoded.bits_stored())
        && decoded.photometric_interpretation().is_monochrome();
    let (pixels, voi) = if table_path {
        // One pass over the samples through a table of every possible 16-bit
        // word: dicom-pixeldata's rescale table (masking to BitsStored, sign),
        // then the VOI transform, composed. The same values as the per-value
        // path, at a fraction of its cost (three passes over the image and two
        // image-sized allocations fewer).
        let data = decoded
            .frame_data(0)
            .map_err(|error| failed(error.to_string()))?;
        if data.len() != count * 2 {
            return Err(failed(format!(
                "{} bytes of 16-bit samples for a {columns}x{rows} frame",
                data.len()
            )));
        }
        let sample = |index: usize| u16::from_ne_bytes([data[2 * index], data[2 * index + 1]]);
        let rescale = *decoded
            .rescale()
            .map_err(|error| failed(error.to_string()))?
            .first()
            .ok_or_else(|| failed("no rescale".into()))?;
        let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
        let rescaled: Lut<f32> = Lut::new_rescale(decoded.bits_stored(), signed, rescale)
            .map_err(|error| failed(error.to_string()))?;
        let voi = choose_voi(object, || {
            (0..count)
                .step_by(percentile_step(count))
                .map(|index| rescaled.get(sample(index)))
                .collect()
        })?;
        let table: Vec<f32> = (0..=u16::MAX)
            .map(|word| voi.apply(f64::from(rescaled.get(word)), invert))
            .collect();
        let pixels = data
            .chunks_exact(2)
            .map(|bytes| table[usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]))])
            .collect();
        (pixels, voi)
    } else {
        let options = ConvertOptions::new()
            .with_modality_lut(ModalityLutOption::Default)
            .with_voi_lut(VoiLutOption::Identity);
        let values: Vec<f32> = decoded
            .to_vec_frame_with_options(0, &options)
            .map_err(|error| failed(error.to_string()))?;
        if values.len() != count {
            return Err(failed(format!(
                "decoded {} values for a {columns}x{rows} frame",
                values.len()
            )));
        }
        let voi = choose_voi(object, || {
            values
                .iter()
                .step_by(percentile_step(count))
                .copied()
                .collect()
        })?;
        let pixels = values
            .iter()
            .map(|value| voi.apply(f64::from(*value), invert))
            .collect();
        (pixels, voi)
    };
    Ok((
        GreyImage {
            rows,
            columns,
            pixels,
        },
        voi.source(),
    ))
}

/// The dataset's window, else its VOI LUT Sequence, else the percentile window
/// of the rescaled values `sample` gives.
pub(crate) fn choose_voi(
    object: &DefaultDicomObject,
    sample: impl FnOnce() -> Vec<f32>,
) -> Result<Voi, PixelError> {
    if let (Some(center), Some(width)) = (
        first_decimal(object, tags::WINDOW_CENTER),
        first_decimal(object, tags::WINDOW_WIDTH),
    ) && width >= 1.0
    {
        return Ok(Voi::Window(WindowSource::Dataset { center, width }));
    }
    Ok(match voi_lut(object)? {
        Some(lut) => Voi::Lut(lut),
        None => Voi::Window(percentile_window(sample())),
    })
}

/// Transfer syntaxes whose codec is not built in: 12-bit lossy JPEG (JPEG
/// Extended; dicom-pixeldata rejects its sample precision).
fn unsupported_transfer_syntax(uid: &str) -> bool {
    uid == "1.2.840.10008.1.2.4.51"
}

/// Every how many values the percentile window samples an image of `count`
/// values (at most about 65,536 samples).
pub(crate) fn percentile_step(count: usize) -> usize {
    (count / 65_536).max(1)
}

/// The 1st and 99th percentiles of `sample`, for images that state no window:
/// robust to collimation edges and burnt-in labels.
fn percentile_window(sample: Vec<f32>) -> WindowSource {
    let mut sample: Vec<f32> = sample.into_iter().filter(|v| v.is_finite()).collect();
    if sample.is_empty() {
        return WindowSource::Percentile {
            low: 0.0,
            high: 1.0,
        };
    }
    // Two selections (linear time) instead of a sort: the same order
    // statistics. The high one is selected first, then the low one among the
    // values below it.
    let rank = |fraction: f64| ((sample.len() - 1) as f64 * fraction).round() as usize;
    let (low_rank, high_rank) = (rank(0.01), rank(0.99));
    let (below, high, _) = sample.select_nth_unstable_by(high_rank, f32::total_cmp);
    let high = f64::from(*high);
    let low = if low_rank < high_rank {
        f64::from(*below.select_nth_unstable_by(low_rank, f32::total_cmp).1)
    } else {
        high
    };
    let high = if high > low { high } else { low + 1.0 };
    WindowSource::Percentile { low, high }
}

/// DICOM linear VOI function (PS3.3 C.11.2.1.2.1), scaled to 0..=1.
fn apply_window(value: f64, window: WindowSource, invert: bool) -> f32 {
    let scaled = match window {
        WindowSource::Dataset { center, width } => {
            let (c, w) = (center - 0.5, width - 1.0);
            if value <= c - w / 2.0 {
                0.0
            } else if value > c + w / 2.0 {
                1.0
            } else {
                (value - c) / w + 0.5
            }
        }
        WindowSource::Percentile { low, high } => ((value - low) / (high - low)).clamp(0.0, 1.0),
        // Applied by `VoiLut::apply`, which holds the table.
        WindowSource::Lut { .. } => value,
    };
    let scaled = scaled.clamp(0.0, 1.0) as f32;
    if invert { 1.0 - scaled } else { scaled }
}

/// How an original image was placed in the model's square input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    /// Subtracted from the original coordinates after scaling: where the
    /// decoded grid's pixels sit in the original one. 0 at full resolution; at
    /// JPEG 2000 level `r`, each sample is centred on original pixel `2^r * n`,
    /// not in the middle of the `2^r` pixels it stands for: `(2^r - 1) / 2`.
    pub shift: f32,
    pub original_columns: u32,
    pub original_rows: u32,
}

impl Letterbox {
    /// Maps a point of the model input back to original pixel coordinates, clamped
    /// to the image.
    pub fn to_original(&self, x: f32, y: f32) -> (f32, f32) {
        let original_x =
            ((x - self.pad_x) / self.scale - self.shift).clamp(0.0, self.original_columns as f32);
        let original_y =
            ((y - self.pad_y) / self.scale - self.shift).clamp(0.0, self.original_rows as f32);
        (original_x, original_y)
    }
}

/// Resizes `image` to fit `size`x`size` keeping its aspect ratio (area averaging
/// when shrinking, bilinear when enlarging), centred on a black background.
pub fn letterbox(image: &GreyImage, size: u32) -> (Vec<f32>, Letterbox) {
    let scale = (size as f32 / image.columns as f32).min(size as f32 / image.rows as f32);
    let new_columns = ((image.columns as f32 * scale).round() as u32).clamp(1, size);
    let new_rows = ((image.rows as f32 * scale).round() as u32).clamp(1, size);
    let pad_x = ((size - new_columns) / 2) as f32;
    let pad_y = ((size - new_rows) / 2) as f32;
    let mut output = vec![0.0_f32; (size * size) as usize];
    let resized = resize(image, new_columns, new_rows);
    for row in 0..new_rows {
        let target = ((row + pad_y as u32) * size + pad_x as u32) as usize;
        let source = (row * new_columns) as usize;
        output[target..target + new_columns as usize]
            .copy_from_slice(&resized[source..source + new_columns as usize]);
    }
    let transform = Letterbox {
        scale,
        pad_x,
        pad_y,
        shift: 0.0,
        original_columns: image.columns,
        original_rows: image.rows,
    };
    (output, transform)
}

/// [`letterbox`] for a [`ModelImage`]: the transform maps model input points
/// to the original grid (a reduced level's scale divided by `2^level`, exact
/// in floating point, and its samples' centres; see [`Letterbox::shift`]).
pub fn letterbox_model(image: &ModelImage, size: u32) -> (Vec<f32>, Letterbox) {
    let (input, mut transform) = letterbox(&image.image, size);
    let factor = (1_u32 << image.level) as f32;
    transform.scale /= factor;
    transform.shift = (factor - 1.0) / 2.0;
    transform.original_columns = image.original_columns;
    transform.original_rows = image.original_rows;
    (input, transform)
}

fn resize(image: &GreyImage, columns: u32, rows: u32) -> Vec<f32> {
    let x_ratio = image.columns as f32 / columns as f32;
    let y_ratio = image.rows as f32 / rows as f32;
    let at = |x: u32, y: u32| image.pixels[(y * image.columns + x) as usize];
    let mut output = Vec::with_capacity((columns * rows) as usize);
    for row in 0..rows {
        for column in 0..columns {
            let value = if x_ratio >= 1.0 && y_ratio >= 1.0 {
                // Area average of the source pixels this output pixel covers.
                let x0 = (column as f32 * x_ratio) as u32;
                let x1 = (((column + 1) as f32 * x_ratio) as u32).clamp(x0 + 1, image.columns);
                let y0 = (row as f32 * y_ratio) as u32;
                let y1 = (((row + 1) as f32 * y_ratio) as u32).clamp(y0 + 1, image.rows);
                let mut sum = 0.0;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += at(x, y);
                    }
                }
                sum / ((x1 - x0) * (y1 - y0)) as f32
            } else {
                let source_x =
                    ((column as f32 + 0.5) * x_ratio - 0.5).clamp(0.0, (image.columns - 1) as f32);
                let source_y =
                    ((row as f32 + 0.5) * y_ratio - 0.5).clamp(0.0, (image.rows - 1) as f32);
                let (x0, y0) = (source_x.floor() as u32, source_y.floor() as u32);
                let (x1, y1) = (
                    (x0 + 1).min(image.columns - 1),
                    (y0 + 1).min(image.rows - 1),
                );
                let (fx, fy) = (source_x - x0 as f32, source_y - y0 as f32);
                let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
                let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
                top * (1.0 - fy) + bottom * fy
            };
            output.push(value);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_dicom_linear_function_and_inverts_monochrome1() {
        let window = WindowSource::Dataset {
            center: 2048.0,
            width: 4096.0,
        };
        assert_eq!(apply_window(0.0, window, false), 0.0);
        assert!((apply_window(2048.0, window, false) - 0.5).abs() < 0.001);
        assert_eq!(apply_window(5000.0, window, false), 1.0);
        assert_eq!(
            apply_window(5000.0, window, true),
            0.0,
            "MONOCHROME1: high values are dark"
        );
    }

    #[test]
    fn letterbox_keeps_the_aspect_ratio_and_maps_points_back() {
        let image = GreyImage {
            rows: 200,
            columns: 400,
            pixels: vec![1.0; 80_000],
        };
        let (input, transform) = letterbox(&image, 100);
        assert_eq!(input.len(), 10_000);
        assert_eq!(transform.scale, 0.25);
        assert_eq!((transform.pad_x, transform.pad_y), (0.0, 25.0));
        assert_eq!(input[0], 0.0, "padding is black");
        assert_eq!(input[50 * 100 + 50], 1.0, "the image is inside");
        assert_eq!(
            transform.to_original(50.0, 50.0),
            (200.0, 100.0),
            "the centre maps to the centre"
        );
        assert_eq!(transform.to_original(100.0, 75.0), (400.0, 200.0));
    }

    #[test]
    fn a_reduced_level_maps_back_to_the_original_grid() {
        // Level 2 of a 400x200 image: 100x50 samples, sample n centred on
        // original pixel 4n (whose centre is at 4n + 0.5).
        let image = ModelImage {
            image: GreyImage {
                rows: 50,
                columns: 100,
                pixels: vec![1.0; 5_000],
            },
            level: 2,
            original_rows: 200,
            original_columns: 400,
        };
        let (input, transform) = letterbox_model(&image, 100);
        assert_eq!(input.len(), 10_000);
        assert_eq!(transform.scale, 0.25);
        assert_eq!((transform.pad_x, transform.pad_y), (0.0, 25.0));
        assert_eq!(
            (transform.original_columns, transform.original_rows),
            (400, 200)
        );
        // The centre of input pixel (10, 35), sample (10, 10), is the centre of
        // original pixel (40, 40).
        assert_eq!(transform.to_original(10.5, 35.5), (40.5, 40.5));
        assert_eq!(transform.to_original(0.0, 25.0), (0.0, 0.0), "clamped");
        assert_eq!(transform.to_original(100.0, 75.0), (398.5, 198.5));
    }

    #[test]
    fn the_percentile_window_ignores_outliers() {
        let mut values: Vec<f32> = (0..1000).map(|v| v as f32).collect();
        values.push(1_000_000.0);
        let WindowSource::Percentile { low, high } = percentile_window(values) else {
            panic!("percentile")
        };
        assert!(low < 20.0 && high < 1000.5, "{low} {high}");
    }
}
