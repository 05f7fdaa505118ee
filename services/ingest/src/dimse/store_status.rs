//! The C-STORE status a sender gets for what the ingest pipeline did with its
//! instance: success only once stored and announced; a permanent failure with the
//! reason when the instance is refused (it is in quarantine); "out of resources"
//! when a dependency is down, which tells the sender to try again later.

use fxtriage_dicom::RejectionKind;

use super::command::{Response, status};
use crate::{IngestError, Stored};

pub(crate) fn store_response(outcome: &Result<Stored, IngestError>) -> Response {
    match outcome {
        Ok(_) => Response::success(),
        Err(IngestError::Rejected { rejection, .. }) => {
            let status = match rejection.kind {
                // The association accepted the SOP class the command named, so a data set
                // of a class the site refuses does not match the SOP class it was sent as.
                RejectionKind::SopClassNotAccepted => status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                _ => status::CANNOT_UNDERSTAND,
            };
            Response::failure(status, rejection.to_string())
        }
        Err(IngestError::Unavailable { stage, .. }) => Response::failure(
            status::OUT_OF_RESOURCES,
            format!("{stage} unavailable, retry later"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fxtriage_dicom::Rejection;
    use fxtriage_objstore::ObjectKey;

    fn rejected(kind: RejectionKind, message: &str) -> Result<Stored, IngestError> {
        Err(IngestError::Rejected {
            rejection: Rejection::new(kind, message),
            quarantine_key: ObjectKey::parse("quarantine/site/2024-01-01/x.dcm").expect("key"),
            sop_class_uid: None,
            sop_instance_uid: None,
        })
    }

    #[test]
    fn a_refused_instance_gets_a_permanent_failure_with_its_reason() {
        let response = store_response(&rejected(RejectionKind::NoPixelData, "no PixelData"));
        assert_eq!(response.status, 0xC000);
        assert_eq!(
            response.error_comment.as_deref(),
            Some("no-pixel-data: no PixelData")
        );

        let response = store_response(&rejected(
            RejectionKind::SopClassNotAccepted,
            "SOP class 1.2.3 is not accepted",
        ));
        assert_eq!(response.status, 0xA900);
    }

    #[test]
    fn an_unavailable_dependency_asks_the_sender_to_retry() {
        let response = store_response(&Err(IngestError::Unavailable {
            stage: "bus",
            message: "broker down".into(),
        }));
        assert_eq!(response.status, 0xA700);
        assert_eq!(
            response.error_comment.as_deref(),
            Some("bus unavailable, retry later")
        );
    }
}
