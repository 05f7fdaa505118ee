//! The guarantees every [`Bus`] implementation must give, written once and run
//! against each (tests/conformance_*.rs). Each check panics with the violated
//! guarantee. Topic and group names start with a caller-chosen unique prefix, so
//! checks can share one broker and run again without cleaning up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::Instrument as _;
use tracing::instrument::WithSubscriber as _;

use crate::dead_letter::header;
use crate::{Bus, Consumer, DeadLetterReason, Received, Record};

/// Timing of a backend: how long to wait for messages that must arrive, and how
/// long silence proves that a message will not arrive.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub arrival_timeout: Duration,
    pub quiet_period: Duration,
}

impl Timing {
    pub const IN_PROCESS: Timing = Timing {
        arrival_timeout: Duration::from_secs(5),
        quiet_period: Duration::from_millis(200),
    };
    pub const NETWORK: Timing = Timing {
        arrival_timeout: Duration::from_secs(60),
        quiet_period: Duration::from_secs(3),
    };
}

/// A prefix no earlier run used.
pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("conformance-{nanos:x}")
}

async fn receive(consumer: &dyn Consumer, count: usize, timing: Timing) -> Vec<Received> {
    let mut received = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + timing.arrival_timeout;
    while received.len() < count {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Ok(message)) => received.push(message),
            Ok(Err(error)) => panic!("consumer failed after {} messages: {error}", received.len()),
            Err(_) => panic!(
                "expected {count} messages within {:?}, got {}",
                timing.arrival_timeout,
                received.len()
            ),
        }
    }
    received
}

async fn expect_quiet(consumer: &dyn Consumer, timing: Timing, why: &str) {
    if let Ok(Ok(message)) = tokio::time::timeout(timing.quiet_period, consumer.next()).await {
        panic!(
            "{why}: unexpectedly received offset {} {:?}",
            message.offset, message.payload
        );
    }
}

fn text(message: &Received) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

fn ack_all(consumer: &dyn Consumer, messages: &[Received]) {
    for message in messages {
        consumer.ack(message).expect("ack");
    }
}

/// Messages with the same key arrive in the order they were produced.
pub async fn per_key_order_is_preserved(bus: &dyn Bus, prefix: &str, timing: Timing) {
    let topic = format!("{prefix}.order");
    bus.ensure_topic(&topic, 4).await.expect("ensure topic");
    let keys = ["study-a", "study-b", "study-c", "study-d", "study-e"];
    for sequence in 0..40 {
        for key in keys {
            bus.produce(&topic, Record::new(key, format!("{key}:{sequence}")))
                .await
                .expect("produce");
        }
    }
    let consumer = bus
        .subscribe(&format!("{prefix}.order-group"), &[&topic])
        .await
        .expect("subscribe");
    let messages = receive(consumer.as_ref(), keys.len() * 40, timing).await;
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for message in &messages {
        let (key, sequence) = text(message)
            .split_once(':')
            .map(|(k, s)| (k.to_owned(), s.to_owned()))
            .expect("k:s");
        assert_eq!(message.key_text(), key, "the key travels with the message");
        seen.entry(key)
            .or_default()
            .push(sequence.parse().expect("number"));
    }
    for (key, sequences) in seen {
        let expected: Vec<u32> = (0..40).collect();
        assert_eq!(
            sequences, expected,
            "messages of key {key} arrived out of order"
        );
    }
    ack_all(consumer.as_ref(), &messages);
    consumer.close().await.expect("close");
}

/// Two members of one group share the partitions: each message goes to exactly
/// one of them, and one key's messages all go to the same member.
pub async fn a_group_splits_partitions_between_members(
    bus: &dyn Bus,
    prefix: &str,
    timing: Timing,
) {
    let topic = format!("{prefix}.split");
    bus.ensure_topic(&topic, 4).await.expect("ensure topic");
    let group = format!("{prefix}.split-group");
    let first = bus
        .subscribe(&group, &[&topic])
        .await
        .expect("subscribe first");
    let second = bus
        .subscribe(&group, &[&topic])
        .await
        .expect("subscribe second");

    // Joining is asynchronous on a broker: poll both until each owns partitions.
    let deadline = tokio::time::Instant::now() + timing.arrival_timeout;
    loop {
        let owned = (first.assignment(), second.assignment());
        if !owned.0.is_empty() && !owned.1.is_empty() && owned.0.len() + owned.1.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never split: {owned:?}"
        );
        for member in [&first, &second] {
            if let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(100), member.next()).await
            {
                panic!("nothing was produced yet, got {:?}", message.payload);
            }
        }
    }
    let first_partitions: BTreeSet<_> = first.assignment().into_iter().collect();
    let second_partitions: BTreeSet<_> = second.assignment().into_iter().collect();
    assert!(
        first_partitions.is_disjoint(&second_partitions),
        "a partition has two owners"
    );

    let total = 64;
    for index in 0..total {
        bus.produce(
            &topic,
            Record::new(format!("key-{}", index % 16), format!("m{index}")),
        )
        .await
        .expect("produce");
    }
    let mut by_member: [Vec<Received>; 2] = [Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + timing.arrival_timeout;
    while by_member[0].len() + by_member[1].len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message arrived"
        );
        for (index, member) in [&first, &second].into_iter().enumerate() {
            if let Ok(message) =
                tokio::time::timeout(Duration::from_millis(50), member.next()).await
            {
                by_member[index].push(message.expect("next"));
            }
        }
    }
    assert!(
        !by_member[0].is_empty() && !by_member[1].is_empty(),
        "both members get work"
    );
    let payloads: BTreeSet<String> = by_member.iter().flatten().map(text).collect();
    assert_eq!(
        payloads.len(),
        total,
        "each message is delivered exactly once within the group"
    );
    let keys_of = |messages: &[Received]| -> BTreeSet<String> {
        messages.iter().map(Received::key_text).collect()
    };
    assert!(
        keys_of(&by_member[0]).is_disjoint(&keys_of(&by_member[1])),
        "one key's messages all go to one member"
    );
    for (member, messages) in [(&first, &by_member[0]), (&second, &by_member[1])] {
        ack_all(member.as_ref(), messages);
    }
    first.close().await.expect("close");
    second.close().await.expect("close");
}

/// A consumer that goes away without acknowledging leaves those messages to the
/// next member of its group, starting at the first unacknowledged one, even when
/// later ones were acknowledged out of order.
pub async fn unacknowledged_messages_are_redelivered_after_a_consumer_is_dropped(
    bus: &dyn Bus,
    prefix: &str,
    timing: Timing,
) {
    let topic = format!("{prefix}.redeliver");
    bus.ensure_topic(&topic, 1).await.expect("ensure topic");
    for index in 0..10 {
        bus.produce(&topic, Record::new("study", format!("m{index}")))
            .await
            .expect("produce");
    }
    let group = format!("{prefix}.redeliver-group");
    let crashed = bus.subscribe(&group, &[&topic]).await.expect("subscribe");
    let first_delivery = receive(crashed.as_ref(), 10, timing).await;
    // m0, m1 and m3 are done; m2 is still in flight when the consumer disappears.
    for index in [0, 1, 3] {
        crashed.ack(&first_delivery[index]).expect("ack");
    }
    drop(crashed);

    let successor = bus
        .subscribe(&group, &[&topic])
        .await
        .expect("subscribe again");
    let second_delivery = receive(successor.as_ref(), 8, timing).await;
    let payloads: Vec<String> = second_delivery.iter().map(text).collect();
    let expected: Vec<String> = (2..10).map(|index| format!("m{index}")).collect();
    assert_eq!(
        payloads, expected,
        "redelivery starts at the first unacknowledged message"
    );
    ack_all(successor.as_ref(), &second_delivery);
    expect_quiet(successor.as_ref(), timing, "everything was acknowledged").await;
    successor.close().await.expect("close");
}

/// Once acknowledged and committed, a message is not delivered to the same group
/// again; another group still gets everything.
pub async fn acknowledged_messages_are_never_redelivered_to_the_same_group(
    bus: &dyn Bus,
    prefix: &str,
    timing: Timing,
) {
    let topic = format!("{prefix}.acked");
    bus.ensure_topic(&topic, 2).await.expect("ensure topic");
    for index in 0..10 {
        bus.produce(
            &topic,
            Record::new(format!("k{}", index % 3), format!("old{index}")),
        )
        .await
        .expect("produce");
    }
    let group = format!("{prefix}.acked-group");
    let consumer = bus.subscribe(&group, &[&topic]).await.expect("subscribe");
    let old = receive(consumer.as_ref(), 10, timing).await;
    ack_all(consumer.as_ref(), &old);
    consumer.close().await.expect("close");

    for index in 0..5 {
        bus.produce(
            &topic,
            Record::new(format!("k{}", index % 3), format!("new{index}")),
        )
        .await
        .expect("produce");
    }
    let restarted = bus
        .subscribe(&group, &[&topic])
        .await
        .expect("subscribe again");
    let new = receive(restarted.as_ref(), 5, timing).await;
    let payloads: BTreeSet<String> = new.iter().map(text).collect();
    let expected: BTreeSet<String> = (0..5).map(|index| format!("new{index}")).collect();
    assert_eq!(
        payloads, expected,
        "only the messages produced after the commit arrive"
    );
    expect_quiet(
        restarted.as_ref(),
        timing,
        "acknowledged messages must not come back",
    )
    .await;
    ack_all(restarted.as_ref(), &new);
    restarted.close().await.expect("close");

    let other_group = bus
        .subscribe(&format!("{prefix}.acked-other"), &[&topic])
        .await
        .expect("subscribe");
    let everything = receive(other_group.as_ref(), 15, timing).await;
    assert_eq!(
        everything.iter().map(text).collect::<BTreeSet<_>>().len(),
        15
    );
    ack_all(other_group.as_ref(), &everything);
    other_group.close().await.expect("close");
}

/// A dead-lettered message reaches `<topic>.dlq` unchanged, with its reason, kind,
/// origin and original headers, and does not come back on its own topic.
pub async fn dead_letters_carry_the_reason(bus: &dyn Bus, prefix: &str, timing: Timing) {
    let topic = format!("{prefix}.poison");
    bus.ensure_topic(&topic, 2).await.expect("ensure topic");
    let poison =
        Record::new("1.2.3.4", vec![0xFF, 0x00, 0xFE]).with_header("x-origin", "conformance");
    bus.produce(&topic, poison).await.expect("produce");
    let consumer = bus
        .subscribe(&format!("{prefix}.poison-group"), &[&topic])
        .await
        .expect("subscribe");
    let message = receive(consumer.as_ref(), 1, timing).await.remove(0);
    let reason = DeadLetterReason::new(
        "malformed-message",
        "malformed protobuf: invalid wire type 7",
    );
    bus.dead_letter(&message, &reason)
        .await
        .expect("dead letter");
    consumer.ack(&message).expect("ack");
    expect_quiet(
        consumer.as_ref(),
        timing,
        "the poison message must not block or repeat",
    )
    .await;
    consumer.close().await.expect("close");

    let dead_letter_topic = crate::dead_letter_topic(&topic);
    let inspector = bus
        .subscribe(&format!("{prefix}.dlq-group"), &[&dead_letter_topic])
        .await
        .expect("subscribe");
    let dead = receive(inspector.as_ref(), 1, timing).await.remove(0);
    assert_eq!(dead.topic, dead_letter_topic);
    assert_eq!(
        dead.payload,
        vec![0xFF, 0x00, 0xFE],
        "the payload is unchanged"
    );
    assert_eq!(dead.key_text(), "1.2.3.4", "the key is unchanged");
    assert_eq!(
        dead.headers.get_str(header::REASON),
        Some("malformed protobuf: invalid wire type 7")
    );
    assert_eq!(
        dead.headers.get_str(header::KIND),
        Some("malformed-message")
    );
    assert_eq!(
        dead.headers.get_str(header::SOURCE_TOPIC),
        Some(topic.as_str())
    );
    assert_eq!(
        dead.headers.get_str(header::SOURCE_OFFSET),
        Some(message.offset.to_string().as_str())
    );
    assert_eq!(
        dead.headers.get_str(header::SOURCE_PARTITION),
        Some(message.partition.to_string().as_str())
    );
    assert!(
        dead.headers
            .get_str(header::FAILED_AT)
            .is_some_and(|ms| ms.parse::<u128>().is_ok())
    );
    assert_eq!(
        dead.headers.get_str("x-origin"),
        Some("conformance"),
        "original headers are kept"
    );
    inspector.ack(&dead).expect("ack");
    inspector.close().await.expect("close");
}

/// The producer's trace context travels in the message headers, and a consumer's
/// span continues the same trace.
pub async fn trace_context_travels_in_headers(bus: &dyn Bus, prefix: &str, timing: Timing) {
    use fxtriage_telemetry::propagation::{
        TRACEPARENT, carried_trace_id, continue_trace, trace_id,
    };

    let tracing_setup = fxtriage_telemetry::LocalTracing::new("conformance");
    let topic = format!("{prefix}.traced");
    bus.ensure_topic(&topic, 1).await.expect("ensure topic");

    let producer_trace_id = async {
        // First without a span: nothing to carry. Then inside the ingest span.
        bus.produce(&topic, Record::new("study", "untraced"))
            .await
            .expect("produce");
        let span = tracing::info_span!("ingest.store_instance");
        let trace = trace_id(&span).expect("the producer span has a trace id");
        bus.produce(&topic, Record::new("study", "traced"))
            .instrument(span)
            .await
            .expect("produce");
        trace
    }
    .with_subscriber(tracing_setup.dispatch.clone())
    .await;

    let consumer = bus
        .subscribe(&format!("{prefix}.traced-group"), &[&topic])
        .await
        .expect("subscribe");
    let messages = receive(consumer.as_ref(), 2, timing).await;
    let untraced = &messages[0];
    let traced = &messages[1];
    assert_eq!(text(traced), "traced");
    assert!(
        !untraced.headers.contains(TRACEPARENT),
        "no span, no trace header"
    );
    assert!(
        traced.headers.contains(TRACEPARENT),
        "the trace header is carried"
    );
    assert_eq!(carried_trace_id(&traced.headers), Some(producer_trace_id));

    let _guard = tracing::dispatcher::set_default(&tracing_setup.dispatch);
    let consumer_span = tracing::info_span!("inference.analyse");
    continue_trace(&consumer_span, &traced.headers);
    assert_eq!(
        trace_id(&consumer_span),
        Some(producer_trace_id),
        "the consumer joins the trace"
    );
    ack_all(consumer.as_ref(), &messages);
    consumer.close().await.expect("close");
}

/// Declares one `#[tokio::test]` per guarantee for the bus that `$make` (an async
/// expression giving `Option<Box<dyn Bus>>`; `None` skips) builds.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($make:expr, $timing:expr) => {
        $crate::bus_conformance_tests!(@test $make, $timing, per_key_order_is_preserved);
        $crate::bus_conformance_tests!(@test $make, $timing, a_group_splits_partitions_between_members);
        $crate::bus_conformance_tests!(@test $make, $timing, unacknowledged_messages_are_redelivered_after_a_consumer_is_dropped);
        $crate::bus_conformance_tests!(@test $make, $timing, acknowledged_messages_are_never_redelivered_to_the_same_group);
        $crate::bus_conformance_tests!(@test $make, $timing, dead_letters_carry_the_reason);
        $crate::bus_conformance_tests!(@test $make, $timing, trace_context_travels_in_headers);
    };
    (@test $make:expr, $timing:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(bus) = $make.await else { return };
            $crate::conformance::$name(bus.as_ref(), &$crate::conformance::unique_prefix(), $timing).await;
        }
    };
}
