//! The AI result drawn on its image, as a DICOM Secondary Capture that any
//! PACS viewer shows beside the original: the image (windowed, scaled to
//! [`MAX_SIDE`] pixels on its longer side), each detected region outlined,
//! and above it a banner that says it is an AI triage aid and not a diagnosis,
//! with the model and the probability. The annotation is burned in (RGB), so
//! it survives any viewer; the original image is untouched in the PACS.
//!
//! A secondary capture rather than a Grayscale Softcopy Presentation State:
//! every viewer displays an SC image, while GSPS support (and whether a viewer
//! applies it by default) varies; the banner must be seen wherever the regions
//! are. Its UIDs are derived from what it shows, like the SR's.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_core::Detection;
use fxtriage_core::policy::AiResult;

use crate::overlay::BOX_COLOUR;
use crate::pixels::GreyImage;
use crate::sr::{Algorithm, StudyContext, derived_uid};

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The longer side of the captured image, in pixels.
pub const MAX_SIDE: u32 = 1024;
/// The banner's first line.
pub const DISCLAIMER: &str = "AI TRIAGE AID - NOT A DIAGNOSIS";

/// One analysed image and what the model found on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub context: StudyContext,
    pub algorithm: Algorithm,
    /// The study's result class (the banner names it).
    pub result: AiResult,
    pub source_series_instance_uid: String,
    pub source_sop_class_uid: String,
    pub source_sop_instance_uid: String,
    /// This image's probability.
    pub probability: f32,
    /// In the source image's pixel coordinates.
    pub detections: Vec<Detection>,
    pub content_date: String,
    pub content_time: String,
}

/// Glyph scale of the banner's 8x8 font, and its lines.
const SCALE: usize = 2;
const LINE: usize = 8 * SCALE + 6;

impl Capture {
    pub fn series_instance_uid(&self) -> String {
        derived_uid(&["fxtriage-sc-series", &self.context.study_instance_uid])
    }

    /// Derived from the source image, the model and what is drawn.
    pub fn sop_instance_uid(&self) -> String {
        let mut parts = vec![
            "fxtriage-sc".to_owned(),
            self.source_sop_instance_uid.clone(),
            self.algorithm.sha256.clone(),
            self.result.as_str().to_owned(),
            format!("{:.6}", self.probability),
        ];
        for detection in &self.detections {
            let b = detection.bounding_box;
            parts.push(format!(
                "{:.6}:{:.2},{:.2},{:.2},{:.2}",
                detection.score, b.x_min, b.y_min, b.x_max, b.y_max
            ));
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        derived_uid(&parts)
    }

    /// The banner's lines, upper case (the font has no more).
    pub fn banner(&self) -> [String; 3] {
        let result = match self.result {
            AiResult::Suspected => "FRACTURE SUSPECTED",
            AiResult::Possible => "FRACTURE POSSIBLE",
            AiResult::NoFinding => "NO FRACTURE FOUND BY AI",
            AiResult::NotAnalysed => "NOT ANALYSED",
        };
        [
            DISCLAIMER.to_owned(),
            format!(
                "MODEL {} {}",
                self.algorithm.name.to_uppercase(),
                self.algorithm.version.to_uppercase()
            ),
            format!(
                "STUDY: {result}  IMAGE P={:.2}  REGIONS {}",
                self.probability,
                self.detections.len()
            ),
        ]
    }

    /// The RGB picture: banner above the scaled image with its regions outlined.
    /// Returns (columns, rows, pixels).
    pub fn render(&self, image: &GreyImage) -> (u32, u32, Vec<u8>) {
        let (source_width, source_height) = (image.columns.max(1), image.rows.max(1));
        // Scaled so that the longer side is MAX_SIDE: down for a radiograph,
        // up for a small image, so that the regions are seen beside the banner.
        let scale = f64::from(MAX_SIDE) / f64::from(source_width.max(source_height));
        let width = ((f64::from(source_width) * scale).round() as usize).max(1);
        let height = ((f64::from(source_height) * scale).round() as usize).max(1);
        let banner_rows = 3 * LINE + 6;
        // The banner is at least as wide as its text.
        let text_width = self
            .banner()
            .iter()
            .map(|line| line.chars().count() * 8 * SCALE + 12)
            .max()
            .unwrap_or(0);
        let columns = width.max(text_width);
        let rows = height + banner_rows;
        let mut rgb = vec![0_u8; columns * rows * 3];
        // The image, by nearest neighbour (it is a visual aid, not for reading).
        for y in 0..height {
            let source_y = ((y as f64 + 0.5) / scale) as usize;
            for x in 0..width {
                let source_x = ((x as f64 + 0.5) / scale) as usize;
                let index = source_y.min(image.rows as usize - 1) * image.columns as usize
                    + source_x.min(image.columns as usize - 1);
                let grey = image
                    .pixels
                    .get(index)
                    .map_or(0, |value| (value.clamp(0.0, 1.0) * 255.0).round() as u8);
                let at = ((y + banner_rows) * columns + x) * 3;
                rgb[at..at + 3].copy_from_slice(&[grey, grey, grey]);
            }
        }
        let thickness = (width.max(height) / 300).max(2);
        for detection in &self.detections {
            let b = detection.bounding_box;
            let clip = |value: f32, size: usize| {
                ((f64::from(value) * scale).max(0.0) as usize).min(size - 1)
            };
            let (x0, x1) = (
                clip(b.x_min.min(b.x_max), width),
                clip(b.x_min.max(b.x_max), width),
            );
            let (y0, y1) = (
                clip(b.y_min.min(b.y_max), height),
                clip(b.y_min.max(b.y_max), height),
            );
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let on_edge = x < x0 + thickness
                        || x + thickness > x1
                        || y < y0 + thickness
                        || y + thickness > y1;
                    if on_edge {
                        let at = ((y + banner_rows) * columns + x) * 3;
                        rgb[at..at + 3].copy_from_slice(&BOX_COLOUR);
                    }
                }
            }
        }
        // The banner: yellow text on black.
        for (line_index, line) in self.banner().iter().enumerate() {
            let top = 4 + line_index * LINE;
            for (char_index, character) in line.chars().enumerate() {
                let glyph = font8x8::legacy::BASIC_LEGACY
                    .get(character as usize)
                    .copied()
                    .unwrap_or([0; 8]);
                let left = 6 + char_index * 8 * SCALE;
                for (row, bits) in glyph.iter().enumerate() {
                    for bit in 0..8 {
                        if bits & (1 << bit) == 0 {
                            continue;
                        }
                        for dy in 0..SCALE {
                            for dx in 0..SCALE {
                                let (x, y) = (left + bit * SCALE + dx, top + row * SCALE + dy);
                                if x < columns {
                                    let at = (y * columns + x) * 3;
                                    rgb[at..at + 3].copy_from_slice(&[255, 220, 0]);
                                }
                            }
                        }
                    }
                }
            }
        }
        (columns as u32, rows as u32, rgb)
    }

    /// The complete SC dataset (without file meta information).
    pub fn dataset(&self, image: &GreyImage) -> InMemDicomObject {
        let (columns, rows, rgb) = self.render(image);
        let context = &self.context;
        let text =
            |tag: Tag, vr: VR, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let unsigned =
            |tag: Tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        let reference = InMemDicomObject::from_element_iter([
            text(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                &self.source_sop_class_uid,
            ),
            text(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &self.source_sop_instance_uid,
            ),
        ]);
        let [first, second, third] = self.banner();
        InMemDicomObject::from_element_iter([
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY"),
            text(tags::SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE),
            text(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_instance_uid()),
            text(tags::STUDY_DATE, VR::DA, &context.study_date),
            text(tags::CONTENT_DATE, VR::DA, &self.content_date),
            text(tags::STUDY_TIME, VR::TM, &context.study_time),
            text(tags::CONTENT_TIME, VR::TM, &self.content_time),
            text(tags::ACCESSION_NUMBER, VR::SH, &context.accession_number),
            text(tags::MODALITY, VR::CS, "OT"),
            // Workstation: made by software from another image.
            text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
            text(tags::MANUFACTURER, VR::LO, crate::sr::MANUFACTURER),
            text(
                tags::REFERRING_PHYSICIAN_NAME,
                VR::PN,
                &context.referring_physician_name,
            ),
            text(
                tags::SERIES_DESCRIPTION,
                VR::LO,
                "AI fracture triage overlay",
            ),
            text(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                &format!("{first}. {second}. {third}."),
            ),
            DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![reference]),
            ),
            text(tags::PATIENT_NAME, VR::PN, &context.patient_name),
            text(tags::PATIENT_ID, VR::LO, &context.patient_id),
            text(
                tags::PATIENT_BIRTH_DATE,
                VR::DA,
                &context.patient_birth_date,
            ),
            text(tags::PATIENT_SEX, VR::CS, &context.patient_sex),
            text(tags::SOFTWARE_VERSIONS, VR::LO, &self.algorithm.version),
            text(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                &context.study_instance_uid,
            ),
            text(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                &self.series_instance_uid(),
            ),
            text(tags::STUDY_ID, VR::SH, &context.study_id),
            // Series 9902: beside the SR's 9901, away from the modality's.
            text(tags::SERIES_NUMBER, VR::IS, "9902"),
            // Type 2C: the series may mix both sides (images of either).
            text(tags::LATERALITY, VR::CS, ""),
            text(tags::INSTANCE_NUMBER, VR::IS, "1"),
            text(tags::PATIENT_ORIENTATION, VR::CS, ""),
            text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
            unsigned(tags::SAMPLES_PER_PIXEL, 3),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
            unsigned(tags::PLANAR_CONFIGURATION, 0),
            unsigned(tags::ROWS, rows as u16),
            unsigned(tags::COLUMNS, columns as u16),
            unsigned(tags::BITS_ALLOCATED, 8),
            unsigned(tags::BITS_STORED, 8),
            unsigned(tags::HIGH_BIT, 7),
            unsigned(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(rgb.into())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use fxtriage_core::BoundingBox;

    use super::*;

    fn capture(detections: Vec<Detection>) -> Capture {
        Capture {
            context: StudyContext {
                study_instance_uid: "1.2.3".into(),
                ..StudyContext::default()
            },
            algorithm: Algorithm {
                name: "fxtriage-heatmap".into(),
                version: "0.3.0".into(),
                sha256: "ab".repeat(32),
            },
            result: AiResult::Suspected,
            source_series_instance_uid: "1.2.3.1".into(),
            source_sop_class_uid: crate::sop_class::DX_FOR_PRESENTATION.into(),
            source_sop_instance_uid: "1.2.3.1.1".into(),
            probability: 0.91,
            detections,
            content_date: "20261130".into(),
            content_time: "120000".into(),
        }
    }

    #[test]
    fn a_large_image_is_scaled_and_its_regions_drawn_below_the_banner() {
        let image = GreyImage {
            rows: 2048,
            columns: 1024,
            pixels: vec![0.5; 2048 * 1024],
        };
        let found = capture(vec![Detection {
            class_name: "fracture".into(),
            score: 0.9,
            bounding_box: BoundingBox {
                x_min: 200.0,
                y_min: 400.0,
                x_max: 600.0,
                y_max: 800.0,
            },
        }]);
        let (columns, rows, rgb) = found.render(&image);
        let banner = (3 * LINE + 6) as u32;
        // Scaled by half: 512 x 1024 below a banner at least as wide as its text.
        assert_eq!(rows, 1024 + banner);
        assert!(columns >= 512);
        let pixel = |x: u32, y: u32| {
            let at = ((y * columns + x) * 3) as usize;
            [rgb[at], rgb[at + 1], rgb[at + 2]]
        };
        assert_eq!(pixel(100, banner + 300), BOX_COLOUR, "left edge at x 200/2");
        assert_eq!(
            pixel(200, banner + 300),
            [128, 128, 128],
            "inside stays grey"
        );
        let yellow = (0..columns)
            .flat_map(|x| (0..banner).map(move |y| (x, y)))
            .filter(|&(x, y)| pixel(x, y) == [255, 220, 0])
            .count();
        assert!(yellow > 500, "the banner's text is drawn: {yellow} pixels");
        assert!(found.banner()[2].contains("P=0.91"));
        assert!(found.banner()[1].contains("FXTRIAGE-HEATMAP 0.3.0"));
    }

    #[test]
    fn a_small_image_is_scaled_up_to_be_seen_beside_the_banner() {
        let image = GreyImage {
            rows: 256,
            columns: 256,
            pixels: vec![0.25; 256 * 256],
        };
        let (columns, rows, _) = capture(Vec::new()).render(&image);
        assert_eq!(rows, MAX_SIDE + (3 * LINE + 6) as u32);
        assert_eq!(columns, MAX_SIDE);
    }

    #[test]
    fn its_uid_follows_what_it_shows() {
        let first = capture(Vec::new());
        assert_eq!(first.sop_instance_uid(), first.clone().sop_instance_uid());
        let mut other = first.clone();
        other.probability = 0.5;
        assert_ne!(other.sop_instance_uid(), first.sop_instance_uid());
        let mut later = first.clone();
        later.content_time = "235959".into();
        assert_eq!(later.sop_instance_uid(), first.sop_instance_uid());
    }
}
