//! Reports from the RIS as FHIR R4 DiagnosticReports, against PostgreSQL
//! through the API: a final report closes the study's worklist item at the
//! report's time by its reader and records the radiologist's coded finding;
//! sent again, nothing changes; a preliminary one leaves the item open; a
//! study not (yet) known is 404; a viewer token is refused, and another
//! site's token sees nothing.

mod support;

use fxtriage_core::Urgency;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

fn diagnostic_report(study: &str, status: &str, fracture: Option<bool>) -> Value {
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "identifier": [{ "system": "urn:ris:reports", "value": format!("RPT-{study}") }],
        "status": status,
        "code": { "text": "XR wrist" },
        "issued": "2026-03-02T10:15:00Z",
        "resultsInterpreter": [{ "display": "Dr Jones" }],
        "imagingStudy": [{ "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{study}") } }],
    });
    if let Some(present) = fracture {
        report["contained"] = json!([{
            "resourceType": "Observation", "id": "finding", "status": "final",
            "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "125605004" }] },
            "valueBoolean": present,
        }]);
        report["result"] = json!([{ "reference": "#finding" }]);
    }
    report
}

#[tokio::test]
async fn a_final_fhir_report_closes_the_item_with_the_radiologists_finding() {
    let Some(api) = start_api().await else {
        return;
    };
    let reported = StudySpec::new("1.77.1", Urgency::Emergency, now()).analysed(0.93);
    let open = StudySpec::new("1.77.2", Urgency::Inpatient, now()).analysed(0.2);
    add_study(&api.pool, &reported).await;
    add_study(&api.pool, &open).await;
    let send = |token: String, site: &'static str, body: Value| {
        let http = api.http.clone();
        let url = api.site_url(site, "/fhir/DiagnosticReport");
        async move {
            http.post(url)
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(&body).expect("json"))
                .send()
                .await
                .expect("request")
        }
    };
    let ris = api.demo.reader.clone();

    let applied = send(
        ris.clone(),
        SITE,
        diagnostic_report("1.77.1", "final", Some(false)),
    )
    .await;
    assert_eq!(applied.status(), StatusCode::OK);
    assert_eq!(applied.headers()["content-type"], "application/fhir+json");
    let outcome: Value = applied.json().await.expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|text| text.starts_with("applied")),
        "{outcome}"
    );
    let client = api.pool.get().await.expect("connection");
    let row = client
        .query_one(
            "SELECT r.source, r.reader, r.fracture, r.ris_control_id, \
                    r.reported_at = '2026-03-02T10:15:00Z'::timestamptz, s.state, r.token_id \
             FROM reports r JOIN studies s USING (site_id, study_instance_uid) \
             WHERE r.study_instance_uid = '1.77.1'",
            &[],
        )
        .await
        .expect("the report");
    assert_eq!(row.get::<_, String>(0), "ris");
    assert_eq!(row.get::<_, String>(1), "Dr Jones");
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("no"));
    assert_eq!(row.get::<_, String>(3), "RPT-1.77.1");
    assert!(row.get::<_, bool>(4), "reported at the report's own time");
    assert_eq!(row.get::<_, String>(5), "reported");
    assert_eq!(
        row.get::<_, Option<String>>(6).as_deref(),
        Some(api.demo.reader_id.as_str()),
        "the RIS's token is on the report"
    );
    assert_eq!(
        api.count(
            "SELECT count(*) FROM audit_log WHERE action = 'study.report' \
             AND study_instance_uid = '1.77.1' AND actor LIKE 'ris:fhir:%'"
        )
        .await,
        1
    );

    // The same report again: recorded, nothing changes.
    let again = send(
        ris.clone(),
        SITE,
        diagnostic_report("1.77.1", "final", Some(true)),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM reports WHERE study_instance_uid = '1.77.1' AND fracture = 'no'"
        )
        .await,
        1
    );

    // Preliminary: the item stays open.
    let preliminary = send(
        ris.clone(),
        SITE,
        diagnostic_report("1.77.2", "preliminary", None),
    )
    .await;
    assert_eq!(preliminary.status(), StatusCode::OK);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM studies WHERE study_instance_uid = '1.77.2' AND state = 'open'"
        )
        .await,
        1
    );
    // Not (yet) a study of the site: 404, so the RIS sends it again later.
    let unknown = send(
        ris.clone(),
        SITE,
        diagnostic_report("1.77.9", "final", None),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Not a DiagnosticReport: 422 with the reason.
    let wrong = send(ris.clone(), SITE, json!({ "resourceType": "Observation" })).await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let why: Value = wrong.json().await.expect("json");
    assert!(
        why["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|text| text.contains("DiagnosticReport")),
        "{why}"
    );
    // A viewer may not report; another site's token sees no such route.
    let viewer = send(
        api.demo.viewer.clone(),
        SITE,
        diagnostic_report("1.77.2", "final", None),
    )
    .await;
    assert_eq!(viewer.status(), StatusCode::FORBIDDEN);
    let other = send(
        api.other.reader.clone(),
        SITE,
        diagnostic_report("1.77.2", "final", None),
    )
    .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        api.count(
            "SELECT count(*) FROM studies WHERE study_instance_uid = '1.77.2' AND state = 'open'"
        )
        .await,
        1,
        "refused reports change nothing"
    );
    drop(client);
    api.finish().await;
}
