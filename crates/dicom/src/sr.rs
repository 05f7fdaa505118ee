//! The AI result of a study as a DICOM Structured Report, in the spirit of IHE
//! AI Results (AIR): a Comprehensive SR holding a TID 1500 Measurement Report
//! with
//!
//! - the algorithm's identity (model name, version, SHA-256 of its weights) as a
//!   device observer (TID 1004) and as the algorithm of each measurement;
//! - the study-level result (fracture suspected / possible / no finding / not
//!   analysed, and why) and the study probability, as qualitative evaluations;
//! - per detection a measurement group (TID 1410) with the image region as a
//!   SCOORD POLYLINE (a closed box) selected from the source image and frame,
//!   and the detection's score.
//!
//! Its UIDs are derived from what it says ([`StudyReport::sop_instance_uid`]):
//! the same result sent twice is the same object, which a PACS replaces rather
//! than adds; a changed result or another model is a new object that names the
//! one it supersedes (Predecessor Documents Sequence).
//!
//! The coding schemes are DCM and SCT where a code exists; the triage result
//! and the probabilities use the private scheme `99FXTRIAGE`, declared in the
//! Coding Scheme Identification Sequence.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_core::Detection;
use fxtriage_core::policy::AiResult;
use sha2::{Digest as _, Sha256};

/// Comprehensive SR Storage: the SR class that may hold spatial coordinates.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// The private coding scheme of fxtriage's own concepts.
pub const CODING_SCHEME: &str = "99FXTRIAGE";
/// Manufacturer, in General Equipment and as the device observer's.
pub const MANUFACTURER: &str = "fxtriage";

/// The identity of the model that produced a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithm {
    pub name: String,
    pub version: String,
    /// SHA-256 of the model file, lower-case hex.
    pub sha256: String,
}

/// Patient and study attributes copied from a source image, so that the PACS
/// files the report with its study. They are carried, never logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyContext {
    pub study_instance_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession_number: String,
    pub referring_physician_name: String,
}

impl StudyContext {
    /// The patient and study modules of `source` (an image of the study).
    pub fn from_dataset(source: &InMemDicomObject) -> Self {
        let text = |tag: Tag| {
            source
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|element| element.to_str().ok())
                .map(|value| value.trim_end_matches(['\0', ' ']).to_owned())
                .unwrap_or_default()
        };
        Self {
            study_instance_uid: text(tags::STUDY_INSTANCE_UID),
            patient_name: text(tags::PATIENT_NAME),
            patient_id: text(tags::PATIENT_ID),
            issuer_of_patient_id: text(tags::ISSUER_OF_PATIENT_ID),
            patient_birth_date: text(tags::PATIENT_BIRTH_DATE),
            patient_sex: text(tags::PATIENT_SEX),
            study_date: text(tags::STUDY_DATE),
            study_time: text(tags::STUDY_TIME),
            study_id: text(tags::STUDY_ID),
            accession_number: text(tags::ACCESSION_NUMBER),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
        }
    }
}

/// One analysed (or not analysable) image of the study.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The frame the regions are on (1 for single-frame images).
    pub frame: u32,
    /// None when the image could not be analysed.
    pub probability: Option<f32>,
    pub detections: Vec<Detection>,
}

/// What the report says about one study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyReport {
    pub context: StudyContext,
    pub algorithm: Algorithm,
    pub result: AiResult,
    /// Why the study was not analysed, when it was not.
    pub not_analysed_reason: Option<String>,
    /// The study probability: the maximum over its analysed images.
    pub probability: Option<f32>,
    pub images: Vec<ImageResult>,
    /// The SOP Instance UID of the report this one supersedes, if any.
    pub supersedes: Option<String>,
    /// When the result became final (content date and time), as
    /// `YYYYMMDD` and `HHMMSS`, UTC.
    pub content_date: String,
    pub content_time: String,
}

/// A UID under the 2.25 root from a SHA-256 of `parts`: the same parts always
/// give the same UID, and different parts (in practice) different ones.
pub fn derived_uid(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version-8 (custom) UUID, as PS3.5 B.2 derives 2.25 UIDs from UUIDs.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

impl StudyReport {
    /// The series of fxtriage's reports of this study: one per study.
    pub fn series_instance_uid(&self) -> String {
        derived_uid(&["fxtriage-sr-series", &self.context.study_instance_uid])
    }

    /// Derived from the study, the model and everything the report says: a
    /// resend is the same object; a changed finding or model is a new one.
    pub fn sop_instance_uid(&self) -> String {
        let mut parts: Vec<String> = vec![
            "fxtriage-sr".into(),
            self.context.study_instance_uid.clone(),
            self.algorithm.sha256.clone(),
            self.result.as_str().into(),
            self.not_analysed_reason.clone().unwrap_or_default(),
            self.probability
                .map(|p| format!("{p:.6}"))
                .unwrap_or_default(),
        ];
        for image in &self.images {
            parts.push(image.sop_instance_uid.clone());
            parts.push(image.frame.to_string());
            parts.push(
                image
                    .probability
                    .map(|p| format!("{p:.6}"))
                    .unwrap_or_default(),
            );
            for detection in &image.detections {
                let b = detection.bounding_box;
                parts.push(format!(
                    "{}:{:.6}:{:.2},{:.2},{:.2},{:.2}",
                    detection.class_name, detection.score, b.x_min, b.y_min, b.x_max, b.y_max
                ));
            }
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        derived_uid(&parts)
    }

    /// The complete SR dataset (without file meta information).
    pub fn dataset(&self) -> InMemDicomObject {
        let context = &self.context;
        let sop_instance_uid = self.sop_instance_uid();
        let mut object = InMemDicomObject::from_element_iter([
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            text(tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR),
            text(tags::SOP_INSTANCE_UID, VR::UI, &sop_instance_uid),
            text(tags::STUDY_DATE, VR::DA, &context.study_date),
            text(tags::CONTENT_DATE, VR::DA, &self.content_date),
            text(tags::STUDY_TIME, VR::TM, &context.study_time),
            text(tags::CONTENT_TIME, VR::TM, &self.content_time),
            text(tags::ACCESSION_NUMBER, VR::SH, &context.accession_number),
            text(tags::MODALITY, VR::CS, "SR"),
            text(tags::MANUFACTURER, VR::LO, MANUFACTURER),
            text(
                tags::REFERRING_PHYSICIAN_NAME,
                VR::PN,
                &context.referring_physician_name,
            ),
            sequence(
                tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, CODING_SCHEME),
                    text(
                        tags::CODING_SCHEME_NAME,
                        VR::ST,
                        "fxtriage fracture triage concepts",
                    ),
                    text(
                        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                        VR::ST,
                        "fxtriage",
                    ),
                ])],
            ),
            sequence(
                tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
                Vec::new(),
            ),
            text(
                tags::SERIES_DESCRIPTION,
                VR::LO,
                "AI fracture triage result",
            ),
            text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &self.algorithm.name),
            text(tags::SOFTWARE_VERSIONS, VR::LO, &self.algorithm.version),
            text(tags::PATIENT_NAME, VR::PN, &context.patient_name),
            text(tags::PATIENT_ID, VR::LO, &context.patient_id),
            text(
                tags::PATIENT_BIRTH_DATE,
                VR::DA,
                &context.patient_birth_date,
            ),
            text(tags::PATIENT_SEX, VR::CS, &context.patient_sex),
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
            // Series 9901: out of the way of the modality's own series numbers.
            text(tags::SERIES_NUMBER, VR::IS, "9901"),
            text(tags::INSTANCE_NUMBER, VR::IS, "1"),
            text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
            code_sequence(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                ("126000", "DCM", "Imaging Measurement Report"),
            ),
            text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
            sequence(
                tags::CONTENT_TEMPLATE_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                    text(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
                ])],
            ),
            text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
            // Made by software and not verified by a person: it is a triage aid.
            text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
            sequence(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new()),
            sequence(
                tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
                vec![self.evidence()],
            ),
            sequence(tags::CONTENT_SEQUENCE, self.content()),
        ]);
        if !context.issuer_of_patient_id.is_empty() {
            object.put(text(
                tags::ISSUER_OF_PATIENT_ID,
                VR::LO,
                &context.issuer_of_patient_id,
            ));
        }
        if let Some(predecessor) = &self.supersedes {
            object.put(sequence(
                tags::PREDECESSOR_DOCUMENTS_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(
                        tags::STUDY_INSTANCE_UID,
                        VR::UI,
                        &context.study_instance_uid,
                    ),
                    sequence(
                        tags::REFERENCED_SERIES_SEQUENCE,
                        vec![InMemDicomObject::from_element_iter([
                            text(
                                tags::SERIES_INSTANCE_UID,
                                VR::UI,
                                &self.series_instance_uid(),
                            ),
                            sequence(
                                tags::REFERENCED_SOP_SEQUENCE,
                                vec![sop_reference(COMPREHENSIVE_SR, predecessor)],
                            ),
                        ])],
                    ),
                ])],
            ));
        }
        object
    }

    /// Every image the report refers to, by series.
    fn evidence(&self) -> InMemDicomObject {
        let mut series: Vec<(&str, Vec<InMemDicomObject>)> = Vec::new();
        for image in &self.images {
            let reference = sop_reference(&image.sop_class_uid, &image.sop_instance_uid);
            match series
                .iter_mut()
                .find(|(uid, _)| *uid == image.series_instance_uid)
            {
                Some((_, references)) => references.push(reference),
                None => series.push((&image.series_instance_uid, vec![reference])),
            }
        }
        InMemDicomObject::from_element_iter([
            text(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                &self.context.study_instance_uid,
            ),
            sequence(
                tags::REFERENCED_SERIES_SEQUENCE,
                series
                    .into_iter()
                    .map(|(uid, references)| {
                        InMemDicomObject::from_element_iter([
                            text(tags::SERIES_INSTANCE_UID, VR::UI, uid),
                            sequence(tags::REFERENCED_SOP_SEQUENCE, references),
                        ])
                    })
                    .collect(),
            ),
        ])
    }

    /// The root container's children (TID 1500).
    fn content(&self) -> Vec<InMemDicomObject> {
        let algorithm = &self.algorithm;
        let mut items = vec![
            code_item(
                "HAS CONCEPT MOD",
                ("121049", "DCM", "Language of Content Item and Descendants"),
                ("en-US", "RFC5646", "English (United States)"),
            ),
            // TID 1001/1004: the observer is a device, the algorithm.
            code_item(
                "HAS OBS CONTEXT",
                ("121005", "DCM", "Observer Type"),
                ("121007", "DCM", "Device"),
            ),
            uidref_item(
                "HAS OBS CONTEXT",
                ("121012", "DCM", "Device Observer UID"),
                &derived_uid(&["fxtriage-model", &algorithm.sha256]),
            ),
            text_item(
                "HAS OBS CONTEXT",
                ("121013", "DCM", "Device Observer Name"),
                &algorithm.name,
            ),
            text_item(
                "HAS OBS CONTEXT",
                ("121014", "DCM", "Device Observer Manufacturer"),
                MANUFACTURER,
            ),
            text_item(
                "HAS OBS CONTEXT",
                ("121015", "DCM", "Device Observer Model Name"),
                &format!("{} {}", algorithm.name, algorithm.version),
            ),
            text_item(
                "HAS OBS CONTEXT",
                ("121016", "DCM", "Device Observer Serial Number"),
                &format!("sha256:{}", algorithm.sha256),
            ),
            code_item(
                "HAS CONCEPT MOD",
                ("121058", "DCM", "Procedure reported"),
                ("363680008", "SCT", "Radiographic imaging procedure"),
            ),
            container_item(
                "CONTAINS",
                ("111028", "DCM", "Image Library"),
                vec![container_item(
                    "CONTAINS",
                    ("126200", "DCM", "Image Library Group"),
                    self.images
                        .iter()
                        .map(|image| image_item("CONTAINS", image, false))
                        .collect(),
                )],
            ),
        ];
        let groups: Vec<InMemDicomObject> = self
            .images
            .iter()
            .flat_map(|image| {
                image
                    .detections
                    .iter()
                    .enumerate()
                    .map(move |(index, detection)| self.region_group(image, index, detection))
            })
            .collect();
        if !groups.is_empty() {
            items.push(container_item(
                "CONTAINS",
                ("126010", "DCM", "Imaging Measurements"),
                groups,
            ));
        }
        let mut evaluations = vec![code_item(
            "CONTAINS",
            ("triage-result", CODING_SCHEME, "AI fracture triage result"),
            result_code(self.result),
        )];
        if let Some(probability) = self.probability {
            evaluations.push(probability_item(
                ("study-prob", CODING_SCHEME, "Study fracture probability"),
                probability,
            ));
        }
        if let Some(reason) = &self.not_analysed_reason {
            evaluations.push(text_item(
                "CONTAINS",
                ("not-analysed-why", CODING_SCHEME, "Reason not analysed"),
                reason,
            ));
        }
        evaluations.push(text_item(
            "CONTAINS",
            ("intended-use", CODING_SCHEME, "Intended use"),
            "AI triage aid for worklist prioritisation; not a diagnosis. Results require review by a qualified reader.",
        ));
        items.push(container_item(
            "CONTAINS",
            ("C0034375", "UMLS", "Qualitative Evaluations"),
            evaluations,
        ));
        items
    }

    /// TID 1410: one detected region of one image.
    fn region_group(
        &self,
        image: &ImageResult,
        index: usize,
        detection: &Detection,
    ) -> InMemDicomObject {
        let b = detection.bounding_box;
        // A closed polyline around the box, in image pixel coordinates (column, row).
        let points = vec![
            b.x_min, b.y_min, b.x_max, b.y_min, b.x_max, b.y_max, b.x_min, b.y_max, b.x_min,
            b.y_min,
        ];
        let tracking_uid = derived_uid(&[
            "fxtriage-region",
            &self.sop_instance_uid(),
            &image.sop_instance_uid,
            &index.to_string(),
        ]);
        let mut region = item("CONTAINS", "SCOORD", ("111030", "DCM", "Image Region"));
        region.put(text(tags::GRAPHIC_TYPE, VR::CS, "POLYLINE"));
        region.put(DataElement::new(
            tags::GRAPHIC_DATA,
            VR::FL,
            PrimitiveValue::F32(points.into()),
        ));
        region.put(sequence(
            tags::CONTENT_SEQUENCE,
            vec![image_item("SELECTED FROM", image, true)],
        ));
        container_item(
            "CONTAINS",
            ("125007", "DCM", "Measurement Group"),
            vec![
                text_item(
                    "HAS OBS CONTEXT",
                    ("112039", "DCM", "Tracking Identifier"),
                    &format!("{} region {}", detection.class_name, index + 1),
                ),
                uidref_item(
                    "HAS OBS CONTEXT",
                    ("112040", "DCM", "Tracking Unique Identifier"),
                    &tracking_uid,
                ),
                code_item(
                    "CONTAINS",
                    ("121071", "DCM", "Finding"),
                    ("125605004", "SCT", "Fracture of bone"),
                ),
                region,
                probability_item(
                    ("region-score", CODING_SCHEME, "Region fracture score"),
                    detection.score,
                ),
            ],
        )
    }
}

fn result_code(result: AiResult) -> (&'static str, &'static str, &'static str) {
    match result {
        AiResult::Suspected => ("suspected", CODING_SCHEME, "Fracture suspected"),
        AiResult::Possible => ("possible", CODING_SCHEME, "Fracture possible"),
        AiResult::NoFinding => ("no-finding", CODING_SCHEME, "No fracture found by the AI"),
        AiResult::NotAnalysed => ("not-analysed", CODING_SCHEME, "Not analysed"),
    }
}

type Code<'a> = (&'a str, &'a str, &'a str);

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code((value, scheme, meaning): Code<'_>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn code_sequence(tag: Tag, value: Code<'_>) -> DataElement<InMemDicomObject> {
    sequence(tag, vec![code(value)])
}

fn sop_reference(class: &str, instance: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
    ])
}

fn item(relationship: &str, value_type: &str, concept: Code<'_>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, value_type),
        code_sequence(tags::CONCEPT_NAME_CODE_SEQUENCE, concept),
    ])
}

fn container_item(
    relationship: &str,
    concept: Code<'_>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut container = item(relationship, "CONTAINER", concept);
    container.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    if !children.is_empty() {
        container.put(sequence(tags::CONTENT_SEQUENCE, children));
    }
    container
}

fn code_item(relationship: &str, concept: Code<'_>, value: Code<'_>) -> InMemDicomObject {
    let mut object = item(relationship, "CODE", concept);
    object.put(code_sequence(tags::CONCEPT_CODE_SEQUENCE, value));
    object
}

fn text_item(relationship: &str, concept: Code<'_>, value: &str) -> InMemDicomObject {
    let mut object = item(relationship, "TEXT", concept);
    object.put(text(tags::TEXT_VALUE, VR::UT, value));
    object
}

fn uidref_item(relationship: &str, concept: Code<'_>, value: &str) -> InMemDicomObject {
    let mut object = item(relationship, "UIDREF", concept);
    object.put(text(tags::UID, VR::UI, value));
    object
}

/// A probability as a NUM in UCUM's "no units" (1).
fn probability_item(concept: Code<'_>, value: f32) -> InMemDicomObject {
    let mut object = item("CONTAINS", "NUM", concept);
    object.put(sequence(
        tags::MEASURED_VALUE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            code_sequence(
                tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                ("1", "UCUM", "no units"),
            ),
            text(
                tags::NUMERIC_VALUE,
                VR::DS,
                &format!("{:.4}", value.clamp(0.0, 1.0)),
            ),
        ])],
    ));
    object
}

/// An IMAGE reference to a source image (and its frame, for a region).
fn image_item(relationship: &str, image: &ImageResult, with_frame: bool) -> InMemDicomObject {
    let mut object = InMemDicomObject::from_element_iter([
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, "IMAGE"),
    ]);
    let mut reference = sop_reference(&image.sop_class_uid, &image.sop_instance_uid);
    if with_frame && image.frame > 1 {
        reference.put(DataElement::new(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            PrimitiveValue::from(image.frame.to_string()),
        ));
    }
    object.put(sequence(tags::REFERENCED_SOP_SEQUENCE, vec![reference]));
    object
}
