//! A consumer cut off from a broker that is back is replaced by a new one.
//!
//! Why: seen with librdkafka 2.x against tansu 0.6, one run in three: after
//! the broker was stopped for 30 s and started again at the same address, the
//! group consumer of one service kept failing to connect ("all broker
//! connections are down", connection refused) for as long as it lived, while
//! the producer of the same process and new clients connected at once. Its
//! group session had expired meanwhile, so it held no partitions and its
//! group's messages waited for good. Rejoining the group on the same client
//! does not help (its connections are the problem); a new client does.
//!
//! The rule: the consumer is *cut off* when its broker connection failures
//! have kept coming for [`REPLACE_AFTER`] without a message in between (a
//! pause of [`STREAK_GAP`] without failures ends the streak: librdkafka
//! repeats the failure of a client that stays cut off every 30 s). Then, at
//! most once per [`REPLACE_AFTER`], the owner probes the broker with a new
//! client and, if the broker answers it, replaces the consumer with it. During
//! a real outage the probe fails and the consumer is kept.

use std::time::{Duration, Instant};

/// How long connection failures must last before a new client is tried.
pub(crate) const REPLACE_AFTER: Duration = Duration::from_secs(60);

/// A pause in failures this long ends a streak.
pub(crate) const STREAK_GAP: Duration = Duration::from_secs(90);

/// Decides, failure after failure, when to try a new client.
#[derive(Debug, Default)]
pub(crate) struct CutOff {
    /// The first failure of the current streak and the latest one.
    streak: Option<(Instant, Instant)>,
    last_attempt: Option<Instant>,
}

impl CutOff {
    /// A message arrived: the client is connected.
    pub(crate) fn received(&mut self) {
        self.streak = None;
    }

    /// A broker connection failure at `now`. Returns whether to try a new
    /// client now (the caller then probes and replaces; see the module).
    pub(crate) fn failed(&mut self, now: Instant) -> bool {
        let first = match self.streak {
            Some((first, latest)) if now.saturating_duration_since(latest) < STREAK_GAP => first,
            _ => now,
        };
        self.streak = Some((first, now));
        let long_enough = now.saturating_duration_since(first) >= REPLACE_AFTER;
        let not_lately = self
            .last_attempt
            .is_none_or(|attempt| now.saturating_duration_since(attempt) >= REPLACE_AFTER);
        if long_enough && not_lately {
            self.last_attempt = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn failures_for_a_minute_without_a_message_try_a_new_client() {
        let start = Instant::now();
        let mut cut_off = CutOff::default();
        // librdkafka's rhythm while cut off: a failure every 30 s.
        assert!(!cut_off.failed(at(start, 0)));
        assert!(!cut_off.failed(at(start, 30)));
        assert!(cut_off.failed(at(start, 60)));
        // Not again at once: the probe failed (a real outage), try a minute later.
        assert!(!cut_off.failed(at(start, 90)));
        assert!(cut_off.failed(at(start, 120)));
    }

    #[test]
    fn a_message_ends_the_streak() {
        let start = Instant::now();
        let mut cut_off = CutOff::default();
        assert!(!cut_off.failed(at(start, 0)));
        assert!(!cut_off.failed(at(start, 30)));
        cut_off.received();
        assert!(!cut_off.failed(at(start, 60)));
        assert!(!cut_off.failed(at(start, 90)));
        assert!(cut_off.failed(at(start, 120)));
    }

    #[test]
    fn failures_far_apart_are_not_a_streak() {
        // A healthy consumer on a quiet topic receives nothing; two transient
        // failures ten minutes apart must not replace it.
        let start = Instant::now();
        let mut cut_off = CutOff::default();
        assert!(!cut_off.failed(at(start, 0)));
        assert!(!cut_off.failed(at(start, 600)));
        assert!(!cut_off.failed(at(start, 630)));
        assert!(cut_off.failed(at(start, 660)));
    }
}
