//! Randomised, structure-aware hostile input for the DICOM reader and the
//! pixel pipeline, for a fixed budget of cases in CI (`PROPTEST_CASES`
//! raises it): valid files with bytes flipped, lengths rewritten, chunks
//! inserted, or cut short. Whatever the input, the structure walk, the
//! parser behind it (`inspect_bytes`) and the decoder (`decode_for_input`)
//! answer with a result, never a panic, an abort or an unbounded allocation
//! (the walk refuses what would allocate more than the file holds). A case
//! that ever fails is kept by proptest in `tests/hostile_input.proptest-regressions`
//! and replayed first from then on: that file is the corpus of crashers.

use fxtriage_dicom::pixels::decode_for_input;
use fxtriage_dicom::structure;
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_dicom::{inspect_bytes, inspect_file};
use proptest::prelude::*;

/// A small valid instance with a nested sequence, in the given encoding.
fn seed(variant: u8) -> Vec<u8> {
    let instance = SyntheticInstance {
        rows: 12,
        columns: 10,
        requested_priority: "STAT".into(),
        ..SyntheticInstance::wrist()
    };
    let mut bytes = instance.to_part10();
    if variant % 2 == 1 {
        // A Content Sequence two levels deep, of undefined lengths, after the
        // pixel data (the walk and the parser take elements as they come).
        for _ in 0..2 {
            bytes.extend_from_slice(&[
                0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..2 {
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
    }
    bytes
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte at a position (a fraction of the length) with a mask.
    Flip(f64, u8),
    /// Write a little-endian u32 (a length, most often) at a position.
    Length(f64, u32),
    /// Insert bytes at a position.
    Insert(f64, Vec<u8>),
    /// Cut the file at a position.
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0, 1_u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (
            0.0..1.0,
            prop_oneof![
                Just(0xFFFF_FFFF_u32),
                Just(0xFFFF_FFF0),
                Just(0x7FFF_FFFF),
                Just(0),
                any::<u32>()
            ]
        )
            .prop_map(|(at, value)| Mutation::Length(at, value)),
        (0.0..1.0, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (0.0..1.0).prop_map(Mutation::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let at = |fraction: f64, len: usize| ((fraction * len as f64) as usize).min(len);
        match mutation {
            Mutation::Flip(fraction, mask) => {
                if !bytes.is_empty() {
                    let index = at(*fraction, bytes.len() - 1);
                    bytes[index] ^= mask;
                }
            }
            Mutation::Length(fraction, value) => {
                if bytes.len() >= 4 {
                    let index = at(*fraction, bytes.len() - 4);
                    bytes[index..index + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            Mutation::Insert(fraction, inserted) => {
                let index = at(*fraction, bytes.len());
                bytes.splice(index..index, inserted.iter().copied());
            }
            Mutation::Truncate(fraction) => {
                let index = at(*fraction, bytes.len());
                bytes.truncate(index);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_files_are_answered_never_a_panic(
        variant in 0_u8..2,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(seed(variant), &mutations);
        let walked = structure::check_bytes(&bytes);
        let inspected = inspect_bytes(&bytes);
        // The walk's refusal is the parser's answer too.
        if let Err(refusal) = &walked {
            prop_assert_eq!(inspected.as_ref().err(), Some(refusal));
        }
        // The pixel pipeline answers as well (an error for most mutations).
        let _ = decode_for_input(&bytes, 64);
    }
}

/// The same mutations read from a file, as ingest reads a spooled instance.
#[test]
fn a_mutated_file_on_disk_is_answered_like_the_same_bytes() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("mutated.dcm");
    for (index, mutations) in [
        vec![Mutation::Length(0.5, 0xFFFF_FFF0)],
        vec![Mutation::Truncate(0.7)],
        vec![Mutation::Insert(0.3, vec![0xFE, 0xFF, 0x00, 0xE0])],
    ]
    .iter()
    .enumerate()
    {
        let bytes = apply(seed(1), mutations);
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(
            inspect_file(&path).err(),
            inspect_bytes(&bytes).err(),
            "case {index}"
        );
    }
}
