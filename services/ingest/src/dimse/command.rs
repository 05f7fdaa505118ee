//! DIMSE command sets (PS3.7 chapter 9 and annex E): reading a request, writing a
//! response. Command sets are always Implicit VR Little Endian.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

pub(crate) const C_STORE_RQ: u16 = 0x0001;
pub(crate) const C_ECHO_RQ: u16 = 0x0030;
pub(crate) const C_CANCEL_RQ: u16 = 0x0FFF;
/// A response's command field is its request's with this bit set.
const RESPONSE_BIT: u16 = 0x8000;
/// CommandDataSetType value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// Status codes answered by this SCP (PS3.4 annex B.2.3, PS3.7 annex C).
pub(crate) mod status {
    pub(crate) const SUCCESS: u16 = 0x0000;
    /// Refused: SOP class not supported.
    pub(crate) const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Unrecognized operation.
    pub(crate) const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Refused: out of resources. The sender may try again later.
    pub(crate) const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub(crate) const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: cannot understand.
    pub(crate) const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// The parts of a request command set this SCP acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub command_field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub has_data_set: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("the command set cannot be parsed: {0}")]
    Parse(String),
    #[error("the command set has no {0}")]
    Missing(&'static str),
}

impl Request {
    pub(crate) fn parse(command_set: &[u8]) -> Result<Self, CommandError> {
        let object = InMemDicomObject::read_dataset_with_ts(
            command_set,
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .map_err(|error| CommandError::Parse(error.to_string()))?;
        let unsigned = |tag: Tag| {
            object
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|element| element.to_int::<u16>().ok())
        };
        let uid = |tag: Tag| {
            let element = object.element_opt(tag).ok().flatten()?;
            let value = element.to_str().ok()?;
            let trimmed = value.trim_end_matches(['\0', ' ']).trim_start();
            (!trimmed.is_empty()).then(|| trimmed.to_owned())
        };
        let command_field = unsigned(tags::COMMAND_FIELD)
            .ok_or(CommandError::Missing("CommandField (0000,0100)"))?;
        let message_id =
            unsigned(tags::MESSAGE_ID).ok_or(CommandError::Missing("MessageID (0000,0110)"))?;
        let data_set_type = unsigned(tags::COMMAND_DATA_SET_TYPE)
            .ok_or(CommandError::Missing("CommandDataSetType (0000,0800)"))?;
        Ok(Self {
            command_field,
            message_id,
            affected_sop_class_uid: uid(tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance_uid: uid(tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: data_set_type != NO_DATA_SET,
        })
    }

    pub(crate) fn describe(&self) -> &'static str {
        match self.command_field {
            C_STORE_RQ => "C-STORE-RQ",
            C_ECHO_RQ => "C-ECHO-RQ",
            _ => "an unsupported DIMSE request",
        }
    }
}

/// A response to `request`: status, optional error comment. Encoded without a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub error_comment: Option<String>,
}

/// ErrorComment is LO: at most 64 characters, no backslash, no control characters.
const ERROR_COMMENT_MAX_CHARS: usize = 64;

impl Response {
    pub(crate) fn success() -> Self {
        Self {
            status: status::SUCCESS,
            error_comment: None,
        }
    }

    pub(crate) fn failure(status: u16, comment: impl AsRef<str>) -> Self {
        let cleaned: String = comment
            .as_ref()
            .chars()
            .map(|c| if c == '\\' || c.is_control() { ' ' } else { c })
            .take(ERROR_COMMENT_MAX_CHARS)
            .collect();
        Self {
            status,
            error_comment: Some(cleaned.trim_end().to_owned()),
        }
    }

    /// The encoded command set answering `request`.
    pub(crate) fn encode(&self, request: &Request) -> Vec<u8> {
        let mut elements = vec![
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(request.command_field | RESPONSE_BIT),
            ),
            DataElement::new(
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                VR::US,
                PrimitiveValue::from(request.message_id),
            ),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(NO_DATA_SET),
            ),
            DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(self.status)),
        ];
        if let Some(uid) = &request.affected_sop_class_uid {
            elements.push(DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(uid.as_str()),
            ));
        }
        if let Some(uid) = &request.affected_sop_instance_uid {
            elements.push(DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid.as_str()),
            ));
        }
        if let Some(comment) = self
            .error_comment
            .as_deref()
            .filter(|comment| !comment.is_empty())
        {
            elements.push(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from(comment),
            ));
        }
        let command = InMemDicomObject::command_from_element_iter(elements);
        let mut encoded = Vec::new();
        command
            .write_dataset_with_ts(&mut encoded, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("a command set of plain values encodes into memory");
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_request(message_id: u16) -> Vec<u8> {
        let command = InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1"),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(C_STORE_RQ),
            ),
            DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
            DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0_u16)),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                PrimitiveValue::from(0x0000_u16),
            ),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
        ]);
        let mut encoded = Vec::new();
        command
            .write_dataset_with_ts(&mut encoded, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("encode");
        encoded
    }

    #[test]
    fn a_store_request_is_read_and_answered_with_its_message_id_and_uids() {
        let request = Request::parse(&store_request(7)).expect("parsed");
        assert_eq!(request.command_field, C_STORE_RQ);
        assert_eq!(request.message_id, 7);
        assert!(request.has_data_set);
        assert_eq!(
            request.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.4")
        );

        let encoded = Response::failure(status::CANNOT_UNDERSTAND, "no-pixel-data: the instance has \\ no PixelData\n and a very long tail that goes past sixty-four characters")
            .encode(&request);
        let response = InMemDicomObject::read_dataset_with_ts(
            encoded.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .expect("decodes");
        let value = |tag| {
            response
                .element(tag)
                .expect("element")
                .to_int::<u32>()
                .expect("int")
        };
        assert_eq!(value(tags::COMMAND_FIELD), 0x8001);
        assert_eq!(value(tags::MESSAGE_ID_BEING_RESPONDED_TO), 7);
        assert_eq!(value(tags::STATUS), 0xC000);
        assert_eq!(value(tags::COMMAND_DATA_SET_TYPE), 0x0101);
        assert_eq!(
            value(tags::COMMAND_GROUP_LENGTH) as usize,
            encoded.len() - 12,
            "the group length counts everything after its own element"
        );
        let comment = response
            .element(tags::ERROR_COMMENT)
            .expect("comment")
            .to_str()
            .expect("text");
        assert!(
            comment.len() <= 64 && !comment.contains('\\') && !comment.contains('\n'),
            "{comment:?}"
        );
        assert!(comment.starts_with("no-pixel-data"), "{comment}");
    }

    #[test]
    fn garbage_is_a_command_error_not_a_panic() {
        assert!(Request::parse(&[0xFF; 7]).is_err());
        assert!(Request::parse(&[]).is_err());
    }
}
