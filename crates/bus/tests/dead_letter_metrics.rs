//! Every dead letter is counted in `fxtriage_dead_letters_total`, by the topic the
//! message came from and the kind of its reason, so an operator (and the
//! end-to-end tests) see a diverted message at once.

use fxtriage_bus::{Bus, DeadLetterReason, InProcessBus, Record};
use metrics_exporter_prometheus::PrometheusBuilder;

/// The value of the dead-letter counter with these labels in `exposition`.
fn counted(exposition: &str, topic: &str, kind: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with("fxtriage_dead_letters_total{"))
        .filter(|line| {
            line.contains(&format!("topic=\"{topic}\""))
                && line.contains(&format!("kind=\"{kind}\""))
        })
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse().ok())
                .expect("a sample value")
        })
        .next()
}

#[test]
fn every_dead_letter_is_counted_by_topic_and_kind() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let bus = InProcessBus::default();
            bus.ensure_topic("orders", 1).await.expect("topic");
            for payload in ["a", "b", "c"] {
                bus.produce("orders", Record::new("key", payload))
                    .await
                    .expect("produce");
            }
            let consumer = bus
                .subscribe("group", &["orders"])
                .await
                .expect("subscribe");
            let kinds = ["malformed-message", "malformed-message", "unknown-site"];
            for kind in kinds {
                let message = consumer.next().await.expect("a message");
                bus.dead_letter(&message, &DeadLetterReason::new(kind, "refused"))
                    .await
                    .expect("dead-lettered");
                consumer.ack(&message).expect("ack");
            }
        });
    });
    let exposition = handle.render();
    assert_eq!(
        counted(&exposition, "orders", "malformed-message"),
        Some(2.0),
        "{exposition}"
    );
    assert_eq!(
        counted(&exposition, "orders", "unknown-site"),
        Some(1.0),
        "{exposition}"
    );
}
