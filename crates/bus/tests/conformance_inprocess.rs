//! The in-process bus of the embedded default passes the bus conformance suite.

use fxtriage_bus::conformance::Timing;
use fxtriage_bus::{Bus, InProcessBus};

async fn in_process_bus() -> Option<Box<dyn Bus>> {
    Some(Box::new(InProcessBus::default()))
}

fxtriage_bus::bus_conformance_tests!(in_process_bus(), Timing::IN_PROCESS);
