//! An image with its detections drawn: the windowed image (as the model saw it)
//! in grey, each detected region outlined in red, as 8-bit RGB PNG. One
//! implementation for the API's overlay endpoint and `fxtriage analyze`.

use fxtriage_core::BoundingBox;

use crate::pixels::GreyImage;

/// The colour of a detection box.
pub const BOX_COLOUR: [u8; 3] = [230, 30, 30];

/// `image` as 8-bit RGB PNG with each box outlined in [`BOX_COLOUR`]. Boxes are in
/// the image's pixel coordinates and clipped to it; the line is thicker on larger
/// images so that it stays visible when scaled down.
pub fn render_overlay(
    image: &GreyImage,
    boxes: &[BoundingBox],
) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = (image.columns as usize, image.rows as usize);
    let mut rgb: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|value| {
            let grey = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            [grey, grey, grey]
        })
        .collect();
    rgb.resize(width * height * 3, 0);
    if width > 0 && height > 0 {
        let thickness = (width.max(height) / 300).max(2);
        let clip = |value: f32, size: usize| (value.max(0.0) as usize).min(size - 1);
        for found in boxes {
            let (x0, x1) = (
                clip(found.x_min.min(found.x_max), width),
                clip(found.x_min.max(found.x_max), width),
            );
            let (y0, y1) = (
                clip(found.y_min.min(found.y_max), height),
                clip(found.y_min.max(found.y_max), height),
            );
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let on_edge = x < x0 + thickness
                        || x + thickness > x1
                        || y < y0 + thickness
                        || y + thickness > y1;
                    if on_edge {
                        let at = (y * width + x) * 3;
                        rgb[at..at + 3].copy_from_slice(&BOX_COLOUR);
                    }
                }
            }
        }
    }
    let mut encoded = Vec::new();
    let mut encoder = png::Encoder::new(&mut encoded, image.columns, image.rows);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("png header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut pixels).expect("png frame");
        (info.width, info.height, pixels)
    }

    #[test]
    fn boxes_are_outlined_in_red_and_clipped_to_the_image() {
        let image = GreyImage {
            rows: 40,
            columns: 60,
            pixels: vec![0.5; 40 * 60],
        };
        let boxes = [
            BoundingBox {
                x_min: 10.0,
                y_min: 5.0,
                x_max: 30.0,
                y_max: 25.0,
            },
            // Reversed and partly outside: drawn where it overlaps.
            BoundingBox {
                x_min: 100.0,
                y_min: 39.0,
                x_max: 50.0,
                y_max: -3.0,
            },
        ];
        let (width, height, rgb) = decode(&render_overlay(&image, &boxes).expect("png"));
        assert_eq!((width, height), (60, 40));
        let pixel = |x: usize, y: usize| &rgb[(y * 60 + x) * 3..(y * 60 + x) * 3 + 3];
        assert_eq!(pixel(10, 15), BOX_COLOUR, "left edge");
        assert_eq!(pixel(20, 5), BOX_COLOUR, "top edge");
        assert_eq!(pixel(20, 15), [128, 128, 128], "inside stays grey");
        assert_eq!(pixel(0, 0), [128, 128, 128], "outside stays grey");
        assert_eq!(pixel(59, 20), BOX_COLOUR, "clipped box edge");
    }
}
