//! The DIMSE C-STORE SCP: modalities and PACS push images here.
//!
//! Each connection is one association on its own task, up to
//! [`DimseOptions::max_associations`] at once; more are refused with
//! A-ASSOCIATE-RJ (transient, local limit exceeded), as are those over their
//! site's `intake.max_associations`. With [`DimseOptions::tls`] the listener
//! speaks DICOM TLS ([`server_config`]); a site with `[site.dicom_tls]` is
//! refused on a plain listener, and on a TLS one when its client certificate
//! does not name one of the site's `client_names`. The called AE title picks the
//! site (`negotiation`); an unknown one is refused at association time. The site's
//! storage SOP classes and C-ECHO are accepted in the common transfer syntaxes, and
//! every instance is stored as received (`association`, `instance_file`).
//!
//! On shutdown the listener closes, associations finish the operation in progress
//! and are then aborted, and the server waits at most
//! [`DimseOptions::drain_timeout`] for them.

mod association;
mod command;
mod instance_file;
mod negotiation;
mod store_status;
mod tls;

pub use self::instance_file::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
pub use self::negotiation::TRANSFER_SYNTAXES;
pub use self::tls::{DimseTls, TlsFiles, server_config, unmet_tls_settings, watch_tls_settings};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::Pdu;
use dicom_ul::association::{Association as _, Error as AssociationError};
use dicom_ul::pdu::{
    self, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PresentationContextResultReason,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::association::{AssociationContext, serve_association};
use self::instance_file::Buffering;
use self::negotiation::{Acceptors, peek_called_ae_title};
use crate::intake::SiteGate;
use crate::{Ingestor, SiteRegistry};

/// How the C-STORE SCP serves associations.
#[derive(Debug, Clone)]
pub struct DimseOptions {
    /// Most associations served at once; further ones are refused.
    pub max_associations: usize,
    /// Largest PDU this SCP receives, announced in A-ASSOCIATE-AC (raised to the
    /// protocol's minimum of 1018 bytes if lower).
    pub max_pdu_length: u32,
    /// An association that sends nothing for this long is aborted.
    pub idle_timeout: Duration,
    /// How long shutdown waits for associations in progress.
    pub drain_timeout: Duration,
    /// Where instances that are not held in memory are buffered while they
    /// arrive; the system's temporary directory if `None`.
    pub temp_dir: Option<PathBuf>,
    /// Memory for instances being received, shared by every association: an
    /// instance is held in memory (parsed, hashed and stored from that one
    /// copy) while it fits, else it goes to a file in `temp_dir`. 0: always a
    /// file.
    pub memory_budget_bytes: u64,
    /// The largest instance held in memory.
    pub instance_memory_limit_bytes: u64,
    /// DICOM TLS: this listener's associations come over TLS with this
    /// configuration (see [`server_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for DimseOptions {
    fn default() -> Self {
        Self {
            max_associations: 32,
            max_pdu_length: 65_536,
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            temp_dir: None,
            memory_budget_bytes: 256 << 20,
            instance_memory_limit_bytes: 32 << 20,
            tls: None,
        }
    }
}

/// How long a DICOM TLS connection may take for its handshake and its
/// A-ASSOCIATE-RQ together.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection over the limit may take to send its A-ASSOCIATE-RQ
/// before it is dropped without an answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The first bytes of an A-ASSOCIATE-RQ arrive together; a peer that sends part of
/// them and stalls is left to the negotiation's own timeout after this.
const ASSOCIATE_RQ_PEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// What every association task shares.
#[derive(Debug)]
struct Shared {
    /// The negotiation options of the registry revision last seen.
    acceptors: std::sync::Mutex<Arc<Acceptors>>,
    sites: SiteRegistry,
    max_pdu_length: u32,
    ingestor: Ingestor,
    buffering: Buffering,
    idle_timeout: Duration,
    /// Associations open per site, against each site's `intake.max_associations`.
    per_site: SiteGate,
    /// The TLS configuration of a DICOM TLS listener.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    /// The negotiation options of `sites`, rebuilt when the registry changed.
    fn acceptors_for(&self, sites: &crate::Sites) -> Arc<Acceptors> {
        let mut current = self
            .acceptors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.revision != sites.revision {
            *current = Arc::new(Acceptors::new(
                sites,
                self.max_pdu_length,
                self.idle_timeout,
                self.tls.as_ref(),
            ));
        }
        Arc::clone(&current)
    }
}

/// What every C-STORE listener of one ingest service shares (the plain and
/// the DICOM TLS one): the association slots, the memory budget for
/// instances being received, and each site's count of open associations.
#[derive(Debug, Clone)]
pub struct DimseLimits {
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    buffering: Buffering,
    per_site: SiteGate,
}

impl DimseLimits {
    /// Limits of `options` (`max_associations`, the memory budget and the
    /// buffer directory), to be shared by the listeners given them.
    pub fn new(options: &DimseOptions) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(options.max_associations)),
            // Refusing takes a task too; past this many at once, connections are just closed.
            refusals: Arc::new(Semaphore::new(options.max_associations.max(1))),
            buffering: Buffering::new(
                options.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
                options.memory_budget_bytes,
                options.instance_memory_limit_bytes,
            ),
            per_site: SiteGate::default(),
        }
    }
}

/// Accepts associations on `listener` until `shutdown` is cancelled, then lets the
/// associations in progress finish (see the module documentation) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingestor: Ingestor,
    sites: SiteRegistry,
    options: DimseOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = DimseLimits::new(&options);
    serve_sharing(listener, ingestor, sites, options, limits, shutdown).await
}

/// [`serve`] within `limits`, which other listeners may share.
pub async fn serve_sharing(
    listener: tokio::net::TcpListener,
    ingestor: Ingestor,
    sites: SiteRegistry,
    options: DimseOptions,
    limits: DimseLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let max_pdu_length = options
        .max_pdu_length
        .clamp(pdu::MINIMUM_PDU_SIZE, pdu::MAXIMUM_PDU_SIZE);
    let acceptors = Acceptors::new(
        &sites.current(),
        max_pdu_length,
        options.idle_timeout,
        options.tls.as_ref(),
    );
    let shared = Arc::new(Shared {
        acceptors: std::sync::Mutex::new(Arc::new(acceptors)),
        sites,
        max_pdu_length,
        ingestor,
        buffering: limits.buffering.clone(),
        idle_timeout: options.idle_timeout,
        per_site: limits.per_site.clone(),
        tls: options.tls.clone(),
    });
    let DimseLimits {
        slots, refusals, ..
    } = limits;
    let mut associations = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(finished) = associations.join_next(), if !associations.is_empty() => {
                report_task_end(finished);
            }
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, never stop serving.
                        tracing::warn!(%error, "cannot accept a DIMSE connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Each C-STORE response is a small write the sender waits
                // for: without this, Nagle's algorithm holds it back until the
                // sender's delayed ACK (tens of milliseconds per instance).
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY on a DIMSE connection");
                }
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        associations.spawn(run_association(socket, peer, Arc::clone(&shared), shutdown.clone(), slot));
                    }
                    Err(_) => {
                        tracing::warn!(
                            %peer,
                            max_associations = options.max_associations,
                            "association refused: the limit of concurrent associations is reached"
                        );
                        if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                            tokio::spawn(refuse(socket, max_pdu_length, over_limit_rejection(), Some(permit)));
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    tracing::info!(
        in_progress = associations.len(),
        "DIMSE no longer accepting associations; waiting for those in progress"
    );
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while let Some(finished) = associations.join_next().await {
            report_task_end(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = associations.len(),
            drain_timeout = ?options.drain_timeout,
            "closing DIMSE associations still open after the drain timeout"
        );
        associations.shutdown().await;
    }
    Ok(())
}

fn report_task_end(finished: Result<(), tokio::task::JoinError>) {
    if let Err(error) = finished
        && error.is_panic()
    {
        tracing::error!(%error, "a DIMSE association task panicked; the server goes on");
    }
}

async fn run_association(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    if shared.tls.is_some() {
        run_tls_association(socket, peer, shared, shutdown).await;
    } else {
        run_plain_association(socket, peer, shared, shutdown).await;
    }
}

/// An association over plain TCP: the called AE title is read from the
/// request before negotiating, to choose the site's options, to refuse a site
/// that takes C-STORE over TLS only, and to hold the site to its own limit.
async fn run_plain_association(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let idle_timeout = shared.idle_timeout;
    let sites = shared.sites.current();
    let acceptors = shared.acceptors_for(&sites);
    let requested_ae_title = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        peeked = peek_called_ae_title(&socket, idle_timeout.min(ASSOCIATE_RQ_PEEK_TIMEOUT)) => peeked,
    };
    let requested_site = requested_ae_title
        .as_deref()
        .and_then(|called| sites.by_called_ae_title(called));
    if let Some(site) = requested_site
        && site.dicom_tls.tls_only()
    {
        tracing::warn!(
            %peer,
            site = %site.id,
            "association refused: the site takes C-STORE over DICOM TLS only (dicom_tls)"
        );
        refuse(socket, shared.max_pdu_length, tls_only_rejection(), None).await;
        return;
    }
    // The site's own limit on associations open at once, before negotiating.
    let _site_slot = match requested_site {
        None => None,
        Some(site) => match shared
            .per_site
            .enter(&site.id, site.intake.max_associations)
        {
            Ok(slot) => Some(slot),
            Err(open) => {
                tracing::warn!(
                    %peer,
                    site = %site.id,
                    open,
                    "association refused: the site's limit of concurrent associations (intake.max_associations) is reached"
                );
                refuse(socket, shared.max_pdu_length, over_limit_rejection(), None).await;
                return;
            }
        },
    };
    let negotiated = async {
        let options = acceptors.for_called_ae_title(requested_ae_title.as_deref());
        (options.establish_async(socket).await, requested_ae_title)
    };
    // Until the association is established nothing is in progress: a shutdown
    // simply drops the connection.
    let (established, requested_ae_title) = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        negotiated = negotiated => negotiated,
    };
    let Some(association) = established_or_logged(established, peer, requested_ae_title.as_deref())
    else {
        return;
    };
    serve_established(association, peer, &shared, &sites, shutdown, None).await;
}

/// An association over DICOM TLS: the handshake comes first, so the options
/// of every site negotiate (see `negotiation::Acceptors::any_site`); the
/// site's limit and its accepted client certificates are checked once the
/// called AE title is known, and an association that fails them is aborted.
async fn run_tls_association(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let sites = shared.sites.current();
    let acceptors = shared.acceptors_for(&sites);
    // The handshake and the association request within a bound: dicom-ul's
    // read timeout starts only after the handshake, and a connection that
    // says nothing must not hold a slot.
    let handshake_timeout = shared.idle_timeout.min(TLS_HANDSHAKE_TIMEOUT);
    let established = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        established = tokio::time::timeout(
            handshake_timeout,
            acceptors.any_site().establish_tls_async(socket),
        ) => established,
    };
    let Ok(established) = established else {
        tracing::info!(%peer, timeout = ?handshake_timeout, "DICOM TLS connection closed: no handshake and association request in time");
        return;
    };
    let Some(mut association) = established_or_logged(established, peer, None) else {
        return;
    };
    let called_ae_title = association.called_ae_title().to_owned();
    let Some(site) = sites.by_called_ae_title(&called_ae_title) else {
        tracing::error!(%peer, called_ae_title, "association accepted for an AE title without a site");
        let _ = association.abort().await;
        return;
    };
    let names = &site.dicom_tls.client_names;
    if !names.is_empty() {
        let certificates = association.inner_stream().get_ref().1.peer_certificates();
        if !tls::client_named(certificates, names) {
            associations_counted("rejected");
            tracing::warn!(
                %peer,
                site = %site.id,
                presented = certificates.is_some_and(|chain| !chain.is_empty()),
                "association aborted: the client certificate is missing or names none of the site's dicom_tls.client_names"
            );
            let _ = association.abort().await;
            return;
        }
    }
    let site_slot = match shared
        .per_site
        .enter(&site.id, site.intake.max_associations)
    {
        Ok(slot) => slot,
        Err(open) => {
            associations_counted("rejected");
            tracing::warn!(
                %peer,
                site = %site.id,
                open,
                "association aborted: the site's limit of concurrent associations (intake.max_associations) is reached"
            );
            let _ = association.abort().await;
            return;
        }
    };
    serve_established(
        association,
        peer,
        &shared,
        &sites,
        shutdown,
        Some(site_slot),
    )
    .await;
}

/// The association, or `None` after logging (and counting) why not.
fn established_or_logged<S>(
    established: Result<dicom_ul::association::AsyncServerAssociation<S>, AssociationError>,
    peer: SocketAddr,
    requested_ae_title: Option<&str>,
) -> Option<dicom_ul::association::AsyncServerAssociation<S>> {
    match established {
        Ok(association) => Some(association),
        Err(AssociationError::Rejected { association_rj, .. }) => {
            associations_counted("rejected");
            tracing::warn!(
                %peer,
                called_ae_title = requested_ae_title.unwrap_or(""),
                reason = %association_rj.source,
                "association rejected"
            );
            None
        }
        Err(error) => {
            tracing::info!(%peer, %error, "association not established");
            None
        }
    }
}

/// Serves an established association for its site.
async fn serve_established<S: association::Transport>(
    association: dicom_ul::association::AsyncServerAssociation<S>,
    peer: SocketAddr,
    shared: &Shared,
    sites: &crate::Sites,
    shutdown: CancellationToken,
    _site_slot: Option<crate::intake::SiteSlot>,
) {
    let called_ae_title = association.called_ae_title().to_owned();
    let Some(site) = sites.by_called_ae_title(&called_ae_title) else {
        // The access control admitted only the site's AE titles, so this is unreachable
        // in practice; refuse to guess rather than store under the wrong site.
        tracing::error!(%peer, called_ae_title, "association accepted for an AE title without a site");
        let _ = association.abort().await;
        return;
    };
    associations_counted("accepted");
    let calling_ae_title = association.peer_ae_title().to_owned();
    let accepted_contexts = association
        .presentation_contexts()
        .iter()
        .filter(|context| context.reason == PresentationContextResultReason::Acceptance)
        .count();
    tracing::info!(
        %peer,
        calling_ae_title,
        called_ae_title,
        site = %site.id,
        accepted_contexts,
        tls = shared.tls.is_some(),
        "association accepted"
    );
    let context = AssociationContext::new(
        site,
        &shared.ingestor,
        &shared.buffering,
        calling_ae_title,
        called_ae_title,
        peer,
    );
    serve_association(association, context, shutdown).await;
}

fn associations_counted(outcome: &'static str) {
    metrics::counter!(
        fxtriage_telemetry::metrics::names::INGEST_ASSOCIATIONS,
        "outcome" => outcome
    )
    .increment(1);
}

/// A-ASSOCIATE-RJ for an association over a limit (the service's, or its
/// site's): transient, local limit exceeded, so the sender retries later.
fn over_limit_rejection() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    }
}

/// A-ASSOCIATE-RJ for plain C-STORE to a site that takes TLS only:
/// permanent (the same request will never pass), called AE title not
/// recognised on this port.
fn tls_only_rejection() -> AssociationRJ {
    AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
        ),
    }
}

/// Reads the A-ASSOCIATE-RQ waiting on `socket` and answers it with
/// `rejection`. `_permit` bounds the refusals in progress.
async fn refuse(
    mut socket: TcpStream,
    max_pdu_length: u32,
    rejection: AssociationRJ,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let mut buffer = bytes::BytesMut::new();
    let request = tokio::time::timeout(
        REFUSAL_TIMEOUT,
        dicom_ul::association::read_pdu_from_wire_async(
            &mut socket,
            &mut buffer,
            max_pdu_length,
            true,
        ),
    )
    .await;
    let Ok(Ok(Pdu::AssociationRQ(_))) = request else {
        return;
    };
    associations_counted("rejected");
    let rejection = Pdu::AssociationRJ(rejection);
    let mut encoded = Vec::new();
    if dicom_ul::write_pdu(&mut encoded, &rejection).is_ok() {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            let _ = socket.write_all(&encoded).await;
            let _ = socket.shutdown().await;
        })
        .await;
    }
}
