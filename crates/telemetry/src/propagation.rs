//! W3C trace context (`traceparent`, `tracestate`) in message headers, so that one
//! study's trace spans ingest, inference and the prioritizer.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header that carries the trace id and parent span id.
pub const TRACEPARENT: &str = "traceparent";

/// Writes the current tracing span's OpenTelemetry context into `carrier`.
/// Does nothing when there is no sampled, valid span context.
pub fn inject_current_context(carrier: &mut dyn Injector) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, carrier);
}

/// Reads a trace context from `carrier`; an empty context when none is there.
pub fn extract_context(carrier: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(carrier)
}

/// The trace id of `span`, when it has a valid OpenTelemetry context.
pub fn trace_id(span: &tracing::Span) -> Option<opentelemetry::trace::TraceId> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// The trace id carried by `carrier`, if any.
pub fn carried_trace_id(carrier: &dyn Extractor) -> Option<opentelemetry::trace::TraceId> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = extract_context(carrier);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// Makes `span` a child of the remote span whose context `carrier` holds, so the
/// work done for a consumed message joins the producer's trace.
pub fn continue_trace(span: &tracing::Span, carrier: &dyn Extractor) {
    let parent = extract_context(carrier);
    // Fails only when the span is disabled or already started; then there is nothing to join.
    let _ignored = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_span_context_survives_inject_then_extract() {
        let provider = crate::tracer_provider("test", None).expect("provider");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("produce");
            let _entered = span.enter();
            let mut headers: HashMap<String, String> = HashMap::new();
            inject_current_context(&mut headers);
            let traceparent = headers.get(TRACEPARENT).expect("traceparent injected");

            let expected_trace_id = span.context().span().span_context().trace_id();
            assert!(
                traceparent.contains(&expected_trace_id.to_string()),
                "{traceparent}"
            );
            let extracted = extract_context(&headers);
            assert_eq!(
                extracted.span().span_context().trace_id(),
                expected_trace_id
            );
            assert!(extracted.span().span_context().is_remote());
        });
    }

    #[test]
    fn no_span_means_no_header() {
        let mut headers: HashMap<String, String> = HashMap::new();
        inject_current_context(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
