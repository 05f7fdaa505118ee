//! DICOMweb STOW-RS, the Studies Store transaction (PS3.18 10.5):
//!
//! ```text
//! POST /dicomweb/sites/{site}/studies
//! POST /dicomweb/sites/{site}/studies/{study}
//! Authorization: Bearer <token>
//! Content-Type: multipart/related; type="application/dicom"; boundary=...
//! ```
//!
//! Each part is one Part 10 instance. Parts are read one after the other, each
//! streamed (in memory up to [`StowLimits::memory_threshold_bytes`], spooled to a
//! temporary file beyond) and handed to [`Ingestor::accept`], so an instance is
//! stored and announced before the next part is read, and the response reports
//! each one as it really ended.
//!
//! Where the standard leaves room, fxtriage answers as follows:
//! - Status: 200 when every instance is stored, 202 when some are, 409 when none
//!   is, except 503 (with `Retry-After`) when every failure is a lack of
//!   resources (store or bus unavailable): nothing in the request conflicts, and
//!   HTTP clients retry a 503 on their own. 400 for a malformed body or study
//!   UID, 401 without a valid token, 404 when the token's site or group does not
//!   cover the site in the URL (as for a site that does not exist), 403 when the
//!   token's role may not store (STOW-RS needs `sender` or `admin`; see
//!   `fxtriage_sites::credentials`), 406 for an `Accept` without
//!   `application/dicom+json`, 413 for a body over [`StowLimits::max_request_bytes`]
//!   or more parts than [`StowLimits::max_parts`], 415 for another media type,
//!   429 with `Retry-After` when the site has `intake.max_stow_requests` in
//!   progress already, or after too many invalid tokens from the address.
//! - A request that ends early (malformed multipart, size or part limit) after some
//!   instances were stored is answered like a complete one (202), with a Failed
//!   SOP item without UIDs that says where it stopped, so the sender still learns
//!   what was stored. If nothing was stored it is a plain 400 or 413.
//! - Failure Reason (0008,1197): see [`response::failure_reason_of`]; A700 for a
//!   retryable failure; A900 for an instance of another study than the one in
//!   the URL (it is neither stored nor quarantined: the instance may be fine,
//!   the request is wrong).
//! - Every Failed SOP item carries the reason in words in a private block,
//!   creator "FXTRIAGE" at (0009,0010): (0009,1001) LO the kind (as in quarantine
//!   records), (0009,1002) LT the message. A dataset may carry private
//!   attributes (PS3.5 7.8); Error Comment (0000,0902) belongs to the command
//!   group and has no place in a dataset.
//! - Referenced/Failed SOP items name the SOP class and instance where they are
//!   known (read from the instance's header); an item for bytes that are not an
//!   instance has no UIDs rather than invented ones.
//! - Retrieve URL (0008,1190), Type 2, is present and empty: fxtriage does not
//!   serve WADO-RS.
//! - A part over the site's `limits.max_instance_bytes` fails (C000,
//!   "instance-too-large") and is not quarantined: keeping oversize bytes is what
//!   the limit prevents. The request goes on with the next part.

mod auth;
mod header;
mod media_type;
mod parts;
mod response;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use fxtriage_core::DicomUid;
use tracing::Instrument as _;

use deadpool_postgres::Pool;

use crate::intake::SiteGate;
use crate::{IngestError, Ingestor, InstanceSource, Sender, SiteConfig, SiteRegistry};

pub(crate) use header::HeaderUids;
pub use response::{failure_reason, failure_reason_of, private_tags};

use parts::{PartError, PartLimits, ReceivedPart};
use response::{Failure, PartOutcome, StoreResponse};

/// Bounds on a Store request, besides each site's `limits.max_instance_bytes`.
#[derive(Debug, Clone)]
pub struct StowLimits {
    /// The largest request body accepted (all parts together).
    pub max_request_bytes: u64,
    /// Parts up to this size are held in memory; larger ones are spooled to a file.
    pub memory_threshold_bytes: u64,
    /// Where large parts are spooled; the system's temporary directory if `None`.
    pub spool_dir: Option<PathBuf>,
    /// The most parts one request may hold: each costs a line in the answer
    /// and, for a refused instance, a quarantine record, so 100,000 tiny parts
    /// would cost far more than their bytes. A request with more is read up to
    /// this many and answered 413 (what was stored before is listed).
    pub max_parts: usize,
    /// Invalid tokens allowed per client address and per token prefix before
    /// they are answered 429 for the rest of the window.
    pub failed_auth: fxtriage_sites::ThrottleLimits,
}

impl Default for StowLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 * 1024 * 1024 * 1024,
            memory_threshold_bytes: 8 * 1024 * 1024,
            spool_dir: None,
            max_parts: 1000,
            failed_auth: fxtriage_sites::ThrottleLimits::default(),
        }
    }
}

/// The STOW-RS routes with the default [`StowLimits`]; tokens are checked
/// against the credentials of `database`.
pub fn router(ingestor: Ingestor, sites: SiteRegistry, database: Pool) -> axum::Router {
    router_with_limits(ingestor, sites, database, StowLimits::default())
}

pub fn router_with_limits(
    ingestor: Ingestor,
    sites: SiteRegistry,
    database: Pool,
    limits: StowLimits,
) -> axum::Router {
    let state = StowState {
        ingestor,
        sites,
        database,
        throttle: Arc::new(fxtriage_sites::FailedAuthThrottle::new(limits.failed_auth)),
        per_site: SiteGate::default(),
        limits: Arc::new(limits),
    };
    axum::Router::new()
        .route("/dicomweb/sites/{site}/studies", post(store_instances))
        .route(
            "/dicomweb/sites/{site}/studies/{study}",
            post(store_instances_of_study),
        )
        // Bodies are streamed and bounded by `StowLimits`, not buffered.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[derive(Debug, Clone)]
struct StowState {
    ingestor: Ingestor,
    sites: SiteRegistry,
    database: Pool,
    limits: Arc<StowLimits>,
    throttle: Arc<fxtriage_sites::FailedAuthThrottle>,
    /// Requests in progress per site, against each site's `intake.max_stow_requests`.
    per_site: SiteGate,
}

async fn store_instances(
    State(state): State<StowState>,
    Path(site): Path<String>,
    request: Request,
) -> Response {
    store(state, site, None, request).await
}

async fn store_instances_of_study(
    State(state): State<StowState>,
    Path((site, study)): Path<(String, String)>,
    request: Request,
) -> Response {
    store(state, site, Some(study), request).await
}

async fn store(
    state: StowState,
    site_id: String,
    study: Option<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    // Authorisation comes first: an unauthorised caller learns nothing else.
    let asker = auth::Asker {
        headers: &parts.headers,
        address: peer.map(|peer| peer.ip()),
    };
    let authorised = auth::authorise(
        asker,
        &site_id,
        &state.sites,
        &state.database,
        &state.throttle,
    )
    .await;
    let (site, credential) = match authorised {
        Ok(authorised) => authorised,
        Err(refused) => return refused,
    };
    let _site_slot = match state
        .per_site
        .enter(&site.id, site.intake.max_stow_requests)
    {
        Ok(slot) => slot,
        Err(in_progress) => {
            tracing::warn!(site = %site.id, in_progress, "STOW-RS request refused: the site's limit of requests in progress (intake.max_stow_requests) is reached");
            return busy();
        }
    };
    let sender = Sender::StowRs {
        token_id: credential.token_id,
        peer,
    };

    let expected_study = match study.as_deref().map(DicomUid::parse) {
        None => None,
        Some(Ok(uid)) => Some(uid.to_string()),
        Some(Err(error)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the study in the URL is not a Study Instance UID: {error}"),
            )
                .into_response();
        }
    };
    if !media_type::accepts_dicom_json(header_text(&parts.headers, ACCEPT)) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!("the response is {}", media_type::DICOM_JSON),
        )
            .into_response();
    }
    let boundary = match media_type::multipart_boundary(header_text(&parts.headers, CONTENT_TYPE)) {
        Ok(boundary) => boundary,
        Err(media_type::RequestTypeError::Unsupported(message)) => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
        }
        Err(media_type::RequestTypeError::NoBoundary) => {
            return (
                StatusCode::BAD_REQUEST,
                "the multipart/related Content-Type has no boundary",
            )
                .into_response();
        }
    };
    let declared_length =
        header_text(&parts.headers, CONTENT_LENGTH).and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > state.limits.max_request_bytes) {
        return too_large(state.limits.max_request_bytes);
    }

    let span = tracing::info_span!("stow.store", site = %site.id, %sender);
    let transaction = Transaction {
        ingestor: &state.ingestor,
        site: &site,
        sender: &sender,
        expected_study: expected_study.as_deref(),
        part_limits: PartLimits {
            max_instance_bytes: site.limits.max_instance_bytes,
            memory_threshold: state.limits.memory_threshold_bytes,
            spool_dir: state.limits.spool_dir.clone(),
        },
        max_request_bytes: state.limits.max_request_bytes,
        max_parts: state.limits.max_parts,
    };
    transaction.run(body, boundary).instrument(span).await
}

fn header_text(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The site has as many requests in progress as it may: retry in a moment.
fn busy() -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        "this site has as many STOW-RS requests in progress as it may (intake.max_stow_requests); retry after the Retry-After seconds",
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

fn too_large(limit: u64) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request is larger than the limit of {limit} bytes; send fewer instances per request"),
    )
        .into_response()
}

/// One Store request of an authorised sender.
struct Transaction<'a> {
    ingestor: &'a Ingestor,
    site: &'a SiteConfig,
    sender: &'a Sender,
    expected_study: Option<&'a str>,
    part_limits: PartLimits,
    max_request_bytes: u64,
    max_parts: usize,
}

/// Why the request's parts stopped before its end.
enum CutShort {
    Malformed(String),
    TooLarge,
    TooManyParts,
}

impl From<multer::Error> for CutShort {
    fn from(error: multer::Error) -> Self {
        match error {
            multer::Error::StreamSizeExceeded { .. } => CutShort::TooLarge,
            other => CutShort::Malformed(format!("malformed multipart body: {other}")),
        }
    }
}

impl Transaction<'_> {
    async fn run(&self, body: axum::body::Body, boundary: String) -> Response {
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(self.max_request_bytes));
        let mut multipart =
            multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
        let mut response = StoreResponse::default();
        let mut cut_short = None;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(error) => {
                    cut_short = Some(CutShort::from(error));
                    break;
                }
            };
            let part_number = response.outcomes.len() + 1;
            if part_number > self.max_parts {
                cut_short = Some(CutShort::TooManyParts);
                break;
            }
            let part_type = header_text(field.headers(), CONTENT_TYPE).map(str::to_owned);
            if !media_type::is_dicom_part(part_type.as_deref()) {
                response.outcomes.push(PartOutcome::Failed(Failure {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    reason: failure_reason::CANNOT_UNDERSTAND,
                    kind: "not-an-instance".into(),
                    message: format!(
                        "part {part_number} is {}, not {}",
                        part_type.unwrap_or_default(),
                        media_type::DICOM
                    ),
                }));
                continue;
            }
            let outcome = match parts::receive(field, &self.part_limits).await {
                Ok(received) => self.store_part(received, part_number).await,
                Err(PartError::Body(error)) => {
                    cut_short = Some(CutShort::from(error));
                    break;
                }
                Err(PartError::Spool(error)) => {
                    tracing::warn!(part_number, %error, "cannot spool a part");
                    PartOutcome::Failed(unavailable(None, "spool"))
                }
            };
            response.outcomes.push(outcome);
        }
        self.finish(response, cut_short)
    }

    fn finish(&self, mut response: StoreResponse, cut_short: Option<CutShort>) -> Response {
        let parts_read = response.outcomes.len();
        if let Some(cut_short) = cut_short {
            let (status, kind, message) = match cut_short {
                CutShort::Malformed(message) => {
                    (StatusCode::BAD_REQUEST, "malformed-request", message)
                }
                CutShort::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request-too-large",
                    format!(
                        "the request is larger than the limit of {} bytes",
                        self.max_request_bytes
                    ),
                ),
                CutShort::TooManyParts => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-many-parts",
                    format!(
                        "the request has more than {} parts; send fewer per request",
                        self.max_parts
                    ),
                ),
            };
            let message = format!(
                "{message}; the request was read up to part {}",
                parts_read + 1
            );
            tracing::warn!(parts_read, stored = response.stored(), %message, "STOW request ended early");
            if response.stored() == 0 {
                return (status, message).into_response();
            }
            response.outcomes.push(PartOutcome::Failed(Failure {
                sop_class_uid: None,
                sop_instance_uid: None,
                reason: failure_reason::CANNOT_UNDERSTAND,
                kind: kind.into(),
                message,
            }));
        } else if parts_read == 0 {
            return (StatusCode::BAD_REQUEST, "the request contains no instances").into_response();
        }
        let status = response.status();
        tracing::info!(
            parts = parts_read,
            stored = response.stored(),
            status = status.as_u16(),
            "STOW request answered"
        );
        response.into_response()
    }

    async fn store_part(&self, received: ReceivedPart, part_number: usize) -> PartOutcome {
        if received.over_limit {
            let uids = HeaderUids::read(&received.source).await.unwrap_or_default();
            self.ingestor
                .record_oversize_refusal(
                    self.site,
                    self.sender,
                    format!(
                        "STOW-RS part {part_number} over this site's limit of {} bytes",
                        self.part_limits.max_instance_bytes
                    ),
                    received.size,
                )
                .await;
            return PartOutcome::Failed(Failure {
                sop_class_uid: uids.sop_class,
                sop_instance_uid: uids.sop_instance,
                reason: failure_reason::CANNOT_UNDERSTAND,
                kind: fxtriage_dicom::RejectionKind::InstanceTooLarge
                    .as_str()
                    .into(),
                message: format!(
                    "part {part_number} has {} bytes, more than this site's limit of {}",
                    received.size, self.part_limits.max_instance_bytes
                ),
            });
        }
        if let Some(expected_study) = self.expected_study
            && let Some(uids) = HeaderUids::read(&received.source).await
            && let Some(study) = &uids.study_instance
            && study != expected_study
        {
            return PartOutcome::Failed(Failure {
                message: format!(
                    "the instance belongs to study {study}, not to {expected_study} named in the URL"
                ),
                sop_class_uid: uids.sop_class,
                sop_instance_uid: uids.sop_instance,
                reason: failure_reason::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                kind: "study-mismatch".into(),
            });
        }
        let outcome = self
            .ingestor
            .accept(self.site, received.source.clone(), self.sender)
            .await;
        match outcome {
            Ok(stored) => PartOutcome::Stored {
                sop_class_uid: stored.event.sop_class_uid,
                sop_instance_uid: stored
                    .event
                    .instance
                    .map(|instance| instance.sop_instance_uid)
                    .unwrap_or_default(),
            },
            Err(IngestError::Rejected {
                rejection,
                sop_class_uid,
                sop_instance_uid,
                ..
            }) => {
                let (sop_class_uid, sop_instance_uid) =
                    known_uids(&received.source, sop_class_uid, sop_instance_uid).await;
                PartOutcome::Failed(Failure {
                    sop_class_uid,
                    sop_instance_uid,
                    reason: failure_reason_of(rejection.kind),
                    kind: rejection.kind.as_str().into(),
                    message: rejection.message,
                })
            }
            Err(IngestError::Unavailable { stage, message }) => {
                tracing::warn!(part_number, stage, %message, "instance not stored; the sender may retry");
                let uids = HeaderUids::read(&received.source).await.unwrap_or_default();
                PartOutcome::Failed(unavailable(Some(uids), stage))
            }
        }
    }
}

/// The UIDs the pipeline reported, or else those the header states.
async fn known_uids(
    source: &InstanceSource,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
) -> (Option<String>, Option<String>) {
    if sop_class_uid.is_some() && sop_instance_uid.is_some() {
        return (sop_class_uid, sop_instance_uid);
    }
    let header = HeaderUids::read(source).await.unwrap_or_default();
    (
        sop_class_uid.or(header.sop_class),
        sop_instance_uid.or(header.sop_instance),
    )
}

/// A failure the sender should retry; the details stay in the log.
fn unavailable(uids: Option<HeaderUids>, stage: &str) -> Failure {
    let uids = uids.unwrap_or_default();
    Failure {
        sop_class_uid: uids.sop_class,
        sop_instance_uid: uids.sop_instance,
        reason: failure_reason::OUT_OF_RESOURCES,
        kind: "unavailable".into(),
        message: format!("temporarily unable to store the instance ({stage}); retry later"),
    }
}
