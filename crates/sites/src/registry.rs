//! The registry as a service sees it: a snapshot, kept current without a restart.
//! A background task reads the registry's revision every second (one row) and
//! reloads the whole registry when it changed, so a change applied anywhere is in
//! force in every service within about a second, even across a lost database
//! connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use fxtriage_core::policy::Policy;
use fxtriage_core::{GroupId, SiteId};
use tokio_util::sync::CancellationToken;

use crate::config::SiteConfig;
use crate::store::{self, Registry, RegistryError};

/// The registry at one revision, indexed for the services' questions.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    /// Every site, retired ones included (their messages in flight still apply).
    sites: BTreeMap<SiteId, (Arc<SiteConfig>, bool)>,
    by_called_ae_title: HashMap<String, SiteId>,
    /// Groups in service, with their sites in service.
    groups: BTreeMap<GroupId, (String, Vec<SiteId>)>,
}

impl Snapshot {
    pub fn from_registry(registry: &Registry) -> Self {
        let mut snapshot = Self {
            revision: registry.revision,
            ..Self::default()
        };
        for (id, record) in &registry.sites {
            if !record.retired {
                for ae_title in &record.config.called_ae_titles {
                    snapshot
                        .by_called_ae_title
                        .insert(ae_title.clone(), id.clone());
                }
            }
            snapshot.sites.insert(
                id.clone(),
                (Arc::new(record.config.clone()), record.retired),
            );
        }
        for group in registry.active_groups() {
            let sites = group
                .sites
                .iter()
                .filter(|site| {
                    registry
                        .sites
                        .get(*site)
                        .is_some_and(|record| !record.retired)
                })
                .cloned()
                .collect();
            snapshot
                .groups
                .insert(group.id.clone(), (group.name.clone(), sites));
        }
        snapshot
    }

    /// The sites and groups of a sites file, as if it were the whole registry:
    /// for tests and tools that need no database.
    pub fn from_toml(text: &str) -> Result<Self, crate::file::InvalidFile> {
        let file = crate::file::parse(text, &crate::file::Existing::default(), false)?;
        let mut registry = Registry::default();
        for config in file.sites {
            registry.sites.insert(
                config.id.clone(),
                store::SiteRecord {
                    config,
                    retired: false,
                },
            );
        }
        for config in file.groups {
            registry.groups.insert(
                config.id.clone(),
                store::GroupRecord {
                    config,
                    retired: false,
                },
            );
        }
        Ok(Self::from_registry(&registry))
    }

    /// Sites in service, for tests and tools that build a snapshot by hand.
    pub fn of_sites(sites: impl IntoIterator<Item = SiteConfig>) -> Self {
        let mut registry = Registry::default();
        for config in sites {
            registry.sites.insert(
                config.id.clone(),
                store::SiteRecord {
                    config,
                    retired: false,
                },
            );
        }
        Self::from_registry(&registry)
    }

    /// The site in service with this id.
    pub fn site(&self, id: &str) -> Option<&Arc<SiteConfig>> {
        self.sites
            .iter()
            .find(|(site, _)| site.as_str() == id)
            .and_then(|(_, (config, retired))| (!retired).then_some(config))
    }

    /// The site in service that `called_ae_title` (trailing spaces ignored) delivers to.
    pub fn by_called_ae_title(&self, called_ae_title: &str) -> Option<&Arc<SiteConfig>> {
        let site = self.by_called_ae_title.get(called_ae_title.trim())?;
        self.site(site.as_str())
    }

    /// Every site in service.
    pub fn sites(&self) -> impl Iterator<Item = &Arc<SiteConfig>> {
        self.sites
            .values()
            .filter(|(_, retired)| !retired)
            .map(|(config, _)| config)
    }

    /// The priority policy of `site` (retired sites keep theirs; an unknown site
    /// gets the defaults, though its messages are refused elsewhere).
    pub fn policy(&self, site: &SiteId) -> Policy {
        self.sites
            .get(site)
            .map(|(config, _)| config.policy)
            .unwrap_or_default()
    }

    /// The sites in service of group `id`, if it is in service.
    pub fn group_sites(&self, id: &str) -> Option<&[SiteId]> {
        self.groups
            .iter()
            .find(|(group, _)| group.as_str() == id)
            .map(|(_, (_, sites))| sites.as_slice())
    }

    /// The display name of group `id`.
    pub fn group_name(&self, id: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(group, _)| group.as_str() == id)
            .map(|(_, (name, _))| name.as_str())
    }

    /// Whether `site` is one of group `group`'s sites.
    pub fn group_has_site(&self, group: &GroupId, site: &str) -> bool {
        self.group_sites(group.as_str())
            .is_some_and(|sites| sites.iter().any(|member| member.as_str() == site))
    }
}

/// A live view of the registry, cheap to clone and share between tasks.
#[derive(Debug, Clone)]
pub struct SiteRegistry {
    current: Arc<RwLock<Arc<Snapshot>>>,
}

impl SiteRegistry {
    /// A registry that stays at `snapshot` (tests, tools).
    pub fn fixed(snapshot: Snapshot) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(snapshot))),
        }
    }

    /// The registry as the database holds it now.
    pub async fn load(pool: &Pool) -> Result<Self, RegistryError> {
        let client = pool.get().await?;
        let registry = store::load(&client).await?;
        Ok(Self::fixed(Snapshot::from_registry(&registry)))
    }

    /// The registry as the database holds it now, followed from then on until
    /// `shutdown` (every [`REFRESH_INTERVAL`]): what a service starts with.
    pub async fn load_and_follow(
        pool: &Pool,
        shutdown: &CancellationToken,
    ) -> Result<Self, RegistryError> {
        let registry = Self::load(pool).await?;
        registry.keep_current(pool.clone(), REFRESH_INTERVAL, shutdown.clone());
        Ok(registry)
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Reloads when the registry's revision moved; whether it did.
    pub async fn refresh(&self, pool: &Pool) -> Result<bool, RegistryError> {
        let client = pool.get().await?;
        let revision = store::revision(&client).await?;
        if revision == self.current().revision {
            return Ok(false);
        }
        let registry = store::load(&client).await?;
        let snapshot = Arc::new(Snapshot::from_registry(&registry));
        tracing::info!(
            revision = snapshot.revision,
            sites = snapshot.sites().count(),
            "site registry changed; now in force"
        );
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        Ok(true)
    }

    /// Refreshes every `interval` until `shutdown`; a failure is logged and
    /// retried, the last snapshot staying in force meanwhile.
    pub fn keep_current(
        &self,
        pool: Pool,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match registry.refresh(&pool).await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("site registry readable again");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "cannot read the site registry; keeping the last one");
                        }
                        failing = true;
                    }
                }
            }
        })
    }
}

/// How often services look for registry changes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
