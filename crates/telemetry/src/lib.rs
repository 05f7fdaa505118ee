//! Operational plumbing every fxtriage service shares: structured logs, OpenTelemetry
//! traces (exported over OTLP when an endpoint is configured), trace-context
//! propagation through message headers, Prometheus metrics, and the health
//! endpoints.

pub mod health;
pub mod metrics;
pub mod propagation;
mod setup;
pub mod tls;

pub use setup::{
    LocalTracing, LogFormat, TelemetryConfig, TelemetryError, TelemetryGuard, init, tracer_provider,
};
