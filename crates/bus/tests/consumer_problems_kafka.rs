//! Against the real broker of the local stack: a consumer that cannot consume
//! for a reason retrying does not cure (here, its topic does not exist) fails
//! the bus's health check, naming the consumer and the error, while the broker
//! itself answers; so readiness reports it. Once that consumer is gone the
//! check passes again.

use std::time::Duration;

use fxtriage_bus::conformance::unique_prefix;
use fxtriage_bus::{Bus, KafkaBus, KafkaConfig};
use fxtriage_testkit::Progress;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_topic_does_not_exist_fails_the_health_check() {
    let Some(brokers) = fxtriage_testkit::stack::setting("FXTRIAGE_KAFKA_BROKERS") else {
        return;
    };
    let bus = KafkaBus::connect(KafkaConfig::new(brokers, "fxtriage-consumer-problem-test"))
        .expect("client");
    bus.health_check().await.expect("healthy at first");
    let prefix = unique_prefix();
    let missing = format!("{prefix}-never-created");
    let consumer = bus
        .subscribe(&format!("{prefix}-group"), &[missing.as_str()])
        .await
        .expect("subscribe");
    let reported = {
        let consuming = async {
            loop {
                let _ = consumer.next().await;
            }
        };
        let reported = fxtriage_testkit::poll_until(Duration::from_secs(60), || async {
            match bus.health_check().await {
                Err(error) => Progress::Done(error.to_string()),
                Ok(()) => Progress::NotYet("the health check passes".to_owned()),
            }
        });
        tokio::select! {
            result = reported => result.expect("the consumer's problem is reported"),
            () = consuming => unreachable!("the consuming loop never ends"),
        }
    };
    assert!(
        reported.contains(&missing) && reported.to_lowercase().contains("unknown topic"),
        "{reported}"
    );
    drop(consumer);
    bus.health_check()
        .await
        .expect("healthy once the consumer is gone");
}
