//! The Kafka bus passes the bus conformance suite against the real broker of the
//! local stack (`infra/local/stack up`; FXTRIAGE_KAFKA_BROKERS).

use fxtriage_bus::conformance::Timing;
use fxtriage_bus::{Bus, KafkaBus, KafkaConfig};

async fn kafka_bus() -> Option<Box<dyn Bus>> {
    let brokers = fxtriage_testkit::stack::setting("FXTRIAGE_KAFKA_BROKERS")?;
    let bus = KafkaBus::connect(KafkaConfig::new(brokers, "fxtriage-conformance")).expect("client");
    Some(Box::new(bus))
}

fxtriage_bus::bus_conformance_tests!(kafka_bus(), Timing::NETWORK);
