//! Hostile structure is refused before the parser, with its reason (the
//! memory bound is measured in `structure_memory.rs`): sequences nested 10,000 deep (the parser recurses and
//! would overflow the stack: the whole service would abort), an element
//! declaring 4 GiB in a few hundred bytes, millions of elements, a deflated
//! data set inflating beyond its bound. Real files of every kind pydicom's
//! test data holds, which the parser reads, pass the walk unchanged.

mod bombs;

use std::path::{Path, PathBuf};

use bombs::{declaring_4_gib, deflated_zeros, file_with_tail, nested};

use fxtriage_dicom::structure::{self, Limits};
use fxtriage_dicom::{RejectionKind, inspect_bytes, inspect_file};

/// On a thread with tokio's default blocking stack (2 MiB), as ingest parses.
fn on_a_service_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(work)
        .expect("thread")
        .join()
        .expect("the thread did not panic")
}

#[test]
fn sequences_nested_10000_deep_are_refused_before_the_parser_recurses() {
    let bomb = file_with_tail(&nested(10_000));
    let rejection = on_a_service_stack(move || inspect_bytes(&bomb)).expect_err("refused");
    assert_eq!(rejection.kind, RejectionKind::Unreadable);
    assert!(
        rejection
            .to_string()
            .contains("nested deeper than 64 levels"),
        "{rejection}"
    );
    // A few levels are real structure: walked and parsed.
    let shallow = file_with_tail(&nested(8));
    structure::check_bytes(&shallow).expect("8 levels pass the walk");
    on_a_service_stack(move || inspect_bytes(&shallow).map(|_| ())).expect("and parse");
}

#[test]
fn an_element_declaring_4_gib_in_a_small_file_is_refused_without_allocating_it() {
    let bomb = file_with_tail(&declaring_4_gib());
    let rejection = inspect_bytes(&bomb).expect_err("refused");
    assert!(
        rejection
            .to_string()
            .contains("declares 4294967280 bytes where 16 remain"),
        "{rejection}"
    );
    // The same from a file on disk.
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("bomb.dcm");
    std::fs::write(&path, &bomb).expect("write");
    let rejection = inspect_file(&path).expect_err("refused");
    assert!(
        rejection.to_string().contains("declares 4294967280 bytes"),
        "{rejection}"
    );
}

#[test]
fn an_element_running_past_its_item_is_refused() {
    // A sequence of defined length 20 whose item declares 100.
    let mut tail = vec![0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 20, 0, 0, 0];
    tail.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 100, 0, 0, 0]);
    tail.extend_from_slice(&[0; 120]);
    let rejection = structure::check_bytes(&file_with_tail(&tail)).expect_err("refused");
    assert!(
        rejection
            .to_string()
            .contains("declares 100 bytes where 12 remain"),
        "{rejection}"
    );
}

#[test]
fn too_many_elements_are_refused() {
    // Empty private LO elements: 8 bytes each.
    let element = [0x09, 0x00, 0x10, 0x10, b'L', b'O', 0, 0];
    let tail: Vec<u8> = element.repeat(structure::MAX_ELEMENTS + 1);
    let rejection = structure::check_bytes(&file_with_tail(&tail)).expect_err("refused");
    assert!(
        rejection
            .to_string()
            .contains("more than 200000 data elements"),
        "{rejection}"
    );
}

#[test]
fn a_deflated_data_set_inflating_beyond_its_bound_is_refused_in_bounded_memory() {
    const INFLATED: usize = 64 << 20;
    let limits = Limits {
        max_inflated_bytes: 16 << 20,
        ..Limits::default()
    };
    // One OB element declaring 64 MiB of zeros, deflated to about 64 KiB.
    let bomb = deflated_zeros(INFLATED as u32);
    assert!(bomb.len() < 1 << 20, "a small file");
    let rejection =
        structure::check(bomb.as_slice(), Some(bomb.len() as u64), limits).expect_err("refused");
    assert_eq!(rejection.kind, RejectionKind::InstanceTooLarge);
    assert!(
        rejection
            .to_string()
            .contains(&format!("inflates beyond {} bytes", 16 << 20)),
        "{rejection}"
    );
    // Within the bound, the same data set passes.
    let roomy = Limits {
        max_inflated_bytes: 128 << 20,
        ..Limits::default()
    };
    structure::check(bomb.as_slice(), Some(bomb.len() as u64), roomy).expect("within bound");
    // The defaults bound it at 512 MiB.
    assert_eq!(Limits::default().max_inflated_bytes, 512 << 20);
}

/// Every DICOM file under `directory`, recursively.
fn dicom_files(directory: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            dicom_files(&path, into);
        } else if std::fs::read(&path)
            .is_ok_and(|bytes| bytes.get(128..132) == Some(b"DICM") || bytes.starts_with(b"DICM"))
        {
            into.push(path);
        }
    }
}

/// No false refusals: every file of pydicom's test data (every transfer
/// syntax, big endian, deflated, private sequences of undefined length, UN
/// sequences, structured reports) and of the bundled samples passes the
/// walk, unless dicom-object cannot read it either.
#[test]
fn real_files_the_parser_reads_pass_the_walk() {
    let Some(python) = fxtriage_testkit::stack::setting("FXTRIAGE_BENCH_PYTHONPATH") else {
        return;
    };
    let mut files = Vec::new();
    dicom_files(&Path::new(&python).join("pydicom/data"), &mut files);
    if let Some(samples) = fxtriage_testkit::stack::setting("FXTRIAGE_SAMPLE_DICOM_DIR") {
        dicom_files(Path::new(&samples), &mut files);
    }
    let mut refused = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("read");
        // Only a refused file is parsed (some take the parser a minute in a
        // debug build): refusing one the parser reads is a false refusal.
        if let Err(rejection) = structure::check_bytes(&bytes) {
            let parses = dicom_object::OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Auto)
                .from_reader(bytes.as_slice())
                .is_ok();
            if parses {
                refused.push(format!("{}: {rejection}", path.display()));
            }
        }
    }
    assert!(files.len() >= 50, "only {} files found", files.len());
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
