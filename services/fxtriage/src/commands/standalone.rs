//! `fxtriage standalone`: every service in one process, the embedded default.
//! The in-process bus replaces Kafka and a local directory replaces S3; the
//! worklist lives in PostgreSQL (the URL given). Listens on 127.0.0.1 unless told
//! otherwise, creates the site `demo` on first start, prints where each endpoint
//! is and a first access token, and writes the same to `DIR/standalone.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use fxtriage_bus::{Bus, InProcessBus, InProcessConfig};
use fxtriage_clients::Clients;
use fxtriage_objstore::{LocalDirStore, ObjectStore};
use tokio_util::sync::CancellationToken;

use crate::model_args::ModelArgs;

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Directory for the object store and state.
    #[arg(long, env = "FXTRIAGE_DATA_DIR", default_value = "fxtriage-data")]
    pub data_dir: PathBuf,
    /// HTTP address of the API and the health endpoints.
    #[arg(long, env = "FXTRIAGE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_address: SocketAddr,
    /// DIMSE C-STORE SCP address.
    #[arg(long, env = "FXTRIAGE_DIMSE_ADDR", default_value = "127.0.0.1:11112")]
    pub dimse_address: SocketAddr,
    /// STOW-RS address.
    #[arg(
        long,
        env = "FXTRIAGE_INGEST_HTTP_ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub stow_address: SocketAddr,
    /// Listen for reports from the sites' RIS (HL7 v2 ORU^R01 over MLLP) here;
    /// no listener when unset.
    #[arg(long, env = "FXTRIAGE_HL7_ADDR")]
    pub hl7_address: Option<SocketAddr>,
    /// Called AE title of the demo site.
    #[arg(long, env = "FXTRIAGE_AE_TITLE", default_value = "FXTRIAGE")]
    pub ae_title: String,
    /// PostgreSQL URL; without it, a private cluster is initialised in DIR/postgres
    /// from the installed PostgreSQL binaries and stopped on exit (as root, when
    /// the postgres user cannot reach DIR, under /var/tmp/fxtriage-postgres-*,
    /// recorded in DIR/postgres/cluster.location).
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub https: crate::clients::HttpsArgs,
    #[command(flatten)]
    pub oidc: crate::clients::OidcArgs,
    #[command(flatten)]
    pub dimse_tls: crate::commands::ingest::DimseTlsArgs,
    #[command(flatten)]
    pub sites: crate::clients::SitesFileArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub const DEMO_SITE: &str = "demo";

/// Writes `contents` readable by the owner only (it holds a token), whole or
/// not at all: a reader never sees a half-written file or a moment when others
/// could read it.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Runs every service until `shutdown`; they stop together if one fails.
pub async fn run(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    // One standalone per data directory: held until this process ends, however
    // it ends (the kernel releases the lock of a killed process).
    let lock_path = args.data_dir.join(".standalone.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another fxtriage standalone uses {}; stop it first",
            args.data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", lock_path.display()));
        }
    }
    let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(args.data_dir.join("objects")));
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(InProcessConfig::default()));
    let (model, batch) = args.model.load()?;

    let private_postgres = match &args.database_url {
        Some(_) => None,
        None => {
            let directory = args.data_dir.join("postgres");
            Some(
                tokio::task::spawn_blocking(move || {
                    crate::private_postgres::PrivatePostgres::start(&directory)
                })
                .await??,
            )
        }
    };
    let url = match (&args.database_url, &private_postgres) {
        (Some(url), _) => url.clone(),
        (None, Some(cluster)) => cluster.url.clone(),
        (None, None) => unreachable!("a private cluster is started when no URL is given"),
    };
    let database = fxtriage_db::DbConfig::from_url(&url)?;
    let Some(pool) = fxtriage_db::wait_and_migrate(&database, &shutdown).await? else {
        return Ok(());
    };
    let namespace = fxtriage_proto::Namespace::none();
    fxtriage_clients::ensure_topics(bus.as_ref(), &namespace, 8).await?;
    let clients = Clients {
        bus,
        namespace,
        store: Some(Arc::clone(&store)),
        database: Some(pool.clone()),
    };
    let site = fxtriage_core::SiteId::parse(DEMO_SITE)?;
    // The demo site, in the registry like any other: its AE title, and the
    // operating points the model was measured at.
    let points = model.manifest.operating_points;
    let mut demo = fxtriage_sites::SiteConfig::new(site.clone(), "Demo site");
    demo.called_ae_titles = vec![args.ae_title.clone()];
    demo.policy.operating_points = fxtriage_core::policy::OperatingPoints {
        suspected: points.suspected.threshold,
        possible: points.possible.threshold,
    };
    let demo_already = fxtriage_sites::SiteRegistry::load(&pool)
        .await?
        .current()
        .site(DEMO_SITE)
        .is_some();
    if !demo_already {
        fxtriage_sites::store::put_sites(&pool, vec![demo]).await?;
    }
    args.sites.apply_at_start(&pool).await?;

    let loopback_any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let services = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    // The prioritizer subscribes first, so nothing announced is missed.
    let prioritizer_config = fxtriage_prioritizer::Config::new(loopback_any_port);
    tasks.spawn(fxtriage_prioritizer::run(
        prioritizer_config,
        clients.clone(),
        services.clone(),
    ));
    // Results back to the sites' PACS, for sites with destinations.
    let mut dispatch = fxtriage_dispatch::Config::new(loopback_any_port);
    dispatch.hl7_address = args.hl7_address;
    tasks.spawn(fxtriage_dispatch::run(
        dispatch,
        pool.clone(),
        Arc::clone(&store),
        services.clone(),
    ));
    tasks.spawn(fxtriage_inference::run(
        fxtriage_inference::Config {
            health_address: loopback_any_port,
            batch,
            max_in_flight: 16,
            model,
        },
        clients.clone(),
        services.clone(),
    ));
    let ingest_config = fxtriage_ingest::Config {
        http_address: args.stow_address,
        http_tls: args.https.load()?,
        failed_auth: args.https.failed_auth(),
        dimse_address: args.dimse_address,
        dimse: fxtriage_ingest::dimse::DimseOptions::default(),
        dimse_tls: args.dimse_tls.load()?,
        sites: None,
    };
    tasks.spawn(fxtriage_ingest::run(
        ingest_config,
        clients.clone(),
        services.clone(),
    ));
    // One token for the worklist, the web page and STOW-RS: the demo site's admin.
    let token = fxtriage_sites::credentials::create_token(
        &pool,
        &fxtriage_sites::Scope::Site(site.clone()),
        fxtriage_sites::Role::Admin,
        "standalone",
    )
    .await?;
    let scheme = if args.https.https_certificate.is_some() {
        "https"
    } else {
        "http"
    };
    let description = serde_json::json!({
        "dimse": args.dimse_address.to_string(),
        "ae_title": args.ae_title,
        "http": format!("{scheme}://{}", args.http_address),
        "stow": format!("{scheme}://{}/dicomweb/sites/{DEMO_SITE}/studies", args.stow_address),
        "site": DEMO_SITE,
        "token": token.token.reveal(),
        "database": if private_postgres.is_some() { "private" } else { "given" },
        "database_url": url,
    });
    let description_path = args.data_dir.join("standalone.json");
    // The operator's first access token, shown once; the file keeps it too
    // (mode 600). It is written before the API starts, so that whoever sees
    // the API ready finds the file.
    write_private(&description_path, &serde_json::to_vec_pretty(&description)?)?;
    tracing::info!(
        dimse = %args.dimse_address, ae_title = %args.ae_title, http = %args.http_address,
        description = %description_path.display(), "standalone: every service in one process"
    );
    let mut api_config = fxtriage_api::Config::new(args.http_address);
    api_config.tls = args.https.load()?;
    api_config.failed_auth = args.https.failed_auth();
    api_config.oidc = args.oidc.config();
    tasks.spawn(fxtriage_api::run(api_config, clients, services.clone()));
    #[allow(clippy::print_stdout)]
    {
        println!(
            "fxtriage standalone: DICOM C-STORE to {}@{}",
            args.ae_title, args.dimse_address
        );
        println!(
            "  web page and API: {scheme}://{} (site {DEMO_SITE})",
            args.http_address
        );
        println!(
            "  STOW-RS: {scheme}://{}/dicomweb/sites/{DEMO_SITE}/studies",
            args.stow_address
        );
        println!(
            "  first access token (admin, shown once): {}",
            token.token.reveal()
        );
        println!("  the same as JSON: {}", description_path.display());
    }

    let mut outcome = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let result = finished
            .context("a service task panicked")
            .and_then(|result| result);
        if let Err(error) = result {
            tracing::error!(
                error = format!("{error:#}"),
                "a service stopped; stopping the others"
            );
            outcome = Err(error);
        }
        services.cancel();
    }
    if let Some(cluster) = private_postgres {
        tokio::task::spawn_blocking(move || drop(cluster)).await?;
    }
    drop(lock);
    outcome
}
