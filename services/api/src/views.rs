//! The JSON the API answers with, and the parsing of what clients send. Times are
//! RFC 3339 in UTC; durations are whole seconds.

use bytes::Bytes;
use fxtriage_worklist::store::StudyRow;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ApiError, ApiResult};

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// One worklist item as of `now` (the database clock of the read).
#[derive(Debug, Clone, Serialize)]
pub struct WorklistItem {
    /// The site of the study (a group's worklist mixes several).
    pub site_id: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub urgency: &'static str,
    pub urgency_source: &'static str,
    pub ai_result: &'static str,
    /// Maximum over the analysed eligible images; absent before any was analysed.
    pub probability: Option<f32>,
    pub body_parts: Vec<String>,
    pub arrived_at: String,
    pub deadline: String,
    /// Since arrival.
    pub waited_seconds: i64,
    /// Negative once the deadline has passed.
    pub seconds_to_deadline: i64,
    pub overdue: bool,
    pub state: &'static str,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<String>,
    pub reported_at: Option<String>,
    /// Bumped by every visible change; the same number as in worklist events.
    pub revision: i64,
    pub updated_at: String,
}

impl WorklistItem {
    pub fn new(study: &StudyRow, now: OffsetDateTime) -> Self {
        let to_deadline = (study.deadline - now).whole_seconds();
        Self {
            site_id: study.site_id.clone(),
            study_instance_uid: study.study_instance_uid.clone(),
            accession_number: study.accession_number.clone(),
            urgency: study.urgency.as_str(),
            urgency_source: study.urgency_source.as_str(),
            ai_result: study.ai_result.as_str(),
            probability: study.probability,
            body_parts: study.body_parts.clone(),
            arrived_at: rfc3339(study.arrived_at),
            deadline: rfc3339(study.deadline),
            waited_seconds: (now - study.arrived_at).whole_seconds().max(0),
            seconds_to_deadline: to_deadline,
            overdue: study.reported_at.is_none() && study.deadline < now,
            state: study.state.as_str(),
            claimed_by: study.claimed_by.clone(),
            claim_expires_at: study.claim_expires_at.map(rfc3339),
            reported_at: study.reported_at.map(rfc3339),
            revision: study.revision,
            updated_at: rfc3339(study.updated_at),
        }
    }
}

/// A JSON request body; an empty body is the type's default, so
/// `POST .../claim` with no body claims as the token itself.
pub fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("malformed JSON body: {error}")))
}

/// The body of claim, claim-next, release and report.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderBody {
    /// Who reads, as the client names them (a radiologist's login); the token id
    /// when absent.
    pub reader: Option<String>,
}

/// The longest reader name accepted.
const MAX_READER_LEN: usize = 128;

/// The reader named in the body, checked, or the token's own id.
/// How the names of people signed in through the identity provider begin.
pub const OIDC_PREFIX: &str = "oidc:";

pub fn reader_name(requested: Option<&str>, token_id: &str) -> ApiResult<String> {
    let Some(reader) = requested else {
        return Ok(token_id.to_owned());
    };
    let reader = reader.trim();
    if reader.is_empty() || reader.chars().count() > MAX_READER_LEN {
        return Err(ApiError::bad_request(format!(
            "reader must be 1 to {MAX_READER_LEN} characters"
        )));
    }
    if reader.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "reader must not contain control characters",
        ));
    }
    // Names of people signed in through the identity provider are theirs:
    // a service token cannot act as one of them.
    if reader.starts_with(OIDC_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "reader must not begin with {OIDC_PREFIX:?}, which names people signed in through the identity provider"
        )));
    }
    Ok(reader.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_is_the_default_and_a_malformed_one_is_a_bad_request() {
        let empty: ReaderBody = parse_body(&Bytes::from_static(b" \n")).expect("default");
        assert_eq!(empty.reader, None);
        let named: ReaderBody =
            parse_body(&Bytes::from_static(br#"{"reader":"dr-a"}"#)).expect("parsed");
        assert_eq!(named.reader.as_deref(), Some("dr-a"));
        for bad in [&b"{"[..], b"[]", br#"{"reader":1}"#, br#"{"reeder":"x"}"#] {
            let error = parse_body::<ReaderBody>(&Bytes::copy_from_slice(bad)).expect_err("bad");
            assert_eq!(error.status, 400);
        }
    }

    #[test]
    fn reader_names_are_checked_and_default_to_the_token() {
        assert_eq!(reader_name(None, "tok-1").expect("ok"), "tok-1");
        assert_eq!(reader_name(Some(" dr-a "), "tok-1").expect("ok"), "dr-a");
        assert!(reader_name(Some(""), "tok-1").is_err());
        assert!(reader_name(Some("a\nb"), "tok-1").is_err());
        assert!(reader_name(Some(&"x".repeat(129)), "tok-1").is_err());
        assert!(
            reader_name(Some("oidc:alice (u-1)"), "tok-1").is_err(),
            "a person's name is theirs"
        );
    }
}
