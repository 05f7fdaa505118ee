//! JPEG 2000 frames decoded only to the resolution a model needs.
//!
//! A JPEG 2000 codestream is a wavelet pyramid: resolution level `r` is the
//! image at `1/2^r` of its size, and decoding it skips the finer levels'
//! code blocks (most of the work) and their inverse transforms. A radiograph
//! of 1760x1760 analysed by a 256 px model needs level 2 (440x440), an
//! eighth of the data a full decode produces. The frame is decoded with
//! OpenJPEG through `jpeg2k`, the same library and build dicom-pixeldata
//! decodes JPEG 2000 with.

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use crate::pixels::{
    GreyImage, ModelImage, PixelError, PixelErrorKind, WindowSource, choose_voi, first_decimal,
    percentile_step,
};

/// JPEG 2000 Image Compression (Lossless Only), and lossy.
const JPEG_2000: [&str; 2] = ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"];

/// The first frame of `object` at the resolution level for a `size` px model
/// input, or `None` when this path does not apply (not JPEG 2000, several
/// frames, an image already as small as the input, more than one component,
/// or a codestream OpenJPEG refuses at that level): the caller then decodes at
/// full resolution, which reports any real fault with the data.
pub(crate) fn decode_reduced(
    object: &DefaultDicomObject,
    size: u32,
) -> Result<Option<(ModelImage, WindowSource)>, PixelError> {
    let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    if !JPEG_2000.contains(&transfer_syntax) {
        return Ok(None);
    }
    let frames = first_decimal(object, tags::NUMBER_OF_FRAMES).unwrap_or(1.0);
    let (Some(rows), Some(columns)) = (
        unsigned(object, tags::ROWS),
        unsigned(object, tags::COLUMNS),
    ) else {
        return Ok(None);
    };
    if frames != 1.0 || unsigned(object, tags::SAMPLES_PER_PIXEL).unwrap_or(1) != 1 {
        return Ok(None);
    }
    let Some(element) = object.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Ok(None);
    };
    let Value::PixelSequence(sequence) = element.value() else {
        return Ok(None);
    };
    // One frame: every fragment belongs to it (usually there is just one,
    // used in place).
    let codestream: std::borrow::Cow<'_, [u8]> = match sequence.fragments() {
        [fragment] => fragment.as_slice().into(),
        fragments => fragments.concat().into(),
    };
    let Some(levels) = decomposition_levels(&codestream) else {
        return Ok(None);
    };
    let level = level_for(columns, rows, size, levels);
    if level == 0 {
        return Ok(None);
    }
    let parameters = jpeg2k::DecodeParameters::new().reduce(level);
    let Ok(decoded) = jpeg2k::Image::from_bytes_with(&codestream, parameters) else {
        return Ok(None);
    };
    let [component] = decoded.components() else {
        return Ok(None);
    };
    if decoded.orig_width() != columns || decoded.orig_height() != rows {
        return Err(PixelError::new(
            PixelErrorKind::DecodeFailed,
            format!(
                "transfer syntax {transfer_syntax}: the codestream is {}x{}, the dataset says {columns}x{rows}",
                decoded.orig_width(),
                decoded.orig_height()
            ),
        ));
    }
    let (width, height) = (component.width(), component.height());
    let samples = component.data();
    let count = width as usize * height as usize;
    if samples.len() != count {
        return Ok(None);
    }
    // Modality rescale (slope and intercept; identity when absent), then the
    // VOI transform chosen as for a full decode, over these values.
    let slope = first_decimal(object, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = first_decimal(object, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let rescale = |sample: i32| f64::from(sample) * slope + intercept;
    let voi = choose_voi(object, || {
        samples
            .iter()
            .step_by(percentile_step(count))
            .map(|sample| rescale(*sample) as f32)
            .collect()
    })?;
    let invert = object
        .element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|element| {
            element
                .to_str()
                .ok()
                .map(|text| text.trim() == "MONOCHROME1")
        })
        .unwrap_or(false);
    let pixels = samples
        .iter()
        .map(|sample| voi.apply(rescale(*sample), invert))
        .collect();
    Ok(Some((
        ModelImage {
            image: GreyImage {
                rows: height,
                columns: width,
                pixels,
            },
            level,
            original_rows: rows,
            original_columns: columns,
        },
        voi.source(),
    )))
}

fn unsigned(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    object.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

/// The highest level, at most `levels`, whose longer side (`ceil(side / 2^r)`,
/// as JPEG 2000 rounds) is still at least `size`: the letterbox then only
/// shrinks, as it does from full resolution.
pub(crate) fn level_for(columns: u32, rows: u32, size: u32, levels: u32) -> u32 {
    let longer = columns.max(rows);
    (0..=levels.min(31))
        .rev()
        .find(|level| longer.div_ceil(1 << level) >= size)
        .unwrap_or(0)
}

/// The image size a JPEG 2000 codestream declares in its SIZ marker
/// (columns, rows: Xsiz - XOsiz, Ysiz - YOsiz), or `None` without a
/// readable SIZ right after SOC.
pub(crate) fn declared_size(codestream: &[u8]) -> Option<(u32, u32)> {
    let start = codestream
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    // SOC, SIZ, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (4 bytes each).
    let field = |index: usize| -> Option<u32> {
        let at = start + 8 + 4 * index;
        Some(u32::from_be_bytes(
            codestream.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    Some((
        field(0)?.checked_sub(field(2)?)?,
        field(1)?.checked_sub(field(3)?)?,
    ))
}

/// Before any JPEG 2000 frame of `object` is decoded: its codestream must
/// declare the data set's Rows and Columns. A frame claiming another size (a
/// decompression bomb claims a huge one) is refused with both sizes, without
/// decoding it: OpenJPEG would allocate what the codestream declares.
pub(crate) fn check_declared_size(object: &DefaultDicomObject) -> Result<(), PixelError> {
    let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0');
    if !JPEG_2000.contains(&transfer_syntax) {
        return Ok(());
    }
    let Some(element) = object.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Ok(());
    };
    let Value::PixelSequence(sequence) = element.value() else {
        return Ok(());
    };
    let (rows, columns) = (
        unsigned(object, tags::ROWS).unwrap_or(0),
        unsigned(object, tags::COLUMNS).unwrap_or(0),
    );
    // Each frame starts a fragment with SOC; a codestream split over
    // fragments has its main header (SIZ included) in the first.
    for fragment in sequence.fragments() {
        let bytes = fragment.as_slice();
        if !bytes.starts_with(&[0xFF, 0x4F]) {
            continue;
        }
        match declared_size(bytes) {
            Some((width, height)) if (width, height) == (columns, rows) => {}
            Some((width, height)) => {
                return Err(PixelError::new(
                    PixelErrorKind::DecodeFailed,
                    format!(
                        "transfer syntax {transfer_syntax}: the codestream declares {width}x{height}, the dataset says {columns}x{rows}; not decoded"
                    ),
                ));
            }
            None => {
                return Err(PixelError::new(
                    PixelErrorKind::DecodeFailed,
                    format!(
                        "transfer syntax {transfer_syntax}: a frame without a readable SIZ marker; not decoded"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The fewest wavelet decomposition levels any component has, from the main
/// header's COD and COC segments (ISO/IEC 15444-1 A.6.1, A.6.2); `None` when
/// the data is not a codestream this reader understands.
pub(crate) fn decomposition_levels(codestream: &[u8]) -> Option<u32> {
    let start = codestream
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let components_at = start + 2 + 2 + 2 + 2 + 4 * 8;
    let components = u16::from_be_bytes([
        *codestream.get(components_at)?,
        *codestream.get(components_at + 1)?,
    ]);
    let mut at = start + 2;
    let mut levels: Option<u32> = None;
    loop {
        let marker = u16::from_be_bytes([*codestream.get(at)?, *codestream.get(at + 1)?]);
        if marker == 0xFF90 || marker == 0xFF93 {
            // SOT or SOD: the main header has ended.
            return levels;
        }
        let length = usize::from(u16::from_be_bytes([
            *codestream.get(at + 2)?,
            *codestream.get(at + 3)?,
        ]));
        if length < 2 {
            return None;
        }
        let found = match marker {
            // COD: Lcod, Scod, SGcod (4 bytes), then SPcod's level count.
            0xFF52 => Some(*codestream.get(at + 2 + 2 + 1 + 4)?),
            // COC: Lcoc, Ccoc (1 or 2 bytes), Scoc, then SPcoc's level count.
            0xFF53 => {
                let component_bytes = if components < 257 { 1 } else { 2 };
                Some(*codestream.get(at + 2 + 2 + component_bytes + 1)?)
            }
            _ => None,
        };
        if let Some(found) = found {
            let found = u32::from(found);
            levels = Some(levels.map_or(found, |known| known.min(found)));
        }
        at += 2 + length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_size_is_read_from_siz_less_its_offsets() {
        let mut header = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for value in [1000_u32, 800, 10, 20, 1000, 800, 0, 0] {
            header.extend_from_slice(&value.to_be_bytes());
        }
        assert_eq!(declared_size(&header), Some((990, 780)));
        assert_eq!(declared_size(&header[..20]), None, "cut short");
        assert_eq!(declared_size(b"not a codestream"), None);
    }

    #[test]
    fn the_level_is_the_smallest_not_smaller_than_the_input() {
        // 1760 -> 880 -> 440 -> 220: level 2 for a 256 px input.
        assert_eq!(level_for(1760, 1760, 256, 5), 2);
        // 1955 -> 978 -> 489 -> 245: the longer side decides.
        assert_eq!(level_for(1841, 1955, 256, 5), 2);
        assert_eq!(level_for(1760, 1760, 220, 5), 3);
        // Never beyond the levels the codestream has.
        assert_eq!(level_for(4096, 4096, 16, 3), 3);
        // An image as small as the input: full resolution.
        assert_eq!(level_for(256, 200, 256, 5), 0);
        assert_eq!(level_for(200, 200, 256, 5), 0);
    }

    #[test]
    fn a_header_without_a_codestream_start_has_no_levels() {
        assert_eq!(decomposition_levels(b"not a codestream"), None);
        // SOC SIZ cut short.
        assert_eq!(decomposition_levels(&[0xFF, 0x4F, 0xFF, 0x51, 0x00]), None);
    }
}
