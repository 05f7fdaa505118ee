//! The AI result to a FHIR R4 server: a transaction Bundle that PUTs a
//! DiagnosticReport, its Observations (the result class and the probability)
//! and the Device (the model), each under an id derived from what the report
//! says, so a resend writes the same resources again rather than new ones. The
//! report refers to the ImagingStudy by its Study Instance UID and to the
//! patient by identifier (fxtriage does not know the server's Patient ids).

use std::time::Duration;

use fxtriage_core::policy::AiResult;
use fxtriage_dicom::sr::StudyReport;
use fxtriage_sites::destinations::FhirEndpoint;
use serde_json::{Value, json};

use crate::DeliveryError;

/// The code system of fxtriage's own concepts.
pub const CODE_SYSTEM: &str = "urn:fxtriage:concepts";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The id of the report's resources: from the SR's UID, at most 64
/// characters of `[A-Za-z0-9-.]`.
fn resource_id(report: &StudyReport, suffix: &str) -> String {
    format!("fxt-{}{suffix}", crate::uid_hex(&report.sop_instance_uid()))
}

/// The object id of the delivery in the outbox: the DiagnosticReport's id.
pub fn object_id(report: &StudyReport) -> String {
    resource_id(report, "")
}

fn instant(date: &str, time: &str) -> String {
    let (date, time) = (date.as_bytes(), time.as_bytes());
    if date.len() < 8 || time.len() < 6 {
        return "1970-01-01T00:00:00Z".into();
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        text(&date[0..4]),
        text(&date[4..6]),
        text(&date[6..8]),
        text(&time[0..2]),
        text(&time[2..4]),
        text(&time[4..6])
    )
}

/// The transaction Bundle of `report`; `corrects` when it replaces a result
/// sent before.
pub fn bundle(report: &StudyReport, corrects: bool) -> Value {
    let context = &report.context;
    let algorithm = &report.algorithm;
    let issued = instant(&report.content_date, &report.content_time);
    let status = if corrects { "corrected" } else { "final" };
    let device_id = format!(
        "fxt-model-{}",
        &algorithm.sha256.get(..32).unwrap_or(&algorithm.sha256)
    );
    let report_id = resource_id(report, "");
    let result_id = resource_id(report, "-result");
    let probability_id = resource_id(report, "-probability");
    let mut subject = json!({ "display": "the patient of the study" });
    if !context.patient_id.is_empty() {
        subject = json!({ "identifier": { "value": context.patient_id } });
        if !context.issuer_of_patient_id.is_empty() {
            subject["identifier"]["system"] =
                json!(format!("urn:issuer:{}", context.issuer_of_patient_id));
        }
    }
    let (code, display) = match report.result {
        AiResult::Suspected => ("suspected", "Fracture suspected"),
        AiResult::Possible => ("possible", "Fracture possible"),
        AiResult::NoFinding => ("no-finding", "No fracture found by the AI"),
        AiResult::NotAnalysed => ("not-analysed", "Not analysed"),
    };
    let device = json!({
        "resourceType": "Device",
        "id": device_id,
        "identifier": [{ "system": "urn:fxtriage:model-sha256", "value": algorithm.sha256 }],
        "manufacturer": "fxtriage",
        "deviceName": [{ "name": algorithm.name, "type": "model-name" }],
        "version": [{ "value": algorithm.version }],
        "note": [{ "text": "AI triage aid for worklist prioritisation; not a diagnosis." }],
    });
    let mut result = json!({
        "resourceType": "Observation",
        "id": result_id,
        "status": status,
        "code": { "coding": [{ "system": CODE_SYSTEM, "code": "triage-result", "display": "AI fracture triage result" }] },
        "subject": subject,
        "issued": issued,
        "valueCodeableConcept": { "coding": [{ "system": CODE_SYSTEM, "code": code, "display": display }] },
        "device": { "reference": format!("Device/{device_id}") },
    });
    if let Some(reason) = &report.not_analysed_reason {
        result["note"] = json!([{ "text": reason }]);
    }
    let mut entries = vec![device, result];
    let mut results = vec![json!({ "reference": format!("Observation/{result_id}") })];
    if let Some(probability) = report.probability {
        entries.push(json!({
            "resourceType": "Observation",
            "id": probability_id,
            "status": status,
            "code": { "coding": [{ "system": CODE_SYSTEM, "code": "study-probability", "display": "Study fracture probability" }] },
            "subject": subject,
            "issued": issued,
            "valueQuantity": {
                "value": (f64::from(probability.clamp(0.0, 1.0)) * 10_000.0).round() / 10_000.0,
                "unit": "1",
                "system": "http://unitsofmeasure.org",
                "code": "1",
            },
            "device": { "reference": format!("Device/{device_id}") },
        }));
        results.push(json!({ "reference": format!("Observation/{probability_id}") }));
    }
    let conclusion = match report.probability {
        Some(probability) => format!(
            "AI triage aid: {display} (probability {probability:.2}, model {} {}). Not a diagnosis.",
            algorithm.name, algorithm.version
        ),
        None => format!(
            "AI triage aid: {display} (model {} {}). Not a diagnosis.",
            algorithm.name, algorithm.version
        ),
    };
    let mut diagnostic_report = json!({
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "identifier": [{ "system": "urn:dicom:uid", "value": format!("urn:oid:{}", report.sop_instance_uid()) }],
        "status": status,
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology" }] }],
        "code": { "coding": [{ "system": CODE_SYSTEM, "code": "ai-fracture-triage", "display": "AI fracture triage" }] },
        "subject": subject,
        "issued": issued,
        "result": results,
        "imagingStudy": [{
            "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{}", context.study_instance_uid) },
        }],
        "conclusion": conclusion,
    });
    if !context.accession_number.is_empty() {
        diagnostic_report["basedOn"] = json!([{
            "identifier": {
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN" }] },
                "value": context.accession_number,
            },
        }]);
    }
    entries.push(diagnostic_report);
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries.into_iter().map(|resource| {
            let url = format!(
                "{}/{}",
                resource["resourceType"].as_str().unwrap_or_default(),
                resource["id"].as_str().unwrap_or_default()
            );
            json!({ "resource": resource, "request": { "method": "PUT", "url": url } })
        }).collect::<Vec<_>>(),
    })
}

/// POSTs `bundle` to the endpoint's base URL with its bearer token (read
/// now, so a rotated token is used at once). 2xx delivers; 408, 429 and 5xx,
/// or no answer, are retried; any other answer is a refusal, with the
/// server's OperationOutcome text.
pub async fn send(endpoint: &FhirEndpoint, bundle: &[u8]) -> Result<(), DeliveryError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|error| DeliveryError::Retry(format!("cannot build an HTTP client: {error}")))?;
    let mut request = client
        .post(endpoint.base_url.trim_end_matches('/'))
        .header("content-type", "application/fhir+json")
        .header("accept", "application/fhir+json")
        .body(bundle.to_vec());
    if let Some(token) = &endpoint.token {
        let token = token.read().map_err(|error| {
            DeliveryError::Retry(format!(
                "the token of FHIR destination {}: {error}",
                endpoint.name
            ))
        })?;
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| {
        DeliveryError::Retry(format!(
            "FHIR server {} did not answer: {error}",
            endpoint.base_url
        ))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let why: String = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|outcome| {
            outcome["issue"].as_array().map(|issues| {
                issues
                    .iter()
                    .filter_map(|issue| {
                        issue["diagnostics"]
                            .as_str()
                            .or(issue["details"]["text"].as_str())
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    let message = format!("FHIR server {} answered {status}: {why}", endpoint.base_url);
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(DeliveryError::Retry(message))
    } else {
        Err(DeliveryError::Refused(message))
    }
}
