//! Which offset a group may commit, given out-of-order acknowledgements.
//!
//! Messages of one partition may finish in any order (a batcher, a pool). The
//! committed position must never pass a message that is still in flight, or a
//! crash would lose it: the position is the lowest unacknowledged offset, or one
//! past the last delivered offset when nothing is in flight.

use std::collections::{BTreeSet, HashMap};

pub(crate) type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionProgress {
    in_flight: BTreeSet<i64>,
    next_undelivered: i64,
    committable: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionProgress>,
}

impl OffsetTracker {
    /// Records that `offset` was handed to the application.
    pub(crate) fn delivered(&mut self, topic: &str, partition: i32, offset: i64) {
        let progress = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        progress.in_flight.insert(offset);
        progress.next_undelivered = progress.next_undelivered.max(offset + 1);
    }

    /// Records an acknowledgement. Returns the new position to commit (the next
    /// offset to consume) when it advanced, `None` when it did not or when the
    /// partition or offset is unknown (revoked, or acknowledged twice).
    pub(crate) fn acknowledged(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let progress = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if !progress.in_flight.remove(&offset) {
            return None;
        }
        let position = progress
            .in_flight
            .first()
            .copied()
            .unwrap_or(progress.next_undelivered);
        if progress
            .committable
            .is_some_and(|committed| committed >= position)
        {
            return None;
        }
        progress.committable = Some(position);
        Some(position)
    }

    /// Forgets a partition this member no longer owns.
    pub(crate) fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    pub(crate) fn clear(&mut self) {
        self.partitions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_never_passes_an_unacknowledged_message() {
        let mut tracker = OffsetTracker::default();
        for offset in 0..5 {
            tracker.delivered("t", 0, offset);
        }
        assert_eq!(tracker.acknowledged("t", 0, 0), Some(1));
        assert_eq!(
            tracker.acknowledged("t", 0, 2),
            None,
            "1 is still in flight"
        );
        assert_eq!(tracker.acknowledged("t", 0, 3), None);
        assert_eq!(
            tracker.acknowledged("t", 0, 1),
            Some(4),
            "jumps past the acknowledged 2 and 3"
        );
        assert_eq!(tracker.acknowledged("t", 0, 4), Some(5));
    }

    #[test]
    fn duplicate_and_unknown_acknowledgements_change_nothing() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered("t", 0, 7);
        assert_eq!(tracker.acknowledged("t", 0, 7), Some(8));
        assert_eq!(tracker.acknowledged("t", 0, 7), None);
        assert_eq!(tracker.acknowledged("t", 1, 7), None);
        tracker.delivered("t", 0, 8);
        tracker.revoke("t", 0);
        assert_eq!(
            tracker.acknowledged("t", 0, 8),
            None,
            "a revoked partition is forgotten"
        );
    }
}
