//! The PostgreSQL side of fxtriage: a connection pool and the schema, evolved by
//! versioned migrations (crates/db/migrations/V{n}__{name}.sql) applied at
//! start-up. Migrations are append-only: a released migration is never edited.

use std::fmt;
use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("migrations");
}

pub use deadpool_postgres::Pool as DbPool;

/// Serialises concurrent start-ups (several services migrating the same database at
/// once); the number is arbitrary but fixed.
const MIGRATION_LOCK_ID: i64 = 0x6678_7472_6961_6765; // "fxtriage"

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(tokio_postgres::Error),
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("PostgreSQL error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// Connection settings. Displaying it never shows the password.
#[derive(Clone)]
pub struct DbConfig {
    config: tokio_postgres::Config,
    pub max_connections: usize,
}

impl DbConfig {
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        let config = tokio_postgres::Config::from_str(url).map_err(DbError::InvalidUrl)?;
        Ok(Self {
            config,
            max_connections: 16,
        })
    }

    /// The same server, another database (used by tests to get a fresh database).
    pub fn with_database(&self, database: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(database);
        Self {
            config,
            max_connections: self.max_connections,
        }
    }

    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    fn target(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{}:{port}/{}", hosts.join(","), self.database())
    }

    /// A single connection outside the pool, for migrations and administration.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|source| DbError::Connect {
                    target: self.target(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection closed with an error");
            }
        });
        Ok(client)
    }

    pub fn pool(&self) -> Result<Pool, DbError> {
        let manager = Manager::from_config(
            self.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.max_connections)
            .build()
            .map_err(|error| DbError::Pool(error.to_string()))
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("target", &self.target())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// What `migrate` did: the versions it applied now (empty when the schema was current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i32>,
    pub current_version: Option<i32>,
}

/// Applies every pending migration, holding a PostgreSQL advisory lock so that
/// services starting together do not race. Safe to call on every start.
pub async fn migrate(config: &DbConfig) -> Result<MigrationReport, DbError> {
    migrate_up_to(config, None).await
}

/// Applies the pending migrations up to `version` only: for tests of a
/// migration over data written by an earlier schema.
pub async fn migrate_to(config: &DbConfig, version: i32) -> Result<MigrationReport, DbError> {
    migrate_up_to(config, Some(version)).await
}

async fn migrate_up_to(
    config: &DbConfig,
    version: Option<i32>,
) -> Result<MigrationReport, DbError> {
    let mut client = config.connect().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await
        .map_err(|source| DbError::Query {
            doing: "taking the migration lock",
            source,
        })?;
    let runner = match version {
        Some(version) => {
            embedded::migrations::runner().set_target(refinery::Target::Version(version))
        }
        None => embedded::migrations::runner(),
    };
    let outcome = runner.run_async(&mut client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await;
    let report = outcome?;
    unlock.map_err(|source| DbError::Query {
        doing: "releasing the migration lock",
        source,
    })?;
    let applied: Vec<i32> = report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    let current_version = current_schema_version(&client).await?;
    for version in &applied {
        tracing::info!(
            version,
            database = config.database(),
            "applied schema migration"
        );
    }
    Ok(MigrationReport {
        applied,
        current_version,
    })
}

async fn current_schema_version(client: &tokio_postgres::Client) -> Result<Option<i32>, DbError> {
    let row = client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])
        .await
        .map_err(|source| DbError::Query {
            doing: "reading the schema version",
            source,
        })?;
    Ok(row.get(0))
}

/// [`migrate`], except that a schema already at this build's version is left
/// alone without taking the lock or running the migration tool (which
/// creates its history table if missing): so a service whose database role
/// may not create or alter tables (see [`grant_service_role`]) starts against
/// a database its owner has migrated.
async fn migrate_unless_current(config: &DbConfig) -> Result<MigrationReport, DbError> {
    let client = config.connect().await?;
    // No history table yet (a new database): migrate.
    // Only exactly this build's version: a newer schema goes through the
    // migration tool, which refuses it (an older binary must not run on it).
    if let Ok(Some(version)) = current_schema_version(&client).await
        && version == latest_known_version()
    {
        return Ok(MigrationReport {
            applied: Vec::new(),
            current_version: Some(version),
        });
    }
    drop(client);
    migrate(config).await
}

/// What a role needs to have been granted before the services may run as it.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(
        "{0:?} is not a role name fxtriage grants to: lower-case letters, digits and '_', starting with a letter or '_', at most 63"
    )]
    InvalidRole(String),
    #[error("role {0} does not exist; create it first (CREATE ROLE {0} LOGIN PASSWORD ...)")]
    NoSuchRole(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Grants `role` what the services need and nothing more, on the (migrated)
/// database of `config`, whose connection must be the schema's owner (the
/// role that ran the migrations):
///
/// - every table: SELECT, INSERT, UPDATE, DELETE; sequences: USAGE, SELECT,
///   UPDATE;
/// - `audit_log`: SELECT and INSERT only, so a service can neither change nor
///   remove an audit row, nor disable the triggers that refuse it (only the
///   owner may), nor truncate;
/// - the migration history: SELECT only (services check the version, the
///   owner migrates);
/// - no CREATE on the schema (nor for PUBLIC, as PostgreSQL 15 and later
///   already have it), no ownership of anything.
///
/// Run again after each migration (`fxtriage migrate --service-role ROLE`
/// does both), so that new tables are granted too.
pub async fn grant_service_role(config: &DbConfig, role: &str) -> Result<(), GrantError> {
    let valid = !role.is_empty()
        && role.len() <= 63
        && role
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(GrantError::InvalidRole(role.to_owned()));
    }
    let mut client = config.connect().await?;
    let query = |doing: &'static str| move |source| DbError::Query { doing, source };
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(query("looking the role up"))?;
    if exists.is_none() {
        return Err(GrantError::NoSuchRole(role.to_owned()));
    }
    // The name is checked above to be a plain lower-case identifier: quoting it
    // is then exact, and no other text reaches the statements.
    let role = format!("\"{role}\"");
    let statements = [
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("REVOKE CREATE ON SCHEMA public FROM {role}"),
        // Before PostgreSQL 15 every role could create tables in `public`.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        format!("REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_log FROM {role}"),
        format!("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON refinery_schema_history FROM {role}"),
    ];
    let transaction = client
        .transaction()
        .await
        .map_err(query("starting the grants"))?;
    for statement in &statements {
        transaction
            .batch_execute(statement)
            .await
            .map_err(query("granting the service role its privileges"))?;
    }
    transaction
        .commit()
        .await
        .map_err(query("committing the grants"))?;
    tracing::info!(role = %role, database = config.database(), "service role granted");
    Ok(())
}

/// The highest migration version this build knows.
pub fn latest_known_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| migration.version())
        .max()
        .unwrap_or(0)
}

/// Waits for PostgreSQL (retrying with backoff while it is unreachable), applies
/// pending migrations and builds the pool: the one start-up path of every
/// command that uses the database. `None` when `stop` is cancelled first.
pub async fn wait_and_migrate(
    config: &DbConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<Pool>, DbError> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match migrate_unless_current(config).await {
            Ok(report) => {
                tracing::info!(version = ?report.current_version, database = config.database(), "schema is current");
                return config.pool().map(Some);
            }
            Err(error @ DbError::Connect { .. }) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "PostgreSQL is unreachable; retrying");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}
