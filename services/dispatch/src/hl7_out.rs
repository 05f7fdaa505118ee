//! The AI result to a RIS as HL7 v2.5.1 ORU^R01 over MLLP: one OBR for the
//! AI triage observation (OBR-25 `F`, or `C` for a corrected result that
//! replaces an earlier one), and OBX for the result class, the probability,
//! the model, the study's UID and the intended use. The message control id
//! (MSH-10) is derived from what the report says, so a resend is the same
//! message, which a receiver that keeps control ids can recognise.

use std::time::Duration;

use fxtriage_core::policy::AiResult;
use fxtriage_dicom::sr::{CODING_SCHEME, StudyContext, StudyReport};
use fxtriage_hl7::{Ack, Segment, message, mllp};
use fxtriage_sites::destinations::Hl7Peer;

use crate::DeliveryError;

/// How long a peer may take to acknowledge.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest acknowledgement read.
const MAX_ACK_BYTES: usize = 1 << 20;

/// MSH-10 of the ORU for `report`: 20 characters (ST's length in MSH-10).
pub fn control_id(report: &StudyReport) -> String {
    control_id_of(&report.sop_instance_uid())
}

/// An OBX: value type, observation identifier, value, units (components each).
type Observation = (&'static str, Vec<String>, Vec<String>, Vec<String>);

/// PID from the patient attributes of the study's images (DICOM PN is HL7's
/// family^given already; sex M/F/O, else U).
fn pid_segment(context: &StudyContext) -> Segment {
    let sex = match context.patient_sex.as_str() {
        "M" => "M",
        "F" => "F",
        "O" => "O",
        _ => "U",
    };
    let mut name = context.patient_name.splitn(5, '^');
    let (family, given) = (name.next().unwrap_or(""), name.next().unwrap_or(""));
    Segment::new("PID")
        .field(1, &["1"])
        .field(
            3,
            &[&context.patient_id, "", "", &context.issuer_of_patient_id],
        )
        .field(5, &[family, given])
        .field(7, &[&context.patient_birth_date])
        .field(8, &[sex])
}

/// The first 20 hex digits of a 2.25 UID's number: an MSH-10 (ST, at most
/// 20 characters) as unique as the UID.
fn control_id_of(uid: &str) -> String {
    crate::uid_hex(uid)[..20].to_owned()
}

fn hl7_date_time(date: &str, time: &str) -> String {
    format!("{date}{}", time.get(..6).unwrap_or(time))
}

/// The ORU^R01 of `report` for `peer`; `corrects` when it replaces a result
/// sent before.
pub fn oru_r01(report: &StudyReport, peer: &Hl7Peer, corrects: bool) -> String {
    let context = &report.context;
    let when = hl7_date_time(&report.content_date, &report.content_time);
    let status = if corrects { "C" } else { "F" };
    let (result_code, result_text) = match report.result {
        AiResult::Suspected => ("suspected", "Fracture suspected"),
        AiResult::Possible => ("possible", "Fracture possible"),
        AiResult::NoFinding => ("no-finding", "No fracture found by the AI"),
        AiResult::NotAnalysed => ("not-analysed", "Not analysed"),
    };
    let algorithm = &report.algorithm;
    let mut observations: Vec<Observation> = vec![(
        "CWE",
        vec![
            "triage-result".into(),
            "AI fracture triage result".into(),
            CODING_SCHEME.into(),
        ],
        vec![result_code.into(), result_text.into(), CODING_SCHEME.into()],
        Vec::new(),
    )];
    if let Some(probability) = report.probability {
        observations.push((
            "NM",
            vec![
                "study-prob".into(),
                "Study fracture probability".into(),
                CODING_SCHEME.into(),
            ],
            vec![format!("{:.4}", probability.clamp(0.0, 1.0))],
            vec!["1".into(), "no units".into(), "UCUM".into()],
        ));
    }
    if let Some(reason) = &report.not_analysed_reason {
        observations.push((
            "ST",
            vec![
                "not-analysed-why".into(),
                "Reason not analysed".into(),
                CODING_SCHEME.into(),
            ],
            vec![reason.clone()],
            Vec::new(),
        ));
    }
    observations.push((
        "ST",
        vec!["model".into(), "AI model".into(), CODING_SCHEME.into()],
        vec![format!(
            "{} {} sha256:{}",
            algorithm.name, algorithm.version, algorithm.sha256
        )],
        Vec::new(),
    ));
    observations.push((
        "ST",
        vec!["110180".into(), "Study Instance UID".into(), "DCM".into()],
        vec![context.study_instance_uid.clone()],
        Vec::new(),
    ));
    observations.push((
        "ST",
        vec![
            "intended-use".into(),
            "Intended use".into(),
            CODING_SCHEME.into(),
        ],
        vec!["AI triage aid for worklist prioritisation; not a diagnosis.".into()],
        Vec::new(),
    ));
    let mut segments = vec![
        Segment::new("MSH")
            .field(3, &["FXTRIAGE"])
            .field(4, &["FXTRIAGE"])
            .field(5, &[&peer.receiving_application])
            .field(6, &[&peer.receiving_facility])
            .field(7, &[&when])
            .field(9, &["ORU", "R01", "ORU_R01"])
            .field(10, &[&control_id(report)])
            .field(11, &["P"])
            .field(12, &["2.5.1"])
            .field(18, &["UNICODE UTF-8"]),
        pid_segment(context),
        Segment::new("OBR")
            .field(1, &["1"])
            .field(3, &[&context.accession_number])
            .field(4, &["fxtriage-ai", "AI fracture triage", CODING_SCHEME])
            .field(7, &[&when])
            .field(18, &[&context.accession_number])
            .field(22, &[&when])
            .field(24, &["RAD"])
            .field(25, &[status]),
    ];
    for (index, (value_type, identifier, value, units)) in observations.iter().enumerate() {
        segments.push(
            Segment::new("OBX")
                .field(1, &[&(index + 1).to_string()])
                .field(2, &[value_type])
                .field(3, &as_refs(identifier))
                .field(5, &as_refs(value))
                .field(6, &as_refs(units))
                .field(11, &[status])
                .field(14, &[&when]),
        );
    }
    message(&segments)
}

fn as_refs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

/// The priority the RIS order should have given the AI result (HL7 table
/// 0485: S stat, A as soon as possible); none when the AI finds nothing to
/// raise. The order's priority is only ever raised, never lowered, by fxtriage.
pub fn raised_priority(result: AiResult) -> Option<(&'static str, &'static str)> {
    match result {
        AiResult::Suspected => Some(("S", "Stat")),
        AiResult::Possible => Some(("A", "ASAP")),
        AiResult::NoFinding | AiResult::NotAnalysed => None,
    }
}

/// MSH-10 of the priority update of a study to `priority`: one per study and
/// priority, so a resend (or a replanned result) is the same message.
pub fn priority_control_id(study_instance_uid: &str, priority: &str) -> String {
    control_id_of(&fxtriage_dicom::sr::derived_uid(&[
        "fxtriage-priority",
        study_instance_uid,
        priority,
    ]))
}

/// An OMI^O23 imaging order change (ORC-1 `XO`) raising the priority of the
/// study's order (by its accession number, ORC-3, OBR-3 and IPC-1, and its
/// Study Instance UID, IPC-3) to `priority` (TQ1-9),
/// saying why (NTE); `None` when the study has no accession number, since
/// the RIS could not tell which order to change.
pub fn priority_update(
    report: &StudyReport,
    peer: &Hl7Peer,
    priority: (&str, &str),
) -> Option<String> {
    let context = &report.context;
    if context.accession_number.is_empty() {
        return None;
    }
    let when = hl7_date_time(&report.content_date, &report.content_time);
    let why = match report.probability {
        Some(probability) => format!(
            "AI fracture triage: {} (probability {probability:.2}); priority raised to {}. A triage aid, not a diagnosis.",
            report.result.as_str(),
            priority.1
        ),
        None => format!("AI fracture triage: priority raised to {}.", priority.1),
    };
    Some(message(&[
        Segment::new("MSH")
            .field(3, &["FXTRIAGE"])
            .field(4, &["FXTRIAGE"])
            .field(5, &[&peer.receiving_application])
            .field(6, &[&peer.receiving_facility])
            .field(7, &[&when])
            .field(9, &["OMI", "O23", "OMI_O23"])
            .field(
                10,
                &[&priority_control_id(
                    &context.study_instance_uid,
                    priority.0,
                )],
            )
            .field(11, &["P"])
            .field(12, &["2.5.1"])
            .field(18, &["UNICODE UTF-8"]),
        pid_segment(context),
        Segment::new("ORC")
            .field(1, &["XO"])
            .field(3, &[&context.accession_number])
            .field(9, &[&when]),
        Segment::new("TQ1")
            .field(1, &["1"])
            .field(9, &[priority.0, priority.1, "HL70485"]),
        Segment::new("OBR")
            .field(1, &["1"])
            .field(3, &[&context.accession_number])
            .field(4, &["fxtriage-ai", "AI fracture triage", CODING_SCHEME])
            .field(18, &[&context.accession_number]),
        Segment::new("NTE").field(1, &["1"]).field(3, &[&why]),
        Segment::new("IPC")
            .field(1, &[&context.accession_number])
            .field(2, &[&context.accession_number])
            .field(3, &[&context.study_instance_uid])
            .field(4, &[&context.accession_number]),
    ]))
}

/// Sends `message` to `peer` and reads its acknowledgement: AA (or CA) is
/// delivered; AR (or CR) is refused for good; AE (or CE), no answer or a
/// broken connection are worth retrying.
pub async fn send(peer: &Hl7Peer, message: &[u8]) -> Result<(), DeliveryError> {
    let describe = format!("{}:{}", peer.host, peer.port);
    let connect = tokio::net::TcpStream::connect((peer.host.as_str(), peer.port));
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            return Err(DeliveryError::Retry(format!(
                "cannot connect to HL7 peer {describe}: {error}"
            )));
        }
        Err(_) => {
            return Err(DeliveryError::Retry(format!(
                "HL7 peer {describe} did not accept a connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let exchange = async {
        mllp::write_message(&mut stream, message).await?;
        mllp::read_message(&mut stream, MAX_ACK_BYTES).await
    };
    let answer = match tokio::time::timeout(ACK_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            return Err(DeliveryError::Retry(format!(
                "HL7 peer {describe}: {error}"
            )));
        }
        Err(_) => {
            return Err(DeliveryError::Retry(format!(
                "HL7 peer {describe} did not acknowledge within {} s",
                ACK_TIMEOUT.as_secs()
            )));
        }
    };
    let ack = Ack::read(&String::from_utf8_lossy(&answer)).map_err(|error| {
        DeliveryError::Retry(format!(
            "HL7 peer {describe} answered what is not an ACK: {error}"
        ))
    })?;
    let why = if ack.text.is_empty() {
        String::new()
    } else {
        format!(": {}", ack.text)
    };
    match ack.code.as_str() {
        "AA" | "CA" => Ok(()),
        "AR" | "CR" => Err(DeliveryError::Refused(format!(
            "HL7 peer {describe} rejected the message ({}){why}",
            ack.code
        ))),
        code => Err(DeliveryError::Retry(format!(
            "HL7 peer {describe} answered {code}{why}"
        ))),
    }
}
