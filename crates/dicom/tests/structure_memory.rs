//! The memory bound of refusing hostile structure, measured: this binary's
//! one test resets the process's peak resident memory (Linux clear_refs),
//! reads each bomb through `inspect_bytes` as ingest does, and asserts that
//! the peak rose by less than 16 MiB. Without the structure walk the parser
//! would zero-fill 4 GiB for the first, inflate 600 MiB for the second, and
//! overflow the stack on the third. (One test per binary: nothing else runs
//! beside it to move the figure.)

mod bombs;

use bombs::{declaring_4_gib, deflated_zeros, file_with_tail, nested};
use fxtriage_dicom::inspect_bytes;

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

#[test]
fn bombs_are_refused_in_bounded_memory() {
    // 1. An element declaring 4 GiB, in a file of a few hundred bytes.
    let declared = file_with_tail(&declaring_4_gib());
    // 2. A deflated data set of one OB element of 600 MiB of zeros: about
    //    600 KiB on the wire, beyond the 512 MiB bound once inflated.
    let deflated = deflated_zeros(600 << 20);
    assert!(deflated.len() < 2 << 20, "{} bytes", deflated.len());
    // 3. Sequences nested 10,000 deep (240 KB).
    let nested = file_with_tail(&nested(10_000));

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
