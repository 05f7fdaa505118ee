//! The UIDs in a study or instance URL, checked once at the edge: a malformed UID
//! is a 400, never a query. The site segment is checked by authentication.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use fxtriage_core::DicomUid;

use crate::error::{ApiError, ApiResult};

/// `/api/v1/sites/{site}/studies/{study}/...`
#[derive(Debug, Clone)]
pub struct StudyPath {
    pub study: String,
}

impl StudyPath {
    pub fn parse(path: Result<Path<(String, String)>, PathRejection>) -> ApiResult<Self> {
        let Path((_site, study)) = path.map_err(malformed)?;
        Ok(Self {
            study: uid(&study, "StudyInstanceUID")?,
        })
    }
}

/// `/api/v1/sites/{site}/studies/{study}/instances/{sop}/...`
#[derive(Debug, Clone)]
pub struct InstancePath {
    pub study: String,
    pub sop: String,
}

impl InstancePath {
    pub fn parse(path: Result<Path<(String, String, String)>, PathRejection>) -> ApiResult<Self> {
        let Path((_site, study, sop)) = path.map_err(malformed)?;
        Ok(Self {
            study: uid(&study, "StudyInstanceUID")?,
            sop: uid(&sop, "SOPInstanceUID")?,
        })
    }
}

fn malformed(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("malformed URL: {}", rejection.body_text()))
}

fn uid(value: &str, what: &str) -> ApiResult<String> {
    // Stored UIDs are exactly what DicomUid accepts, without padding.
    match DicomUid::parse(value) {
        Ok(parsed) if parsed.as_str() == value => Ok(value.to_owned()),
        Ok(_) | Err(_) => Err(ApiError::bad_request(format!(
            "{what} must be digits and dots, at most 64 characters"
        ))),
    }
}
