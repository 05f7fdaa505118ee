//! The registry's SQL (crates/db/migrations/V3__site_registry.sql): reading the
//! whole registry, and applying a sites file in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::{GenericClient, Pool};
use fxtriage_core::{GroupId, SiteId};

use crate::audit::{self, Changer};
use crate::config::{GroupConfig, SiteConfig};
use crate::file::RegistryFile;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("PostgreSQL error while {doing}: {}", describe(source))]
    Database {
        doing: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// What is stored cannot be read by this version.
    #[error("the site registry holds {0}")]
    Corrupt(String),
    /// The file contradicts the registry as it is now (it changed meanwhile).
    #[error("{0}; nothing was changed")]
    Conflict(String),
}

fn describe(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, RegistryError>;
}

impl<T> Doing<T> for Result<T, tokio_postgres::Error> {
    fn doing(self, doing: &'static str) -> Result<T, RegistryError> {
        self.map_err(|source| RegistryError::Database { doing, source })
    }
}

/// A site as stored, with whether it was retired (removed by a pruning apply:
/// its data stays, it takes no new images, its AE titles are free again).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRecord {
    pub config: SiteConfig,
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub config: GroupConfig,
    pub retired: bool,
}

/// The whole registry as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    /// Bumped by every change (`site_registry_revision`).
    pub revision: i64,
    pub sites: BTreeMap<SiteId, SiteRecord>,
    pub groups: BTreeMap<GroupId, GroupRecord>,
}

impl Registry {
    /// The sites in service (not retired).
    pub fn active_sites(&self) -> impl Iterator<Item = &SiteConfig> {
        self.sites
            .values()
            .filter(|record| !record.retired)
            .map(|record| &record.config)
    }

    pub fn active_groups(&self) -> impl Iterator<Item = &GroupConfig> {
        self.groups
            .values()
            .filter(|record| !record.retired)
            .map(|record| &record.config)
    }
}

/// The fields of a site kept in `sites.config`: all but its id, name and called
/// AE titles, which have columns of their own.
const COLUMN_FIELDS: [&str; 3] = ["id", "name", "called_ae_titles"];

fn config_json(site: &SiteConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(site).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        for field in COLUMN_FIELDS {
            object.remove(field);
        }
    }
    value
}

/// The revision of the registry: one cheap read, to tell whether to reload.
pub async fn revision(client: &impl GenericClient) -> Result<i64, RegistryError> {
    let row = client
        .query_one("SELECT revision FROM site_registry_revision", &[])
        .await
        .doing("reading the site registry's revision")?;
    Ok(row.get(0))
}

/// Reads the whole registry in one snapshot.
pub async fn load(client: &impl GenericClient) -> Result<Registry, RegistryError> {
    let rows = client
        .query(
            "SELECT (SELECT revision FROM site_registry_revision) AS revision, \
                    s.site_id, s.display_name, s.config, s.retired_at IS NOT NULL AS retired, \
                    coalesce((SELECT array_agg(a.ae_title ORDER BY a.ae_title) \
                                FROM site_called_ae_titles a WHERE a.site_id = s.site_id), \
                             '{}') AS called_ae_titles \
             FROM sites s ORDER BY s.site_id",
            &[],
        )
        .await
        .doing("reading the sites")?;
    let mut registry = Registry {
        revision: match rows.first() {
            Some(row) => row.get("revision"),
            None => revision(client).await?,
        },
        ..Registry::default()
    };
    for row in &rows {
        let id: String = row.get("site_id");
        let mut value: serde_json::Value = row.get("config");
        let Some(object) = value.as_object_mut() else {
            return Err(RegistryError::Corrupt(format!(
                "a configuration of site {id} that is not a JSON object"
            )));
        };
        object.insert("id".into(), id.clone().into());
        object.insert("name".into(), row.get::<_, String>("display_name").into());
        object.insert(
            "called_ae_titles".into(),
            row.get::<_, Vec<String>>("called_ae_titles").into(),
        );
        let config: SiteConfig = serde_json::from_value(value).map_err(|error| {
            RegistryError::Corrupt(format!(
                "a configuration of site {id} this version cannot read: {error}"
            ))
        })?;
        registry.sites.insert(
            config.id.clone(),
            SiteRecord {
                config,
                retired: row.get("retired"),
            },
        );
    }
    let groups = client
        .query(
            "SELECT g.group_id, g.display_name, g.retired_at IS NOT NULL AS retired, \
                    coalesce((SELECT array_agg(m.site_id ORDER BY m.site_id) \
                                FROM site_group_members m WHERE m.group_id = g.group_id), \
                             '{}') AS sites \
             FROM site_groups g ORDER BY g.group_id",
            &[],
        )
        .await
        .doing("reading the groups")?;
    for row in &groups {
        let id: String = row.get("group_id");
        let corrupt = |what: String| RegistryError::Corrupt(format!("group {id}: {what}"));
        let group_id = GroupId::parse(id.clone()).map_err(|error| corrupt(error.to_string()))?;
        let sites = row
            .get::<_, Vec<String>>("sites")
            .into_iter()
            .map(|site| SiteId::parse(site).map_err(|error| corrupt(error.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        registry.groups.insert(
            group_id.clone(),
            GroupRecord {
                config: GroupConfig {
                    id: group_id,
                    name: row.get("display_name"),
                    sites,
                },
                retired: row.get("retired"),
            },
        );
    }
    Ok(registry)
}

/// One change an apply makes (or would make, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddSite(SiteId),
    /// The fields that differ.
    ChangeSite(SiteId, Vec<&'static str>),
    /// A retired site back in service.
    RestoreSite(SiteId),
    RetireSite(SiteId),
    AddGroup(GroupId),
    ChangeGroup(GroupId, Vec<&'static str>),
    RestoreGroup(GroupId),
    RetireGroup(GroupId),
    /// A STOW-RS sender token from an earlier release's sites file.
    AddSenderToken {
        site: SiteId,
        token_id: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::AddSite(site) => write!(f, "add site {site}"),
            Change::ChangeSite(site, fields) => {
                write!(f, "change site {site}: {}", fields.join(", "))
            }
            Change::RestoreSite(site) => write!(f, "restore retired site {site}"),
            Change::RetireSite(site) => write!(
                f,
                "remove site {site} (retired: its worklist and history stay, its AE titles are freed)"
            ),
            Change::AddGroup(group) => write!(f, "add group {group}"),
            Change::ChangeGroup(group, fields) => {
                write!(f, "change group {group}: {}", fields.join(", "))
            }
            Change::RestoreGroup(group) => write!(f, "restore retired group {group}"),
            Change::RetireGroup(group) => write!(f, "remove group {group} (retired)"),
            Change::AddSenderToken { site, token_id } => {
                write!(f, "add STOW-RS sender token {token_id} for site {site}")
            }
        }
    }
}

/// How to apply a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Also remove (retire) the sites and groups the file does not name.
    pub prune: bool,
    /// Only say what would change.
    pub dry_run: bool,
}

/// What the file changes in `current`, in the order it is applied.
pub fn plan(current: &Registry, file: &RegistryFile, options: ApplyOptions) -> Vec<Change> {
    let mut changes = Vec::new();
    for site in &file.sites {
        match current.sites.get(&site.id) {
            None => changes.push(Change::AddSite(site.id.clone())),
            Some(record) => {
                let fields = changed_site_fields(&record.config, site);
                if record.retired {
                    changes.push(Change::RestoreSite(site.id.clone()));
                }
                if !fields.is_empty() {
                    changes.push(Change::ChangeSite(site.id.clone(), fields));
                }
            }
        }
    }
    let named: BTreeSet<&SiteId> = file.sites.iter().map(|site| &site.id).collect();
    if options.prune {
        for site in current.active_sites() {
            if !named.contains(&site.id) {
                changes.push(Change::RetireSite(site.id.clone()));
            }
        }
    }
    for group in &file.groups {
        match current.groups.get(&group.id) {
            None => changes.push(Change::AddGroup(group.id.clone())),
            Some(record) => {
                let mut fields = Vec::new();
                if record.config.name != group.name {
                    fields.push("name");
                }
                let before: BTreeSet<&SiteId> = record.config.sites.iter().collect();
                let after: BTreeSet<&SiteId> = group.sites.iter().collect();
                if before != after {
                    fields.push("sites");
                }
                if record.retired {
                    changes.push(Change::RestoreGroup(group.id.clone()));
                }
                if !fields.is_empty() {
                    changes.push(Change::ChangeGroup(group.id.clone(), fields));
                }
            }
        }
    }
    if options.prune {
        let named_groups: BTreeSet<&GroupId> = file.groups.iter().map(|group| &group.id).collect();
        for group in current.active_groups() {
            if !named_groups.contains(&group.id) {
                changes.push(Change::RetireGroup(group.id.clone()));
            }
        }
    }
    changes
}

fn changed_site_fields(before: &SiteConfig, after: &SiteConfig) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut differs = |field: &'static str, changed: bool| {
        if changed {
            fields.push(field);
        }
    };
    differs("name", before.name != after.name);
    let titles =
        |site: &SiteConfig| -> BTreeSet<String> { site.called_ae_titles.iter().cloned().collect() };
    differs("called_ae_titles", titles(before) != titles(after));
    differs(
        "calling_ae_titles",
        before.calling_ae_titles != after.calling_ae_titles,
    );
    differs("routing", before.routing != after.routing);
    differs("limits", before.limits != after.limits);
    differs("urgency", before.urgency != after.urgency);
    differs("policy", before.policy != after.policy);
    differs("destinations", before.destinations != after.destinations);
    differs(
        "hl7_sending_facilities",
        before.hl7_sending_facilities != after.hl7_sending_facilities,
    );
    differs(
        "ai_enabled_from",
        before.ai_enabled_from != after.ai_enabled_from,
    );
    differs("second_look", before.second_look != after.second_look);
    differs("intake", before.intake != after.intake);
    differs("dicom_tls", before.dicom_tls != after.dicom_tls);
    differs("time_zone", before.time_zone != after.time_zone);
    fields
}

/// One applier at a time: the first key of its advisory lock.
const APPLY_LOCK: i64 = 0x7369_7465_7321; // "sites!"

/// Applies `file` in one transaction: sites and groups added or changed, with
/// `prune` the others retired, legacy STOW-RS digests made sender tokens. A dry
/// run changes nothing and returns the same list.
pub async fn apply(
    pool: &Pool,
    file: &RegistryFile,
    options: ApplyOptions,
) -> Result<Vec<Change>, RegistryError> {
    apply_by(pool, file, options, &Changer::operator()).await
}

/// The sites a change concerns, for the audit log: a site's own; a group's
/// sites before and after it.
fn concerned_sites(change: &Change, before: &Registry, file: &RegistryFile) -> Vec<String> {
    let group_sites = |group: &GroupId| {
        let mut sites: Vec<String> = before
            .groups
            .get(group)
            .map(|record| record.config.sites.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(
                file.groups
                    .iter()
                    .filter(|candidate| candidate.id == *group)
                    .flat_map(|candidate| candidate.sites.clone()),
            )
            .map(|site| site.as_str().to_owned())
            .collect();
        sites.sort();
        sites.dedup();
        sites
    };
    match change {
        Change::AddSite(site)
        | Change::ChangeSite(site, _)
        | Change::RestoreSite(site)
        | Change::RetireSite(site)
        | Change::AddSenderToken { site, .. } => vec![site.as_str().to_owned()],
        Change::AddGroup(group)
        | Change::ChangeGroup(group, _)
        | Change::RestoreGroup(group)
        | Change::RetireGroup(group) => group_sites(group),
    }
}

/// Applies `file`, each change recorded in the audit log of the sites it
/// concerns (`sites.apply`) as made `by`, in the same transaction.
pub async fn apply_by(
    pool: &Pool,
    file: &RegistryFile,
    options: ApplyOptions,
    by: &Changer,
) -> Result<Vec<Change>, RegistryError> {
    let mut client = pool.get().await?;
    let tx = client
        .transaction()
        .await
        .doing("starting to apply the sites file")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK])
        .await
        .doing("waiting for another apply")?;
    let current = load(&tx).await?;
    let mut changes = plan(&current, file, options);
    if options.dry_run {
        changes.extend(legacy_tokens(&tx, file, true).await?);
        return Ok(changes);
    }
    // AE titles that move between sites are released first, then taken.
    for change in &changes {
        if let Change::RetireSite(site) = change {
            tx.execute(
                "UPDATE sites SET retired_at = now(), updated_at = now() WHERE site_id = $1",
                &[&site.as_str()],
            )
            .await
            .doing("retiring a site")?;
            tx.execute(
                "DELETE FROM site_called_ae_titles WHERE site_id = $1",
                &[&site.as_str()],
            )
            .await
            .doing("freeing a retired site's AE titles")?;
            tx.execute(
                "DELETE FROM site_group_members WHERE site_id = $1",
                &[&site.as_str()],
            )
            .await
            .doing("taking a retired site out of its groups")?;
        }
    }
    for site in &file.sites {
        tx.execute(
            "DELETE FROM site_called_ae_titles WHERE site_id = $1 AND NOT ae_title = ANY($2)",
            &[&site.id.as_str(), &site.called_ae_titles],
        )
        .await
        .doing("releasing AE titles")?;
    }
    for site in &file.sites {
        tx.execute(
            "INSERT INTO sites (site_id, display_name, config) VALUES ($1, $2, $3) \
             ON CONFLICT (site_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
                 config = EXCLUDED.config, retired_at = NULL, updated_at = now() \
             WHERE sites.display_name IS DISTINCT FROM EXCLUDED.display_name \
                OR sites.config IS DISTINCT FROM EXCLUDED.config \
                OR sites.retired_at IS NOT NULL",
            &[&site.id.as_str(), &site.name, &config_json(site)],
        )
        .await
        .doing("writing a site")?;
        for ae_title in &site.called_ae_titles {
            tx.execute(
                "INSERT INTO site_called_ae_titles (ae_title, site_id) VALUES ($1, $2) \
                 ON CONFLICT (ae_title) DO NOTHING",
                &[ae_title, &site.id.as_str()],
            )
            .await
            .doing("taking an AE title")?;
        }
    }
    for change in &changes {
        if let Change::RetireGroup(group) = change {
            tx.execute(
                "UPDATE site_groups SET retired_at = now(), updated_at = now() WHERE group_id = $1",
                &[&group.as_str()],
            )
            .await
            .doing("retiring a group")?;
        }
    }
    for group in &file.groups {
        tx.execute(
            "INSERT INTO site_groups (group_id, display_name) VALUES ($1, $2) \
             ON CONFLICT (group_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
                 retired_at = NULL, updated_at = now() \
             WHERE site_groups.display_name IS DISTINCT FROM EXCLUDED.display_name \
                OR site_groups.retired_at IS NOT NULL",
            &[&group.id.as_str(), &group.name],
        )
        .await
        .doing("writing a group")?;
        let members: Vec<&str> = group.sites.iter().map(SiteId::as_str).collect();
        tx.execute(
            "DELETE FROM site_group_members WHERE group_id = $1 AND NOT site_id = ANY($2)",
            &[&group.id.as_str(), &members],
        )
        .await
        .doing("updating a group's sites")?;
        tx.execute(
            "INSERT INTO site_group_members (group_id, site_id) \
             SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            &[&group.id.as_str(), &members],
        )
        .await
        .doing("updating a group's sites")?;
    }
    // Every AE title of the file is its site's now (a concurrent change would
    // show here; the transaction is then rolled back).
    for site in &file.sites {
        let taken = tx
            .query(
                "SELECT ae_title, site_id FROM site_called_ae_titles \
                 WHERE ae_title = ANY($1) AND site_id <> $2",
                &[&site.called_ae_titles, &site.id.as_str()],
            )
            .await
            .doing("checking the AE titles")?;
        if let Some(row) = taken.first() {
            return Err(RegistryError::Conflict(format!(
                "called AE title {} of site {} belongs to site {}",
                row.get::<_, String>(0),
                site.id,
                row.get::<_, String>(1)
            )));
        }
    }
    changes.extend(legacy_tokens(&tx, file, false).await?);
    // Site by site (each site's chain takes a lock until the commit: one
    // order for every writer of several sites, so two never wait on each other).
    let mut rows: Vec<(String, serde_json::Value)> = changes
        .iter()
        .flat_map(|change| {
            let detail = serde_json::json!({ "change": change.to_string() });
            concerned_sites(change, &current, file)
                .into_iter()
                .map(move |site| (site, detail.clone()))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (site, detail) in &rows {
        audit::record(&tx, std::slice::from_ref(site), by, "sites.apply", detail)
            .await
            .doing("writing the audit log")?;
    }
    tx.commit().await.doing("committing the sites file")?;
    Ok(changes)
}

/// Sender tokens for the STOW-RS digests of an earlier release's file; those
/// already present are left alone.
async fn legacy_tokens(
    tx: &tokio_postgres::Transaction<'_>,
    file: &RegistryFile,
    dry_run: bool,
) -> Result<Vec<Change>, RegistryError> {
    let mut changes = Vec::new();
    for (site, digests) in &file.legacy_stow_digests {
        for digest in digests {
            let token_id = format!("legacy-stow-{}", &digest[..12]);
            let present = tx
                .query_opt(
                    "SELECT 1 FROM api_credentials WHERE token_sha256 = $1",
                    &[digest],
                )
                .await
                .doing("looking up a STOW-RS token")?
                .is_some();
            if present {
                continue;
            }
            if !dry_run {
                tx.execute(
                    "INSERT INTO api_credentials (token_id, site_id, token_sha256, role, description) \
                     VALUES ($1, $2, $3, 'sender', 'STOW-RS token from an earlier sites file')",
                    &[&token_id, &site.as_str(), digest],
                )
                .await
                .doing("adding a STOW-RS sender token")?;
            }
            changes.push(Change::AddSenderToken {
                site: site.clone(),
                token_id,
            });
        }
    }
    Ok(changes)
}

/// Adds or changes `sites` (nothing else): [`apply`] of a file that holds them.
/// For tools and tests that set up a registry in code.
pub async fn put_sites(pool: &Pool, sites: Vec<SiteConfig>) -> Result<Vec<Change>, RegistryError> {
    let file = RegistryFile {
        sites,
        ..RegistryFile::default()
    };
    apply(pool, &file, ApplyOptions::default()).await
}

/// Why a sites file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] crate::file::InvalidFile),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Checks `text` against the registry as it is and applies it: what the CLI's
/// `sites apply` and the admin API both do.
pub async fn apply_text(
    pool: &Pool,
    text: &str,
    options: ApplyOptions,
) -> Result<Vec<Change>, ApplyError> {
    apply_text_by(pool, text, options, &Changer::operator()).await
}

/// [`apply_text`], recorded in the audit log as made `by`.
pub async fn apply_text_by(
    pool: &Pool,
    text: &str,
    options: ApplyOptions,
    by: &Changer,
) -> Result<Vec<Change>, ApplyError> {
    let current = {
        let client = pool.get().await.map_err(RegistryError::from)?;
        load(&client).await?
    };
    let file = crate::file::parse(text, &crate::file::Existing::of(&current), options.prune)?;
    Ok(apply_by(pool, &file, options, by).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_a_file_can_change_is_named_in_the_plan() {
        let before = SiteConfig::new(SiteId::parse("a").expect("id"), "A");
        assert!(changed_site_fields(&before, &before).is_empty());
        let mut after = before.clone();
        after.hl7_sending_facilities = vec!["RIS_A".into()];
        after.ai_enabled_from = Some("2026-01-01".into());
        after.second_look.include_possible = true;
        after.intake.max_associations = Some(4);
        assert_eq!(
            changed_site_fields(&before, &after),
            [
                "hl7_sending_facilities",
                "ai_enabled_from",
                "second_look",
                "intake"
            ]
        );
    }
}
