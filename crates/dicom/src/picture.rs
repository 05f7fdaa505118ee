//! Ordinary pictures (PNG and JPEG) as model input. Public fracture datasets
//! ship radiographs as pictures already windowed for display, so their values
//! are taken as they are: 0..max mapped to 0..=1, bright meaning dense. Colour
//! pictures are turned grey (ITU-R BT.601 luma); an alpha channel is dropped.
//! The dimensions are checked before any pixel is decoded.

use std::io::Cursor;

use crate::pixels::{GreyImage, PixelError, PixelErrorKind};

/// The most pixels a picture may have (a 12000 x 12000 image; the largest
/// radiographs are about 4300 x 3500). Decoding holds at most a few bytes per
/// pixel, so a picture is refused before it can claim more than a few hundred
/// MiB.
pub const MAX_PICTURE_PIXELS: u64 = 144_000_000;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureFormat {
    Png,
    Jpeg,
}

/// The format of `bytes` by its signature, or `None` when it is neither.
pub fn sniff(bytes: &[u8]) -> Option<PictureFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(PictureFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(PictureFormat::Jpeg)
    } else {
        None
    }
}

/// Decodes a PNG or JPEG picture to a grey image in 0..=1.
pub fn decode_picture(bytes: &[u8]) -> Result<GreyImage, PixelError> {
    match sniff(bytes) {
        Some(PictureFormat::Png) => decode_png(bytes),
        Some(PictureFormat::Jpeg) => decode_jpeg(bytes),
        None => Err(PixelError::new(
            PixelErrorKind::Unreadable,
            "neither a PNG nor a JPEG picture (no signature)",
        )),
    }
}

fn check_size(columns: u64, rows: u64) -> Result<(), PixelError> {
    if columns == 0 || rows == 0 {
        return Err(PixelError::new(
            PixelErrorKind::UnsupportedImage,
            format!("an empty picture ({columns} x {rows})"),
        ));
    }
    if columns * rows > MAX_PICTURE_PIXELS {
        return Err(PixelError::new(
            PixelErrorKind::UnsupportedImage,
            format!(
                "the picture claims {columns} x {rows} pixels, more than the {MAX_PICTURE_PIXELS} allowed"
            ),
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> Result<GreyImage, PixelError> {
    let failed = |error: png::DecodingError| {
        PixelError::new(PixelErrorKind::DecodeFailed, format!("PNG: {error}"))
    };
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            // 16-bit RGBA at the largest size allowed.
            bytes: (MAX_PICTURE_PIXELS * 8) as usize,
        },
    );
    // Palette and low bit depths expanded to 8 bits; 16 bits kept.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(failed)?;
    let (columns, rows) = reader.info().size();
    check_size(u64::from(columns), u64::from(rows))?;
    let (colour, depth) = reader.output_color_type();
    let size = reader.output_buffer_size().ok_or_else(|| {
        PixelError::new(PixelErrorKind::UnsupportedImage, "PNG: too large a buffer")
    })?;
    let mut buffer = vec![0_u8; size];
    let frame = reader.next_frame(&mut buffer).map_err(failed)?;
    buffer.truncate(frame.buffer_size());
    let channels = match colour {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(PixelError::new(
                PixelErrorKind::UnsupportedImage,
                "PNG: a palette that was not expanded",
            ));
        }
    };
    let samples: Vec<f32> = match depth {
        png::BitDepth::Sixteen => buffer
            .chunks_exact(2)
            .map(|pair| f32::from(u16::from_be_bytes([pair[0], pair[1]])) / 65535.0)
            .collect(),
        png::BitDepth::Eight => buffer.iter().map(|&v| f32::from(v) / 255.0).collect(),
        other => {
            return Err(PixelError::new(
                PixelErrorKind::UnsupportedImage,
                format!("PNG: {other:?} bits per sample after expansion"),
            ));
        }
    };
    Ok(grey(columns, rows, &samples, channels))
}

fn decode_jpeg(bytes: &[u8]) -> Result<GreyImage, PixelError> {
    let failed = |error: jpeg_decoder::Error| {
        PixelError::new(PixelErrorKind::DecodeFailed, format!("JPEG: {error}"))
    };
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(failed)?;
    let info = decoder
        .info()
        .ok_or_else(|| PixelError::new(PixelErrorKind::Unreadable, "JPEG: no frame header"))?;
    check_size(u64::from(info.width), u64::from(info.height))?;
    decoder.set_max_decoding_buffer_size((MAX_PICTURE_PIXELS * 4) as usize);
    let data = decoder.decode().map_err(failed)?;
    let (columns, rows) = (u32::from(info.width), u32::from(info.height));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            let samples: Vec<f32> = data.iter().map(|&v| f32::from(v) / 255.0).collect();
            grey(columns, rows, &samples, 1)
        }
        jpeg_decoder::PixelFormat::L16 => {
            let samples: Vec<f32> = data
                .chunks_exact(2)
                .map(|pair| f32::from(u16::from_be_bytes([pair[0], pair[1]])) / 65535.0)
                .collect();
            grey(columns, rows, &samples, 1)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            let samples: Vec<f32> = data.iter().map(|&v| f32::from(v) / 255.0).collect();
            grey(columns, rows, &samples, 3)
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(PixelError::new(
                PixelErrorKind::UnsupportedImage,
                "JPEG: CMYK is not a radiograph",
            ));
        }
    };
    Ok(image)
}

/// Interleaved samples in 0..=1 with `channels` per pixel (grey, grey+alpha,
/// RGB, RGBA) to one grey value per pixel.
fn grey(columns: u32, rows: u32, samples: &[f32], channels: usize) -> GreyImage {
    let pixels = samples
        .chunks_exact(channels)
        .take((columns * rows) as usize)
        .map(|pixel| match channels {
            1 | 2 => pixel[0],
            _ => 0.299 * pixel[0] + 0.587 * pixel[1] + 0.114 * pixel[2],
        })
        .collect();
    GreyImage {
        rows,
        columns,
        pixels,
    }
}

/// `image` as an 8-bit greyscale PNG (values 0..=1 to 0..=255): how the sample
/// datasets are written in the public datasets' layout.
pub fn encode_png(image: &GreyImage) -> Result<Vec<u8>, PixelError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, image.columns, image.rows);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let failed = |error: png::EncodingError| {
        PixelError::new(PixelErrorKind::DecodeFailed, format!("PNG: {error}"))
    };
    let mut writer = encoder.write_header().map_err(failed)?;
    let data: Vec<u8> = image
        .pixels
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    writer.write_image_data(&data).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> GreyImage {
        GreyImage {
            rows: 3,
            columns: 4,
            pixels: (0..12).map(|v| v as f32 / 11.0).collect(),
        }
    }

    #[test]
    fn png_round_trip_keeps_values_to_eight_bits() {
        let image = ramp();
        let png = encode_png(&image).unwrap();
        assert_eq!(sniff(&png), Some(PictureFormat::Png));
        let back = decode_picture(&png).unwrap();
        assert_eq!((back.columns, back.rows), (4, 3));
        for (a, b) in image.pixels.iter().zip(&back.pixels) {
            assert!((a - b).abs() <= 0.5 / 255.0 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn colour_png_turns_grey() {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 2, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_image_data(&[255, 255, 255, 255, 0, 0])
            .unwrap();
        writer.finish().unwrap();
        let image = decode_picture(&out).unwrap();
        assert!((image.pixels[0] - 1.0).abs() < 1e-6);
        assert!((image.pixels[1] - 0.299).abs() < 1e-6);
    }

    #[test]
    fn a_picture_claiming_huge_dimensions_is_refused_before_decoding() {
        // A valid PNG header claiming 100000 x 100000 pixels and no data.
        let mut png = encode_png(&ramp()).unwrap();
        png[16..20].copy_from_slice(&100_000_u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000_u32.to_be_bytes());
        // The header's CRC covers the new size.
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        let crc = crc.sum();
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let error = decode_picture(&png).unwrap_err();
        assert_eq!(error.kind, PixelErrorKind::UnsupportedImage, "{error}");
        assert!(error.message.contains("100000 x 100000"), "{error}");
    }

    #[test]
    fn garbage_and_truncated_pictures_are_errors() {
        let error = decode_picture(b"not a picture").unwrap_err();
        assert_eq!(error.kind, PixelErrorKind::Unreadable);
        let png = encode_png(&ramp()).unwrap();
        let error = decode_picture(&png[..png.len() / 2]).unwrap_err();
        assert_eq!(error.kind, PixelErrorKind::DecodeFailed, "{error}");
        let error = decode_picture(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]).unwrap_err();
        assert_eq!(error.kind, PixelErrorKind::DecodeFailed, "{error}");
    }
}
