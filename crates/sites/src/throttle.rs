//! Failed authentication, rate-limited: after `max_failures` invalid tokens
//! within `window` from one client address (an IPv6 address counts by its
//! /64, which one host usually holds whole), or with one token prefix (the
//! first characters of the presented value, so that a client that rotates its
//! address while it sprays one family of guesses, or a fleet of misconfigured
//! senders with one revoked token, is held too; a service token's prefix only,
//! since every JWT of an identity provider begins alike), every further bearer request
//! of that address or prefix is answered 429 with `Retry-After` until the
//! window that counted them ends, without a database lookup.
//!
//! Tokens carry 256 random bits, so guessing one is hopeless anyway; the
//! limit bounds what a flood of invalid tokens costs the credential lookups
//! (one indexed query each) and keeps such a flood visible in the logs as one
//! line per window, not one per request. A valid token presented from an
//! address that is being held is held too: the throttle answers before it
//! knows whether the token is valid, which is the point. Behind a proxy or an
//! ingress every client shares the proxy's address; there the prefix limit
//! still holds and the address limit should be raised or the proxy trusted to
//! limit (see the threat model, docs/threat-model.md).
//!
//! Memory is bounded: at most `max_keys` addresses and prefixes are counted at
//! once (each entry is about 64 bytes). When the table is full, entries whose
//! window has ended are dropped; if none has, a new key is not counted (the
//! keys already counted stay held), and that is logged.
//!
//! A hand-written fixed window rather than a crate: the keyed limiters on
//! crates.io (`governor`) limit every request, and have no way to ask whether
//! a key is held without spending a cell, while this counts failures only and
//! must answer before the lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many characters of a presented token key its prefix counter: the
/// `fxt_` marker and 8 characters of the secret, 32 bits, never enough to
/// learn anything of a token from the logs or the table.
const PREFIX_CHARS: usize = 12;

/// The limits of a [`FailedAuthThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Invalid tokens allowed per address, and per prefix, within `window`;
    /// 0 turns the throttle off.
    pub max_failures: u32,
    /// How long failures are counted before the count starts again.
    pub window: Duration,
    /// The most addresses and prefixes counted at once.
    pub max_keys: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(60),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Prefix(String),
}

#[derive(Debug, Clone, Copy)]
struct Count {
    since: Instant,
    failures: u32,
}

/// Counts invalid tokens per client address and per token prefix; shared by
/// every request of a service (the API, STOW-RS).
#[derive(Debug)]
pub struct FailedAuthThrottle {
    limits: ThrottleLimits,
    counts: Mutex<Table>,
}

/// The counts, and when ended windows were last swept out of a full table.
#[derive(Debug, Default)]
struct Table {
    counts: HashMap<Key, Count>,
    swept: Option<Instant>,
}

impl Default for FailedAuthThrottle {
    fn default() -> Self {
        Self::new(ThrottleLimits::default())
    }
}

impl FailedAuthThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            counts: Mutex::new(Table::default()),
        }
    }

    pub fn limits(&self) -> ThrottleLimits {
        self.limits
    }

    /// `Err(retry_after)` when the address or the prefix of `presented` has
    /// had `max_failures` invalid tokens within the current window: the
    /// request is to be refused without looking its token up.
    pub fn check(
        &self,
        address: Option<IpAddr>,
        presented: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        if self.limits.max_failures == 0 {
            return Ok(());
        }
        let table = self.lock();
        let counts = &table.counts;
        let mut wait = None::<Duration>;
        for key in keys(address, presented) {
            if let Some(count) = counts.get(&key) {
                let ends = count.since + self.limits.window;
                if count.failures >= self.limits.max_failures && ends > now {
                    let left = ends - now;
                    wait = Some(wait.map_or(left, |wait| wait.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts an invalid token presented from `address`. Returns true (and
    /// logs it) when this failure is the one that reached the limit of its
    /// address or prefix.
    pub fn record_failure(&self, address: Option<IpAddr>, presented: &str, now: Instant) -> bool {
        if self.limits.max_failures == 0 {
            return false;
        }
        let mut table = self.lock();
        let mut reached = false;
        for key in keys(address, presented) {
            if !table.counts.contains_key(&key) && table.counts.len() >= self.limits.max_keys {
                // A full table is swept at most once a second, so that a flood
                // of new addresses does not cost a scan each.
                if table
                    .swept
                    .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
                {
                    let window = self.limits.window;
                    table.counts.retain(|_, count| count.since + window > now);
                    table.swept = Some(now);
                }
                if table.counts.len() >= self.limits.max_keys {
                    tracing::warn!(
                        max_keys = self.limits.max_keys,
                        "failed authentication: the throttle's table is full; a new address or token prefix is not counted"
                    );
                    continue;
                }
            }
            let count = table.counts.entry(key).or_insert(Count {
                since: now,
                failures: 0,
            });
            if count.since + self.limits.window <= now {
                *count = Count {
                    since: now,
                    failures: 0,
                };
            }
            count.failures = count.failures.saturating_add(1);
            reached |= count.failures == self.limits.max_failures;
        }
        if reached {
            // Once per held key and window, not once per request.
            tracing::warn!(
                address = ?address,
                max_failures = self.limits.max_failures,
                window = ?self.limits.window,
                "invalid tokens over the limit: this address or token prefix is answered 429 until its window ends"
            );
        }
        reached
    }

    /// Addresses and prefixes counted now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().counts.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while the table was held leaves counts, not an
        // inconsistent structure: keep using it.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A [`FailedAuthThrottle::check`] wait as a `Retry-After` in whole
/// seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The keys a request is counted under: its address (an IPv6 one by its /64)
/// and its token's prefix.
fn keys(address: Option<IpAddr>, presented: &str) -> impl Iterator<Item = Key> {
    let address = address.map(|address| match address {
        IpAddr::V4(_) => Key::Address(address),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Address(IpAddr::V4(v4)),
            None => {
                let network = u128::from(v6) & !((1_u128 << 64) - 1);
                Key::Address(IpAddr::V6(network.into()))
            }
        },
    });
    // Only a service token's prefix says anything about who sent it: every
    // JWT of one identity provider begins with the same encoded header.
    let prefix = presented
        .starts_with(crate::credentials::TOKEN_PREFIX)
        .then(|| Key::Prefix(presented.chars().take(PREFIX_CHARS).collect()));
    address.into_iter().chain(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_failures: u32, max_keys: usize) -> ThrottleLimits {
        ThrottleLimits {
            max_failures,
            window: Duration::from_secs(60),
            max_keys,
        }
    }

    fn token(prefix: &str, fill: char) -> String {
        format!("fxt_{prefix}{}", fill.to_string().repeat(56))
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn an_address_is_held_after_the_limit_until_its_window_ends() {
        let throttle = FailedAuthThrottle::new(limits(3, 100));
        let start = Instant::now();
        for attempt in 0..3 {
            // Each guess differs in its prefix: only the address counts them.
            let guess = token(&format!("{attempt:08}"), 'a');
            assert_eq!(throttle.check(A, &guess, start), Ok(()));
            let reached = throttle.record_failure(A, &guess, start);
            assert_eq!(reached, attempt == 2, "attempt {attempt}");
        }
        let valid = token("99999999", 'b');
        let later = start + Duration::from_secs(45);
        assert_eq!(
            throttle.check(A, &valid, later),
            Err(Duration::from_secs(15)),
            "held, even with a token that may be valid"
        );
        assert_eq!(throttle.check(B, &valid, later), Ok(()), "another address");
        assert_eq!(
            throttle.check(A, &valid, start + Duration::from_secs(60)),
            Ok(()),
            "the window ended"
        );
        // A new window counts afresh.
        let next = start + Duration::from_secs(61);
        assert!(!throttle.record_failure(A, &token("00000000", 'c'), next));
        assert_eq!(throttle.check(A, &valid, next), Ok(()));
    }

    #[test]
    fn one_prefix_from_many_addresses_is_held_but_other_prefixes_are_not() {
        let throttle = FailedAuthThrottle::new(limits(4, 1000));
        let now = Instant::now();
        let revoked = token("deadbeef", 'a');
        for host in 0..4_u8 {
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, host)));
            throttle.record_failure(address, &revoked, now);
        }
        let fifth = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 200)));
        assert!(throttle.check(fifth, &revoked, now).is_err());
        assert!(
            throttle.check(None, &revoked, now).is_err(),
            "no address known"
        );
        assert_eq!(throttle.check(fifth, &token("01234567", 'a'), now), Ok(()));
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let throttle = FailedAuthThrottle::new(limits(2, 100));
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        throttle.record_failure(Some(one), &token("00000001", 'a'), now);
        throttle.record_failure(Some(same_64), &token("00000002", 'a'), now);
        let probe = token("00000003", 'a');
        assert!(throttle.check(Some(one), &probe, now).is_err());
        assert_eq!(throttle.check(Some(other_64), &probe, now), Ok(()));

        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("address");
        throttle.record_failure(A, &token("00000004", 'a'), now);
        throttle.record_failure(Some(mapped), &token("00000005", 'a'), now);
        assert!(throttle.check(A, &probe, now).is_err());
    }

    #[test]
    fn the_table_stays_within_its_bound_and_drops_ended_windows_first() {
        let throttle = FailedAuthThrottle::new(limits(1, 10));
        let start = Instant::now();
        for host in 0..100_u8 {
            let address = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, host)));
            throttle.record_failure(address, &token("aaaaaaaa", 'a'), start);
            assert!(throttle.tracked() <= 10);
        }
        // The first keys stay held; the ones past the bound were not counted.
        let first = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 0)));
        let last = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 99)));
        let other = token("bbbbbbbb", 'b');
        assert!(throttle.check(first, &other, start).is_err());
        assert_eq!(throttle.check(last, &other, start), Ok(()));
        // Once their window has ended, room is made for new keys.
        let later = start + Duration::from_secs(61);
        throttle.record_failure(last, &other, later);
        assert!(throttle.check(last, &other, later).is_err());
        assert_eq!(throttle.tracked(), 2);
    }

    #[test]
    fn jwts_count_by_address_only_since_they_all_begin_alike() {
        let throttle = FailedAuthThrottle::new(limits(2, 100));
        let now = Instant::now();
        let jwt = |n: u8| format!("eyJhbGciOiJFUzI1NiIsImtpZCI6IjEifQ.payload{n}.signature");
        throttle.record_failure(A, &jwt(1), now);
        throttle.record_failure(A, &jwt(2), now);
        assert!(
            throttle.check(A, &jwt(3), now).is_err(),
            "the address is held"
        );
        assert_eq!(
            throttle.check(B, &jwt(3), now),
            Ok(()),
            "another person's sign-in is not held by the same header"
        );
        assert_eq!(throttle.tracked(), 1, "no prefix key for a JWT");
    }

    #[test]
    fn a_limit_of_zero_turns_it_off() {
        let throttle = FailedAuthThrottle::new(limits(0, 10));
        let now = Instant::now();
        for _ in 0..50 {
            assert!(!throttle.record_failure(A, "fxt_x", now));
        }
        assert_eq!(throttle.check(A, "fxt_x", now), Ok(()));
        assert_eq!(throttle.tracked(), 0);
    }
}
