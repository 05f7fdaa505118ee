//! The in-process bus of the embedded default: the same semantics as Kafka within
//! one process. Topics are partitioned logs in memory; consumer groups share
//! partitions among their members and keep a committed position per partition,
//! so a member that goes away leaves its unacknowledged messages to the next one.
//!
//! Bounded: a partition keeps at most `capacity` messages (size-based retention,
//! so a group that joins later still sees recent history). When it is full, the
//! oldest message is dropped if every group has committed past it; otherwise the
//! producer waits for the slowest group (backpressure). A topic nobody has ever
//! consumed (a dead-letter topic in the embedded default) keeps its newest
//! `capacity` messages per partition.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::headers::add_trace_context;
use crate::offsets::{OffsetTracker, TopicPartition};
use crate::{Bus, BusError, Consumer, Delivery, Headers, Received, Record};

#[derive(Debug, Clone, Copy)]
pub struct InProcessConfig {
    /// Partitions of a topic created implicitly by producing to it.
    pub default_partitions: u32,
    /// Messages a partition retains; producers wait when the oldest of them is
    /// not yet committed by every group.
    pub capacity: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            default_partitions: 4,
            capacity: 4096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: InProcessConfig,
    state: Mutex<State>,
    /// Woken on every change: a new message, an acknowledgement, a rebalance.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, TopicLog>,
    groups: HashMap<String, Group>,
    next_member_id: u64,
}

#[derive(Debug)]
struct StoredMessage {
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Headers,
    timestamp_ms: i64,
}

#[derive(Debug, Default)]
struct PartitionLog {
    /// Offset of `messages[0]`.
    start_offset: i64,
    messages: VecDeque<StoredMessage>,
}

impl PartitionLog {
    fn end_offset(&self) -> i64 {
        self.start_offset + self.messages.len() as i64
    }

    fn get(&self, offset: i64) -> Option<&StoredMessage> {
        let index = usize::try_from(offset - self.start_offset).ok()?;
        self.messages.get(index)
    }

    fn drop_oldest(&mut self) {
        if self.messages.pop_front().is_some() {
            self.start_offset += 1;
        }
    }
}

#[derive(Debug)]
struct TopicLog {
    partitions: Vec<PartitionLog>,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<u64, Member>,
    /// Next offset to consume, per partition; survives members leaving.
    committed: HashMap<TopicPartition, i64>,
}

#[derive(Debug, Default)]
struct Member {
    topics: Vec<String>,
    /// Next offset to deliver, per owned partition.
    cursors: BTreeMap<TopicPartition, i64>,
    tracker: OffsetTracker,
    /// Where the next poll starts, so that one busy partition cannot starve the others.
    poll_start: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// FNV-1a: stable across runs and platforms, so a key always maps to the same partition.
fn partition_for(key: &[u8], partitions: usize) -> usize {
    let hash = key.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    });
    hash as usize % partitions
}

impl InProcessBus {
    pub fn new(config: InProcessConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(InProcessConfig::default())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every mutation is
        // a single step), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn create_topic(&mut self, topic: &str, partitions: u32) {
        let partitions = partitions.max(1) as usize;
        self.topics
            .entry(topic.to_owned())
            .or_insert_with(|| TopicLog {
                partitions: (0..partitions).map(|_| PartitionLog::default()).collect(),
            });
    }

    /// The lowest committed position over every group that has consumed `topic`.
    fn slowest_position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.groups
            .values()
            .filter(|group| {
                group
                    .members
                    .values()
                    .any(|member| member.topics.iter().any(|t| t == topic))
                    || group.committed.keys().any(|(t, _)| t == topic)
            })
            .map(|group| {
                group
                    .committed
                    .get(&(topic.to_owned(), partition))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
    }

    /// Shares every partition of the group's topics among its members, round
    /// robin in member order. A member keeps its cursor and in-flight messages for
    /// partitions it keeps; a newly owned partition starts at the committed position.
    fn rebalance(&mut self, group_name: &str) {
        let Some(group) = self.groups.get_mut(group_name) else {
            return;
        };
        let mut wanted: BTreeMap<u64, Vec<TopicPartition>> = BTreeMap::new();
        let mut topics: Vec<String> = group
            .members
            .values()
            .flat_map(|member| member.topics.clone())
            .collect();
        topics.sort();
        topics.dedup();
        for topic in &topics {
            let partitions = self.topics.get(topic).map_or(0, |log| log.partitions.len());
            let subscribers: Vec<u64> = group
                .members
                .iter()
                .filter(|(_, member)| member.topics.contains(topic))
                .map(|(id, _)| *id)
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            for partition in 0..partitions {
                let owner = subscribers[partition % subscribers.len()];
                wanted
                    .entry(owner)
                    .or_default()
                    .push((topic.clone(), partition as i32));
            }
        }
        for (id, member) in &mut group.members {
            let assignment = wanted.remove(id).unwrap_or_default();
            let kept: Vec<TopicPartition> = member
                .cursors
                .keys()
                .filter(|tp| assignment.contains(tp))
                .cloned()
                .collect();
            for (topic, partition) in member.cursors.keys().filter(|tp| !kept.contains(tp)) {
                member.tracker.revoke(topic, *partition);
            }
            member.cursors.retain(|tp, _| kept.contains(tp));
            for tp in assignment {
                let position = group.committed.get(&tp).copied().unwrap_or(0);
                member.cursors.entry(tp).or_insert(position);
            }
        }
    }

    fn produce(
        &mut self,
        config: &InProcessConfig,
        topic: &str,
        record: Record,
    ) -> Result<Delivery, Record> {
        self.create_topic(topic, config.default_partitions);
        let partitions = self.topics.get(topic).map_or(1, |log| log.partitions.len());
        let partition = partition_for(&record.key, partitions);
        let slowest = self.slowest_position(topic, partition as i32);
        let Some(log) = self.topics.get_mut(topic) else {
            return Err(record);
        };
        let partition_log = &mut log.partitions[partition];
        if partition_log.messages.len() >= config.capacity {
            match slowest {
                Some(position) if position > partition_log.start_offset => {}
                Some(_) => return Err(record),
                None => tracing::warn!(
                    topic,
                    partition,
                    "no group consumes this topic; dropped its oldest message"
                ),
            }
            partition_log.drop_oldest();
        }
        let offset = partition_log.end_offset();
        partition_log.messages.push_back(StoredMessage {
            key: record.key,
            payload: record.payload,
            headers: record.headers,
            timestamp_ms: now_ms(),
        });
        Ok(Delivery {
            partition: partition as i32,
            offset,
        })
    }

    fn poll(&mut self, group_name: &str, member_id: u64) -> Option<Received> {
        let group = self.groups.get_mut(group_name)?;
        let member = group.members.get_mut(&member_id)?;
        let owned = member.cursors.len();
        for step in 0..owned {
            let index = (member.poll_start + step) % owned;
            let Some(((topic, partition), cursor)) = member.cursors.iter_mut().nth(index) else {
                continue;
            };
            let Some(log) = self.topics.get(topic) else {
                continue;
            };
            let partition_log = &log.partitions[*partition as usize];
            // Messages dropped by retention were committed by every group that existed.
            *cursor = (*cursor).max(partition_log.start_offset);
            let Some(message) = partition_log.get(*cursor) else {
                continue;
            };
            let offset = *cursor;
            *cursor += 1;
            let received = Received {
                topic: topic.clone(),
                partition: *partition,
                offset,
                key: Some(message.key.clone()),
                payload: message.payload.clone(),
                headers: message.headers.clone(),
                timestamp_ms: Some(message.timestamp_ms),
            };
            member
                .tracker
                .delivered(&received.topic, received.partition, offset);
            member.poll_start = index + 1;
            return Some(received);
        }
        None
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        state.create_topic(topic, partitions);
        state.create_topic(&crate::dead_letter_topic(topic), partitions);
        Ok(())
    }

    async fn produce(&self, topic: &str, mut record: Record) -> Result<Delivery, BusError> {
        add_trace_context(&mut record.headers);
        loop {
            let room = self.shared.changed.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let outcome = self
                .shared
                .lock()
                .produce(&self.shared.config, topic, record);
            match outcome {
                Ok(delivery) => {
                    self.shared.changed.notify_waiters();
                    return Ok(delivery);
                }
                Err(returned) => {
                    record = returned;
                    room.await;
                }
            }
        }
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        let member_id = {
            let mut state = self.shared.lock();
            for topic in topics {
                state.create_topic(topic, self.shared.config.default_partitions);
            }
            let member_id = state.next_member_id;
            state.next_member_id += 1;
            let member = Member {
                topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
                ..Member::default()
            };
            state
                .groups
                .entry(group.to_owned())
                .or_default()
                .members
                .insert(member_id, member);
            state.rebalance(group);
            member_id
        };
        self.shared.changed.notify_waiters();
        Ok(Box::new(InProcessConsumer {
            shared: Arc::clone(&self.shared),
            group: group.to_owned(),
            member_id,
        }))
    }

    fn describe(&self) -> String {
        "in-process bus".to_owned()
    }
}

#[derive(Debug)]
struct InProcessConsumer {
    shared: Arc<Shared>,
    group: String,
    member_id: u64,
}

impl InProcessConsumer {
    fn leave(&self) {
        let mut state = self.shared.lock();
        let Some(group) = state.groups.get_mut(&self.group) else {
            return;
        };
        if group.members.remove(&self.member_id).is_some() {
            state.rebalance(&self.group);
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

#[async_trait]
impl Consumer for InProcessConsumer {
    async fn next(&self) -> Result<Received, BusError> {
        loop {
            let arrival = self.shared.changed.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let polled = {
                let mut state = self.shared.lock();
                let in_group = state
                    .groups
                    .get(&self.group)
                    .is_some_and(|group| group.members.contains_key(&self.member_id));
                if !in_group {
                    return Err(BusError::Closed);
                }
                state.poll(&self.group, self.member_id)
            };
            if let Some(message) = polled {
                return Ok(message);
            }
            arrival.await;
        }
    }

    fn ack(&self, message: &Received) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        let Some(group) = state.groups.get_mut(&self.group) else {
            return Ok(());
        };
        let Some(member) = group.members.get_mut(&self.member_id) else {
            return Ok(());
        };
        let Some(position) =
            member
                .tracker
                .acknowledged(&message.topic, message.partition, message.offset)
        else {
            return Ok(());
        };
        group
            .committed
            .insert((message.topic.clone(), message.partition), position);
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        let state = self.shared.lock();
        state
            .groups
            .get(&self.group)
            .and_then(|group| group.members.get(&self.member_id))
            .map(|member| member.cursors.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn close(&self) -> Result<(), BusError> {
        // Acknowledgements are committed as they happen; leaving is all that remains.
        self.leave();
        Ok(())
    }
}

impl Drop for InProcessConsumer {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_full_partition_makes_producers_wait_until_the_group_acknowledges() {
        let bus = InProcessBus::new(InProcessConfig {
            default_partitions: 1,
            capacity: 2,
        });
        bus.ensure_topic("t", 1).await.expect("topic");
        let consumer = bus.subscribe("g", &["t"]).await.expect("subscribe");
        bus.produce("t", Record::new("k", "1"))
            .await
            .expect("first");
        bus.produce("t", Record::new("k", "2"))
            .await
            .expect("second");

        let third = tokio::spawn({
            let bus = bus.clone();
            async move { bus.produce("t", Record::new("k", "3")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the third message must wait for room");

        let first = consumer.next().await.expect("next");
        consumer.ack(&first).expect("ack");
        let delivery = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("room was made")
            .expect("join")
            .expect("produce");
        assert_eq!(delivery.offset, 2);
    }

    #[tokio::test]
    async fn an_unconsumed_topic_keeps_its_newest_messages() {
        let bus = InProcessBus::new(InProcessConfig {
            default_partitions: 1,
            capacity: 2,
        });
        for payload in ["1", "2", "3"] {
            bus.produce("orphan", Record::new("k", payload))
                .await
                .expect("never blocks");
        }
        let consumer = bus.subscribe("late", &["orphan"]).await.expect("subscribe");
        let first = consumer.next().await.expect("next");
        assert_eq!(first.payload, b"2");
        assert_eq!(first.offset, 1);
    }

    #[test]
    fn the_same_key_always_maps_to_the_same_partition() {
        let key = b"1.2.826.0.1.3680043.8.498.1";
        assert_eq!(partition_for(key, 8), partition_for(key, 8));
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| partition_for(format!("study-{i}").as_bytes(), 8))
            .collect();
        assert!(spread.len() > 4, "keys spread over partitions: {spread:?}");
    }
}
