//! The outbox on a real PostgreSQL: one row per content however often it is
//! planned; a busy peer (0xA7xx) is tried again after the backoff, a refusal
//! (0xC000) is dead at once with its reason until retried by hand, an
//! unreachable destination holds its own queue while other sites' deliveries
//! go, and the last allowed attempt ends in the dead state; of a study's
//! result revised while unsent, only the newest revision is sent.
//!
//! The receiving peer here is a scripted C-STORE SCP (dicom-ul) that answers
//! the statuses the test chooses, which no off-the-shelf SCP can be made to
//! answer; dcmtk's storescp is the receiver of `tests/storescp.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{Pdu, ServerAssociationOptions};
use fxtriage_core::SiteId;
use fxtriage_core::policy::AiResult;
use fxtriage_dicom::sr::{Algorithm, StudyContext, StudyReport};
use fxtriage_dicom::synthetic::{SyntheticInstance, part10};
use fxtriage_dispatch::outbox::{self, NewDelivery, RetryPolicy};
use fxtriage_dispatch::relay;
use fxtriage_sites::destinations::{DicomObject, DicomPeer};
use fxtriage_sites::{SiteConfig, SiteRegistry};
use fxtriage_testkit::FreshDatabase;

/// A C-STORE SCP answering each request with the next scripted status (0x0000
/// when the script is empty), recording the SOP Instance UIDs it was sent.
#[derive(Clone, Default)]
struct ScriptedPeer {
    statuses: Arc<Mutex<VecDeque<u16>>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl ScriptedPeer {
    async fn start(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let peer = self.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let peer = peer.clone();
                tokio::spawn(async move { peer.serve(socket).await });
            }
        });
        port
    }

    fn script(&self, statuses: &[u16]) {
        self.statuses
            .lock()
            .expect("lock")
            .extend(statuses.iter().copied());
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("lock").clone()
    }

    async fn serve(&self, socket: tokio::net::TcpStream) {
        let options = ServerAssociationOptions::new()
            .accept_any()
            .with_abstract_syntax(fxtriage_dicom::sr::COMPREHENSIVE_SR);
        let Ok(mut association) = options.establish_async(socket).await else {
            return;
        };
        let mut command = Vec::new();
        let mut data = Vec::new();
        loop {
            let Ok(pdu) = association.receive().await else {
                return;
            };
            match pdu {
                Pdu::PData { data: values } => {
                    for value in values {
                        match value.value_type {
                            PDataValueType::Command => command.extend_from_slice(&value.data),
                            PDataValueType::Data => {
                                data.extend_from_slice(&value.data);
                                if value.is_last {
                                    let context = value.presentation_context_id;
                                    self.answer(&mut association, context, &command, &data)
                                        .await;
                                    command.clear();
                                    data.clear();
                                }
                            }
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    return;
                }
                _ => return,
            }
        }
    }

    async fn answer<S>(
        &self,
        association: &mut dicom_ul::association::AsyncServerAssociation<S>,
        context: u8,
        command: &[u8],
        _data: &[u8],
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let request =
            InMemDicomObject::read_dataset_with_ts(command, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .expect("a command set");
        let text = |tag| {
            request
                .element(tag)
                .expect("element")
                .to_str()
                .expect("text")
                .trim_end_matches('\0')
                .to_owned()
        };
        let instance = text(tags::AFFECTED_SOP_INSTANCE_UID);
        let status = self.statuses.lock().expect("lock").pop_front().unwrap_or(0);
        if status == 0 {
            self.received.lock().expect("lock").push(instance.clone());
        }
        let response = InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(text(tags::AFFECTED_SOP_CLASS_UID)),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(0x8001_u16),
            ),
            DataElement::new(
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                VR::US,
                PrimitiveValue::from(1_u16),
            ),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(0x0101_u16),
            ),
            DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(instance),
            ),
        ]);
        let mut encoded = Vec::new();
        response
            .write_dataset_with_ts(&mut encoded, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("encode");
        let _ = association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: encoded,
                }],
            })
            .await;
    }
}

fn site(id: &str, port: u16) -> SiteConfig {
    let mut site = SiteConfig::new(SiteId::parse(id).expect("id"), id);
    site.destinations.dicom.push(DicomPeer {
        name: "pacs".into(),
        ae_title: "PACS".into(),
        host: "127.0.0.1".into(),
        port,
        calling_ae_title: "FXTRIAGE".into(),
        objects: vec![DicomObject::Sr],
    });
    site
}

/// An SR delivery of a new study for `site`.
fn sr_delivery(site: &str) -> NewDelivery {
    sr_delivery_of(site, &sr_report())
}

/// The SR delivery of `report` for `site`.
fn sr_delivery_of(site: &str, report: &StudyReport) -> NewDelivery {
    NewDelivery {
        site_id: site.into(),
        destination: "pacs".into(),
        kind: "dicom-sr",
        study_instance_uid: report.context.study_instance_uid.clone(),
        object_id: report.sop_instance_uid(),
        supersedes: report.supersedes.clone(),
        payload: part10(report.dataset()),
    }
}

/// The AI's report on a new study.
fn sr_report() -> StudyReport {
    let source = SyntheticInstance::wrist();
    StudyReport {
        context: StudyContext::from_dataset(&source.dataset()),
        algorithm: Algorithm {
            name: "fxtriage-heatmap".into(),
            version: "0.3.0".into(),
            sha256: "ab".repeat(32),
        },
        result: AiResult::NoFinding,
        not_analysed_reason: None,
        probability: Some(0.05),
        images: Vec::new(),
        supersedes: None,
        content_date: "20261130".into(),
        content_time: "120000".into(),
    }
}

async fn state_of(pool: &deadpool_postgres::Pool, object_id: &str) -> (String, i32, String) {
    let row = pool
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT state, attempts, last_error FROM deliveries WHERE object_id = $1",
            &[&object_id],
        )
        .await
        .expect("the delivery");
    (row.get(0), row.get(1), row.get(2))
}

/// Sends rounds until `object_id` leaves the pending state (or 30 s pass).
async fn send_until_settled(
    pool: &deadpool_postgres::Pool,
    registry: &SiteRegistry,
    policy: &RetryPolicy,
    object_id: &str,
) -> (String, i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        relay::send_due(pool, registry, policy)
            .await
            .expect("round");
        let state = state_of(pool, object_id).await;
        if state.0 != "pending" {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "still pending after 30 s: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_retried_refused_and_held_per_destination() {
    let Some(database) = FreshDatabase::create("fxt_dispatch_outbox").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");

    let peer = ScriptedPeer::default();
    let port = peer.start().await;
    // Nobody listens on the other site's port.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    fxtriage_sites::store::put_sites(&pool, vec![site("north", port), site("south", unreachable)])
        .await
        .expect("sites");
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_secs(1),
        max_attempts: 3,
    };

    // Planned twice, written once.
    let first = sr_delivery("north");
    assert!(outbox::enqueue(&pool, &first).await.expect("enqueue"));
    assert!(!outbox::enqueue(&pool, &first).await.expect("enqueue again"));

    // Busy, then stored: the retry comes after the backoff, not at once.
    peer.script(&[0xA702]);
    let round = relay::send_due(&pool, &registry, &policy)
        .await
        .expect("round");
    assert_eq!((round.sent, round.failed), (0, 1));
    let (state, attempts, error) = state_of(&pool, &first.object_id).await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(error.contains("0xA702"), "{error}");
    let failed = outbox::list(&pool, Some("north"), true, 10)
        .await
        .expect("list");
    assert_eq!(failed.len(), 1, "a failed attempt is listed: {failed:?}");
    let round = relay::send_due(&pool, &registry, &policy)
        .await
        .expect("round");
    assert_eq!(
        round.sent + round.failed,
        0,
        "not due again before the backoff"
    );
    let (state, attempts, _) =
        send_until_settled(&pool, &registry, &policy, &first.object_id).await;
    assert_eq!((state.as_str(), attempts), ("sent", 2));
    assert_eq!(peer.received(), std::slice::from_ref(&first.object_id));

    // Refused for good: dead at once, with the reason, until retried by hand.
    let second = sr_delivery("north");
    outbox::enqueue(&pool, &second).await.expect("enqueue");
    peer.script(&[0xC000]);
    let (state, attempts, error) =
        send_until_settled(&pool, &registry, &policy, &second.object_id).await;
    assert_eq!((state.as_str(), attempts), ("dead", 1));
    assert!(error.contains("cannot understand"), "{error}");
    let dead = outbox::list(&pool, None, true, 10).await.expect("list");
    assert!(
        dead.iter()
            .any(|row| row.object_id == second.object_id && row.state == "dead")
    );
    let id = dead
        .iter()
        .find(|row| row.object_id == second.object_id)
        .expect("listed")
        .delivery_id;
    assert!(outbox::retry(&pool, id).await.expect("retry"));
    let (state, _, _) = send_until_settled(&pool, &registry, &policy, &second.object_id).await;
    assert_eq!(state, "sent");
    let sent_id = outbox::list(&pool, Some("north"), false, 10)
        .await
        .expect("list")
        .iter()
        .find(|row| row.object_id == first.object_id)
        .expect("listed")
        .delivery_id;
    assert!(
        !outbox::retry(&pool, sent_id).await.expect("retry"),
        "a sent delivery is not sent again by hand"
    );

    // A destination that is away holds its own queue; other sites' go on.
    let away = sr_delivery("south");
    let away_too = sr_delivery("south");
    let meanwhile = sr_delivery("north");
    for delivery in [&away, &away_too, &meanwhile] {
        outbox::enqueue(&pool, delivery).await.expect("enqueue");
    }
    let round = relay::send_due(&pool, &registry, &policy)
        .await
        .expect("round");
    assert_eq!(round.sent, 1, "north's delivery went: {round:?}");
    assert!(peer.received().contains(&meanwhile.object_id));
    let (state, _, error) = state_of(&pool, &away.object_id).await;
    assert_eq!(state, "pending");
    assert!(error.contains("PACS@127.0.0.1"), "{error}");

    // The last attempt ends in the dead state.
    let (state, attempts, _) = send_until_settled(&pool, &registry, &policy, &away.object_id).await;
    assert_eq!((state.as_str(), attempts), ("dead", 3));
    let (state, attempts, _) =
        send_until_settled(&pool, &registry, &policy, &away_too.object_id).await;
    assert_eq!((state.as_str(), attempts), ("dead", 3));

    // A destination removed from the registry: its deliveries are dead, with why.
    let orphan = NewDelivery {
        destination: "gone".into(),
        ..sr_delivery("north")
    };
    outbox::enqueue(&pool, &orphan).await.expect("enqueue");
    let (state, _, error) = send_until_settled(&pool, &registry, &policy, &orphan.object_id).await;
    assert_eq!(state, "dead");
    assert!(error.contains("has no destination gone"), "{error}");

    drop(pool);
    database.drop_database().await;
}

/// A study's result revised while its destination is away: the revision not
/// sent is superseded (never sent, not listed as failed, not retried by hand),
/// the newest is sent; one on its way when superseded is recorded as sent; and
/// a result that goes back to what a superseded revision said sends that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_revision_of_a_result_is_sent() {
    let Some(database) = FreshDatabase::create("fxt_dispatch_revisions").await else {
        return;
    };
    let config = fxtriage_db::DbConfig::from_url(&database.url).expect("URL");
    fxtriage_db::migrate(&config).await.expect("migrate");
    let pool = config.pool().expect("pool");
    let peer = ScriptedPeer::default();
    let port = peer.start().await;
    fxtriage_sites::store::put_sites(&pool, vec![site("north", port)])
        .await
        .expect("sites");
    let registry = SiteRegistry::load(&pool).await.expect("registry");
    let policy = RetryPolicy {
        first_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_secs(1),
        max_attempts: 5,
    };

    // The first result finds the PACS busy: listed as failed.
    let report = sr_report();
    let first = sr_delivery_of("north", &report);
    let latest_sent = || {
        outbox::latest_sent_object(
            &pool,
            "north",
            "pacs",
            "dicom-sr",
            &report.context.study_instance_uid,
        )
    };
    assert!(
        outbox::enqueue_revision(&pool, &first)
            .await
            .expect("enqueue")
    );
    peer.script(&[0xA702]);
    let round = relay::send_due(&pool, &registry, &policy)
        .await
        .expect("round");
    assert_eq!(round.failed, 1);
    let failed = outbox::list(&pool, Some("north"), true, 10)
        .await
        .expect("list");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let first_id = failed[0].delivery_id;

    // Another image changes the result: the unsent first one is superseded.
    let mut revised = report.clone();
    revised.probability = Some(0.91);
    revised.result = AiResult::Suspected;
    let second = sr_delivery_of("north", &revised);
    assert_ne!(second.object_id, first.object_id);
    assert!(
        outbox::enqueue_revision(&pool, &second)
            .await
            .expect("enqueue")
    );
    assert!(
        !outbox::enqueue_revision(&pool, &second)
            .await
            .expect("enqueue again"),
        "planned twice, written once"
    );
    assert_eq!(state_of(&pool, &first.object_id).await.0, "superseded");
    assert!(
        outbox::list(&pool, Some("north"), true, 10)
            .await
            .expect("list")
            .is_empty(),
        "a superseded revision is not a failed delivery"
    );
    assert!(
        !outbox::retry(&pool, first_id).await.expect("retry"),
        "a superseded revision is not retried by hand"
    );
    assert!(
        !outbox::resend(&pool, first_id).await.expect("resend"),
        "nor sent again"
    );
    assert_eq!(
        outbox::latest_object(
            &pool,
            "north",
            "pacs",
            "dicom-sr",
            &first.study_instance_uid
        )
        .await
        .expect("latest"),
        Some(second.object_id.clone())
    );
    let (state, _, _) = send_until_settled(&pool, &registry, &policy, &second.object_id).await;
    assert_eq!(state, "sent");
    assert_eq!(
        peer.received(),
        std::slice::from_ref(&second.object_id),
        "the PACS got the newest revision only"
    );
    assert_eq!(state_of(&pool, &first.object_id).await.0, "superseded");

    // The result goes back to what the first said: the first is due again and
    // sent, naming the second (which the PACS has) as the one it replaces.
    assert_eq!(
        latest_sent().await.expect("latest sent"),
        Some(second.object_id.clone())
    );
    assert!(
        outbox::enqueue_revision(&pool, &first)
            .await
            .expect("enqueue")
    );
    let (state, _, _) = send_until_settled(&pool, &registry, &policy, &first.object_id).await;
    assert_eq!(state, "sent");
    assert_eq!(
        peer.received(),
        vec![second.object_id.clone(), first.object_id.clone()]
    );
    assert_eq!(
        state_of(&pool, &second.object_id).await.0,
        "sent",
        "a sent one stays sent"
    );

    // A revision on its way when a newer one is planned: recorded as sent.
    let mut third_report = revised.clone();
    third_report.probability = Some(0.97);
    let third = sr_delivery_of("north", &third_report);
    assert!(
        outbox::enqueue_revision(&pool, &third)
            .await
            .expect("enqueue")
    );
    let taken = outbox::take_due(&pool, 10, Duration::from_secs(60))
        .await
        .expect("take");
    assert_eq!(taken.len(), 1);
    let mut fourth_report = revised.clone();
    fourth_report.probability = Some(0.99);
    let fourth = sr_delivery_of("north", &fourth_report);
    assert!(
        outbox::enqueue_revision(&pool, &fourth)
            .await
            .expect("enqueue")
    );
    assert_eq!(state_of(&pool, &third.object_id).await.0, "superseded");
    outbox::mark_sent(&pool, taken[0].delivery_id)
        .await
        .expect("sent");
    assert_eq!(state_of(&pool, &third.object_id).await.0, "sent");
    assert_eq!(
        latest_sent().await.expect("latest sent"),
        Some(third.object_id.clone())
    );

    drop(pool);
    database.drop_database().await;
}
