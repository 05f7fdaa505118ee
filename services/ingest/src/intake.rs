//! What one site holds of ingest at once: C-STORE associations and STOW-RS
//! requests in progress, counted per site against the site's `[site.intake]`
//! limits (`fxtriage_sites::IntakeLimits`), so that one hospital's burst
//! cannot take every slot from the others. The limit is read from the site's
//! configuration at each entry, so a changed sites file takes effect for the
//! next association or request; those in progress finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fxtriage_core::SiteId;

/// Counts what each site holds now; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct SiteGate {
    held: Arc<Mutex<HashMap<SiteId, u32>>>,
}

/// One slot of a site, given back when dropped.
#[derive(Debug)]
pub(crate) struct SiteSlot {
    held: Arc<Mutex<HashMap<SiteId, u32>>>,
    site: SiteId,
}

impl SiteGate {
    /// A slot of `site`, unless it holds `limit` already (`None`: no limit).
    /// `Err(held)` says how many it holds.
    pub(crate) fn enter(&self, site: &SiteId, limit: Option<u32>) -> Result<SiteSlot, u32> {
        let mut held = lock(&self.held);
        let count = held.entry(site.clone()).or_insert(0);
        if limit.is_some_and(|limit| *count >= limit) {
            let refused = *count;
            if refused == 0 {
                held.remove(site);
            }
            return Err(refused);
        }
        *count += 1;
        Ok(SiteSlot {
            held: Arc::clone(&self.held),
            site: site.clone(),
        })
    }

    #[cfg(test)]
    fn held(&self, site: &SiteId) -> u32 {
        lock(&self.held).get(site).copied().unwrap_or(0)
    }
}

impl Drop for SiteSlot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.site) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.site);
            }
        }
    }
}

fn lock(held: &Mutex<HashMap<SiteId, u32>>) -> std::sync::MutexGuard<'_, HashMap<SiteId, u32>> {
    // Counts stay consistent under a panic elsewhere (each change is one step).
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_holds_at_most_its_limit_and_others_are_not_affected() {
        let gate = SiteGate::default();
        let north = SiteId::parse("north").expect("id");
        let south = SiteId::parse("south").expect("id");
        let first = gate.enter(&north, Some(2)).expect("first");
        let second = gate.enter(&north, Some(2)).expect("second");
        assert_eq!(gate.enter(&north, Some(2)).err(), Some(2));
        assert!(gate.enter(&south, Some(2)).is_ok(), "another site");
        drop(first);
        let third = gate.enter(&north, Some(2)).expect("a slot was given back");
        // A lower limit applies to the next entry; those in progress finish.
        assert_eq!(gate.enter(&north, Some(1)).err(), Some(2));
        drop((second, third));
        assert_eq!(gate.held(&north), 0);
        // No limit: any number.
        let many: Vec<_> = (0..100)
            .map(|_| gate.enter(&north, None).expect("unlimited"))
            .collect();
        assert_eq!(gate.held(&north), 100);
        drop(many);
        assert_eq!(gate.held(&north), 0);
    }
}
