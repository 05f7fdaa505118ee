//! Parse an instance and pull out the attributes fxtriage needs. No patient
//! identifiers are extracted: nothing here can leak into a log or a message.

use std::io::Read;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::validate::{Rejection, RejectionKind};

/// What fxtriage knows of an instance after parsing it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstanceInfo {
    pub transfer_syntax_uid: String,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub modality: String,
    pub body_part: String,
    pub view_position: String,
    /// PatientSex (M, F, O) and PatientAge ("045Y", "006M"): for the subgroups of
    /// a model's evaluation. Patient data: never logged nor serialised.
    #[serde(skip)]
    pub patient_sex: String,
    #[serde(skip)]
    pub patient_age: String,
    /// When the image was acquired (see [`acquired_at`]); `None` when the
    /// dataset does not say or says something unreadable.
    #[serde(skip)]
    pub acquired_at: Option<time::OffsetDateTime>,
    /// The acquisition's local date and time when the dataset states no
    /// offset from UTC (so `acquired_at` is `None`): a site that names its
    /// time zone can still place it (`fxtriage_sites::SiteConfig::time_zone`).
    #[serde(skip)]
    pub acquired_local: Option<time::PrimitiveDateTime>,
    pub laterality: String,
    /// Manufacturer and ManufacturerModelName: the equipment subgroup of the
    /// AI's monitoring.
    pub manufacturer: String,
    pub manufacturer_model: String,
    pub accession_number: String,
    /// RequestedProcedurePriority, top level or in RequestAttributesSequence.
    pub requested_priority: String,
    pub institutional_department: String,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    pub samples_per_pixel: Option<u16>,
    pub number_of_frames: u32,
    pub photometric_interpretation: String,
    pub has_pixel_data: bool,
}

/// When the image was acquired: AcquisitionDateTime (0008,002A), else
/// AcquisitionDate and AcquisitionTime, else ContentDate and ContentTime; in
/// the offset the date-time states, else TimezoneOffsetFromUTC (0008,0201).
/// Without an offset the first of them is the local date and time (the
/// second value): a local time of an unknown zone would move every turnaround
/// by the site's offset from UTC, so it is not taken as UTC.
fn acquisition(
    object: &DefaultDicomObject,
) -> (
    Option<time::OffsetDateTime>,
    Option<time::PrimitiveDateTime>,
) {
    let zone = text(object, tags::TIMEZONE_OFFSET_FROM_UTC);
    let local = |date: &str, clock: &str| {
        dicom_datetime(date, clock, None)
            .map(|at| time::PrimitiveDateTime::new(at.date(), at.time()))
    };
    if let Some(datetime) = text(object, tags::ACQUISITION_DATE_TIME) {
        if !datetime.is_ascii() {
            return (None, None);
        }
        let split = datetime.len().min(8);
        let (date, rest) = datetime.split_at(split);
        let (clock, offset) = match rest.find(['+', '-']) {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        return match offset.or(zone.as_deref()) {
            Some(offset) => (dicom_datetime(date, clock, Some(offset)), None),
            None => (None, local(date, clock)),
        };
    }
    for (date, clock) in [
        (tags::ACQUISITION_DATE, tags::ACQUISITION_TIME),
        (tags::CONTENT_DATE, tags::CONTENT_TIME),
    ] {
        if let (Some(date), Some(clock)) = (text(object, date), text(object, clock)) {
            return match zone.as_deref() {
                Some(offset) => (dicom_datetime(&date, &clock, Some(offset)), None),
                None => (None, local(&date, &clock)),
            };
        }
    }
    (None, None)
}

/// A DICOM date (YYYYMMDD), time (HH, HHMM, HHMMSS, HHMMSS.FFFFFF; colons of
/// old datasets ignored) and offset (+HHMM or -HHMM) as a point in time.
pub fn dicom_datetime(
    date: &str,
    clock: &str,
    offset: Option<&str>,
) -> Option<time::OffsetDateTime> {
    let digits = |text: &str, range: std::ops::Range<usize>| -> Option<u32> {
        text.get(range)?.parse().ok()
    };
    if date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || !clock.is_ascii()
        || !offset.is_none_or(str::is_ascii)
    {
        return None;
    }
    let date = time::Date::from_calendar_date(
        digits(date, 0..4)? as i32,
        time::Month::try_from(digits(date, 4..6)? as u8).ok()?,
        digits(date, 6..8)? as u8,
    )
    .ok()?;
    let clock: String = clock.chars().filter(|c| *c != ':').collect();
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock.as_str(), ""));
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !matches!(whole.len(), 0 | 2 | 4 | 6) {
        return None;
    }
    let part = |range: std::ops::Range<usize>| digits(whole, range).unwrap_or(0);
    let micros = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{:0<6}", &fraction[..fraction.len().min(6)]);
        padded.parse().ok()?
    };
    let clock =
        time::Time::from_hms_micro(part(0..2) as u8, part(2..4) as u8, part(4..6) as u8, micros)
            .ok()?;
    let offset = match offset.map(str::trim).filter(|o| !o.is_empty()) {
        None => time::UtcOffset::UTC,
        Some(offset) => {
            let sign: i8 = match offset.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours = digits(offset, 1..3)? as i8;
            let minutes = digits(offset, 3..5)? as i8;
            time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
        }
    };
    Some(time::PrimitiveDateTime::new(date, clock).assume_offset(offset))
}

/// PatientAge ("045Y", "006M", "003W", "010D") in years; `None` when absent
/// or malformed.
pub fn age_in_years(value: &str) -> Option<f64> {
    let value = value.trim();
    // AS is ASCII; anything else (a Latin-1 byte decoded to two) is malformed,
    // and slicing it by bytes could cut a character.
    if !value.is_ascii() {
        return None;
    }
    let (number, unit) = value.split_at(value.len().checked_sub(1)?);
    let number: f64 = number.parse().ok()?;
    match unit {
        "Y" | "y" => Some(number),
        "M" | "m" => Some(number / 12.0),
        "W" | "w" => Some(number * 7.0 / 365.25),
        "D" | "d" => Some(number / 365.25),
        _ => None,
    }
}

/// Parses a Part 10 file held in memory (with or without the 128-byte preamble).
pub fn inspect_bytes(bytes: &[u8]) -> Result<InstanceInfo, Rejection> {
    crate::structure::check_bytes(bytes)?;
    inspect_reader(bytes)
}

/// Parses a Part 10 file on disk.
pub fn inspect_file(path: &Path) -> Result<InstanceInfo, Rejection> {
    let file = std::fs::File::open(path).map_err(|error| {
        Rejection::new(
            RejectionKind::Unreadable,
            format!("cannot open {}: {error}", path.display()),
        )
    })?;
    let size = file.metadata().ok().map(|metadata| metadata.len());
    let mut reader = std::io::BufReader::new(file);
    crate::structure::check(&mut reader, size, crate::structure::Limits::default())?;
    std::io::Seek::rewind(&mut reader).map_err(|error| {
        Rejection::new(
            RejectionKind::Unreadable,
            format!("cannot read {}: {error}", path.display()),
        )
    })?;
    inspect_reader(reader)
}

fn inspect_reader(reader: impl Read) -> Result<InstanceInfo, Rejection> {
    // The whole dataset is read, pixel data included, so that a truncated file is
    // caught here rather than in inference.
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(reader)
        .map_err(classify_read_error)?;
    Ok(describe(&object))
}

fn classify_read_error(error: dicom_object::ReadError) -> Rejection {
    let detail = error.to_string();
    let mut chain = detail.clone();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let lowered = chain.to_lowercase();
    if lowered.contains("unsupported transfer syntax")
        || lowered.contains("unrecognized transfer syntax")
        || lowered.contains("unknown transfer syntax")
    {
        Rejection::new(
            RejectionKind::UnsupportedTransferSyntax,
            format!("not readable: {chain}"),
        )
    } else if lowered.contains("preamble")
        || lowered.contains("magic code")
        || lowered.contains("dicm")
    {
        Rejection::new(
            RejectionKind::NotDicom,
            format!("not a DICOM Part 10 file: {chain}"),
        )
    } else {
        Rejection::new(
            RejectionKind::Unreadable,
            format!("corrupt or truncated DICOM: {chain}"),
        )
    }
}

fn text(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    let value = element.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn unsigned_16(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    object.element_opt(tag).ok().flatten()?.to_int::<u16>().ok()
}

fn unsigned_32(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    object.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

fn requested_priority(object: &DefaultDicomObject) -> String {
    if let Some(priority) = text(object, tags::REQUESTED_PROCEDURE_PRIORITY) {
        return priority.to_uppercase();
    }
    let Ok(Some(sequence)) = object.element_opt(tags::REQUEST_ATTRIBUTES_SEQUENCE) else {
        return String::new();
    };
    sequence
        .items()
        .into_iter()
        .flatten()
        .find_map(|item| {
            let element = item
                .element_opt(tags::REQUESTED_PROCEDURE_PRIORITY)
                .ok()
                .flatten()?;
            let value = element.to_str().ok()?;
            let trimmed = value.trim().to_uppercase();
            (!trimmed.is_empty()).then_some(trimmed)
        })
        .unwrap_or_default()
}

fn describe(object: &DefaultDicomObject) -> InstanceInfo {
    let meta = object.meta();
    let (acquired_at, acquired_local) = acquisition(object);
    let trim = |value: &str| value.trim_end_matches(['\0', ' ']).to_owned();
    let uppercase = |tag| {
        text(object, tag)
            .map(|value| value.to_uppercase())
            .unwrap_or_default()
    };
    let laterality = text(object, tags::IMAGE_LATERALITY)
        .or_else(|| text(object, tags::LATERALITY))
        .map(|value| value.to_uppercase())
        .unwrap_or_default();
    InstanceInfo {
        transfer_syntax_uid: trim(meta.transfer_syntax()),
        sop_class_uid: text(object, tags::SOP_CLASS_UID)
            .or_else(|| Some(trim(&meta.media_storage_sop_class_uid)))
            .filter(|uid| !uid.is_empty()),
        sop_instance_uid: text(object, tags::SOP_INSTANCE_UID)
            .or_else(|| Some(trim(&meta.media_storage_sop_instance_uid)))
            .filter(|uid| !uid.is_empty()),
        study_instance_uid: text(object, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(object, tags::SERIES_INSTANCE_UID),
        modality: uppercase(tags::MODALITY),
        body_part: uppercase(tags::BODY_PART_EXAMINED),
        view_position: uppercase(tags::VIEW_POSITION),
        patient_sex: uppercase(tags::PATIENT_SEX),
        patient_age: uppercase(tags::PATIENT_AGE),
        acquired_at,
        acquired_local,
        laterality,
        manufacturer: text(object, tags::MANUFACTURER).unwrap_or_default(),
        manufacturer_model: text(object, tags::MANUFACTURER_MODEL_NAME).unwrap_or_default(),
        accession_number: text(object, tags::ACCESSION_NUMBER).unwrap_or_default(),
        requested_priority: requested_priority(object),
        institutional_department: uppercase(tags::INSTITUTIONAL_DEPARTMENT_NAME),
        rows: unsigned_32(object, tags::ROWS),
        columns: unsigned_32(object, tags::COLUMNS),
        bits_allocated: unsigned_16(object, tags::BITS_ALLOCATED),
        bits_stored: unsigned_16(object, tags::BITS_STORED),
        samples_per_pixel: unsigned_16(object, tags::SAMPLES_PER_PIXEL),
        number_of_frames: unsigned_32(object, tags::NUMBER_OF_FRAMES)
            .unwrap_or(1)
            .max(1),
        photometric_interpretation: uppercase(tags::PHOTOMETRIC_INTERPRETATION),
        has_pixel_data: object
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .is_some(),
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use time::macros::datetime;

    use super::*;
    use crate::synthetic::{SyntheticInstance, part10};

    #[test]
    fn dicom_dates_times_and_offsets_become_points_in_time() {
        assert_eq!(
            dicom_datetime("20261130", "143005.25", None),
            Some(datetime!(2026-11-30 14:30:05.25 UTC))
        );
        assert_eq!(
            dicom_datetime("20261130", "14:30", Some("+0100")),
            Some(datetime!(2026-11-30 14:30 +1))
        );
        assert_eq!(
            dicom_datetime("20261130", "", Some("-0500")),
            Some(datetime!(2026-11-30 0:00 -5))
        );
        for (date, clock) in [
            ("2026113", "1200"),
            ("20261332", "1200"),
            ("20261130", "25"),
            ("20261130", "1a"),
        ] {
            assert_eq!(dicom_datetime(date, clock, None), None, "{date} {clock}");
        }
    }

    fn with(elements: &[(dicom_core::Tag, VR, &str)]) -> InstanceInfo {
        let mut dataset = SyntheticInstance::wrist().dataset();
        for (tag, vr, value) in elements {
            dataset.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        inspect_bytes(&part10(dataset)).expect("parses")
    }

    #[test]
    fn malformed_ages_and_times_are_none_not_a_panic() {
        assert_eq!(age_in_years("04é"), None);
        assert_eq!(age_in_years("é"), None);
        assert_eq!(dicom_datetime("20261130", "10é", Some("+0000")), None);
        assert_eq!(dicom_datetime("20261130", "101500.1234é", None), None);
        assert_eq!(dicom_datetime("20261130", "1015", Some("+01é")), None);
        let odd = with(&[(tags::ACQUISITION_DATE_TIME, VR::DT, "2026113é0000+0000")]);
        assert_eq!(odd.acquired_at, None);
    }

    #[test]
    fn the_acquisition_time_comes_from_the_first_attribute_that_states_it() {
        assert_eq!(with(&[]).acquired_at, None);
        let local = with(&[
            (tags::CONTENT_DATE, VR::DA, "20261130"),
            (tags::CONTENT_TIME, VR::TM, "101500"),
        ]);
        assert_eq!(
            local.acquired_at, None,
            "a local time of an unknown zone is not guessed"
        );
        assert_eq!(
            local.acquired_local,
            Some(time::macros::datetime!(2026-11-30 10:15)),
            "but kept as the local time, for a site that names its zone"
        );
        let local_datetime = with(&[(tags::ACQUISITION_DATE_TIME, VR::DT, "20260701083000")]);
        assert_eq!(
            (local_datetime.acquired_at, local_datetime.acquired_local),
            (None, Some(time::macros::datetime!(2026-07-01 8:30)))
        );
        let content = with(&[
            (tags::CONTENT_DATE, VR::DA, "20261130"),
            (tags::CONTENT_TIME, VR::TM, "101500"),
            (tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        ]);
        assert_eq!(content.acquired_at, Some(datetime!(2026-11-30 10:15 UTC)));
        assert_eq!(content.acquired_local, None, "an offset is stated");
        let acquisition = with(&[
            (tags::CONTENT_DATE, VR::DA, "20261130"),
            (tags::CONTENT_TIME, VR::TM, "101500"),
            (tags::ACQUISITION_DATE, VR::DA, "20261130"),
            (tags::ACQUISITION_TIME, VR::TM, "100000"),
            (tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0200"),
        ]);
        assert_eq!(
            acquisition.acquired_at,
            Some(datetime!(2026-11-30 8:00 UTC))
        );
        let datetime = with(&[
            (tags::ACQUISITION_DATE_TIME, VR::DT, "20261130095959-0300"),
            (tags::ACQUISITION_DATE, VR::DA, "20261130"),
            (tags::ACQUISITION_TIME, VR::TM, "100000"),
        ]);
        assert_eq!(
            datetime.acquired_at,
            Some(datetime!(2026-11-30 12:59:59 UTC))
        );
    }
}
