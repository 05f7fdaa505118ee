//! The memory bound of refusing hostile structure, measured: this binary's
//! one test resets the process's peak resident memory (Linux clear_refs),
//! reads each bomb through `inspect_bytes` as ingest does, and asserts that
//! the peak rose by less than 16 MiB. Without the structure walk the parser
//! would zero-fill 4 GiB for the first, inflate 600 MiB for the second, and
//! overflow the stack on the third. (One test per binary: nothing else runs
//! beside it to move the figure.)

use std::io::Write as _;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use fxtriage_dicom::inspect_bytes;
use fxtriage_dicom::synthetic::part10;

const BOUND: u64 = 16 << 20;

fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field}"));
    kilobytes * 1024
}

/// How far the resident memory peaked above its level before `work`.
fn rise(work: impl FnOnce()) -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (Linux)");
    let before = status("VmRSS");
    work();
    status("VmHWM").saturating_sub(before)
}

fn with_tail(meta_and_dataset: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    let mut bytes = meta_and_dataset;
    bytes.extend_from_slice(tail);
    bytes
}

fn small_file() -> Vec<u8> {
    part10(InMemDicomObject::from_element_iter([
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
    ]))
}

/// Preamble and a file meta group naming `transfer_syntax` only.
fn meta(transfer_syntax: &str) -> Vec<u8> {
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

#[test]
fn bombs_are_refused_in_bounded_memory() {
    // 1. An element declaring 4 GiB, in a file of a few hundred bytes.
    let mut tail = vec![
        0x11, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ];
    tail.extend_from_slice(&[0; 16]);
    let declared = with_tail(small_file(), &tail);

    // 2. A deflated data set of one OB element of 600 MiB of zeros: about
    //    600 KiB on the wire, beyond the 512 MiB bound once inflated.
    const INFLATED: u32 = 600 << 20;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&[0x11, 0x00, 0x10, 0x10, b'O', b'B', 0, 0])
        .expect("deflate");
    encoder.write_all(&INFLATED.to_le_bytes()).expect("deflate");
    let zeros = vec![0_u8; 1 << 20];
    for _ in 0..INFLATED >> 20 {
        encoder.write_all(&zeros).expect("deflate");
    }
    drop(zeros);
    let deflated = with_tail(
        meta("1.2.840.10008.1.2.1.99"),
        &encoder.finish().expect("deflate"),
    );
    assert!(deflated.len() < 2 << 20, "{} bytes", deflated.len());

    // 3. Sequences nested 10,000 deep (240 KB).
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        nested.extend_from_slice(&[
            0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    let nested = with_tail(small_file(), &nested);

    for (name, bomb, reason) in [
        ("4 GiB element", &declared, "declares 4294967280 bytes"),
        ("deflate bomb", &deflated, "inflates beyond 536870912 bytes"),
        ("nesting", &nested, "nested deeper than 64 levels"),
    ] {
        let mut outcome = None;
        let risen = rise(|| outcome = Some(inspect_bytes(bomb)));
        let rejection = outcome.expect("ran").expect_err(name);
        assert!(
            rejection.to_string().contains(reason),
            "{name}: {rejection}"
        );
        assert!(
            risen < BOUND,
            "{name}: resident memory rose by {risen} bytes (bound {BOUND})"
        );
        eprintln!(
            "{name}: refused; resident memory rose by {} KiB",
            risen >> 10
        );
    }
}
