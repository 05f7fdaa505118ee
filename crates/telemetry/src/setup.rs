use std::fmt;
use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(TelemetryError::UnknownLogFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        })
    }
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of the exported spans, e.g. "fxtriage-ingest".
    pub service_name: String,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as "info,fxtriage=debug".
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint, e.g. "http://127.0.0.1:4318/v1/traces". When
    /// absent, spans still get trace ids (so context propagates between services)
    /// but nothing is exported.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("unknown log format {0:?} (expected json or pretty)")]
    UnknownLogFormat(String),
    #[error("invalid log filter {filter:?}: {source}")]
    InvalidFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter for {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the tracer provider alive; `shutdown` flushes spans still buffered.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter. Call once, at the end of `main`.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "telemetry shutdown did not flush every span");
        }
    }
}

/// A tracer provider that exports to `otlp_endpoint` when given, and otherwise
/// only assigns trace and span ids.
pub fn tracer_provider(
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = otlp_endpoint else {
        return Ok(builder.build());
    };
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            message: error.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// A subscriber that records OpenTelemetry span contexts without exporting
/// anything, for tests that check propagation without touching the global one.
pub struct LocalTracing {
    pub dispatch: tracing::Dispatch,
    _provider: SdkTracerProvider,
}

impl fmt::Debug for LocalTracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTracing").finish_non_exhaustive()
    }
}

impl LocalTracing {
    pub fn new(service_name: &str) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fxtriage")));
        Self {
            dispatch: tracing::Dispatch::new(subscriber),
            _provider: provider,
        }
    }
}

/// Installs the global subscriber (logs to stderr in the chosen format, spans to
/// OpenTelemetry) and the process's metrics recorder. Logs must never contain patient data; services log UIDs and
/// site ids only.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::InvalidFilter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let provider = tracer_provider(&config.service_name, config.otlp_endpoint.as_deref())?;
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("fxtriage"));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    installed.map_err(|error| TelemetryError::AlreadyInstalled(error.to_string()))?;
    crate::metrics::install();
    crate::metrics::describe();
    Ok(TelemetryGuard { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_its_names_and_rejects_others() {
        assert_eq!("json".parse::<LogFormat>().expect("json"), LogFormat::Json);
        assert_eq!(
            "pretty".parse::<LogFormat>().expect("pretty"),
            LogFormat::Pretty
        );
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn a_bad_exporter_endpoint_is_reported() {
        let error = tracer_provider("test", Some("not a url")).expect_err("invalid endpoint");
        assert!(error.to_string().contains("not a url"), "{error}");
    }
}
