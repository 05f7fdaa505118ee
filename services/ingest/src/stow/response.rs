//! The Store Instances Response (PS3.18 Annex I) in the DICOM JSON model
//! (PS3.18 F.2), and the HTTP status that goes with it (PS3.18 10.5.3).

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fxtriage_dicom::RejectionKind;
use serde_json::{Map, Value, json};

use super::media_type::DICOM_JSON;

/// Failure Reason (0008,1197) values, PS3.18 Table I.2-2.
pub mod failure_reason {
    /// A7xx: not stored for lack of resources; the sender should retry later.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// A9xx: the instance does not conform to its SOP class.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Cxxx: the instance cannot be understood.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
}

/// The private block that carries a failure's explanation in a Failed SOP
/// Sequence item: (0009,0010) is its Private Creator, (0009,1001) the kind and
/// (0009,1002) the reason in words.
pub mod private_tags {
    pub const CREATOR: &str = "00090010";
    pub const CREATOR_NAME: &str = "FXTRIAGE";
    pub const FAILURE_KIND: &str = "00091001";
    pub const FAILURE_TEXT: &str = "00091002";
}

const RETRIEVE_URL: &str = "00081190";
const FAILED_SOP_SEQUENCE: &str = "00081198";
const REFERENCED_SOP_SEQUENCE: &str = "00081199";
const REFERENCED_SOP_CLASS_UID: &str = "00081150";
const REFERENCED_SOP_INSTANCE_UID: &str = "00081155";
const FAILURE_REASON: &str = "00081197";
/// The most an LT value may hold.
const LT_MAX_CHARS: usize = 10240;
/// Seconds a sender is asked to wait when nothing could be stored for lack of resources.
const RETRY_AFTER_SECONDS: u32 = 30;

/// The Failure Reason of a rejection. Where several codes could apply, the
/// most specific one: the standard's own codes for an unsupported SOP class or
/// transfer syntax; A900 for an instance that breaks its IOD (an attribute
/// missing or malformed, no pixel data); C000 for bytes that cannot be read and
/// for the site's own limits, which a retry cannot satisfy either.
pub fn failure_reason_of(kind: RejectionKind) -> u16 {
    match kind {
        RejectionKind::SopClassNotAccepted => failure_reason::SOP_CLASS_NOT_SUPPORTED,
        RejectionKind::UnsupportedTransferSyntax => failure_reason::TRANSFER_SYNTAX_NOT_SUPPORTED,
        RejectionKind::MissingAttribute
        | RejectionKind::MalformedUid
        | RejectionKind::NoPixelData => failure_reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        RejectionKind::NotDicom
        | RejectionKind::Unreadable
        | RejectionKind::ImageTooLarge
        | RejectionKind::ImageTooSmall
        | RejectionKind::UnsupportedBitDepth
        | RejectionKind::InstanceTooLarge => failure_reason::CANNOT_UNDERSTAND,
    }
}

/// What happened to one part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PartOutcome {
    Stored {
        sop_class_uid: String,
        sop_instance_uid: String,
    },
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub reason: u16,
    /// Kebab-case, as in quarantine records: a rejection kind, or "study-mismatch",
    /// "not-an-instance", "unavailable", "malformed-request", "request-too-large".
    pub kind: String,
    pub message: String,
}

impl Failure {
    pub fn is_retryable(&self) -> bool {
        (failure_reason::OUT_OF_RESOURCES..=0xA7FF).contains(&self.reason)
    }
}

/// The response to a Store transaction that read at least one part.
#[derive(Debug, Default)]
pub(super) struct StoreResponse {
    pub outcomes: Vec<PartOutcome>,
}

impl StoreResponse {
    pub fn stored(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| matches!(outcome, PartOutcome::Stored { .. }))
            .count()
    }

    fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.outcomes.iter().filter_map(|outcome| match outcome {
            PartOutcome::Failed(failure) => Some(failure),
            PartOutcome::Stored { .. } => None,
        })
    }

    /// 200 when every instance is stored, 202 when some are, 409 when none is;
    /// 503 instead of 409 when every failure is a lack of resources, since the
    /// request is not in conflict with anything and the same request will
    /// succeed later.
    pub fn status(&self) -> StatusCode {
        let stored = self.stored();
        let failed = self.outcomes.len() - stored;
        if failed == 0 {
            StatusCode::OK
        } else if stored > 0 {
            StatusCode::ACCEPTED
        } else if self.failures().all(Failure::is_retryable) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::CONFLICT
        }
    }

    pub fn dataset(&self) -> Value {
        let mut dataset = Map::new();
        // Type 2: present, empty, since fxtriage does not serve retrieval.
        dataset.insert(RETRIEVE_URL.into(), json!({"vr": "UR"}));
        let referenced: Vec<Value> = self
            .outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                PartOutcome::Stored {
                    sop_class_uid,
                    sop_instance_uid,
                } => Some(json!({
                    REFERENCED_SOP_CLASS_UID: uid(sop_class_uid),
                    REFERENCED_SOP_INSTANCE_UID: uid(sop_instance_uid),
                    RETRIEVE_URL: {"vr": "UR"},
                })),
                PartOutcome::Failed(_) => None,
            })
            .collect();
        let failed: Vec<Value> = self.failures().map(failed_item).collect();
        // Inserted in tag order, as PS3.18 F.2 asks, whatever the map's ordering.
        if !failed.is_empty() {
            dataset.insert(FAILED_SOP_SEQUENCE.into(), sequence(failed));
        }
        if !referenced.is_empty() {
            dataset.insert(REFERENCED_SOP_SEQUENCE.into(), sequence(referenced));
        }
        Value::Object(dataset)
    }
}

impl IntoResponse for StoreResponse {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.dataset().to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

fn failed_item(failure: &Failure) -> Value {
    let mut item = Map::new();
    if let Some(sop_class_uid) = &failure.sop_class_uid {
        item.insert(REFERENCED_SOP_CLASS_UID.into(), uid(sop_class_uid));
    }
    if let Some(sop_instance_uid) = &failure.sop_instance_uid {
        item.insert(REFERENCED_SOP_INSTANCE_UID.into(), uid(sop_instance_uid));
    }
    item.insert(
        FAILURE_REASON.into(),
        json!({"vr": "US", "Value": [failure.reason]}),
    );
    item.insert(
        private_tags::CREATOR.into(),
        json!({"vr": "LO", "Value": [private_tags::CREATOR_NAME]}),
    );
    item.insert(
        private_tags::FAILURE_KIND.into(),
        json!({"vr": "LO", "Value": [failure.kind]}),
    );
    let text: String = failure.message.chars().take(LT_MAX_CHARS).collect();
    item.insert(
        private_tags::FAILURE_TEXT.into(),
        json!({"vr": "LT", "Value": [text]}),
    );
    Value::Object(item)
}

fn uid(value: &str) -> Value {
    json!({"vr": "UI", "Value": [value]})
}

fn sequence(items: Vec<Value>) -> Value {
    json!({"vr": "SQ", "Value": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(reason: u16) -> PartOutcome {
        PartOutcome::Failed(Failure {
            sop_class_uid: None,
            sop_instance_uid: Some("1.2.3".into()),
            reason,
            kind: "unreadable".into(),
            message: "corrupt".into(),
        })
    }

    fn stored() -> PartOutcome {
        PartOutcome::Stored {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.1".into(),
            sop_instance_uid: "1.2.4".into(),
        }
    }

    #[test]
    fn the_status_follows_what_was_stored() {
        let response = |outcomes| StoreResponse { outcomes };
        assert_eq!(response(vec![stored(), stored()]).status(), StatusCode::OK);
        assert_eq!(
            response(vec![stored(), failure(failure_reason::CANNOT_UNDERSTAND)]).status(),
            StatusCode::ACCEPTED
        );
        assert_eq!(
            response(vec![
                failure(failure_reason::CANNOT_UNDERSTAND),
                failure(failure_reason::OUT_OF_RESOURCES)
            ])
            .status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            response(vec![failure(failure_reason::OUT_OF_RESOURCES)]).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn the_dataset_is_dicom_json_in_tag_order() {
        let response = StoreResponse {
            outcomes: vec![stored(), failure(failure_reason::CANNOT_UNDERSTAND)],
        };
        let dataset = response.dataset();
        assert_eq!(
            dataset["00081199"]["Value"][0]["00081155"],
            json!({"vr": "UI", "Value": ["1.2.4"]})
        );
        let failed = &dataset["00081198"]["Value"][0];
        assert_eq!(failed["00081197"], json!({"vr": "US", "Value": [0xC000]}));
        assert!(
            failed.get("00081150").is_none(),
            "unknown UIDs are left out"
        );
        assert_eq!(failed["00091002"]["Value"][0], "corrupt");
        let keys: Vec<&String> = dataset.as_object().expect("object").keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
