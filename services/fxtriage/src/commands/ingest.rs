//! `fxtriage ingest`: DIMSE C-STORE and STOW-RS into the object store, events on the bus.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fxtriage_clients::Clients;
use tokio_util::sync::CancellationToken;

use crate::clients::{BusArgs, DatabaseArgs, SitesFileArgs, StoreArgs};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// HTTP address: STOW-RS under /dicomweb, /health/live, /health/ready.
    #[arg(
        long,
        env = "FXTRIAGE_INGEST_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub http_address: SocketAddr,
    /// DIMSE C-STORE SCP address.
    #[arg(long, env = "FXTRIAGE_DIMSE_ADDR", default_value = "127.0.0.1:11112")]
    pub dimse_address: SocketAddr,
    /// Most concurrent DIMSE associations.
    #[arg(long, env = "FXTRIAGE_DIMSE_MAX_ASSOCIATIONS", default_value_t = 32)]
    pub max_associations: usize,
    /// Memory for C-STORE instances being received, in MiB, shared by every
    /// association: an instance is held (and parsed, hashed and stored) in
    /// memory while it fits, else it goes through a buffer file. 0: always a file.
    #[arg(long, env = "FXTRIAGE_DIMSE_MEMORY_BUDGET_MB", default_value_t = 256)]
    pub dimse_memory_budget_mb: u64,
    /// The largest C-STORE instance held in memory, in MiB.
    #[arg(long, env = "FXTRIAGE_DIMSE_INSTANCE_MEMORY_MB", default_value_t = 32)]
    pub dimse_instance_memory_mb: u64,
    #[command(flatten)]
    pub https: crate::clients::HttpsArgs,
    #[command(flatten)]
    pub dimse_tls: DimseTlsArgs,
    #[command(flatten)]
    pub sites: SitesFileArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// DICOM TLS for C-STORE: a second listener, the secure transport profile.
#[derive(Debug, Args)]
pub struct DimseTlsArgs {
    /// Where C-STORE over DICOM TLS is served (2762 is the profile's port);
    /// with --dimse-tls-certificate and --dimse-tls-key. No TLS listener when unset.
    #[arg(long, env = "FXTRIAGE_DIMSE_TLS_ADDR", requires_all = ["dimse_tls_certificate", "dimse_tls_key"])]
    pub dimse_tls_address: Option<SocketAddr>,
    /// The TLS listener's certificate chain (PEM), its own certificate first.
    #[arg(
        long,
        env = "FXTRIAGE_DIMSE_TLS_CERTIFICATE",
        requires = "dimse_tls_address"
    )]
    pub dimse_tls_certificate: Option<PathBuf>,
    /// The TLS listener's private key (PEM).
    #[arg(long, env = "FXTRIAGE_DIMSE_TLS_KEY", requires = "dimse_tls_address")]
    pub dimse_tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) that sign senders' client certificates; needed
    /// by sites that name their senders' certificates (`[site.dicom_tls]
    /// client_names`).
    #[arg(
        long,
        env = "FXTRIAGE_DIMSE_TLS_CLIENT_CA",
        requires = "dimse_tls_address"
    )]
    pub dimse_tls_client_ca: Option<PathBuf>,
}

impl DimseTlsArgs {
    /// The TLS listener's address and configuration, read from the files now,
    /// so that a wrong file stops the service at start with its name.
    pub fn load(&self) -> anyhow::Result<Option<fxtriage_ingest::dimse::DimseTls>> {
        let (Some(address), Some(certificate), Some(key)) = (
            self.dimse_tls_address,
            &self.dimse_tls_certificate,
            &self.dimse_tls_key,
        ) else {
            return Ok(None);
        };
        let config = fxtriage_ingest::dimse::server_config(&fxtriage_ingest::dimse::TlsFiles {
            certificate_chain: certificate,
            private_key: key,
            client_ca: self.dimse_tls_client_ca.as_deref(),
        })?;
        Ok(Some(fxtriage_ingest::dimse::DimseTls {
            address,
            config,
            verifies_clients: self.dimse_tls_client_ca.is_some(),
        }))
    }
}

pub async fn run(args: IngestArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dimse_tls = args.dimse_tls.load()?;
    let http_tls = args.https.load()?;
    let Some(database) = args.database.wait_and_migrate(&shutdown).await? else {
        return Ok(());
    };
    args.sites.apply_at_start(&database).await?;
    let clients = Clients {
        bus: args.bus.connect("fxtriage-ingest").await?,
        namespace: args.bus.namespace.clone(),
        store: Some(args.store.connect().await?),
        database: Some(database),
    };
    let config = fxtriage_ingest::Config {
        http_address: args.http_address,
        http_tls,
        failed_auth: args.https.failed_auth(),
        dimse_address: args.dimse_address,
        dimse: fxtriage_ingest::dimse::DimseOptions {
            max_associations: args.max_associations,
            memory_budget_bytes: args.dimse_memory_budget_mb << 20,
            instance_memory_limit_bytes: args.dimse_instance_memory_mb << 20,
            ..Default::default()
        },
        dimse_tls,
        // The registry of the database, followed as it changes.
        sites: None,
    };
    fxtriage_ingest::run(config, clients, shutdown).await
}
