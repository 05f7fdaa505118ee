//! C-STORE SCU: one object to one DICOM peer over one association (dicom-ul).
//!
//! Every way a store can end is told apart, because the outbox acts on it: a
//! peer that is away, busy or out of resources is tried again later; a peer
//! that refuses the object for good (it does not take the SOP class, it cannot
//! understand the data set, it does not know our AE title) is not retried
//! until an operator has looked, and the reason is kept for them.

use std::time::Duration;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex as _;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{
    AssociationRJResult, PDataValue, PDataValueType, PresentationContextResultReason,
};
use dicom_ul::{ClientAssociationOptions, Pdu};
use fxtriage_sites::destinations::DicomPeer;
use tokio::io::AsyncWriteExt as _;

/// How long one store may take, association to release.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;

/// A stored object: the peer's status (0x0000, or a warning 0xB000, 0xB006, 0xB007).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    /// The peer's Error Comment with a warning, if any.
    pub comment: Option<String>,
}

/// Why an object was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Not reachable, timed out, the association was dropped, or the peer is
    /// busy (transient rejection, out of resources): worth trying again later.
    #[error("{0}")]
    Retry(String),
    /// Refused for good: trying again without a change would be refused again.
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retry(_))
    }
}

/// Stores `dataset` (SOP Class and Instance UIDs inside) on `peer`.
pub async fn store(peer: &DicomPeer, dataset: &InMemDicomObject) -> Result<Stored, StoreError> {
    let mut stored = None;
    store_all(peer, std::slice::from_ref(dataset), |_, status| {
        stored = Some(status);
    })
    .await?;
    Ok(stored.expect("one object stored, one status"))
}

/// Stores `datasets` on `peer` in order over one association (as a modality
/// sends a study), with one presentation context per SOP class; `stored` hears
/// of each object as its C-STORE response arrives (its index and status). The
/// first object not stored ends the association with its error; the ones
/// before it are stored. `STORE_TIMEOUT` bounds each object.
pub async fn store_all(
    peer: &DicomPeer,
    datasets: &[InMemDicomObject],
    stored: impl FnMut(usize, Stored),
) -> Result<(), StoreError> {
    let bound = STORE_TIMEOUT * u32::try_from(datasets.len().max(1)).unwrap_or(u32::MAX);
    tokio::time::timeout(bound, store_unbounded(peer, datasets, stored))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Retry(format!(
                "no answer from {} within {} s",
                describe(peer),
                bound.as_secs()
            )))
        })
}

fn describe(peer: &DicomPeer) -> String {
    format!("{}@{}:{}", peer.ae_title, peer.host, peer.port)
}

fn uid(dataset: &InMemDicomObject, tag: Tag) -> Result<String, StoreError> {
    dataset
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|element| element.to_str().ok())
        .map(|value| value.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| StoreError::Refused(format!("the object has no {tag} UID")))
}

async fn store_unbounded(
    peer: &DicomPeer,
    datasets: &[InMemDicomObject],
    mut stored: impl FnMut(usize, Stored),
) -> Result<(), StoreError> {
    let mut objects = Vec::with_capacity(datasets.len());
    for dataset in datasets {
        objects.push((
            dataset,
            uid(dataset, tags::SOP_CLASS_UID)?,
            uid(dataset, tags::SOP_INSTANCE_UID)?,
        ));
    }
    let mut classes: Vec<&str> = objects.iter().map(|(_, class, _)| class.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    let address = format!("{}:{}", peer.host, peer.port);
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.as_str())
        .called_ae_title(peer.ae_title.as_str());
    for class in &classes {
        options = options.with_presentation_context(
            *class,
            vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        );
    }
    let association = options
        .connection_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .establish_async(address.as_str())
        .await;
    let mut association = match association {
        Ok(association) => association,
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
            let reason = format!(
                "{} rejected the association ({:?}, {:?})",
                describe(peer),
                association_rj.result,
                association_rj.source
            );
            return Err(match association_rj.result {
                AssociationRJResult::Transient => StoreError::Retry(reason),
                AssociationRJResult::Permanent => StoreError::Refused(reason),
            });
        }
        Err(dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => {
            return Err(StoreError::Refused(format!(
                "{} does not accept SOP class {}",
                describe(peer),
                classes.join(", ")
            )));
        }
        Err(error) => {
            return Err(StoreError::Retry(format!(
                "cannot associate with {}: {}",
                describe(peer),
                crate::chain(&error)
            )));
        }
    };
    // The accepted contexts, each with the SOP class it was proposed for.
    let accepted: Vec<_> = association
        .presentation_contexts()
        .iter()
        .filter(|context| context.reason == PresentationContextResultReason::Acceptance)
        .cloned()
        .collect();
    let lost = |error: &(dyn std::error::Error + 'static)| {
        StoreError::Retry(format!(
            "the association with {} broke: {}",
            describe(peer),
            crate::chain(error)
        ))
    };
    for (index, (dataset, sop_class, sop_instance)) in objects.iter().enumerate() {
        let Some(context) = accepted
            .iter()
            .find(|context| context.abstract_syntax.trim_end_matches('\0') == sop_class.as_str())
        else {
            let _ = association.abort().await;
            return Err(StoreError::Refused(format!(
                "{} does not accept SOP class {sop_class}",
                describe(peer)
            )));
        };
        let transfer_syntax = TransferSyntaxRegistry
            .get(context.transfer_syntax.trim_end_matches('\0'))
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "{} chose transfer syntax {}, which fxtriage cannot write",
                    describe(peer),
                    context.transfer_syntax
                ))
            })?;
        let mut encoded = Vec::new();
        dataset
            .write_dataset_with_ts(&mut encoded, transfer_syntax)
            .map_err(|error| StoreError::Refused(format!("cannot encode the object: {error}")))?;
        let message_id = u16::try_from(index % usize::from(u16::MAX)).unwrap_or(0) + 1;
        association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context.id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: store_request(message_id, sop_class, sop_instance),
                }],
            })
            .await
            .map_err(|error| lost(&error))?;
        {
            let mut writer = association.send_pdata(context.id);
            writer
                .write_all(&encoded)
                .await
                .map_err(|error| lost(&error))?;
            writer.finish().await.map_err(|error| lost(&error))?;
        }
        let response = receive_command(&mut association)
            .await
            .map_err(|error| lost(error.as_ref()))?;
        match interpret(peer, &response) {
            Ok(status) => stored(index, status),
            Err(error) => {
                let _ = association.release().await;
                return Err(error);
            }
        }
    }
    let _ = association.release().await;
    Ok(())
}

/// The C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian.
fn store_request(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    let command = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(C_STORE_RQ),
        ),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
        // Medium priority.
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0_u16)),
        // A data set follows.
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance),
        ),
    ]);
    let mut encoded = Vec::new();
    command
        .write_dataset_with_ts(&mut encoded, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("a command set of fixed elements encodes");
    encoded
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The next command set the peer sends, from one or more P-DATA fragments.
async fn receive_command<S>(
    association: &mut dicom_ul::association::AsyncClientAssociation<S>,
) -> Result<InMemDicomObject, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut command = Vec::new();
    loop {
        match association.receive().await? {
            Pdu::PData { data } => {
                for value in data {
                    if value.value_type != PDataValueType::Command {
                        return Err("the peer sent a data set where a response was due".into());
                    }
                    command.extend_from_slice(&value.data);
                    if value.is_last {
                        return Ok(InMemDicomObject::read_dataset_with_ts(
                            command.as_slice(),
                            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                        )?);
                    }
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(format!("the peer aborted the association ({source:?})").into());
            }
            Pdu::ReleaseRQ => return Err("the peer released the association early".into()),
            other => return Err(format!("unexpected PDU {other:?}").into()),
        }
    }
}

/// What a C-STORE-RSP status means for the outbox (PS3.4 B.2.3, PS3.7 C).
fn interpret(peer: &DicomPeer, response: &InMemDicomObject) -> Result<Stored, StoreError> {
    let unsigned = |tag: Tag| {
        response
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|element| element.to_int::<u16>().ok())
    };
    let comment = response
        .element_opt(tags::ERROR_COMMENT)
        .ok()
        .flatten()
        .and_then(|element| element.to_str().ok())
        .map(|text| text.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|text| !text.is_empty());
    if unsigned(tags::COMMAND_FIELD) != Some(C_STORE_RSP) {
        return Err(StoreError::Retry(format!(
            "{} answered with a command that is not a C-STORE response",
            describe(peer)
        )));
    }
    let Some(status) = unsigned(tags::STATUS) else {
        return Err(StoreError::Retry(format!(
            "{} answered without a status",
            describe(peer)
        )));
    };
    let why = comment
        .as_deref()
        .map(|comment| format!(": {comment}"))
        .unwrap_or_default();
    match status {
        0x0000 | 0xB000 | 0xB006 | 0xB007 => Ok(Stored { status, comment }),
        // Refused: out of resources; and 0xA7xx generally. Busy peers recover.
        0xA700..=0xA7FF | 0x0213 => Err(StoreError::Retry(format!(
            "{} is out of resources (status 0x{status:04X}){why}",
            describe(peer)
        ))),
        _ => Err(StoreError::Refused(format!(
            "{} refused the object (status 0x{status:04X}, {}){why}",
            describe(peer),
            status_meaning(status)
        ))),
    }
}

fn status_meaning(status: u16) -> &'static str {
    match status {
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0210 => "duplicate invocation",
        0x0211 => "unrecognized operation",
        0xA900..=0xA9FF => "data set does not match SOP class",
        0xC000..=0xCFFF => "cannot understand",
        _ => "failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> DicomPeer {
        DicomPeer {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            calling_ae_title: "FXTRIAGE".into(),
            objects: Vec::new(),
        }
    }

    fn response(status: u16, comment: Option<&str>) -> InMemDicomObject {
        let mut object = InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(C_STORE_RSP),
            ),
            DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)),
        ]);
        if let Some(comment) = comment {
            object.put(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from(comment),
            ));
        }
        object
    }

    #[test]
    fn each_status_is_stored_retried_or_refused() {
        assert_eq!(
            interpret(&peer(), &response(0x0000, None)),
            Ok(Stored {
                status: 0,
                comment: None
            })
        );
        assert!(interpret(&peer(), &response(0xB007, Some("coerced"))).is_ok());
        let busy = interpret(&peer(), &response(0xA702, Some("disk full"))).expect_err("busy");
        assert!(busy.is_retryable());
        assert!(busy.to_string().contains("0xA702"), "{busy}");
        assert!(busy.to_string().contains("disk full"), "{busy}");
        for status in [0x0122, 0xA900, 0xC000, 0x0124] {
            let refused = interpret(&peer(), &response(status, None)).expect_err("refused");
            assert!(!refused.is_retryable(), "0x{status:04X}");
            assert!(refused.to_string().contains(&format!("0x{status:04X}")));
        }
        let mut not_a_response = response(0x0000, None);
        not_a_response.put(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(0x8030_u16),
        ));
        assert!(interpret(&peer(), &not_a_response).is_err());
    }

    #[test]
    fn the_request_names_the_object() {
        let encoded = store_request(7, "1.2.3", "4.5.6");
        let command = InMemDicomObject::read_dataset_with_ts(
            encoded.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("parse");
        let text = |tag| {
            command
                .element(tag)
                .expect("present")
                .to_str()
                .expect("text")
                .trim_end_matches('\0')
                .to_owned()
        };
        assert_eq!(text(tags::AFFECTED_SOP_CLASS_UID), "1.2.3");
        assert_eq!(text(tags::AFFECTED_SOP_INSTANCE_UID), "4.5.6");
        assert_eq!(
            command
                .element(tags::MESSAGE_ID)
                .expect("id")
                .to_int::<u16>()
                .expect("int"),
            7
        );
    }
}
