//! Sites, the tenants. They are registered explicitly (`fxtriage sites add`);
//! events for a site that is not registered are dead-lettered, never guessed into
//! existence.

use deadpool_postgres::Pool;
use fxtriage_core::SiteId;

use crate::error::{Doing as _, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteAdded {
    Created,
    /// The site existed; its display name was left as it was.
    AlreadyExists,
}

/// Registers a site. Idempotent.
pub async fn add_site(
    pool: &Pool,
    site: &SiteId,
    display_name: &str,
) -> Result<SiteAdded, StoreError> {
    let client = pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO sites (site_id, display_name) VALUES ($1, $2) \
             ON CONFLICT (site_id) DO NOTHING",
            &[&site.as_str(), &display_name],
        )
        .await
        .doing("adding the site")?;
    Ok(if inserted == 1 {
        SiteAdded::Created
    } else {
        SiteAdded::AlreadyExists
    })
}
