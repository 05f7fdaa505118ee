//! Against the real broker of the local stack: a consumer group member that holds
//! no partitions while messages wait and its group commits nothing rejoins the
//! group, and counts it in `fxtriage_consumer_rejoins_total` (the cure for a
//! broker that ends a rebalance with a stale, empty assignment; see the bus
//! crate's `stall` module).

use std::time::Duration;

use fxtriage_bus::conformance::unique_prefix;
use fxtriage_bus::{Bus, KafkaBus, KafkaConfig, Record};
use fxtriage_testkit::Progress;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The rejoin counter of `group` in `exposition` (0 when absent).
fn rejoins(exposition: &str, group: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with("fxtriage_consumer_rejoins_total{"))
        .filter(|line| line.contains(&format!("group=\"{group}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_partitions_rejoins_while_its_group_commits_nothing() {
    let Some(brokers) = fxtriage_testkit::stack::setting("FXTRIAGE_KAFKA_BROKERS") else {
        return;
    };
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("a metrics recorder");
    let mut config = KafkaConfig::new(brokers, "fxtriage-stuck-group-test");
    config.stall_check_interval = Duration::from_millis(300);
    let bus = KafkaBus::connect(config).expect("client");
    let prefix = unique_prefix();
    let topic = format!("{prefix}-one-partition");
    let group = format!("{prefix}-group");
    bus.ensure_topic(&topic, 1).await.expect("topic");
    for index in 0..3 {
        bus.produce(&topic, Record::new("key", format!("message {index}")))
            .await
            .expect("produce");
    }

    // Two members, one partition: one of them holds it and, like a member that
    // is stuck, never acknowledges; the other holds nothing.
    let first = bus
        .subscribe(&group, &[topic.as_str()])
        .await
        .expect("first");
    let second = bus
        .subscribe(&group, &[topic.as_str()])
        .await
        .expect("second");
    let consuming = async {
        // Polling keeps both members in the group; nothing is acknowledged.
        loop {
            tokio::select! {
                _ = first.next() => {}
                _ = second.next() => {}
            }
        }
    };
    let rejoined = fxtriage_testkit::poll_until(Duration::from_secs(90), || async {
        let counted = rejoins(&metrics.render(), &group);
        if counted >= 1.0 {
            Progress::Done(counted)
        } else {
            Progress::NotYet(format!(
                "no rejoin counted yet (assignments: {:?} and {:?})",
                first.assignment(),
                second.assignment()
            ))
        }
    });
    let counted = tokio::select! {
        result = rejoined => result.expect("the member without partitions rejoined"),
        () = consuming => unreachable!("the consuming loop never ends"),
    };
    assert!(counted >= 1.0);
    first.close().await.expect("close");
    second.close().await.expect("close");
}
