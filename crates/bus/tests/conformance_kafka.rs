//! The Kafka bus passes the bus conformance suite against the real broker of the
//! local stack (`infra/local/stack up`; FXTRIAGE_KAFKA_BROKERS).

use fxtriage_bus::conformance::Timing;
use fxtriage_bus::{Bus, KafkaBus, KafkaConfig};

async fn kafka_bus() -> Option<Box<dyn Bus>> {
    let Ok(brokers) = std::env::var("FXTRIAGE_KAFKA_BROKERS") else {
        let required = std::env::var_os("FXTRIAGE_REQUIRE_STACK").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "FXTRIAGE_KAFKA_BROKERS is not set but the real stack is required"
        );
        eprintln!("skipped: FXTRIAGE_KAFKA_BROKERS is not set (run under `infra/local/stack env`)");
        return None;
    };
    let bus = KafkaBus::connect(KafkaConfig::new(brokers, "fxtriage-conformance")).expect("client");
    Some(Box::new(bus))
}

fxtriage_bus::bus_conformance_tests!(kafka_bus(), Timing::NETWORK);
