//! Reports from the hospital's RIS as FHIR R4: `POST
//! /api/v1/sites/{site}/fhir/DiagnosticReport` with a DiagnosticReport (JSON)
//! closes the study's worklist item as the HL7 v2 ORU^R01 path does
//! (`fxtriage_worklist::ris::close_from_ris`), at the report's own time, by
//! its reader, and records the radiologist's coded finding when it carries
//! one. Only with a service token of the site with the reader role (the RIS
//! integration's): the report names its own reader and time, so a person
//! signed in through the identity provider is refused (403) and reports
//! through `studies/{study}/report` instead. The token is recorded on the
//! report and in the audit log. An `amended` or `corrected` report of a study
//! already reported changes nothing but a coded finding the first lacked.
//!
//! What is read (nothing else is needed; a FHIR library would parse the whole
//! resource model for these few fields, so they are read from the JSON):
//! - `status`: `final`, `amended`, `corrected` or `appended` close the item;
//!   `registered`, `partial` and `preliminary` are answered and change nothing;
//! - the study: `imagingStudy[].identifier` whose value is a DICOM UID
//!   (`urn:oid:1.2...`, or the bare UID; the system is not checked), else the
//!   accession number in `basedOn[].identifier` (or the report's own
//!   `identifier`) whose type is `ACSN` (HL7 table 0203);
//! - `issued`: when it was reported (required);
//! - the reader: `resultsInterpreter[0].display`, else `performer[0].display`;
//! - the control id (one report, once): `identifier[]` not an accession,
//!   else `id`;
//! - the coded finding: a contained Observation (referenced from `result`)
//!   coded SNOMED CT 125605004 "Fracture of bone" (or the local code
//!   FRACTURE), with `valueBoolean`, or `valueCodeableConcept` Y/N (HL7 table
//!   0136) or SNOMED CT 373066001 yes / 373067005 no / 42425007 equivocal, or
//!   `valueString` yes/no/equivocal. Free text is never read as a finding.
//!
//! Answers are OperationOutcome resources: 200 when applied or recorded, 404
//! when the site has no such study (yet; the RIS may send again), 400 or 422
//! with the reason otherwise.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fxtriage_worklist::ris::{self, RisReport};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;

/// The most bytes of a DiagnosticReport.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An OperationOutcome with one issue, as the answer.
fn outcome(status: StatusCode, severity: &str, code: &str, diagnostics: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        Json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": severity, "code": code, "diagnostics": diagnostics }],
        })),
    )
        .into_response()
}

fn invalid(diagnostics: &str) -> Response {
    outcome(
        StatusCode::UNPROCESSABLE_ENTITY,
        "error",
        "invalid",
        diagnostics,
    )
}

/// What a DiagnosticReport says, as far as the worklist is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirReport {
    pub final_: bool,
    pub status: String,
    pub study_instance_uid: Option<String>,
    pub accession_number: Option<String>,
    pub reported_at: OffsetDateTime,
    pub reader: String,
    pub control_id: String,
    pub fracture: Option<&'static str>,
}

fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

fn array<'a>(value: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn codings(concept: &Value) -> impl Iterator<Item = (&str, &str)> {
    array(concept, "coding")
        .filter_map(|coding| Some((text(coding, "system").unwrap_or(""), text(coding, "code")?)))
}

/// Whether an identifier's type is an accession number (HL7 table 0203 ACSN).
fn is_accession(identifier: &Value) -> bool {
    identifier
        .get("type")
        .is_some_and(|kind| codings(kind).any(|(_, code)| code == "ACSN"))
}

/// A DICOM UID from an identifier value: `urn:oid:1.2.3` or the bare UID.
fn dicom_uid(value: &str) -> Option<String> {
    let uid = value.strip_prefix("urn:oid:").unwrap_or(value);
    (!uid.is_empty()
        && uid.len() <= 64
        && uid
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.'))
    .then(|| uid.to_owned())
}

/// The coded finding of an Observation's value.
fn finding_of(observation: &Value) -> Option<&'static str> {
    if let Some(present) = observation.get("valueBoolean").and_then(Value::as_bool) {
        return Some(if present { "yes" } else { "no" });
    }
    if let Some(concept) = observation.get("valueCodeableConcept") {
        for (_, code) in codings(concept) {
            match code {
                "Y" | "373066001" => return Some("yes"),
                "N" | "373067005" => return Some("no"),
                "42425007" => return Some("equivocal"),
                _ => {}
            }
        }
    }
    match text(observation, "valueString")?
        .to_ascii_lowercase()
        .as_str()
    {
        "yes" | "y" => Some("yes"),
        "no" | "n" => Some("no"),
        "equivocal" => Some("equivocal"),
        _ => None,
    }
}

/// The radiologist's coded finding: a contained Observation, referenced from
/// `result`, coded as a fracture of bone.
fn fracture_of(report: &Value) -> Option<&'static str> {
    let referenced: Vec<&str> = array(report, "result")
        .filter_map(|reference| text(reference, "reference"))
        .filter_map(|reference| reference.strip_prefix('#'))
        .collect();
    array(report, "contained")
        .filter(|resource| text(resource, "resourceType") == Some("Observation"))
        .filter(|observation| text(observation, "id").is_some_and(|id| referenced.contains(&id)))
        .filter(|observation| {
            observation.get("code").is_some_and(|code| {
                codings(code).any(|(system, code)| {
                    (code == "125605004" && system.contains("snomed"))
                        || code.eq_ignore_ascii_case("FRACTURE")
                })
            })
        })
        .find_map(finding_of)
}

/// Reads a DiagnosticReport; `Err` with what is wrong.
pub fn parse(body: &[u8]) -> Result<FhirReport, String> {
    let report: Value =
        serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    if text(&report, "resourceType") != Some("DiagnosticReport") {
        return Err("the body must be a FHIR DiagnosticReport (resourceType)".into());
    }
    let status = text(&report, "status")
        .ok_or("the DiagnosticReport has no status")?
        .to_owned();
    let final_ = match status.as_str() {
        "final" | "amended" | "corrected" | "appended" => true,
        "registered" | "partial" | "preliminary" => false,
        other => {
            return Err(format!(
                "status {other:?} is not one a report can have here"
            ));
        }
    };
    let study_instance_uid = array(&report, "imagingStudy")
        .filter_map(|reference| reference.get("identifier"))
        .filter_map(|identifier| text(identifier, "value"))
        .find_map(dicom_uid);
    let accession_number = array(&report, "basedOn")
        .filter_map(|reference| reference.get("identifier"))
        .chain(array(&report, "identifier"))
        .filter(|identifier| is_accession(identifier))
        .find_map(|identifier| text(identifier, "value"))
        .map(str::to_owned);
    if study_instance_uid.is_none() && accession_number.is_none() {
        return Err(
            "the DiagnosticReport names no study: give imagingStudy[].identifier (urn:oid:UID) or an accession number (basedOn[].identifier of type ACSN)"
                .into(),
        );
    }
    let issued = text(&report, "issued").ok_or("the DiagnosticReport has no issued time")?;
    let reported_at = OffsetDateTime::parse(issued, &time::format_description::well_known::Rfc3339)
        .map_err(|error| format!("issued {issued:?} is not a FHIR instant: {error}"))?;
    let reader = ["resultsInterpreter", "performer"]
        .iter()
        .find_map(|field| array(&report, field).find_map(|who| text(who, "display")))
        .unwrap_or("RIS")
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let control_id = array(&report, "identifier")
        .filter(|identifier| !is_accession(identifier))
        .find_map(|identifier| text(identifier, "value"))
        .or_else(|| text(&report, "id"))
        .ok_or("the DiagnosticReport has neither an identifier nor an id")?
        .chars()
        .take(128)
        .collect();
    Ok(FhirReport {
        final_,
        status,
        study_instance_uid,
        accession_number,
        reported_at,
        reader,
        control_id,
        fracture: fracture_of(&report),
    })
}

/// `POST /api/v1/sites/{site}/fhir/DiagnosticReport`.
pub async fn post_diagnostic_report(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_reader()?;
    if caller.person.is_some() {
        // A RIS integration reports with its own service token. A person
        // reports through `studies/{study}/report`, in their own name and at
        // the time they do: a DiagnosticReport names its reader and time.
        return Ok(outcome(
            StatusCode::FORBIDDEN,
            "error",
            "forbidden",
            "reports from a RIS come with the RIS's service token, not a person's sign-in",
        ));
    }
    let report = match parse(&body) {
        Ok(report) => report,
        Err(reason) => return Ok(invalid(&reason)),
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(study) = ris::find_study(
        &tx,
        &caller.site,
        report.study_instance_uid.as_deref(),
        report.accession_number.as_deref(),
    )
    .await?
    else {
        return Ok(outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!(
                "site {} has no study with UID {:?} or accession number {:?} (yet)",
                caller.site,
                report.study_instance_uid.as_deref().unwrap_or(""),
                report.accession_number.as_deref().unwrap_or("")
            ),
        ));
    };
    if !report.final_ {
        return Ok(outcome(
            StatusCode::OK,
            "information",
            "informational",
            &format!("status {} is not final: the item stays open", report.status),
        ));
    }
    let sender = format!("fhir:{}", caller.token_id);
    let closed = ris::close_from_ris(
        &tx,
        &caller.site,
        &study,
        ris::RisReportFacts {
            reported_at: report.reported_at,
            reader: &report.reader,
            control_id: &report.control_id,
            sending_facility: &sender,
            fracture: report.fracture,
            token_id: Some(&caller.token_id),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(match closed {
        RisReport::Closed(_) => outcome(
            StatusCode::OK,
            "information",
            "informational",
            "applied: the worklist item is closed",
        ),
        RisReport::AlreadyReported => outcome(
            StatusCode::OK,
            "information",
            "informational",
            "recorded: the study was reported before",
        ),
        RisReport::NoSuchStudy => outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "the study is gone",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(extra: Value) -> Value {
        let mut report = json!({
            "resourceType": "DiagnosticReport",
            "id": "r-1",
            "identifier": [{ "system": "urn:ris", "value": "RPT-1" }],
            "status": "final",
            "code": { "text": "XR wrist" },
            "issued": "2026-03-02T10:15:00+00:00",
            "resultsInterpreter": [{ "display": "Dr Jones" }],
            "imagingStudy": [{ "identifier": { "system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4" } }],
        });
        if let (Value::Object(report), Value::Object(extra)) = (&mut report, extra) {
            report.extend(extra);
        }
        report
    }

    fn parsed(value: &Value) -> Result<FhirReport, String> {
        parse(&serde_json::to_vec(value).expect("json"))
    }

    fn with_observation(value: Value) -> Value {
        let mut observation = json!({
            "resourceType": "Observation", "id": "f", "status": "final",
            "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "125605004" }] },
        });
        if let (Value::Object(observation), Value::Object(value)) = (&mut observation, value) {
            observation.extend(value);
        }
        report(json!({ "contained": [observation], "result": [{ "reference": "#f" }] }))
    }

    #[test]
    fn a_final_report_names_its_study_time_reader_and_control_id() {
        let read = parsed(&report(json!({}))).expect("parsed");
        assert!(read.final_);
        assert_eq!(read.study_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(read.reader, "Dr Jones");
        assert_eq!(read.control_id, "RPT-1");
        assert_eq!(read.reported_at.unix_timestamp(), 1_772_446_500);
        assert_eq!(read.fracture, None, "no coded finding: none, never 'no'");
    }

    #[test]
    fn the_coded_finding_is_read_only_from_a_fracture_observation_it_references() {
        let yes = with_observation(json!({ "valueBoolean": true }));
        assert_eq!(parsed(&yes).expect("parsed").fracture, Some("yes"));
        let no = with_observation(
            json!({ "valueCodeableConcept": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0136", "code": "N" }] } }),
        );
        assert_eq!(parsed(&no).expect("parsed").fracture, Some("no"));
        let equivocal = with_observation(
            json!({ "valueCodeableConcept": { "coding": [{ "system": "http://snomed.info/sct", "code": "42425007" }] } }),
        );
        assert_eq!(
            parsed(&equivocal).expect("parsed").fracture,
            Some("equivocal")
        );
        let free_text = with_observation(json!({ "valueString": "No fracture seen." }));
        assert_eq!(parsed(&free_text).expect("parsed").fracture, None);
        let mut unreferenced = with_observation(json!({ "valueBoolean": true }));
        unreferenced["result"] = json!([]);
        assert_eq!(parsed(&unreferenced).expect("parsed").fracture, None);
        let mut other_code = with_observation(json!({ "valueBoolean": true }));
        other_code["contained"][0]["code"]["coding"][0]["code"] = json!("1234");
        assert_eq!(parsed(&other_code).expect("parsed").fracture, None);
    }

    #[test]
    fn an_accession_number_stands_in_for_the_uid_and_bad_reports_say_why() {
        let by_accession = report(json!({
            "imagingStudy": [],
            "basedOn": [{ "identifier": { "type": { "coding": [{ "code": "ACSN" }] }, "value": "ACC-9" } }],
        }));
        let read = parsed(&by_accession).expect("parsed");
        assert_eq!(read.study_instance_uid, None);
        assert_eq!(read.accession_number.as_deref(), Some("ACC-9"));
        let preliminary = parsed(&report(json!({ "status": "preliminary" }))).expect("parsed");
        assert!(!preliminary.final_);

        let refused = |value: Value, expected: &str| {
            let reason = parsed(&value).expect_err("refused");
            assert!(reason.contains(expected), "{reason}");
        };
        refused(json!({ "resourceType": "Observation" }), "DiagnosticReport");
        refused(report(json!({ "imagingStudy": [] })), "names no study");
        refused(
            report(json!({ "issued": "yesterday" })),
            "not a FHIR instant",
        );
        refused(report(json!({ "status": "cancelled" })), "cancelled");
        let mut no_time = report(json!({}));
        no_time.as_object_mut().expect("object").remove("issued");
        refused(no_time, "no issued time");
    }
}
