//! The C-STORE SCP driven by real senders: dcmtk's echoscu, storescu and dcmsend,
//! with instances compressed by dcmtk and gdcm. Every instance stored must hold
//! the data set exactly as sent; every refused one must give the sender a failure
//! status and land in quarantine; the server keeps serving throughout.

mod dimse_harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_dictionary_std::uids;
use dimse_harness::*;
use fxtriage_dicom::synthetic::SyntheticInstance;

/// dcmtk options shared by every sender: fail fast rather than hang.
const TIMEOUTS: [&str; 6] = ["-to", "20", "-ta", "20", "-td", "60"];

/// Arguments for echoscu, storescu or dcmsend: calling CR01, calling `called` on
/// the SCP, with `options`, sending `files`.
fn dcmtk_args(scp: &Scp, called: &str, options: &[&str], files: &[PathBuf]) -> Vec<String> {
    let mut args: Vec<String> = TIMEOUTS.iter().map(|arg| (*arg).to_owned()).collect();
    args.extend(["-aet", "CR01", "-aec", called].map(str::to_owned));
    args.extend(options.iter().map(|arg| (*arg).to_owned()));
    args.extend(["127.0.0.1".to_owned(), scp.port()]);
    args.extend(files.iter().map(|file| file.display().to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_is_answered_and_an_unknown_called_ae_title_is_refused() {
    if !tools_available("echo", &["echoscu"]) {
        return;
    }
    let scp = Scp::start().await;
    let answered = run_tool("echoscu", dcmtk_args(&scp, AE_TITLE, &["-v"], &[])).await;
    assert!(
        answered.success,
        "C-ECHO to {AE_TITLE} failed:\n{}",
        answered.output
    );

    let refused = run_tool("echoscu", dcmtk_args(&scp, "NOBODY", &["-v"], &[])).await;
    assert!(
        !refused.success,
        "an unknown called AE title must be refused:\n{}",
        refused.output
    );
    let output = refused.output.to_lowercase();
    assert!(
        output.contains("rejected") && output.contains("called ae title not recognized"),
        "the refusal says why:\n{}",
        refused.output
    );

    let again = run_tool("echoscu", dcmtk_args(&scp, AE_TITLE, &[], &[])).await;
    assert!(
        again.success,
        "the server keeps serving after a refusal:\n{}",
        again.output
    );
    scp.stop().await;
}

/// A new synthetic wrist, written to `dir` as `{label}.src.dcm`, converted by the
/// tool and options of `conversion` into `{label}.dcm` (or sent as is when None).
async fn make_input(dir: &Path, label: &str, conversion: Option<(&str, &[&str])>) -> SentFile {
    let source = write_instance(
        dir,
        &format!("{label}.src.dcm"),
        &SyntheticInstance::wrist(),
    );
    let Some((tool, options)) = conversion else {
        return describe_sent(label, SITE, &source);
    };
    let converted = dir.join(format!("{label}.{tool}.dcm"));
    let mut args: Vec<String> = options.iter().map(|arg| (*arg).to_owned()).collect();
    args.extend([
        source.display().to_string(),
        converted.display().to_string(),
    ]);
    let run = run_tool(tool, args).await;
    assert!(
        run.success,
        "{tool} {options:?} failed for {label}:\n{}",
        run.output
    );
    // dcmtk sends sequences with explicit lengths whoever wrote the file (gdcm writes
    // undefined lengths), so pass the file through dcmtk once, unchanged otherwise:
    // then its data set is byte for byte what dcmtk puts on the wire.
    let target = dir.join(format!("{label}.dcm"));
    let run = run_tool(
        "dcmconv",
        [
            converted.display().to_string(),
            target.display().to_string(),
        ],
    )
    .await;
    assert!(run.success, "dcmconv of {label}:\n{}", run.output);
    describe_sent(label, SITE, &target)
}

/// A test input in one transfer syntax, and how dcmtk is told to send it as is.
struct Conversion {
    label: &'static str,
    /// The tool and options that make it from an Explicit VR Little Endian file.
    made_by: Option<(&'static str, &'static [&'static str])>,
    transfer_syntax_uid: &'static str,
    /// The sender and the options that make it propose this transfer syntax.
    sent_by: (&'static str, &'static [&'static str]),
}

const CONVERSIONS: &[Conversion] = &[
    Conversion {
        label: "explicit-le",
        made_by: None,
        transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN,
        sent_by: ("storescu", &["-xe"]),
    },
    Conversion {
        label: "implicit-le",
        made_by: Some(("dcmconv", &["+ti"])),
        transfer_syntax_uid: uids::IMPLICIT_VR_LITTLE_ENDIAN,
        sent_by: ("storescu", &["-xi"]),
    },
    Conversion {
        label: "explicit-be",
        made_by: Some(("dcmconv", &["+tb"])),
        transfer_syntax_uid: "1.2.840.10008.1.2.2",
        sent_by: ("storescu", &["-xb"]),
    },
    Conversion {
        label: "deflated",
        made_by: Some(("dcmconv", &["+td"])),
        transfer_syntax_uid: uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        sent_by: ("storescu", &["-xd"]),
    },
    Conversion {
        label: "jpeg-lossless-sv1",
        made_by: Some(("dcmcjpeg", &["+e1"])),
        transfer_syntax_uid: uids::JPEG_LOSSLESS_SV1,
        sent_by: ("storescu", &["-xs"]),
    },
    Conversion {
        label: "jpeg-lossless",
        made_by: Some(("dcmcjpeg", &["+el"])),
        transfer_syntax_uid: uids::JPEG_LOSSLESS,
        sent_by: ("dcmsend", &["-dn"]),
    },
    Conversion {
        label: "jpeg-extended",
        made_by: Some(("dcmcjpeg", &["+ee"])),
        transfer_syntax_uid: uids::JPEG_EXTENDED12_BIT,
        sent_by: ("storescu", &["-xx"]),
    },
    Conversion {
        label: "rle",
        made_by: Some(("dcmcrle", &[])),
        transfer_syntax_uid: uids::RLE_LOSSLESS,
        sent_by: ("storescu", &["-xr"]),
    },
    Conversion {
        label: "jpeg-ls-lossless",
        made_by: Some(("dcmcjpls", &["+el"])),
        transfer_syntax_uid: uids::JPEGLS_LOSSLESS,
        sent_by: ("storescu", &["-xt"]),
    },
    Conversion {
        label: "jpeg-ls-near-lossless",
        made_by: Some(("dcmcjpls", &["+en"])),
        transfer_syntax_uid: uids::JPEGLS_NEAR_LOSSLESS,
        sent_by: ("storescu", &["-xu"]),
    },
    Conversion {
        label: "jpeg-2000-lossless",
        made_by: Some(("gdcmconv", &["--j2k"])),
        transfer_syntax_uid: uids::JPEG2000_LOSSLESS,
        sent_by: ("storescu", &["-xv"]),
    },
    Conversion {
        label: "jpeg-2000",
        made_by: Some(("gdcmconv", &["--j2k", "--lossy", "-q", "40"])),
        transfer_syntax_uid: uids::JPEG2000,
        sent_by: ("dcmsend", &["-dn"]),
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_every_transfer_syntax_are_stored_byte_for_byte_and_announced() {
    if !tools_available(
        "transfer syntaxes",
        &[
            "storescu", "dcmsend", "dcmconv", "dcmcjpeg", "dcmcrle", "dcmcjpls", "gdcmconv",
        ],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scp = Scp::start().await;
    let mut inputs = Vec::new();
    for conversion in CONVERSIONS {
        let input = make_input(dir.path(), conversion.label, conversion.made_by).await;
        assert_eq!(
            input.transfer_syntax_uid, conversion.transfer_syntax_uid,
            "{}: the conversion made another transfer syntax",
            conversion.label
        );
        let (sender, options) = conversion.sent_by;
        let mut sender_options = options.to_vec();
        sender_options.push("-v");
        let run = run_tool(
            sender,
            dcmtk_args(
                &scp,
                AE_TITLE,
                &sender_options,
                std::slice::from_ref(&input.path),
            ),
        )
        .await;
        assert!(
            run.success,
            "{} by {sender}:\n{}",
            conversion.label, run.output
        );
        inputs.push(input);
    }

    let events = scp.events(inputs.len(), Duration::from_secs(20)).await;
    assert_eq!(
        events.len(),
        inputs.len(),
        "one InstanceStored per instance"
    );
    for input in &inputs {
        let event = events
            .iter()
            .find(|event| event.object_key == input.object_key)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no InstanceStored for {}",
                    input.label, input.object_key
                )
            });
        assert_eq!(
            event.transfer_syntax_uid, input.transfer_syntax_uid,
            "{}",
            input.label
        );
        assert_eq!(event.received_via, "dimse");
        assert!(event.sender.contains("CR01"), "{}", event.sender);
        let stored = scp.stored(&input.object_key).await;
        assert_eq!(event.byte_size, stored.len() as u64);
        assert_same_data_set(input, &stored);
    }
    assert!(
        scp.leftover_buffers().is_empty(),
        "{:?}",
        scp.leftover_buffers()
    );
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_instances_get_a_failure_status_and_land_in_quarantine() {
    if !tools_available("refusals", &["dcmsend", "dcmodify"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scp = Scp::start().await;

    // No PixelData: dcmtk sends it, the pipeline refuses it.
    let no_pixels = write_instance(dir.path(), "no-pixels.dcm", &SyntheticInstance::wrist());
    let modified = run_tool(
        "dcmodify",
        [
            "-nb",
            "-ea",
            "(7fe0,0010)",
            no_pixels.to_str().expect("path"),
        ],
    )
    .await;
    assert!(modified.success, "{}", modified.output);
    // A malformed StudyInstanceUID (dcmsend -nuc sends it unchecked).
    let bad_uid = write_instance(dir.path(), "bad-uid.dcm", &SyntheticInstance::wrist());
    let modified = run_tool(
        "dcmodify",
        [
            "-nb",
            "-m",
            "(0020,000d)=1.2.abc",
            bad_uid.to_str().expect("path"),
        ],
    )
    .await;
    assert!(modified.success, "{}", modified.output);

    for (file, kind) in [(&no_pixels, "no-pixel-data"), (&bad_uid, "malformed-uid")] {
        let run = run_tool(
            "dcmsend",
            dcmtk_args(
                &scp,
                AE_TITLE,
                &["-dn", "-nuc", "-d"],
                std::slice::from_ref(file),
            ),
        )
        .await;
        let responses = store_responses(&run.output);
        assert_eq!(
            responses.len(),
            1,
            "{kind}: one response expected:\n{}",
            run.output
        );
        assert_eq!(responses[0].status, 0xC000, "{kind}: {responses:?}");
        let comment = responses[0].error_comment.as_deref().unwrap_or_default();
        assert!(
            comment.starts_with(kind),
            "{kind}: the ErrorComment gives the reason: {comment:?}"
        );
    }
    let records = scp.quarantined().await;
    let kinds: Vec<&str> = records.iter().map(|record| record.kind.as_str()).collect();
    assert!(kinds.contains(&"no-pixel-data"), "{kinds:?}");
    assert!(kinds.contains(&"malformed-uid"), "{kinds:?}");
    assert_eq!(
        scp.objects_under(&format!("{SITE}/")).await,
        0,
        "nothing refused is stored"
    );
    assert!(
        scp.events(0, Duration::from_millis(100)).await.is_empty(),
        "nor announced"
    );

    let good = describe_sent(
        "good",
        SITE,
        &write_instance(dir.path(), "good.dcm", &SyntheticInstance::wrist()),
    );
    let run = run_tool(
        "dcmsend",
        dcmtk_args(&scp, AE_TITLE, &[], std::slice::from_ref(&good.path)),
    )
    .await;
    assert!(run.success, "the server keeps serving:\n{}", run.output);
    assert_same_data_set(&good, &scp.stored(&good.object_key).await);
    assert!(
        scp.leftover_buffers().is_empty(),
        "{:?}",
        scp.leftover_buffers()
    );
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_over_the_sites_size_limit_is_refused_while_it_arrives() {
    if !tools_available("oversize", &["dcmsend"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let scp = Scp::start().await;
    // 256x256x2 bytes of pixels: well over the tiny site's 64 KiB.
    let large = write_instance(dir.path(), "large.dcm", &SyntheticInstance::wrist());
    assert!(std::fs::metadata(&large).expect("size").len() > TINY_LIMIT);

    let run = run_tool(
        "dcmsend",
        dcmtk_args(&scp, TINY_AE_TITLE, &["-d"], std::slice::from_ref(&large)),
    )
    .await;
    let responses = store_responses(&run.output);
    assert_eq!(responses.len(), 1, "one response expected:\n{}", run.output);
    assert_eq!(responses[0].status, 0xC000, "{responses:?}");
    let comment = responses[0].error_comment.as_deref().unwrap_or_default();
    assert!(comment.starts_with("instance-too-large"), "{comment:?}");
    assert_eq!(scp.objects_under("tiny/").await, 0);
    assert!(
        scp.leftover_buffers().is_empty(),
        "the partial file is discarded"
    );
    let records = scp.quarantined().await;
    assert_eq!(
        records.len(),
        1,
        "the refusal is recorded in quarantine: {records:?}"
    );
    assert_eq!(records[0].kind, "instance-too-large");
    assert!(
        records[0].object_key.is_empty(),
        "oversize bytes are not kept"
    );

    let small = SyntheticInstance {
        rows: 64,
        columns: 64,
        ..SyntheticInstance::wrist()
    };
    let small = describe_sent(
        "small",
        "tiny",
        &write_instance(dir.path(), "small.dcm", &small),
    );
    let run = run_tool(
        "dcmsend",
        dcmtk_args(&scp, TINY_AE_TITLE, &[], std::slice::from_ref(&small.path)),
    )
    .await;
    assert!(
        run.success,
        "an instance within the limit is stored:\n{}",
        run.output
    );
    assert_same_data_set(&small, &scp.stored(&small.object_key).await);
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_at_once_all_succeed() {
    if !tools_available("concurrency", &["storescu"]) {
        return;
    }
    const SENDERS: usize = 4;
    const FILES_EACH: usize = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let scp = Scp::start().await;
    let mut batches = Vec::new();
    for sender in 0..SENDERS {
        let files: Vec<SentFile> = (0..FILES_EACH)
            .map(|index| {
                let name = format!("sender{sender}-{index}.dcm");
                describe_sent(
                    &name,
                    SITE,
                    &write_instance(dir.path(), &name, &SyntheticInstance::wrist()),
                )
            })
            .collect();
        batches.push(files);
    }
    let runs = batches.iter().map(|files| {
        let paths: Vec<PathBuf> = files.iter().map(|file| file.path.clone()).collect();
        let args = dcmtk_args(&scp, AE_TITLE, &[], &[]);
        async move {
            let mut args = args;
            args.extend(paths.iter().map(|path| path.display().to_string()));
            run_tool("storescu", args).await
        }
    });
    let results = futures::future::join_all(runs).await;
    for (sender, run) in results.iter().enumerate() {
        assert!(run.success, "sender {sender}:\n{}", run.output);
    }
    let events = scp
        .events(SENDERS * FILES_EACH, Duration::from_secs(20))
        .await;
    assert_eq!(events.len(), SENDERS * FILES_EACH);
    for file in batches.iter().flatten() {
        assert_same_data_set(file, &scp.stored(&file.object_key).await);
    }
    scp.stop().await;
}
