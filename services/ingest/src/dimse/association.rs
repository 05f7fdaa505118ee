//! One established association: DIMSE messages in, responses out, one operation at
//! a time (no asynchronous operations are negotiated). A C-STORE's data set goes
//! to a temporary file as it arrives and is handed to the ingest pipeline when its
//! last fragment is in. A protocol violation aborts this association only.

use std::net::SocketAddr;

use dicom_ul::Pdu;
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{
    PDataValue, PDataValueType, PresentationContextNegotiated, PresentationContextResultReason,
};
use tokio_util::sync::CancellationToken;

use super::command::{self, Request, Response, status};
use super::instance_file::{
    Buffering, IncomingInstance, InstanceFileError, MetaFields, part10_header,
};
use super::store_status::store_response;
use crate::{Ingestor, Sender, SiteConfig};

/// A command set is a few hundred bytes; anything far larger is not one.
const MAX_COMMAND_SET_BYTES: usize = 64 * 1024;

/// What an association works with.
#[derive(Debug)]
pub(crate) struct AssociationContext<'a> {
    site: &'a SiteConfig,
    ingestor: &'a Ingestor,
    buffering: &'a Buffering,
    calling_ae_title: String,
    called_ae_title: String,
    peer: SocketAddr,
    /// The same, as recorded with every instance.
    sender: Sender,
}

impl<'a> AssociationContext<'a> {
    pub(crate) fn new(
        site: &'a SiteConfig,
        ingestor: &'a Ingestor,
        buffering: &'a Buffering,
        calling_ae_title: String,
        called_ae_title: String,
        peer: SocketAddr,
    ) -> Self {
        let sender = Sender::Dimse {
            calling_ae_title: calling_ae_title.clone(),
            called_ae_title: called_ae_title.clone(),
            peer: Some(peer),
        };
        Self {
            site,
            ingestor,
            buffering,
            calling_ae_title,
            called_ae_title,
            peer,
            sender,
        }
    }
}

/// What happened on one association, for its summary log line.
#[derive(Debug, Default)]
struct Tally {
    echoes: u32,
    stored: u32,
    refused: u32,
    retry_later: u32,
}

impl Tally {
    fn count(&mut self, response: &Response) {
        match response.status {
            status::SUCCESS => self.stored += 1,
            status::OUT_OF_RESOURCES => self.retry_later += 1,
            _ => self.refused += 1,
        }
    }
}

/// Where the data set of the current C-STORE goes.
#[derive(Debug)]
enum Sink {
    /// Boxed: the file and its write buffer state are large next to the rest.
    File(Box<IncomingInstance>),
    /// Read and dropped; `response` answers once the last fragment is in.
    Discard(Response),
}

#[derive(Debug)]
enum Phase {
    Idle,
    /// Fragments of a command set received so far.
    Command {
        context_id: u8,
        bytes: Vec<u8>,
    },
    /// The data set that `request` announced is arriving.
    DataSet {
        context_id: u8,
        request: Request,
        sink: Sink,
    },
}

/// Why an association ended.
#[derive(Debug)]
enum Ending {
    Released,
    AbortedByPeer,
    ShutDown,
    /// The peer broke the protocol; the association is aborted.
    Violation(String),
    /// The connection failed or went quiet.
    Lost(String),
}

impl Ending {
    fn needs_abort(&self) -> bool {
        !matches!(self, Ending::Released | Ending::AbortedByPeer)
    }
}

/// The stream an association runs over: plain TCP, or DICOM TLS.
pub(crate) trait Transport:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Transport for S {}

/// Serves `association` until it is released, aborted or lost, or until `shutdown`
/// is cancelled while no operation is in progress.
pub(crate) async fn serve_association<S: Transport>(
    mut association: AsyncServerAssociation<S>,
    context: AssociationContext<'_>,
    shutdown: CancellationToken,
) {
    let mut phase = Phase::Idle;
    let mut tally = Tally::default();
    let ending = 'serving: loop {
        let received = if matches!(phase, Phase::Idle) {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ending::ShutDown,
                received = association.receive() => received,
            }
        } else {
            association.receive().await
        };
        let values = match received {
            Ok(Pdu::PData { data }) => data,
            Ok(Pdu::ReleaseRQ) => {
                if let Err(error) = association.send(&Pdu::ReleaseRP).await {
                    let reason =
                        format!("cannot answer the release request: {}", error_chain(&error));
                    break Ending::Lost(reason);
                }
                break Ending::Released;
            }
            Ok(Pdu::AbortRQ { source }) => {
                tracing::debug!(?source, "the peer aborted the association");
                break Ending::AbortedByPeer;
            }
            Ok(other) => {
                break Ending::Violation(format!("unexpected {}", other.short_description()));
            }
            // A PDU over the length we announced is refused from its header,
            // before its bytes are read or anything is allocated for them.
            Err(
                error @ dicom_ul::association::Error::ReceivePdu {
                    source: dicom_ul::pdu::ReadError::PduTooLarge { .. },
                    ..
                },
            ) => break Ending::Violation(error_chain(&error)),
            Err(error) => break Ending::Lost(error_chain(&error)),
        };
        for value in values {
            let handled =
                handle_value(&mut association, &context, &mut phase, &mut tally, value).await;
            if let Err(ending) = handled {
                break 'serving ending;
            }
        }
    };
    let unfinished = !matches!(phase, Phase::Idle);
    // Dropping the phase removes the temporary file of an unfinished C-STORE.
    drop(phase);

    let summary = |ending: &str| {
        tracing::info!(
            calling_ae_title = context.calling_ae_title,
            called_ae_title = context.called_ae_title,
            peer = %context.peer,
            site = %context.site.id,
            stored = tally.stored,
            refused = tally.refused,
            retry_later = tally.retry_later,
            echoes = tally.echoes,
            unfinished_operation = unfinished,
            "association ended: {ending}"
        );
    };
    match &ending {
        Ending::Released => summary("released"),
        Ending::AbortedByPeer => summary("aborted by the peer"),
        Ending::ShutDown => summary("aborted: the service is shutting down"),
        Ending::Violation(reason) => summary(&format!("aborted: protocol violation: {reason}")),
        Ending::Lost(reason) => summary(&format!("connection lost: {reason}")),
    }
    if ending.needs_abort() {
        // Best effort: the peer may already be gone.
        let _ = association.abort().await;
    }
}

/// Handles one presentation data value; `Err` ends the association.
async fn handle_value<S: Transport>(
    association: &mut AsyncServerAssociation<S>,
    context: &AssociationContext<'_>,
    phase: &mut Phase,
    tally: &mut Tally,
    value: PDataValue,
) -> Result<(), Ending> {
    let context_id = value.presentation_context_id;
    match value.value_type {
        PDataValueType::Command => {
            let mut bytes = match std::mem::replace(phase, Phase::Idle) {
                Phase::Idle => Vec::new(),
                Phase::Command {
                    context_id: started_on,
                    bytes,
                } if started_on == context_id => bytes,
                Phase::Command { .. } => {
                    return Err(Ending::Violation(
                        "a command set continued on another presentation context".into(),
                    ));
                }
                Phase::DataSet { .. } => {
                    return Err(Ending::Violation(
                        "a command arrived before the previous data set was complete".into(),
                    ));
                }
            };
            if bytes.len() + value.data.len() > MAX_COMMAND_SET_BYTES {
                return Err(Ending::Violation(format!(
                    "a command set longer than {MAX_COMMAND_SET_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&value.data);
            if !value.is_last {
                *phase = Phase::Command { context_id, bytes };
                return Ok(());
            }
            let request =
                Request::parse(&bytes).map_err(|error| Ending::Violation(error.to_string()))?;
            let accepted =
                accepted_context(association.presentation_contexts(), context_id)?.clone();
            start_operation(association, context, phase, tally, request, &accepted).await
        }
        PDataValueType::Data => {
            let Phase::DataSet {
                context_id: expected,
                request,
                mut sink,
            } = std::mem::replace(phase, Phase::Idle)
            else {
                return Err(Ending::Violation(
                    "a data set fragment arrived without a command".into(),
                ));
            };
            if expected != context_id {
                return Err(Ending::Violation(
                    "a data set arrived on another presentation context than its command".into(),
                ));
            }
            if let Sink::File(incoming) = &mut sink
                && let Err(error) = incoming.append(&value.data).await
            {
                if matches!(error, InstanceFileError::TooLarge { .. }) {
                    let limit = context.site.limits.max_instance_bytes;
                    context
                        .ingestor
                        .record_oversize_refusal(
                            context.site,
                            &context.sender,
                            format!("C-STORE over this site's limit of {limit} bytes"),
                            limit,
                        )
                        .await;
                }
                sink = Sink::Discard(instance_file_failure(&error));
            }
            if !value.is_last {
                *phase = Phase::DataSet {
                    context_id,
                    request,
                    sink,
                };
                return Ok(());
            }
            let response = match sink {
                Sink::File(incoming) => store(context, &request, *incoming).await,
                Sink::Discard(response) => response,
            };
            if request.command_field == command::C_STORE_RQ {
                tally.count(&response);
                tracing::debug!(
                    sop_instance_uid = request.affected_sop_instance_uid.as_deref().unwrap_or(""),
                    status = format_args!("{:#06X}", response.status),
                    "C-STORE answered"
                );
            }
            respond(association, context_id, &request, &response).await
        }
    }
}

fn accepted_context(
    contexts: &[PresentationContextNegotiated],
    context_id: u8,
) -> Result<&PresentationContextNegotiated, Ending> {
    contexts
        .iter()
        .find(|context| {
            context.id == context_id
                && context.reason == PresentationContextResultReason::Acceptance
        })
        .ok_or_else(|| {
            Ending::Violation(format!(
                "a message on presentation context {context_id}, which was not accepted"
            ))
        })
}

/// Acts on a complete command set: answers it now, or prepares for its data set.
async fn start_operation<S: Transport>(
    association: &mut AsyncServerAssociation<S>,
    context: &AssociationContext<'_>,
    phase: &mut Phase,
    tally: &mut Tally,
    request: Request,
    presentation_context: &PresentationContextNegotiated,
) -> Result<(), Ending> {
    let context_id = presentation_context.id;
    let immediate = match request.command_field {
        command::C_ECHO_RQ => {
            tally.echoes += 1;
            Response::success()
        }
        command::C_STORE_RQ if request.has_data_set => {
            let sink = prepare_store(context, &request, presentation_context).await;
            *phase = Phase::DataSet {
                context_id,
                request,
                sink,
            };
            return Ok(());
        }
        command::C_STORE_RQ => {
            tally.refused += 1;
            Response::failure(status::CANNOT_UNDERSTAND, "C-STORE-RQ without a data set")
        }
        // C-CANCEL-RQ has no response, and there is nothing to cancel.
        command::C_CANCEL_RQ => return Ok(()),
        other => {
            tracing::debug!(
                command_field = format_args!("{other:#06X}"),
                "unsupported DIMSE request"
            );
            Response::failure(
                status::UNRECOGNIZED_OPERATION,
                "only C-ECHO and C-STORE are served",
            )
        }
    };
    if request.has_data_set {
        // Answer once the (unwanted) data set has been read.
        *phase = Phase::DataSet {
            context_id,
            request,
            sink: Sink::Discard(immediate),
        };
        return Ok(());
    }
    respond(association, context_id, &request, &immediate).await
}

/// Where the data set of a C-STORE-RQ will go: a temporary Part 10 file, or
/// nowhere when the request is refused before its data set is read.
async fn prepare_store(
    context: &AssociationContext<'_>,
    request: &Request,
    presentation_context: &PresentationContextNegotiated,
) -> Sink {
    let abstract_syntax = presentation_context
        .abstract_syntax
        .trim_end_matches(['\0', ' ']);
    let sop_class_uid = request
        .affected_sop_class_uid
        .as_deref()
        .unwrap_or(abstract_syntax);
    if sop_class_uid != abstract_syntax || !context.site.routing.accepts_sop_class(sop_class_uid) {
        return Sink::Discard(Response::failure(
            status::SOP_CLASS_NOT_SUPPORTED,
            format!("SOP class {sop_class_uid} not negotiated on this context"),
        ));
    }
    let Some(sop_instance_uid) = request.affected_sop_instance_uid.as_deref() else {
        return Sink::Discard(Response::failure(
            status::CANNOT_UNDERSTAND,
            "C-STORE-RQ without AffectedSOPInstanceUID",
        ));
    };
    let header = part10_header(&MetaFields {
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid: presentation_context
            .transfer_syntax
            .trim_end_matches(['\0', ' ']),
        calling_ae_title: &context.calling_ae_title,
        called_ae_title: &context.called_ae_title,
    });
    let created = match header {
        Ok(header) => {
            IncomingInstance::create(
                context.buffering,
                &header,
                context.site.limits.max_instance_bytes,
            )
            .await
        }
        Err(error) => Err(error),
    };
    match created {
        Ok(incoming) => Sink::File(Box::new(incoming)),
        Err(error) => Sink::Discard(instance_file_failure(&error)),
    }
}

fn instance_file_failure(error: &InstanceFileError) -> Response {
    match error {
        InstanceFileError::TooLarge { .. } => {
            tracing::warn!(%error, "C-STORE refused while receiving");
            Response::failure(
                status::CANNOT_UNDERSTAND,
                format!("instance-too-large: {error}"),
            )
        }
        InstanceFileError::Meta(_) => {
            tracing::warn!(%error, "C-STORE refused");
            Response::failure(status::CANNOT_UNDERSTAND, error.to_string())
        }
        InstanceFileError::Io { .. } => {
            tracing::error!(%error, "cannot buffer a received instance");
            Response::failure(
                status::OUT_OF_RESOURCES,
                "cannot buffer the instance, retry later",
            )
        }
    }
}

/// Hands a completely received instance to the ingest pipeline; the temporary
/// file is removed whatever the outcome.
async fn store(
    context: &AssociationContext<'_>,
    request: &Request,
    incoming: IncomingInstance,
) -> Response {
    let received = match incoming.finish().await {
        Ok(received) => received,
        Err(error) => return instance_file_failure(&error),
    };
    let outcome = context
        .ingestor
        .accept(context.site, received.source(), &context.sender)
        .await;
    received.remove().await;
    if let Ok(stored) = &outcome {
        let announced = stored
            .event
            .instance
            .as_ref()
            .map(|instance| instance.sop_instance_uid.as_str());
        if announced != request.affected_sop_instance_uid.as_deref() {
            // Stored under the data set's UID; the file meta group carries the command's.
            tracing::warn!(
                command = request.affected_sop_instance_uid.as_deref().unwrap_or(""),
                data_set = announced.unwrap_or(""),
                "the SOP Instance UID of a C-STORE data set differs from its command"
            );
        }
    }
    store_response(&outcome)
}

async fn respond<S: Transport>(
    association: &mut AsyncServerAssociation<S>,
    context_id: u8,
    request: &Request,
    response: &Response,
) -> Result<(), Ending> {
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: response.encode(request),
        }],
    };
    association.send(&pdu).await.map_err(|error| {
        Ending::Lost(format!(
            "cannot send the response to {}: {}",
            request.describe(),
            error_chain(&error)
        ))
    })
}

/// An error with its causes: dicom-ul's errors name only the step that failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
