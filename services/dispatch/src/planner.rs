//! From the worklist to the outbox: for each study whose result changed at a
//! site with destinations (noted by a trigger in the same transaction, table
//! `dispatch_pending_studies`), once its findings are final (every eligible
//! image analysed or failed), the SR for each DICOM destination that takes SRs,
//! and a secondary capture of each analysed image for each that takes them.
//!
//! The SR's UID is derived from what it says, so planning a study again writes
//! nothing new; a changed result (another image, another model) is a new SR
//! that supersedes the last one sent to that destination. An earlier revision
//! not sent yet (the destination away) is superseded in the outbox and never
//! sent: the destination gets the newest only, and an admin sees one failed
//! delivery per study and destination, not one per revision.

use std::sync::Arc;

use deadpool_postgres::Pool;
use fxtriage_core::Detection;
use fxtriage_core::policy::AiResult;
use fxtriage_dicom::capture::Capture;
use fxtriage_dicom::sr::{Algorithm, ImageResult, StudyContext, StudyReport};
use fxtriage_objstore::{ObjectKey, ObjectStore};
use fxtriage_sites::SiteRegistry;
use fxtriage_sites::destinations::{DicomObject, FhirResource, Hl7Message};

use crate::outbox::{self, NewDelivery};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The kind of an SR delivery in the outbox.
pub const KIND_SR: &str = "dicom-sr";
/// The kind of a secondary capture delivery in the outbox.
pub const KIND_SC: &str = "dicom-sc";
/// The kind of an HL7 ORU^R01 delivery in the outbox.
pub const KIND_ORU: &str = "hl7-oru";
/// The kind of an HL7 order priority update in the outbox.
pub const KIND_PRIORITY: &str = "hl7-priority";
/// The kind of a FHIR DiagnosticReport delivery in the outbox.
pub const KIND_FHIR: &str = "fhir-diagnostic-report";

/// Plans up to `limit` noted studies; how many SR deliveries were written. A
/// study whose planning failed (its source image unreadable for now, say)
/// stays noted and is planned again next time.
pub async fn plan_noted(
    pool: &Pool,
    registry: &SiteRegistry,
    store: &Arc<dyn ObjectStore>,
    limit: i64,
) -> Result<usize, Error> {
    let noted = pool
        .get()
        .await?
        .query(
            "SELECT site_id, study_instance_uid, note FROM dispatch_pending_studies
             ORDER BY note LIMIT $1",
            &[&limit],
        )
        .await?;
    let mut written = 0;
    for row in noted {
        let site_id: String = row.get(0);
        let study: String = row.get(1);
        let note: i64 = row.get(2);
        match plan_study(pool, registry, store, &site_id, &study).await {
            Ok(count) => written += count,
            Err(error) => {
                tracing::warn!(site = %site_id, error = %crate::chain(error.as_ref()), "cannot plan a study's results yet");
                continue;
            }
        }
        pool.get()
            .await?
            .execute(
                "DELETE FROM dispatch_pending_studies
                 WHERE site_id = $1 AND study_instance_uid = $2 AND note = $3",
                &[&site_id, &study, &note],
            )
            .await?;
    }
    Ok(written)
}

/// What the worklist holds about one image, with its latest finding.
struct Image {
    series_instance_uid: String,
    sop_class_uid: String,
    sop_instance_uid: String,
    object_key: String,
    analysis: String,
    finding: Option<Finding>,
}

struct Finding {
    model_name: String,
    model_version: String,
    model_sha256: String,
    probability: Option<f32>,
    detections: Vec<Detection>,
    failure_reason: String,
}

/// Plans one study; how many deliveries were written.
pub async fn plan_study(
    pool: &Pool,
    registry: &SiteRegistry,
    store: &Arc<dyn ObjectStore>,
    site_id: &str,
    study_instance_uid: &str,
) -> Result<usize, Error> {
    let snapshot = registry.current();
    let Some(site) = snapshot.site(site_id) else {
        return Ok(0);
    };
    let sr_peers: Vec<_> = site
        .destinations
        .dicom
        .iter()
        .filter(|peer| peer.objects.contains(&DicomObject::Sr))
        .collect();
    let sc_peers: Vec<_> = site
        .destinations
        .dicom
        .iter()
        .filter(|peer| peer.objects.contains(&DicomObject::Sc))
        .collect();
    let hl7_peers: Vec<_> = site
        .destinations
        .hl7
        .iter()
        .filter(|peer| peer.messages.contains(&Hl7Message::Oru))
        .collect();
    let priority_peers: Vec<_> = site
        .destinations
        .hl7
        .iter()
        .filter(|peer| peer.messages.contains(&Hl7Message::PriorityUpdate))
        .collect();
    let fhir_endpoints: Vec<_> = site
        .destinations
        .fhir
        .iter()
        .filter(|endpoint| endpoint.resources.contains(&FhirResource::DiagnosticReport))
        .collect();
    if sr_peers.is_empty()
        && sc_peers.is_empty()
        && hl7_peers.is_empty()
        && fhir_endpoints.is_empty()
    {
        return Ok(0);
    }
    let Some((report, object_keys)) = report_of(pool, site_id, study_instance_uid).await? else {
        return Ok(0);
    };
    let mut context = LazyContext::default();
    let mut written = 0;
    let sop_instance_uid = report.sop_instance_uid();
    for peer in sr_peers {
        let latest =
            outbox::latest_object(pool, site_id, &peer.name, KIND_SR, study_instance_uid).await?;
        if latest.as_deref() == Some(sop_instance_uid.as_str()) {
            continue;
        }
        let replaced =
            outbox::latest_sent_object(pool, site_id, &peer.name, KIND_SR, study_instance_uid)
                .await?;
        let report = StudyReport {
            context: context
                .get(pool, store, site_id, study_instance_uid)
                .await?,
            supersedes: replaced,
            ..report.clone()
        };
        let new = outbox::enqueue_revision(
            pool,
            &NewDelivery {
                site_id: site_id.to_owned(),
                destination: peer.name.clone(),
                kind: KIND_SR,
                study_instance_uid: study_instance_uid.to_owned(),
                object_id: sop_instance_uid.clone(),
                supersedes: report.supersedes.clone(),
                payload: fxtriage_dicom::synthetic::part10(report.dataset()),
            },
        )
        .await?;
        written += usize::from(new);
    }
    // The result to each RIS, corrected when it replaces one sent before.
    let control_id = crate::hl7_out::control_id(&report);
    for peer in hl7_peers {
        let latest =
            outbox::latest_object(pool, site_id, &peer.name, KIND_ORU, study_instance_uid).await?;
        if latest.as_deref() == Some(control_id.as_str()) {
            continue;
        }
        let replaced =
            outbox::latest_sent_object(pool, site_id, &peer.name, KIND_ORU, study_instance_uid)
                .await?;
        let report = StudyReport {
            context: context
                .get(pool, store, site_id, study_instance_uid)
                .await?,
            ..report.clone()
        };
        let oru = crate::hl7_out::oru_r01(&report, peer, replaced.is_some());
        let new = outbox::enqueue_revision(
            pool,
            &NewDelivery {
                site_id: site_id.to_owned(),
                destination: peer.name.clone(),
                kind: KIND_ORU,
                study_instance_uid: study_instance_uid.to_owned(),
                object_id: control_id.clone(),
                supersedes: replaced,
                payload: oru.into_bytes(),
            },
        )
        .await?;
        written += usize::from(new);
    }
    // The order's priority raised in the RIS, never lowered: a stat update
    // once sent, an ASAP one is not.
    if let Some(priority) = crate::hl7_out::raised_priority(report.result) {
        for peer in priority_peers {
            let stat = crate::hl7_out::priority_control_id(study_instance_uid, "S");
            let this = crate::hl7_out::priority_control_id(study_instance_uid, priority.0);
            if outbox::exists(pool, site_id, &peer.name, &stat).await?
                || outbox::exists(pool, site_id, &peer.name, &this).await?
            {
                continue;
            }
            let report = StudyReport {
                context: context
                    .get(pool, store, site_id, study_instance_uid)
                    .await?,
                ..report.clone()
            };
            let Some(update) = crate::hl7_out::priority_update(&report, peer, priority) else {
                tracing::info!(site = %site_id, "no accession number: the RIS order's priority cannot be raised");
                continue;
            };
            let new = outbox::enqueue(
                pool,
                &NewDelivery {
                    site_id: site_id.to_owned(),
                    destination: peer.name.clone(),
                    kind: KIND_PRIORITY,
                    study_instance_uid: study_instance_uid.to_owned(),
                    object_id: this,
                    supersedes: None,
                    payload: update.into_bytes(),
                },
            )
            .await?;
            written += usize::from(new);
        }
    }
    // The result to each FHIR server, corrected when it replaces one sent before.
    let report_id = crate::fhir_out::object_id(&report);
    for endpoint in fhir_endpoints {
        let latest =
            outbox::latest_object(pool, site_id, &endpoint.name, KIND_FHIR, study_instance_uid)
                .await?;
        if latest.as_deref() == Some(report_id.as_str()) {
            continue;
        }
        let replaced = outbox::latest_sent_object(
            pool,
            site_id,
            &endpoint.name,
            KIND_FHIR,
            study_instance_uid,
        )
        .await?;
        let report = StudyReport {
            context: context
                .get(pool, store, site_id, study_instance_uid)
                .await?,
            ..report.clone()
        };
        let bundle = crate::fhir_out::bundle(&report, replaced.is_some());
        let new = outbox::enqueue_revision(
            pool,
            &NewDelivery {
                site_id: site_id.to_owned(),
                destination: endpoint.name.clone(),
                kind: KIND_FHIR,
                study_instance_uid: study_instance_uid.to_owned(),
                object_id: report_id.clone(),
                supersedes: replaced,
                payload: serde_json::to_vec(&bundle)?,
            },
        )
        .await?;
        written += usize::from(new);
    }
    // A secondary capture of each analysed image, drawn only when some
    // destination does not have it yet.
    for (image, object_key) in report.images.iter().zip(&object_keys) {
        let Some(probability) = image.probability else {
            continue;
        };
        let mut capture = Capture {
            context: StudyContext {
                study_instance_uid: study_instance_uid.to_owned(),
                ..StudyContext::default()
            },
            algorithm: report.algorithm.clone(),
            result: report.result,
            source_series_instance_uid: image.series_instance_uid.clone(),
            source_sop_class_uid: image.sop_class_uid.clone(),
            source_sop_instance_uid: image.sop_instance_uid.clone(),
            probability,
            detections: image.detections.clone(),
            content_date: report.content_date.clone(),
            content_time: report.content_time.clone(),
        };
        let object_id = capture.sop_instance_uid();
        let mut payload: Option<Vec<u8>> = None;
        for peer in &sc_peers {
            if outbox::exists(pool, site_id, &peer.name, &object_id).await? {
                continue;
            }
            let payload = match &payload {
                Some(payload) => payload.clone(),
                None => {
                    capture.context = context
                        .get(pool, store, site_id, study_instance_uid)
                        .await?;
                    let bytes = store.get(&ObjectKey::parse(object_key)?).await?;
                    let (grey, _) = tokio::task::spawn_blocking(move || {
                        fxtriage_dicom::pixels::decode_windowed(&bytes)
                    })
                    .await??;
                    let encoded = fxtriage_dicom::synthetic::part10(capture.dataset(&grey));
                    payload = Some(encoded.clone());
                    encoded
                }
            };
            let new = outbox::enqueue(
                pool,
                &NewDelivery {
                    site_id: site_id.to_owned(),
                    destination: peer.name.clone(),
                    kind: KIND_SC,
                    study_instance_uid: study_instance_uid.to_owned(),
                    object_id: object_id.clone(),
                    supersedes: None,
                    payload,
                },
            )
            .await?;
            written += usize::from(new);
        }
    }
    Ok(written)
}

/// The study's patient and study attributes, read from a source image once,
/// when a delivery first needs them.
#[derive(Default)]
struct LazyContext(Option<StudyContext>);

impl LazyContext {
    async fn get(
        &mut self,
        pool: &Pool,
        store: &Arc<dyn ObjectStore>,
        site_id: &str,
        study_instance_uid: &str,
    ) -> Result<StudyContext, Error> {
        if let Some(context) = &self.0 {
            return Ok(context.clone());
        }
        let context = context_of(pool, store, site_id, study_instance_uid).await?;
        self.0 = Some(context.clone());
        Ok(context)
    }
}

/// The study's report, without its patient context, or `None` while its
/// findings are not final or nothing of it was eligible for analysis.
async fn report_of(
    pool: &Pool,
    site_id: &str,
    study_instance_uid: &str,
) -> Result<Option<(StudyReport, Vec<String>)>, Error> {
    let client = pool.get().await?;
    let Some(study) = client
        .query_opt(
            "SELECT ai_result, probability,
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYYMMDD'),
                    to_char(updated_at AT TIME ZONE 'UTC', 'HH24MISS')
             FROM studies WHERE site_id = $1 AND study_instance_uid = $2",
            &[&site_id, &study_instance_uid],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT i.series_instance_uid, i.sop_class_uid, i.sop_instance_uid, i.analysis,
                    i.object_key, f.model_name, f.model_version, f.model_sha256, f.probability,
                    f.detections, f.failure_reason
             FROM instances i
             LEFT JOIN LATERAL (
                 SELECT * FROM findings f
                 WHERE f.site_id = i.site_id AND f.sop_instance_uid = i.sop_instance_uid
                 ORDER BY f.recorded_at DESC LIMIT 1) f ON true
             WHERE i.site_id = $1 AND i.study_instance_uid = $2 AND i.eligible
             ORDER BY i.series_instance_uid, i.sop_instance_uid",
            &[&site_id, &study_instance_uid],
        )
        .await?;
    let mut images = Vec::new();
    for row in rows {
        let model_sha256: Option<String> = row.get(7);
        let finding = match model_sha256 {
            Some(model_sha256) => {
                let detections: serde_json::Value = row.get(9);
                Some(Finding {
                    model_name: row.get(5),
                    model_version: row.get(6),
                    model_sha256,
                    probability: row.get(8),
                    detections: serde_json::from_value(detections)?,
                    failure_reason: row.get(10),
                })
            }
            None => None,
        };
        images.push(Image {
            series_instance_uid: row.get(0),
            sop_class_uid: row.get(1),
            sop_instance_uid: row.get(2),
            analysis: row.get(3),
            object_key: row.get(4),
            finding,
        });
    }
    let final_ = !images.is_empty()
        && images
            .iter()
            .all(|image| matches!(image.analysis.as_str(), "analysed" | "failed"));
    if !final_ {
        return Ok(None);
    }
    let ai_result: String = study.get(0);
    let result = match ai_result.as_str() {
        "suspected" => AiResult::Suspected,
        "possible" => AiResult::Possible,
        "no-finding" => AiResult::NoFinding,
        "not-analysed" => AiResult::NotAnalysed,
        _ => return Ok(None),
    };
    // The model of the study's latest finding names the algorithm.
    let Some(model) = images.iter().rev().find_map(|image| image.finding.as_ref()) else {
        return Ok(None);
    };
    let algorithm = Algorithm {
        name: model.model_name.clone(),
        version: model.model_version.clone(),
        sha256: model.model_sha256.clone(),
    };
    let mut reasons: Vec<String> = images
        .iter()
        .filter_map(|image| image.finding.as_ref())
        .filter(|finding| !finding.failure_reason.is_empty())
        .map(|finding| finding.failure_reason.clone())
        .collect();
    reasons.sort();
    reasons.dedup();
    let not_analysed_reason = (result == AiResult::NotAnalysed)
        .then(|| reasons.join("; "))
        .filter(|reason| !reason.is_empty());
    let object_keys = images
        .iter()
        .map(|image| image.object_key.clone())
        .collect();
    Ok(Some((
        StudyReport {
            context: StudyContext {
                study_instance_uid: study_instance_uid.to_owned(),
                ..StudyContext::default()
            },
            algorithm,
            result,
            not_analysed_reason,
            probability: study.get(1),
            images: images
                .into_iter()
                .map(|image| {
                    let (probability, detections) = match image.finding {
                        Some(finding) if image.analysis == "analysed" => {
                            (finding.probability, finding.detections)
                        }
                        _ => (None, Vec::new()),
                    };
                    ImageResult {
                        series_instance_uid: image.series_instance_uid,
                        sop_class_uid: image.sop_class_uid,
                        sop_instance_uid: image.sop_instance_uid,
                        frame: 1,
                        probability,
                        detections,
                    }
                })
                .collect(),
            supersedes: None,
            content_date: study.get(2),
            content_time: study.get(3),
        },
        object_keys,
    )))
}

/// The patient and study modules, from the study's first stored image.
async fn context_of(
    pool: &Pool,
    store: &Arc<dyn ObjectStore>,
    site_id: &str,
    study_instance_uid: &str,
) -> Result<StudyContext, Error> {
    let key: String = pool
        .get()
        .await?
        .query_one(
            "SELECT object_key FROM instances WHERE site_id = $1 AND study_instance_uid = $2
             ORDER BY received_at, sop_instance_uid LIMIT 1",
            &[&site_id, &study_instance_uid],
        )
        .await?
        .get(0);
    let bytes = store.get(&ObjectKey::parse(&key)?).await?;
    let object = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Auto)
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .from_reader(bytes.as_ref())?;
    let mut context = StudyContext::from_dataset(&object);
    context.study_instance_uid = study_instance_uid.to_owned();
    Ok(context)
}
