//! The C-STORE SCP against a hand-driven SCU (dicom-ul): what a well-behaved sender
//! never does. Bad instances get a failure status and go to quarantine; protocol
//! violations abort that association only; the server keeps serving, respects its
//! association limit and drains on shutdown. Needs no external tool.

mod dimse_harness;

use std::time::Duration;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_ul::Pdu;
use dicom_ul::association::Error as AssociationError;
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRJServiceProviderPresentationReason, AssociationRJSource,
    PDataValueType,
};
use dimse_harness::scu::{self, associate, context_id, response, send_command, send_data_set};
use dimse_harness::*;
use fxtriage_dicom::synthetic::SyntheticInstance;
use fxtriage_ingest::dimse::DimseOptions;
use tokio::io::AsyncWriteExt as _;

const DX: &str = "1.2.840.10008.5.1.4.1.1.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Whether the SCP ended the association: an A-ABORT, or the connection closed
/// or reset. A read timeout of the test's SCU (20 s) is not: it means the SCP
/// let the association hang.
fn ended_by_the_scp(outcome: &Result<Pdu, AssociationError>) -> bool {
    match outcome {
        Ok(Pdu::AbortRQ { .. }) => true,
        Ok(_) => false,
        Err(AssociationError::Timeout { .. }) => false,
        Err(_) => true,
    }
}

/// The data set (no file meta) of a synthetic wrist, and the instance.
fn wrist_data_set() -> (SyntheticInstance, Vec<u8>) {
    let instance = SyntheticInstance::wrist();
    let part10 = instance.to_part10();
    let (_, offset) = split_part10(&part10);
    (instance, part10[offset..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_many_small_fragments_is_stored_unchanged() {
    // Held in memory (the default budget), parsed and stored from there.
    store_in_many_small_fragments(DimseOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_larger_than_the_memory_limit_continues_in_a_file_unchanged() {
    // The first 4 KiB in memory, then moved to a buffer file that takes the rest.
    store_in_many_small_fragments(DimseOptions {
        instance_memory_limit_bytes: 4096,
        ..DimseOptions::default()
    })
    .await;
}

async fn store_in_many_small_fragments(options: DimseOptions) {
    let scp = Scp::start_with(options).await;
    let (instance, data_set) = wrist_data_set();
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(9, DX, &instance.sop_instance_uid),
    )
    .await;
    send_data_set(&mut association, id, &data_set, 1000).await;
    let answer = response(&mut association).await;
    assert_eq!(answer.status, 0, "{answer:?}");
    assert_eq!(answer.message_id_being_responded_to, 9);
    association.release().await.expect("release");

    let key = format!(
        "{SITE}/{}/{}/{}.dcm",
        instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
    );
    let stored = scp.stored(&key).await;
    let (syntax, offset) = split_part10(&stored);
    assert_eq!(syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert!(stored[offset..] == data_set[..], "data set bytes unchanged");
    let meta = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(&stored[..])
        .expect("a valid Part 10 file");
    assert_eq!(
        meta.meta().implementation_class_uid(),
        fxtriage_ingest::dimse::IMPLEMENTATION_CLASS_UID
    );
    assert_eq!(
        meta.meta().sending_application_entity_title(),
        Some("TESTSCU")
    );
    assert!(scp.leftover_buffers().is_empty());
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_set_is_refused_and_quarantined() {
    let scp = Scp::start().await;
    let (instance, data_set) = wrist_data_set();
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(1, DX, &instance.sop_instance_uid),
    )
    .await;
    send_data_set(
        &mut association,
        id,
        &data_set[..data_set.len() * 2 / 3],
        16_000,
    )
    .await;
    let answer = response(&mut association).await;
    assert_eq!(answer.status, 0xC000, "{answer:?}");
    assert!(answer.error_comment.starts_with("unreadable"), "{answer:?}");

    // The same association goes on to store a good instance.
    let (good, good_data_set) = wrist_data_set();
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(2, DX, &good.sop_instance_uid),
    )
    .await;
    send_data_set(&mut association, id, &good_data_set, 16_000).await;
    assert_eq!(response(&mut association).await.status, 0);
    association.release().await.expect("release");

    let records = scp.quarantined().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].kind, "unreadable");
    assert_eq!(
        scp.events(1, Duration::from_secs(5)).await.len(),
        1,
        "only the good one is announced"
    );
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_set_of_another_sop_class_than_its_command_is_refused_as_not_matching() {
    let scp = Scp::start().await;
    let (instance, _) = wrist_data_set();
    // The command says DX (negotiated); the data set says CT (not accepted by the site).
    let mut data_set_object = instance.dataset();
    data_set_object.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(CT),
    ));
    let mut data_set = Vec::new();
    data_set_object
        .write_dataset_with_ts(
            &mut data_set,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("encode");
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(1, DX, &instance.sop_instance_uid),
    )
    .await;
    send_data_set(&mut association, id, &data_set, 16_000).await;
    let answer = response(&mut association).await;
    assert_eq!(answer.status, 0xA900, "{answer:?}");
    assert!(
        answer.error_comment.starts_with("sop-class-not-accepted"),
        "{answer:?}"
    );
    association.release().await.expect("release");
    let records = scp.quarantined().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "sop-class-not-accepted");
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sop_class_the_site_does_not_accept_is_not_negotiated() {
    let scp = Scp::start().await;
    let association = associate(&scp, AE_TITLE, CT).await;
    assert!(
        matches!(
            association,
            Err(AssociationError::NoAcceptedPresentationContexts { .. })
        ),
        "CT storage is not among the site's SOP classes: {association:?}"
    );
    scu::echo(&scp).await;
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_called_ae_title_is_rejected_at_association() {
    let scp = Scp::start().await;
    let refused = associate(&scp, "NOBODY", DX).await;
    let Err(AssociationError::Rejected { association_rj, .. }) = refused else {
        panic!("expected A-ASSOCIATE-RJ, got {refused:?}")
    };
    assert_eq!(association_rj.result, AssociationRJResult::Permanent);
    assert!(
        matches!(
            association_rj.source,
            AssociationRJSource::ServiceUser(
                dicom_ul::pdu::AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        ),
        "{association_rj:?}"
    );
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_set_without_a_command_aborts_that_association_only() {
    let scp = Scp::start().await;
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    scu::send_value(
        &mut association,
        id,
        PDataValueType::Data,
        true,
        &[0_u8; 64],
    )
    .await
    .expect("send");
    let answer = association.receive().await;
    assert!(ended_by_the_scp(&answer), "the SCP aborts: {answer:?}");
    scu::echo(&scp).await;
    assert!(scp.is_running());
    scp.stop().await;
}

/// A P-DATA PDU claiming 4 GiB on an established association is refused from
/// its 6-byte header (the length fxtriage announced is 64 KiB): the abort
/// arrives without another byte sent, so nothing was read or allocated for
/// the claimed length, and the next association is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdu_claiming_4_gib_is_aborted_from_its_header() {
    let scp = Scp::start().await;
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    assert_eq!(association.acceptor_max_pdu_length(), 65_536);
    association
        .inner_stream()
        .write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .expect("write");
    let answer = association.receive().await;
    assert!(ended_by_the_scp(&answer), "the SCP aborts: {answer:?}");
    scu::echo(&scp).await;
    assert!(scp.is_running());
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_dropped_connections_never_stop_the_server() {
    let scp = Scp::start().await;
    let payloads: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // An A-ASSOCIATE-RQ header announcing 4 GiB.
        &[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF],
        // A P-DATA-TF before any association.
        &[
            0x04, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x02, 0x01, 0x03,
        ],
        // Half of an A-ASSOCIATE-RQ, then the connection closes.
        &[
            0x01, 0x00, 0x00, 0x00, 0x00, 0xCD, 0x00, 0x01, 0x00, 0x00, b'F', b'X',
        ],
        &[],
    ];
    for payload in payloads {
        let mut socket = tokio::net::TcpStream::connect(scp.address)
            .await
            .expect("connect");
        socket.write_all(payload).await.expect("write");
        drop(socket);
    }
    // An association aborted by the peer in the middle of a data set.
    let (instance, data_set) = wrist_data_set();
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(1, DX, &instance.sop_instance_uid),
    )
    .await;
    scu::send_value(
        &mut association,
        id,
        PDataValueType::Data,
        false,
        &data_set[..4096],
    )
    .await
    .expect("send");
    association.abort().await.expect("abort");

    scu::echo(&scp).await;
    fxtriage_testkit::eventually(
        "the aborted instance's file to be removed",
        Duration::from_secs(10),
        || async {
            let left = scp.leftover_buffers();
            if left.is_empty() {
                fxtriage_testkit::Progress::Done(())
            } else {
                fxtriage_testkit::Progress::NotYet(format!("{left:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        scp.objects_under("").await,
        0,
        "nothing stored or quarantined"
    );
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_with_an_allow_list_refuses_other_calling_ae_titles_at_association() {
    let scp = Scp::start().await;
    let refused = associate(&scp, LISTED_AE_TITLE, DX).await;
    let Err(AssociationError::Rejected { association_rj, .. }) = refused else {
        panic!("expected A-ASSOCIATE-RJ, got {refused:?}")
    };
    assert_eq!(association_rj.result, AssociationRJResult::Permanent);
    assert!(
        matches!(
            association_rj.source,
            AssociationRJSource::ServiceUser(
                dicom_ul::pdu::AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        ),
        "{:?}",
        association_rj.source
    );
    let admitted = scu::associate_as(&scp, ALLOWED_CALLING_AE_TITLE, LISTED_AE_TITLE, DX)
        .await
        .expect("the listed sender associates");
    admitted.release().await.expect("release");
    // A site without a list admits any sender.
    let any = scu::associate_as(&scp, "ANY_SENDER", AE_TITLE, DX)
        .await
        .expect("no list, any sender");
    any.release().await.expect("release");
    scp.stop().await;
}

/// Panics unless `refused` is an A-ASSOCIATE-RJ, transient, local limit exceeded.
fn assert_refused_over_a_limit(refused: Result<scu::Association, AssociationError>) {
    let Err(AssociationError::Rejected { association_rj, .. }) = refused else {
        panic!("expected A-ASSOCIATE-RJ, got {refused:?}")
    };
    assert_eq!(association_rj.result, AssociationRJResult::Transient);
    assert!(matches!(
        association_rj.source,
        AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
        )
    ));
}

/// Associates with `called` (and releases) as soon as a slot is free again:
/// once the association that held it has ended, within `wait`.
async fn associate_once_free(scp: &Scp, called: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match associate(scp, called, uids::VERIFICATION).await {
            Ok(association) => {
                association.release().await.expect("release");
                return;
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the slot of {called} was never freed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_beyond_the_limit_are_refused_as_transient() {
    let scp = Scp::start_with(DimseOptions {
        max_associations: 1,
        ..DimseOptions::default()
    })
    .await;
    let holder = associate(&scp, AE_TITLE, uids::VERIFICATION)
        .await
        .expect("first association");
    assert_refused_over_a_limit(associate(&scp, AE_TITLE, uids::VERIFICATION).await);
    holder.release().await.expect("release");
    associate_once_free(&scp, AE_TITLE, Duration::from_secs(5)).await;
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_at_its_own_limit_of_associations_refuses_as_transient_and_others_go_on() {
    let scp = Scp::start().await;
    let holder = associate(&scp, SINGLE_AE_TITLE, uids::VERIFICATION)
        .await
        .expect("the site's one association");
    assert_refused_over_a_limit(associate(&scp, SINGLE_AE_TITLE, uids::VERIFICATION).await);
    // Other sites are not held by it.
    let other = associate(&scp, AE_TITLE, uids::VERIFICATION)
        .await
        .expect("another site associates");
    other.release().await.expect("release");
    holder.release().await.expect("release");
    associate_once_free(&scp, SINGLE_AE_TITLE, Duration::from_secs(10)).await;
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_store_in_progress_finish_then_closes_idle_associations() {
    // Every instance in a buffer file: the file shows the store in progress.
    let scp = Scp::start_with(DimseOptions {
        memory_budget_bytes: 0,
        ..DimseOptions::default()
    })
    .await;
    let (instance, data_set) = wrist_data_set();
    let mut busy = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let mut idle = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&busy);
    send_command(
        &mut busy,
        id,
        &scu::c_store_rq(1, DX, &instance.sop_instance_uid),
    )
    .await;
    let half = data_set.len() / 2;
    for fragment in data_set[..half].chunks(16_000) {
        scu::send_value(&mut busy, id, PDataValueType::Data, false, fragment)
            .await
            .expect("send");
    }

    // The store is in progress once the SCP buffers it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while scp.leftover_buffers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    scp.shutdown_token().cancel();
    fxtriage_testkit::eventually(
        "the listener to close after shutdown",
        Duration::from_secs(10),
        || async {
            match tokio::net::TcpStream::connect(scp.address).await {
                Err(_) => fxtriage_testkit::Progress::Done(()),
                Ok(_) => fxtriage_testkit::Progress::NotYet("still accepting".into()),
            }
        },
    )
    .await;
    let idle_end = idle.receive().await;
    assert!(
        ended_by_the_scp(&idle_end),
        "an idle association is closed on shutdown: {idle_end:?}"
    );

    send_data_set(&mut busy, id, &data_set[half..], 16_000).await;
    let answer = response(&mut busy).await;
    assert_eq!(
        answer.status, 0,
        "the store in progress completes: {answer:?}"
    );
    assert_eq!(scp.events(1, Duration::from_secs(5)).await.len(), 1);
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_association_is_aborted_after_the_idle_timeout() {
    let scp = Scp::start_with(DimseOptions {
        idle_timeout: Duration::from_millis(500),
        ..DimseOptions::default()
    })
    .await;
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let started = tokio::time::Instant::now();
    let end = association.receive().await;
    assert!(ended_by_the_scp(&end), "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    scu::echo(&scp).await;
    scp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_pipeline_cannot_complete_asks_the_sender_to_retry() {
    let scp = Scp::start_with_broken_store().await;
    let (instance, data_set) = wrist_data_set();
    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
    let id = context_id(&association);
    send_command(
        &mut association,
        id,
        &scu::c_store_rq(1, DX, &instance.sop_instance_uid),
    )
    .await;
    send_data_set(&mut association, id, &data_set, 16_000).await;
    let answer = response(&mut association).await;
    assert_eq!(
        answer.status, 0xA700,
        "out of resources: retry later: {answer:?}"
    );
    assert!(answer.error_comment.contains("retry later"), "{answer:?}");
    association.release().await.expect("release");
    assert!(scp.leftover_buffers().is_empty());
    assert!(scp.events(0, Duration::from_millis(100)).await.is_empty());
    scp.stop().await;
}

/// Randomised hostile PDUs (64 cases in CI; `PROPTEST_CASES` raises it): on
/// a fresh connection or an established association, PDUs of any type with
/// random contents and lengths (up to and past the announced maximum), some
/// cut short. Each connection is answered or ended by the SCP, within its
/// idle timeout, never by a crash; the SCP serves a C-ECHO after them all.
#[test]
fn randomised_hostile_pdus_never_stop_the_server() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use tokio::io::AsyncReadExt as _;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let scp = runtime.block_on(Scp::start_with(DimseOptions {
        idle_timeout: Duration::from_secs(5),
        ..DimseOptions::default()
    }));
    let pdu = (
        prop_oneof![1_u8..=7, any::<u8>()],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (0_u32..2_000_000).prop_map(|length| length.to_be_bytes().to_vec()),
        ],
        any::<bool>(),
    );
    let case = (any::<bool>(), prop::collection::vec(pdu, 1..4));
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&case, |(associated, pdus)| {
            runtime.block_on(async {
                let mut bytes = Vec::new();
                for (kind, body, honest_length) in pdus {
                    bytes.extend_from_slice(&[kind, 0]);
                    let length = if honest_length {
                        body.len() as u32
                    } else {
                        u32::from_be_bytes([
                            body.first().copied().unwrap_or(0),
                            body.get(1).copied().unwrap_or(0),
                            body.get(2).copied().unwrap_or(0),
                            body.get(3).copied().unwrap_or(0),
                        ])
                    };
                    bytes.extend_from_slice(&length.to_be_bytes());
                    bytes.extend_from_slice(&body);
                }
                if associated {
                    let mut association = associate(&scp, AE_TITLE, DX).await.expect("associate");
                    let _ = association.inner_stream().write_all(&bytes).await;
                    // Answered, ended, or left waiting for more: in each case
                    // the SCP ends it by its idle timeout at the latest.
                    let _ = tokio::time::timeout(Duration::from_secs(30), association.receive())
                        .await
                        .expect("the SCP ends a hostile association by its idle timeout");
                } else {
                    let mut socket = tokio::net::TcpStream::connect(scp.address)
                        .await
                        .expect("connect");
                    let _ = socket.write_all(&bytes).await;
                    let mut answer = [0_u8; 1024];
                    tokio::time::timeout(Duration::from_secs(30), async {
                        while matches!(socket.read(&mut answer).await, Ok(read) if read > 0) {}
                    })
                    .await
                    .expect("the SCP answers or ends a hostile connection");
                }
            });
            prop_assert!(scp.is_running());
            Ok(())
        })
        .unwrap_or_else(|error| panic!("{error}"));
    runtime.block_on(async {
        scu::echo(&scp).await;
        scp.stop().await;
    });
}
