//! Synthetic "DX For Presentation" instances, made in memory: the inputs of tests,
//! load generators and the demo. They carry no real patient data (the patient
//! module holds obvious placeholders).

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::sop_class;

/// What to put in a synthetic radiograph.
#[derive(Debug, Clone)]
pub struct SyntheticInstance {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub modality: String,
    pub body_part: String,
    pub view_position: String,
    pub laterality: String,
    pub accession_number: String,
    /// RequestedProcedurePriority: STAT, HIGH, ROUTINE, MEDIUM, LOW, or empty.
    pub requested_priority: String,
    pub rows: u16,
    pub columns: u16,
    pub bits_stored: u16,
    pub photometric_interpretation: String,
    /// Pixel values (rows x columns); a simple bone-like pattern when `None`.
    pub pixels: Option<Vec<u16>>,
}

/// A UID under the 2.25 (UUID-derived) root: unique without a registered root.
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

impl SyntheticInstance {
    /// A 256x256, 12-bit DX of a wrist in a new study.
    pub fn wrist() -> Self {
        let study = new_uid();
        Self {
            series_instance_uid: format!("{study}.1"),
            sop_instance_uid: format!("{study}.1.1"),
            study_instance_uid: study,
            sop_class_uid: sop_class::DX_FOR_PRESENTATION.to_owned(),
            modality: "DX".into(),
            body_part: "WRIST".into(),
            view_position: "PA".into(),
            laterality: "L".into(),
            accession_number: "ACC0001".into(),
            requested_priority: String::new(),
            rows: 256,
            columns: 256,
            bits_stored: 12,
            photometric_interpretation: "MONOCHROME2".into(),
            pixels: None,
        }
    }

    fn pixels(&self) -> Vec<u16> {
        if let Some(pixels) = &self.pixels {
            return pixels.clone();
        }
        let max = (1_u32 << self.bits_stored) - 1;
        let (rows, columns) = (u32::from(self.rows), u32::from(self.columns));
        (0..rows)
            .flat_map(|row| (0..columns).map(move |column| (row, column)))
            .map(|(row, column)| {
                // A bright vertical "bone" on a darker gradient background.
                let in_bone = column > columns * 2 / 5 && column < columns * 3 / 5;
                let background = max / 8 + (max / 4) * row / rows.max(1);
                let value = if in_bone { max * 3 / 4 } else { background };
                value as u16
            })
            .collect()
    }

    /// A 256x256 16-bit radiograph of long bones from `radiograph::generate`,
    /// with a fracture or without, of `body_part`, in a new study.
    pub fn radiograph(seed: u64, with_fracture: bool, body_part: &str) -> (Self, Option<[f32; 4]>) {
        let image =
            crate::radiograph::generate(&mut crate::radiograph::Random::new(seed), with_fracture);
        let size = crate::radiograph::SIZE as u16;
        let instance = Self {
            body_part: body_part.into(),
            rows: size,
            columns: size,
            bits_stored: 16,
            pixels: Some(image.pixels),
            ..Self::wrist()
        };
        (instance, image.fracture)
    }

    /// The dataset, without file meta information.
    pub fn dataset(&self) -> InMemDicomObject {
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let unsigned = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        let mut object = InMemDicomObject::from_element_iter([
            text(tags::SOP_CLASS_UID, VR::UI, &self.sop_class_uid),
            text(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_instance_uid),
            text(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_instance_uid),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_instance_uid),
            text(tags::MODALITY, VR::CS, &self.modality),
            text(tags::PATIENT_NAME, VR::PN, "SYNTHETIC^PATIENT"),
            text(tags::PATIENT_ID, VR::LO, "SYNTHETIC"),
            text(tags::ACCESSION_NUMBER, VR::SH, &self.accession_number),
            text(tags::BODY_PART_EXAMINED, VR::CS, &self.body_part),
            text(tags::VIEW_POSITION, VR::CS, &self.view_position),
            text(tags::IMAGE_LATERALITY, VR::CS, &self.laterality),
            text(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION"),
            unsigned(tags::SAMPLES_PER_PIXEL, 1),
            text(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                &self.photometric_interpretation,
            ),
            unsigned(tags::ROWS, self.rows),
            unsigned(tags::COLUMNS, self.columns),
            unsigned(tags::BITS_ALLOCATED, 16),
            unsigned(tags::BITS_STORED, self.bits_stored),
            unsigned(tags::HIGH_BIT, self.bits_stored - 1),
            unsigned(tags::PIXEL_REPRESENTATION, 0),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(self.pixels().into()),
            ),
        ]);
        if !self.requested_priority.is_empty() {
            object.put(text(
                tags::REQUESTED_PROCEDURE_PRIORITY,
                VR::CS,
                &self.requested_priority,
            ));
        }
        object
    }

    /// A complete Part 10 file (preamble, meta, dataset) in Explicit VR Little Endian.
    pub fn to_part10(&self) -> Vec<u8> {
        part10(self.dataset())
    }
}

/// `dataset` as a complete Part 10 file in Explicit VR Little Endian. The dataset
/// must hold its SOP Class and SOP Instance UIDs.
pub fn part10(dataset: InMemDicomObject) -> Vec<u8> {
    let file = dataset
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("a synthetic dataset has the UIDs the meta group needs");
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .expect("writing to memory cannot fail");
    bytes
}
