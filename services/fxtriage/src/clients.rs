//! Command-line options for what a service talks to, and the clients built from
//! them once per process: the message bus (with its namespace, its topics created
//! here and nowhere else), the object store and the database (waited for and
//! migrated here and nowhere else).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use fxtriage_bus::{Bus, KafkaBus, KafkaConfig};
use fxtriage_objstore::{LocalDirStore, ObjectStore, S3Config, S3Credentials, S3Store};
use fxtriage_proto::Namespace;

#[derive(Debug, Args)]
pub struct BusArgs {
    /// Kafka bootstrap servers, e.g. 127.0.0.1:19092.
    #[arg(long, env = "FXTRIAGE_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// Partitions of the topics fxtriage creates when they are missing.
    #[arg(long, env = "FXTRIAGE_TOPIC_PARTITIONS", default_value_t = 8)]
    pub topic_partitions: u32,
    /// Replication factor of the topics fxtriage creates.
    #[arg(long, env = "FXTRIAGE_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
    /// Deployment namespace: prefixes every topic, dead-letter topic and consumer
    /// group (`NAME.fxtriage.instances.v1`), so deployments sharing one Kafka
    /// cluster never see each other's messages. Empty: the bare names.
    #[arg(long, env = "FXTRIAGE_NAMESPACE", default_value = "")]
    pub namespace: Namespace,
    /// Extra librdkafka client properties, `KEY=VALUE`, for what a managed
    /// cluster needs (security.protocol, sasl.mechanism, ssl.ca.location, ...) or
    /// for diagnosis (debug=cgrp); repeat the flag, or separate them by commas in
    /// the variable (an empty variable, or an empty item between commas, sets
    /// nothing). Values are never logged when the key names a secret.
    #[arg(long = "kafka-property", env = "FXTRIAGE_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property, hide_env_values = true)]
    pub kafka_properties: Vec<Option<(String, String)>>,
}

/// `KEY=VALUE`, or `None` for an empty item (a variable set to "" by a
/// deployment's template must not stop the service).
fn parse_property(text: &str) -> Result<Option<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{text:?} has no key"));
    }
    Ok(Some((key.to_owned(), value.trim().to_owned())))
}

impl BusArgs {
    /// Connects, checks that a broker answers, and creates the namespace's missing topics.
    pub async fn connect(&self, client_id: &str) -> anyhow::Result<Arc<dyn Bus>> {
        let mut config = KafkaConfig::new(&self.kafka_brokers, client_id);
        config.replication_factor = self.topic_replication;
        config.properties = self.kafka_properties.iter().flatten().cloned().collect();
        let bus = KafkaBus::connect(config)?;
        bus.check(Duration::from_secs(15))
            .await
            .with_context(|| format!("no Kafka broker answers at {}", self.kafka_brokers))?;
        fxtriage_clients::ensure_topics(&bus, &self.namespace, self.topic_partitions)
            .await
            .with_context(|| format!("cannot create the topics of namespace {}", self.namespace))?;
        Ok(Arc::new(bus))
    }
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// S3 bucket of the object store. Without it, --store-dir is used.
    #[arg(long, env = "FXTRIAGE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint of an S3-compatible server (path-style addressing); AWS when unset.
    #[arg(long, env = "FXTRIAGE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "FXTRIAGE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Static credentials; the default AWS credential chain when unset.
    #[arg(long, env = "FXTRIAGE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "FXTRIAGE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// A local directory as object store (single machine only).
    #[arg(long, env = "FXTRIAGE_STORE_DIR")]
    pub store_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        if let Some(bucket) = &self.s3_bucket {
            return self.s3(bucket).await;
        }
        let Some(directory) = &self.store_dir else {
            anyhow::bail!(
                "no object store: give --s3-bucket (S3) or --store-dir (local directory)"
            );
        };
        std::fs::create_dir_all(directory).with_context(|| {
            format!("cannot create the store directory {}", directory.display())
        })?;
        Ok(Arc::new(LocalDirStore::new(directory.clone())))
    }

    /// `bucket` on this S3 endpoint, region and credentials.
    pub async fn s3(&self, bucket: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let credentials = match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => S3Credentials::Static {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
            },
            (None, None) => S3Credentials::Default,
            _ => {
                anyhow::bail!("give both --s3-access-key-id and --s3-secret-access-key, or neither")
            }
        };
        let config = S3Config {
            endpoint: self.s3_endpoint.clone(),
            bucket: bucket.to_owned(),
            region: self.s3_region.clone(),
            path_style: self.s3_endpoint.is_some(),
            credentials,
        };
        Ok(Arc::new(S3Store::connect(config).await?))
    }
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/fxtriage.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

impl DatabaseArgs {
    /// For a service: waits while PostgreSQL is unreachable, migrates, and builds
    /// the pool; `None` when `shutdown` came first.
    pub async fn wait_and_migrate(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<fxtriage_db::DbPool>> {
        let config = fxtriage_db::DbConfig::from_url(&self.database_url)?;
        Ok(fxtriage_db::wait_and_migrate(&config, shutdown).await?)
    }

    /// For a command run by hand: migrates and builds the pool, failing at once
    /// when PostgreSQL does not answer.
    pub async fn migrated_pool(&self) -> anyhow::Result<fxtriage_db::DbPool> {
        let config = fxtriage_db::DbConfig::from_url(&self.database_url)?;
        fxtriage_db::migrate(&config).await?;
        Ok(config.pool()?)
    }
}

/// HTTPS on a service's HTTP listener (the API, STOW-RS), and how many
/// invalid tokens it takes from one client.
#[derive(Debug, Args)]
pub struct HttpsArgs {
    /// Invalid tokens allowed per client address (and per service token
    /// prefix) within a minute before that address or prefix is answered 429
    /// until the minute ends; 0: no limit. Behind a proxy or ingress every
    /// client has the proxy's address: raise it there, or set 0 and let the
    /// proxy limit.
    #[arg(long, env = "FXTRIAGE_AUTH_FAILURES_PER_MINUTE", default_value_t = 20)]
    pub auth_failures_per_minute: u32,
    /// Serve HTTPS with this certificate chain (PEM, the server's own
    /// certificate first) and --https-key; plain HTTP when unset (on loopback,
    /// or behind a proxy that terminates TLS).
    #[arg(long, env = "FXTRIAGE_HTTPS_CERTIFICATE", requires = "https_key")]
    pub https_certificate: Option<PathBuf>,
    /// The private key (PEM) of --https-certificate.
    #[arg(long, env = "FXTRIAGE_HTTPS_KEY", requires = "https_certificate")]
    pub https_key: Option<PathBuf>,
}

impl HttpsArgs {
    /// The failed-authentication throttle's limits.
    pub fn failed_auth(&self) -> fxtriage_sites::ThrottleLimits {
        fxtriage_sites::ThrottleLimits {
            max_failures: self.auth_failures_per_minute,
            ..fxtriage_sites::ThrottleLimits::default()
        }
    }

    /// The HTTPS configuration, read now so that a wrong file stops the
    /// service at start with its name; `None` for plain HTTP.
    pub fn load(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let (Some(certificate), Some(key)) = (&self.https_certificate, &self.https_key) else {
            return Ok(None);
        };
        let config = fxtriage_telemetry::tls::https_config(&fxtriage_telemetry::tls::TlsFiles {
            certificate_chain: certificate,
            private_key: key,
            client_ca: None,
        })?;
        Ok(Some(config))
    }
}

/// Single sign-on for people: OpenID Connect tokens of one identity provider.
#[derive(Debug, Args)]
pub struct OidcArgs {
    /// The identity provider's issuer (as tokens state it in `iss`); people's
    /// tokens from it are accepted, mapped by `fxtriage tokens create
    /// --oidc-claim`. Service tokens only when unset.
    #[arg(long, env = "FXTRIAGE_OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The audience the tokens must be for (fxtriage's client id at the provider).
    #[arg(long, env = "FXTRIAGE_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The provider's JWKS; by default the jwks_uri of its discovery document.
    #[arg(long, env = "FXTRIAGE_OIDC_JWKS_URL", requires = "oidc_issuer")]
    pub oidc_jwks_url: Option<String>,
    /// How far the provider's clock and this server's may disagree, in seconds.
    #[arg(long, env = "FXTRIAGE_OIDC_CLOCK_SKEW_SECONDS", default_value_t = 60)]
    pub oidc_clock_skew_seconds: u64,
}

impl OidcArgs {
    pub fn config(&self) -> Option<fxtriage_api::oidc::OidcConfig> {
        let (Some(issuer), Some(audience)) = (&self.oidc_issuer, &self.oidc_audience) else {
            return None;
        };
        Some(fxtriage_api::oidc::OidcConfig {
            issuer: issuer.clone(),
            audience: audience.clone(),
            jwks_url: self.oidc_jwks_url.clone(),
            clock_skew: Duration::from_secs(self.oidc_clock_skew_seconds),
        })
    }
}

#[derive(Debug, Args)]
pub struct SitesFileArgs {
    /// A sites file applied to the site registry at start-up, as `fxtriage sites
    /// apply FILE` would (the registry stays the one definition; services follow
    /// later changes without a restart).
    #[arg(long = "sites", env = "FXTRIAGE_SITES")]
    pub sites_file: Option<PathBuf>,
}

impl SitesFileArgs {
    /// Applies the file, if one is given; an invalid file stops the start.
    pub async fn apply_at_start(&self, pool: &fxtriage_db::DbPool) -> anyhow::Result<()> {
        let Some(path) = &self.sites_file else {
            return Ok(());
        };
        let mut report = Vec::new();
        crate::commands::sites::apply_file(
            pool,
            path,
            fxtriage_sites::ApplyOptions::default(),
            &mut report,
        )
        .await?;
        for line in String::from_utf8_lossy(&report).lines() {
            tracing::info!(file = %path.display(), "{line}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        bus: BusArgs,
    }

    fn properties(arguments: &[&str]) -> Result<Vec<(String, String)>, clap::Error> {
        let parsed = Command::try_parse_from(
            ["fxtriage", "--kafka-brokers", "127.0.0.1:9092"]
                .iter()
                .chain(arguments),
        )?;
        Ok(parsed.bus.kafka_properties.into_iter().flatten().collect())
    }

    #[test]
    fn kafka_properties_are_read_and_an_empty_one_sets_nothing() {
        assert_eq!(
            properties(&["--kafka-property", " fetch.wait.max.ms = 50 "]).expect("parsed"),
            [("fetch.wait.max.ms".to_owned(), "50".to_owned())]
        );
        // As FXTRIAGE_KAFKA_PROPERTIES="" (a template's default) reads.
        assert_eq!(properties(&["--kafka-property", ""]).expect("parsed"), []);
        let refused = properties(&["--kafka-property", "no-equals-sign"]).expect_err("refused");
        assert!(
            refused.to_string().contains("is not KEY=VALUE"),
            "{refused}"
        );
    }
}
