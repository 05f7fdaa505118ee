//! A cheap look at an instance's identity: the file meta and the dataset up to
//! the pixel data, never the pixels. STOW-RS uses it to check a part against the
//! request's study and to name a refused instance in its response; the importer
//! uses it to find where an instance would be stored before storing it again.
//!
//! This is not validation: [`crate::Ingestor::accept`] parses and validates the
//! whole instance. A header that cannot be read here is simply `None`.

use std::io::Read;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions, Tag};

use crate::InstanceSource;

/// The UIDs an instance states about itself, as written (trimmed), not validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderUids {
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
    pub study_instance: Option<String>,
    pub series_instance: Option<String>,
}

impl HeaderUids {
    /// Reads the header of `source` off the async threads.
    pub async fn read(source: &InstanceSource) -> Option<Self> {
        let source = source.clone();
        tokio::task::spawn_blocking(move || match &source {
            InstanceSource::Memory(bytes) => {
                // Unchecked input: its structure is walked within bounds
                // before the parser recurses into it.
                fxtriage_dicom::structure::check_header(bytes.as_ref(), Some(bytes.len() as u64))
                    .ok()?;
                Self::from_reader(bytes.as_ref())
            }
            InstanceSource::File { path, .. } => Self::from_file(path),
        })
        .await
        .ok()
        .flatten()
    }

    fn from_file(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        let size = file.metadata().ok().map(|metadata| metadata.len());
        let mut reader = std::io::BufReader::new(file);
        fxtriage_dicom::structure::check_header(&mut reader, size).ok()?;
        std::io::Seek::rewind(&mut reader).ok()?;
        Self::from_reader(reader)
    }

    fn from_reader(reader: impl Read) -> Option<Self> {
        let object = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Auto)
            .read_until(tags::PIXEL_DATA)
            .from_reader(reader)
            .ok()?;
        let meta = object.meta();
        Some(Self {
            sop_class: text(&object, tags::SOP_CLASS_UID)
                .or_else(|| trimmed(&meta.media_storage_sop_class_uid)),
            sop_instance: text(&object, tags::SOP_INSTANCE_UID)
                .or_else(|| trimmed(&meta.media_storage_sop_instance_uid)),
            study_instance: text(&object, tags::STUDY_INSTANCE_UID),
            series_instance: text(&object, tags::SERIES_INSTANCE_UID),
        })
    }
}

fn trimmed(value: &str) -> Option<String> {
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn text(object: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    trimmed(&element.to_str().ok()?)
}
