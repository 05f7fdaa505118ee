//! A consumer group member that holds no partitions while messages wait and no
//! member of its group makes progress is stuck, and rejoins.
//!
//! Why: a broker's group coordinator can end a rebalance with a stale
//! assignment. Seen with tansu 0.6: after a member was killed, its replacement
//! joined the dead member's generation, the dead member was then dropped, and the
//! group settled with the replacement as its only member, assigned nothing; it
//! stayed so, heartbeating happily, while every message waited. The cure is a
//! fresh join (which forms a new generation with a new assignment). A member may
//! legitimately hold no partitions (more members than partitions), so it rejoins
//! only when the group as a whole is visibly not consuming: messages are waiting
//! and the group's committed offsets have not moved for several checks.

use std::collections::BTreeMap;

/// Checks in a row without progress before a member rejoins.
pub(crate) const STALLED_CHECKS: u32 = 3;

/// The most checks a member waits between rejoins while its group stays stuck.
/// Each rejoin without progress since doubles the wait (3, 6, 12, ... checks),
/// so a group stalled for another reason (its object store is away, every
/// message fails and is retried) is not kept rebalancing.
pub(crate) const MAX_STALLED_CHECKS: u32 = 96;

/// One look at the group from a member: what it holds, what the group has
/// committed, and how many messages wait beyond that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    pub assigned_partitions: usize,
    /// (topic, partition) -> the group's committed offset (-1 when none).
    pub committed: BTreeMap<(String, i32), i64>,
    /// Messages past the committed offsets, over every partition.
    pub waiting: i64,
}

/// Decides, check after check, whether this member should rejoin its group.
#[derive(Debug)]
pub(crate) struct StallDetector {
    stalled_checks: u32,
    /// Stalled checks before the next rejoin.
    required: u32,
    last_committed: Option<BTreeMap<(String, i32), i64>>,
}

impl Default for StallDetector {
    fn default() -> Self {
        Self {
            stalled_checks: 0,
            required: STALLED_CHECKS,
            last_committed: None,
        }
    }
}

impl StallDetector {
    /// Whether to rejoin now (the count starts again after a `true`).
    pub(crate) fn observe(&mut self, observation: Observation) -> bool {
        let progressing = self
            .last_committed
            .as_ref()
            .is_none_or(|last| *last != observation.committed);
        let first_look = self.last_committed.is_none();
        let stuck = observation.assigned_partitions == 0 && observation.waiting > 0 && !progressing;
        self.last_committed = Some(observation.committed);
        if !stuck {
            self.stalled_checks = 0;
            if !first_look {
                // Something moved (or nothing waits, or it holds partitions):
                // the group is healthy, the wait between rejoins starts again.
                self.required = STALLED_CHECKS;
            }
            return false;
        }
        self.stalled_checks += 1;
        if self.stalled_checks >= self.required {
            self.stalled_checks = 0;
            self.required = (self.required * 2).min(MAX_STALLED_CHECKS);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(assigned: usize, committed: i64, waiting: i64) -> Observation {
        Observation {
            assigned_partitions: assigned,
            committed: BTreeMap::from([(("t".to_owned(), 0), committed)]),
            waiting,
        }
    }

    #[test]
    fn a_member_without_partitions_rejoins_when_waiting_messages_make_no_progress() {
        let mut detector = StallDetector::default();
        let decisions: Vec<bool> = (0..4)
            .map(|_| detector.observe(observation(0, 10, 5)))
            .collect();
        // The first look has nothing to compare with; three stalled looks follow.
        assert_eq!(decisions, [false, false, false, true]);
    }

    #[test]
    fn progress_elsewhere_nothing_waiting_or_partitions_held_never_rejoin() {
        let mut detector = StallDetector::default();
        // Another member consumes: the committed offset moves.
        for committed in 0..10 {
            assert!(!detector.observe(observation(0, committed, 5)));
        }
        let mut detector = StallDetector::default();
        for _ in 0..10 {
            assert!(!detector.observe(observation(0, 10, 0)), "nothing waits");
        }
        let mut detector = StallDetector::default();
        for _ in 0..10 {
            assert!(
                !detector.observe(observation(2, 10, 5)),
                "it holds partitions: its own consumption is watched elsewhere"
            );
        }
    }

    #[test]
    fn rejoins_back_off_while_the_group_stays_stuck_and_reset_on_progress() {
        let mut detector = StallDetector::default();
        let mut rejoined_after = Vec::new();
        let mut since = 0;
        for _ in 0..(1 + 3 + 6 + 12) {
            since += 1;
            if detector.observe(observation(0, 10, 5)) {
                rejoined_after.push(since);
                since = 0;
            }
        }
        // The first look only sets the baseline.
        assert_eq!(rejoined_after, [4, 6, 12]);
        // Progress: the next rejoin comes after three stalled checks again.
        assert!(!detector.observe(observation(0, 11, 5)));
        let decisions: Vec<bool> = (0..3)
            .map(|_| detector.observe(observation(0, 11, 5)))
            .collect();
        assert_eq!(decisions, [false, false, true]);
    }

    #[test]
    fn the_wait_between_rejoins_is_capped() {
        let mut detector = StallDetector::default();
        let mut gaps = Vec::new();
        let mut since = 0;
        for _ in 0..2000 {
            since += 1;
            if detector.observe(observation(0, 10, 5)) {
                gaps.push(since);
                since = 0;
            }
        }
        assert_eq!(gaps.iter().max(), Some(&MAX_STALLED_CHECKS));
    }

    #[test]
    fn one_sign_of_life_starts_the_count_again() {
        let mut detector = StallDetector::default();
        assert!(!detector.observe(observation(0, 10, 5)));
        assert!(!detector.observe(observation(0, 10, 5)));
        assert!(!detector.observe(observation(0, 11, 5)), "progress");
        assert!(!detector.observe(observation(0, 11, 5)));
        assert!(!detector.observe(observation(0, 11, 5)));
        assert!(detector.observe(observation(0, 11, 5)));
    }
}
