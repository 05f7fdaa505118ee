//! Hostile files, built byte by byte, shared by the structure tests.

// Each test binary uses its own share of these.
#![allow(dead_code)]

use std::io::Write as _;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_dicom::synthetic::part10;

/// A small valid file (SOP class and instance only) with `tail` appended
/// after its last element, in Explicit VR Little Endian.
pub fn file_with_tail(tail: &[u8]) -> Vec<u8> {
    let dataset = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1"),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ),
    ]);
    let mut bytes = part10(dataset);
    bytes.extend_from_slice(tail);
    bytes
}

/// `depth` Content Sequences, each holding one item, nested, all of
/// undefined length.
pub fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(depth * 32);
    for _ in 0..depth {
        bytes.extend_from_slice(&[
            0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    bytes
}

/// A private OB element declaring 0xFFFFFFF0 bytes, followed by 16.
pub fn declaring_4_gib() -> Vec<u8> {
    let mut tail = vec![
        0x11, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ];
    tail.extend_from_slice(&[0; 16]);
    tail
}

/// Preamble and a file meta group naming `transfer_syntax` only.
pub fn meta(transfer_syntax: &str) -> Vec<u8> {
    let mut value = transfer_syntax.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(0);
    }
    let mut group = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
    group.extend_from_slice(&(value.len() as u16).to_le_bytes());
    group.extend_from_slice(&value);
    let mut bytes = vec![0; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    bytes.extend_from_slice(&(group.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&group);
    bytes
}

/// A file in Deflated Explicit VR Little Endian whose data set is one OB
/// element of `inflated` bytes of zeros.
pub fn deflated_zeros(inflated: u32) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&[0x11, 0x00, 0x10, 0x10, b'O', b'B', 0, 0])
        .expect("deflate");
    encoder.write_all(&inflated.to_le_bytes()).expect("deflate");
    let zeros = vec![0_u8; 1 << 20];
    let mut left = inflated as usize;
    while left > 0 {
        let chunk = left.min(zeros.len());
        encoder.write_all(&zeros[..chunk]).expect("deflate");
        left -= chunk;
    }
    let mut bytes = meta("1.2.840.10008.1.2.1.99");
    bytes.extend_from_slice(&encoder.finish().expect("deflate"));
    bytes
}
