//! With an endpoint configured, spans are exported over OTLP/HTTP, and shutting
//! the provider down flushes what was still buffered.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry::trace::{Tracer as _, TracerProvider as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_shutdown_flushes_them() {
    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let sink = Arc::clone(&received);
    let collector = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().expect("lock").push((content_type, body.len()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let endpoint = format!("http://{address}/v1/traces");
    let provider =
        fxtriage_telemetry::tracer_provider("fxtriage-test", Some(&endpoint)).expect("provider");
    provider
        .tracer("test")
        .in_span("ingest.accept", |_context| {});
    assert!(
        received.lock().expect("lock").is_empty(),
        "spans are batched, not sent at once"
    );

    tokio::task::spawn_blocking(move || provider.shutdown().expect("flushes"))
        .await
        .expect("join");
    let requests = received.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1, "one export on shutdown: {requests:?}");
    assert_eq!(requests[0].0, "application/x-protobuf");
    assert!(requests[0].1 > 0, "the export carries the span");
}
