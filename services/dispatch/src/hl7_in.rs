//! Orders and reports from the hospital's RIS, in over HL7 v2 (MLLP). An
//! order's priority sets its study's clinical urgency; an ORU^R01 with a
//! final (or corrected) result closes its study's worklist item with the RIS's
//! report time; a preliminary result is recorded and closes nothing.
//!
//! Every message is kept (table `hl7_messages`) with what was done with it and
//! the acknowledgement it got, in the same transaction as its effect, so a
//! message is acted on once however often it is sent (by its sender's control
//! id) and none is lost, even when refused:
//!
//! - AA: applied, recorded, or a duplicate of one that was;
//! - AE (may be sent again once fixed): no site has its sending facility
//!   (MSH-4), no study has its accession number or UID yet, no result status;
//! - AR (rejected): not HL7 with the standard delimiters, not UTF-8, no control
//!   id (MSH-10), segments out of order, a message type not read here.
//!
//! Orders (ORM^O01, OMI^O23) are stored by accession number: the order's
//! priority (TQ1-9, else ORC-7.6 or OBR-27.6: S or T emergency, A inpatient,
//! others outpatient) becomes its study's clinical urgency, at once when the
//! study is here, else when its images arrive; a cancelled order (ORC-1 CA
//! or OC) changes nothing.
//!
//! The sending facility names the site: `hl7_sending_facilities` in the site
//! registry. A report time without a UTC offset is read as UTC.

use std::net::SocketAddr;
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_core::SiteId;
use fxtriage_hl7::{Parsed, Segment, message, mllp};
use fxtriage_sites::SiteRegistry;
use fxtriage_worklist::ris::{self, RisReport};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The longest message read: a report with its text fits many times over.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// A connection with no message for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections open at once; one more is closed as soon as it is accepted
/// (a RIS keeps one or a few). Each holds at most one message being read.
pub const MAX_CONNECTIONS: usize = 64;

/// Listens on `address` until `shutdown`; returns the bound address and the task.
pub async fn serve(
    address: SocketAddr,
    pool: Pool,
    registry: SiteRegistry,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "HL7 listener (MLLP) accepting reports");
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                        tracing::warn!(%peer, limit = MAX_CONNECTIONS, "HL7 connection refused: too many open");
                        drop(stream);
                    }
                    Ok((stream, peer)) => {
                        connections.spawn(connection(
                            stream,
                            peer,
                            pool.clone(),
                            registry.clone(),
                            shutdown.clone(),
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept an HL7 connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });
    Ok((bound, task))
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    pool: Pool,
    registry: SiteRegistry,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = tokio::io::BufReader::new(stream);
    loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            read = tokio::time::timeout(IDLE_TIMEOUT, mllp::read_message(&mut stream, MAX_MESSAGE_BYTES)) => read,
        };
        let raw = match read {
            Ok(Ok(raw)) => raw,
            Ok(Err(mllp::FrameError::Closed(false))) => return,
            Err(_) => {
                tracing::info!(%peer, seconds = IDLE_TIMEOUT.as_secs(), "HL7 connection closed: no complete message in time");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "HL7 connection closed");
                return;
            }
        };
        let ack = handle(&pool, &registry, &peer.to_string(), &raw).await;
        if mllp::write_message(stream.get_mut(), ack.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    outcome: &'static str,
    ack: &'static str,
    /// HL7 table 0357 error code, for ERR-3.
    error_code: Option<(&'static str, &'static str)>,
    detail: String,
    site: Option<SiteId>,
    study: Option<String>,
}

impl Outcome {
    fn accepted(outcome: &'static str, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            ack: "AA",
            error_code: None,
            detail: detail.into(),
            site: None,
            study: None,
        }
    }

    fn error(code: (&'static str, &'static str), detail: impl Into<String>) -> Self {
        Self {
            outcome: "error",
            ack: "AE",
            error_code: Some(code),
            detail: detail.into(),
            site: None,
            study: None,
        }
    }

    fn rejected(code: (&'static str, &'static str), detail: impl Into<String>) -> Self {
        Self {
            outcome: "rejected",
            ack: "AR",
            error_code: Some(code),
            detail: detail.into(),
            site: None,
            study: None,
        }
    }
}

const SEGMENT_SEQUENCE: (&str, &str) = ("100", "Segment sequence error");
const REQUIRED_FIELD: (&str, &str) = ("101", "Required field missing");
const DATA_TYPE: (&str, &str) = ("102", "Data type error");
const UNSUPPORTED_TYPE: (&str, &str) = ("200", "Unsupported message type");
const UNKNOWN_KEY: (&str, &str) = ("204", "Unknown key identifier");
const INTERNAL: (&str, &str) = ("207", "Application internal error");

/// Handles one message and returns the acknowledgement to send.
pub async fn handle(pool: &Pool, registry: &SiteRegistry, peer: &str, raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    let parsed = match std::str::from_utf8(raw) {
        Err(_) => Err(Outcome::rejected(
            DATA_TYPE,
            "the message is not valid UTF-8 (fxtriage reads UNICODE UTF-8 and ASCII)",
        )),
        Ok(text) => fxtriage_hl7::parse(text)
            .map_err(|error| Outcome::rejected(SEGMENT_SEQUENCE, error.to_string())),
    };
    let (outcome, header) = match parsed {
        Err(outcome) => (outcome, Header::default()),
        Ok(parsed) => {
            let header = Header::of(&parsed);
            let outcome = match process(pool, registry, peer, &header, &parsed, &text).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!(error = %crate::chain(error.as_ref()), "cannot process an HL7 message");
                    Outcome::error(
                        INTERNAL,
                        "fxtriage could not store the message; send it again",
                    )
                }
            };
            (outcome, header)
        }
    };
    // What process() did not keep in its transaction (a refusal) is kept now.
    if matches!(outcome.outcome, "error" | "rejected" | "duplicate")
        && let Err(error) = keep(pool, peer, &header, &outcome, &text).await
    {
        tracing::error!(error = %crate::chain(error.as_ref()), "cannot keep a refused HL7 message");
    }
    tracing::info!(
        %peer, message_type = %header.message_type, outcome = outcome.outcome,
        ack = outcome.ack, site = outcome.site.as_ref().map_or("", SiteId::as_str),
        "HL7 message"
    );
    acknowledgement(&header, &outcome)
}

/// MSH's fields this listener acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Header {
    sending_application: String,
    sending_facility: String,
    message_type: String,
    trigger: String,
    control_id: String,
    sent_at: String,
}

impl Header {
    fn of(parsed: &Parsed) -> Self {
        Self {
            sending_application: parsed.get("MSH", 3, 1).to_owned(),
            sending_facility: parsed.get("MSH", 4, 1).to_owned(),
            message_type: parsed.get("MSH", 9, 1).to_owned(),
            trigger: parsed.get("MSH", 9, 2).to_owned(),
            control_id: parsed.get("MSH", 10, 1).to_owned(),
            sent_at: parsed.get("MSH", 7, 1).to_owned(),
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn process(
    pool: &Pool,
    registry: &SiteRegistry,
    peer: &str,
    header: &Header,
    parsed: &Parsed,
    text: &str,
) -> Result<Outcome, Error> {
    if header.control_id.is_empty() {
        return Ok(Outcome::rejected(
            REQUIRED_FIELD,
            "MSH-10 (message control id) is missing",
        ));
    }
    let kind = format!("{}^{}", header.message_type, header.trigger);
    let is_order = match kind.as_str() {
        "ORU^R01" => false,
        "ORM^O01" | "OMI^O23" => true,
        _ => {
            return Ok(Outcome::rejected(
                UNSUPPORTED_TYPE,
                format!(
                    "{kind} is not read here (ORU^R01 reports, ORM^O01 and OMI^O23 orders are)"
                ),
            ));
        }
    };
    let order_problem = if is_order {
        check_order_order(parsed)
    } else {
        check_report_order(parsed)
    };
    if let Err(problem) = order_problem {
        return Ok(Outcome::rejected(SEGMENT_SEQUENCE, problem));
    }
    let snapshot = registry.current();
    let sites: Vec<_> = snapshot
        .sites()
        .filter(|site| {
            site.hl7_sending_facilities
                .iter()
                .any(|facility| facility == &header.sending_facility)
        })
        .collect();
    let site = match sites.as_slice() {
        [site] => site.id.clone(),
        [] => {
            return Ok(Outcome::error(
                UNKNOWN_KEY,
                format!(
                    "no site has HL7 sending facility {:?} (MSH-4); add it to the site's hl7_sending_facilities",
                    header.sending_facility
                ),
            ));
        }
        _ => {
            return Ok(Outcome::error(
                UNKNOWN_KEY,
                format!(
                    "HL7 sending facility {:?} belongs to several sites",
                    header.sending_facility
                ),
            ));
        }
    };

    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // One sender's control id is acted on once; a concurrent twin waits here.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!(
            "{}|{}|{}",
            header.sending_facility, header.sending_application, header.control_id
        )],
    )
    .await?;
    let earlier = tx
        .query_opt(
            "SELECT message_id FROM hl7_messages
             WHERE sending_facility = $1 AND sending_application = $2 AND control_id = $3
               AND outcome IN ('applied', 'recorded')",
            &[
                &header.sending_facility,
                &header.sending_application,
                &header.control_id,
            ],
        )
        .await?;
    if let Some(earlier) = earlier {
        let id: i64 = earlier.get(0);
        let mut outcome = Outcome::accepted(
            "duplicate",
            format!(
                "control id {} was acted on before (message {id})",
                header.control_id
            ),
        );
        outcome.site = Some(site);
        return Ok(outcome);
    }

    if is_order {
        let policy = sites_policy(registry, &site);
        let mut outcome = match apply_order(&tx, &site, header, parsed, &policy).await? {
            Ok(outcome) => outcome,
            Err(outcome) => return Ok(outcome),
        };
        outcome.site = Some(site);
        insert(&tx, peer, header, &outcome, text).await?;
        tx.commit().await?;
        return Ok(outcome);
    }
    let status = parsed.get("OBR", 25, 1);
    let accession = Some(parsed.get("OBR", 3, 1))
        .filter(|value| !value.is_empty())
        .or_else(|| Some(parsed.get("OBR", 18, 1)).filter(|value| !value.is_empty()));
    let study_uid = study_uid_of(parsed);
    let mut outcome = match status {
        "F" | "C" => {
            let reported_at = [
                parsed.get("OBR", 22, 1),
                first_obx(parsed, 14),
                header.sent_at.as_str(),
            ]
            .into_iter()
            .find(|value| !value.is_empty())
            .map(parse_dtm);
            let reported_at = match reported_at {
                Some(Ok(at)) => at,
                Some(Err(problem)) => return Ok(Outcome::error(DATA_TYPE, problem)),
                None => {
                    return Ok(Outcome::error(
                        REQUIRED_FIELD,
                        "no report time: OBR-22, OBX-14 and MSH-7 are empty",
                    ));
                }
            };
            let found = ris::find_study(&tx, &site, study_uid.as_deref(), accession).await?;
            let Some(study) = found else {
                return Ok(Outcome::error(
                    UNKNOWN_KEY,
                    format!(
                        "site {site} has no study with accession number {:?} or UID {:?} (yet)",
                        accession.unwrap_or(""),
                        study_uid.as_deref().unwrap_or("")
                    ),
                ));
            };
            let reader = reader_of(parsed);
            let closed = ris::close_from_ris(
                &tx,
                &site,
                &study,
                ris::RisReportFacts {
                    reported_at,
                    reader: &reader,
                    control_id: &header.control_id,
                    sending_facility: &header.sending_facility,
                    fracture: fracture_of(parsed),
                    token_id: None,
                },
            )
            .await?;
            let mut outcome = match closed {
                RisReport::Closed(_) => Outcome::accepted("applied", "the worklist item is closed"),
                RisReport::AlreadyReported => {
                    Outcome::accepted("recorded", "the study was reported before")
                }
                RisReport::NoSuchStudy => {
                    return Ok(Outcome::error(UNKNOWN_KEY, "the study is gone"));
                }
            };
            outcome.study = Some(study);
            outcome
        }
        "P" | "I" | "S" | "A" | "R" => {
            let mut outcome = Outcome::accepted(
                "recorded",
                format!("result status {status} is not final: the item stays open"),
            );
            outcome.study = ris::find_study(&tx, &site, study_uid.as_deref(), accession).await?;
            outcome
        }
        "" => {
            return Ok(Outcome::error(
                REQUIRED_FIELD,
                "OBR-25 (result status) is missing",
            ));
        }
        other => {
            return Ok(Outcome::error(
                DATA_TYPE,
                format!("OBR-25 result status {other:?} is not one of F, C, P, I, S, A, R"),
            ));
        }
    };
    outcome.site = Some(site);
    insert(&tx, peer, header, &outcome, text).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The site's policy now (the default when the site just left the registry).
fn sites_policy(registry: &SiteRegistry, site: &SiteId) -> fxtriage_core::policy::Policy {
    registry
        .current()
        .site(site.as_str())
        .map(|config| config.policy)
        .unwrap_or_default()
}

/// An order: stored by accession number; its priority becomes the urgency of
/// its study, now if the study is here, else when it arrives.
async fn apply_order(
    tx: &deadpool_postgres::Transaction<'_>,
    site: &SiteId,
    header: &Header,
    parsed: &Parsed,
    policy: &fxtriage_core::policy::Policy,
) -> Result<Result<Outcome, Outcome>, Error> {
    let accession = [
        parsed.get("IPC", 1, 1),
        parsed.get("OBR", 18, 1),
        parsed.get("OBR", 3, 1),
        parsed.get("ORC", 3, 1),
    ]
    .into_iter()
    .find(|value| !value.is_empty())
    .map(str::to_owned);
    let Some(accession) = accession else {
        return Ok(Err(Outcome::error(
            REQUIRED_FIELD,
            "the order has no accession number (IPC-1, OBR-18, OBR-3 or ORC-3)",
        )));
    };
    let priority = [
        parsed.get("TQ1", 9, 1),
        parsed.get("ORC", 7, 6),
        parsed.get("OBR", 27, 6),
    ]
    .into_iter()
    .find(|value| !value.is_empty())
    .unwrap_or("")
    .to_owned();
    let urgency = fxtriage_worklist::orders::urgency_of_priority(&priority);
    let study_uid = Some(parsed.get("IPC", 3, 1).to_owned()).filter(|uid| !uid.is_empty());
    let order_control = parsed.get("ORC", 1, 1).to_owned();
    let order = fxtriage_worklist::orders::Order {
        site: site.clone(),
        accession_number: accession.clone(),
        placer_order_number: parsed.get("ORC", 2, 1).to_owned(),
        filler_order_number: parsed.get("ORC", 3, 1).to_owned(),
        study_instance_uid: study_uid.clone(),
        priority: priority.clone(),
        urgency,
        order_control: order_control.clone(),
        procedure: parsed.get("OBR", 4, 2).to_owned(),
        control_id: header.control_id.clone(),
    };
    fxtriage_worklist::orders::upsert(tx, &order).await?;
    let study = ris::find_study(tx, site, study_uid.as_deref(), Some(&accession)).await?;
    let cancelled = matches!(order_control.as_str(), "CA" | "OC");
    let mut outcome = match (&study, urgency) {
        (Some(study), Some(urgency)) if !cancelled => {
            match fxtriage_worklist::orders::reprioritise(tx, site, study, urgency, policy).await? {
                Some(_) => Outcome::accepted(
                    "applied",
                    format!("order stored; its study is now {}", urgency.as_str()),
                ),
                None => Outcome::accepted("recorded", "order stored; its study is unchanged"),
            }
        }
        (None, Some(_)) if !cancelled => Outcome::accepted(
            "recorded",
            "order stored; its priority applies when its images arrive",
        ),
        _ => Outcome::accepted("recorded", "order stored"),
    };
    outcome.study = study;
    Ok(Ok(outcome))
}

/// An order's segments in their order: ORC before OBR, PID before both.
fn check_order_order(parsed: &Parsed) -> Result<(), String> {
    let ids = parsed.ids();
    let position = |id: &str| ids.iter().position(|segment| *segment == id);
    let Some(orc) = position("ORC") else {
        return Err("an order needs an ORC segment".into());
    };
    if let Some(obr) = position("OBR")
        && obr < orc
    {
        return Err(format!(
            "OBR (segment {}) comes before ORC (segment {})",
            obr + 1,
            orc + 1
        ));
    }
    if let Some(pid) = position("PID")
        && pid > orc
    {
        return Err(format!(
            "PID (segment {}) comes after ORC (segment {})",
            pid + 1,
            orc + 1
        ));
    }
    Ok(())
}

/// An ORU^R01's segments in their order: MSH, then (PID and its segments),
/// then ORC and OBR before the OBX and NTE that belong to them.
fn check_report_order(parsed: &Parsed) -> Result<(), String> {
    let ids = parsed.ids();
    let position = |id: &str| ids.iter().position(|segment| *segment == id);
    let Some(obr) = position("OBR") else {
        return Err("an ORU^R01 needs an OBR segment".into());
    };
    if let Some(obx) = position("OBX")
        && obx < obr
    {
        return Err(format!(
            "OBX (segment {}) comes before OBR (segment {})",
            obx + 1,
            obr + 1
        ));
    }
    if let Some(pid) = position("PID")
        && pid > obr
    {
        return Err(format!(
            "PID (segment {}) comes after OBR (segment {})",
            pid + 1,
            obr + 1
        ));
    }
    Ok(())
}

/// The value (OBX-5, first component) of the first OBX whose observation
/// identifier (OBX-3, first component) `is_code` accepts.
fn observation(parsed: &Parsed, is_code: impl Fn(&str) -> bool) -> Option<&str> {
    parsed
        .segments
        .iter()
        .filter(|segment| segment[0][0] == "OBX")
        .find(|segment| {
            segment
                .get(3)
                .and_then(|identifier| identifier.first())
                .is_some_and(|code| is_code(code))
        })
        .and_then(|segment| segment.get(5).and_then(|value| value.first()))
        .map(String::as_str)
}

/// The Study Instance UID a report names: an OBX 110180 (DCM), or ZDS-1.
fn study_uid_of(parsed: &Parsed) -> Option<String> {
    observation(parsed, |code| code == "110180")
        .or(Some(parsed.get("ZDS", 1, 1)))
        .filter(|uid| !uid.is_empty())
        .map(str::to_owned)
}

/// The radiologist's coded finding, when the report carries one: an OBX whose
/// observation identifier is SNOMED CT 125605004 "Fracture of bone" (or the
/// local code FRACTURE) with a yes/no value (HL7 table 0136: Y, N; also
/// "yes", "no", "equivocal"). `None` when there is none or it is not one of
/// those: a report without it is never taken as "no fracture".
fn fracture_of(parsed: &Parsed) -> Option<&'static str> {
    let value = observation(parsed, |code| {
        code == "125605004" || code.eq_ignore_ascii_case("FRACTURE")
    })?;
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some("yes"),
        "n" | "no" => Some("no"),
        "equivocal" => Some("equivocal"),
        _ => None,
    }
}

fn first_obx(parsed: &Parsed, field: usize) -> &str {
    parsed.get("OBX", field, 1)
}

/// OBR-32 (principal result interpreter) as written, else "ris".
fn reader_of(parsed: &Parsed) -> String {
    let interpreter = parsed
        .segment("OBR")
        .and_then(|segment| segment.get(32))
        .map(|components| components.join(" "))
        .unwrap_or_default();
    let interpreter = interpreter.trim().replace('&', " ");
    if interpreter.is_empty() {
        "ris".to_owned()
    } else {
        interpreter
    }
}

/// An HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]); without an offset, UTC.
fn parse_dtm(text: &str) -> Result<OffsetDateTime, String> {
    let invalid = || format!("{text:?} is not an HL7 date and time (YYYYMMDDHHMM[SS][+ZZZZ])");
    let (moment, offset) = match text.find(['+', '-']) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    };
    let moment = moment.split('.').next().unwrap_or(moment);
    if moment.len() < 8 || !moment.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u32, String> {
        moment
            .get(range)
            .map_or(Ok(0), |digits| digits.parse().map_err(|_| invalid()))
    };
    let year = i32::try_from(number(0..4)?).map_err(|_| invalid())?;
    let month = time::Month::try_from(u8::try_from(number(4..6)?).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let day = u8::try_from(number(6..8)?).map_err(|_| invalid())?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| invalid())?;
    let at = time::Time::from_hms(
        u8::try_from(number(8..10)?).map_err(|_| invalid())?,
        u8::try_from(number(10..12)?).map_err(|_| invalid())?,
        u8::try_from(number(12..14)?).map_err(|_| invalid())?,
    )
    .map_err(|_| invalid())?;
    let offset = match offset {
        None => time::UtcOffset::UTC,
        Some(zone) if zone.len() == 5 => {
            let sign: i8 = if zone.starts_with('-') { -1 } else { 1 };
            let hours: i8 = zone[1..3].parse().map_err(|_| invalid())?;
            let minutes: i8 = zone[3..5].parse().map_err(|_| invalid())?;
            time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| invalid())?
        }
        Some(_) => return Err(invalid()),
    };
    Ok(time::PrimitiveDateTime::new(date, at).assume_offset(offset))
}

async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    peer: &str,
    header: &Header,
    outcome: &Outcome,
    text: &str,
) -> Result<(), Error> {
    client
        .execute(
            "INSERT INTO hl7_messages (peer, sending_application, sending_facility, control_id,
                 message_type, site_id, study_instance_uid, outcome, ack_code, detail, message)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &peer,
                &header.sending_application,
                &header.sending_facility,
                &header.control_id,
                &format!("{}^{}", header.message_type, header.trigger),
                &outcome.site.as_ref().map(SiteId::as_str),
                &outcome.study,
                &outcome.outcome,
                &outcome.ack,
                &outcome.detail,
                &text.replace('\0', ""),
            ],
        )
        .await?;
    Ok(())
}

async fn keep(
    pool: &Pool,
    peer: &str,
    header: &Header,
    outcome: &Outcome,
    text: &str,
) -> Result<(), Error> {
    let client = pool.get().await?;
    insert(&client, peer, header, outcome, text).await
}

/// The ACK for `outcome`, in 2.5.1 original mode.
fn acknowledgement(header: &Header, outcome: &Outcome) -> String {
    let now = OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let id = format!(
        "{:020}",
        now.unix_timestamp_nanos().unsigned_abs() % 10_u128.pow(20)
    );
    let short = outcome.detail.chars().take(80).collect::<String>();
    let mut segments = vec![
        Segment::new("MSH")
            .field(3, &["FXTRIAGE"])
            .field(4, &["FXTRIAGE"])
            .field(5, &[&header.sending_application])
            .field(6, &[&header.sending_facility])
            .field(7, &[&stamp])
            .field(9, &["ACK", &header.trigger, "ACK"])
            .field(10, &[&id])
            .field(11, &["P"])
            .field(12, &["2.5.1"]),
        Segment::new("MSA")
            .field(1, &[outcome.ack])
            .field(2, &[&header.control_id])
            .field(3, &[&short]),
    ];
    if let Some((code, meaning)) = outcome.error_code {
        segments.push(
            Segment::new("ERR")
                .field(3, &[code, meaning, "HL70357"])
                .field(4, &["E"])
                .field(8, &[&outcome.detail]),
        );
    }
    message(&segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_times_are_read_with_or_without_an_offset() {
        let utc = parse_dtm("20261130101500").expect("utc");
        assert_eq!(utc.unix_timestamp(), 1_796_033_700);
        let offset = parse_dtm("202611301115+0100").expect("offset");
        assert_eq!(offset.unix_timestamp(), utc.unix_timestamp());
        assert!(parse_dtm("2026113").is_err());
        assert!(parse_dtm("20261332").is_err());
        assert!(parse_dtm("20261130101500+01").is_err());
    }

    #[test]
    fn the_coded_finding_is_read_only_from_its_observation() {
        let report = |obx: &str| {
            fxtriage_hl7::parse(&format!("MSH|^~\\&|RIS\rOBR|1\r{obx}\r")).expect("parse")
        };
        let yes = report("OBX|2|CWE|125605004^Fracture of bone^SCT||Y^Yes^HL70136");
        assert_eq!(fracture_of(&yes), Some("yes"));
        let no = report("OBX|2|CWE|FRACTURE^Fracture^L||no");
        assert_eq!(fracture_of(&no), Some("no"));
        let text = report("OBX|1|TX|REPORT^Radiology report^L||No fracture seen.");
        assert_eq!(fracture_of(&text), None, "free text is not a coded finding");
        let other = report("OBX|2|CWE|125605004^Fracture of bone^SCT||maybe");
        assert_eq!(fracture_of(&other), None);
    }

    #[test]
    fn segments_out_of_order_are_named() {
        let parsed = fxtriage_hl7::parse("MSH|^~\\&|RIS\rOBX|1|ST|x||y\rOBR|1\r").expect("parse");
        let problem = check_report_order(&parsed).expect_err("out of order");
        assert!(
            problem.contains("OBX (segment 2) comes before OBR (segment 3)"),
            "{problem}"
        );
        let parsed = fxtriage_hl7::parse("MSH|^~\\&|RIS\rPID|1\rOBR|1\rOBX|1\r").expect("parse");
        assert!(check_report_order(&parsed).is_ok());
    }
}
