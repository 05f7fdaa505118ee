//! One trace per image across the distributed services: ingest, inference and
//! the prioritizer (separate processes) export their spans over OTLP/HTTP to a
//! receiver this test runs; every image sent over C-STORE has one trace in
//! which inference's span is a child of ingest's and the prioritizer's spans
//! are children of ingest's (the instance) and of inference's (the finding).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use fxtriage_proto::Message as _;
use fxtriage_testkit::{Progress, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::deployment::{Deployment, expected_images, write_studies};
use support::{Stack, dcmsend_all};

/// One span as exported: which service, which trace, which parent.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

type Received = Arc<Mutex<Vec<Span>>>;

async fn receive(State(spans): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut spans = spans.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| match &value.value {
                Some(Value::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(
                        |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(text) => Some((attribute.key.clone(), text.clone())),
                            Value::IntValue(number) => {
                                Some((attribute.key.clone(), number.to_string()))
                            }
                            _ => None,
                        },
                    )
                    .collect();
                spans.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_image_has_one_trace_from_c_store_to_the_worklist() {
    let Some(mut stack) = Stack::start("traces").await else {
        return;
    };
    let spans: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let receiver = tokio::spawn(
        axum::serve(
            listener,
            Router::new()
                .route("/v1/traces", post(receive))
                .with_state(Arc::clone(&spans)),
        )
        .into_future(),
    );
    stack.environment.push((
        "FXTRIAGE_OTLP_ENDPOINT".into(),
        format!("http://{address}/v1/traces"),
    ));
    let deployment = Deployment::start_with(stack).await;
    let inputs = deployment.directory.path().join("studies");
    let studies = write_studies(&inputs, 6, false);
    dcmsend_all(&deployment.ae_title, deployment.dimse_port, &inputs).await;
    let client = deployment.stack.client().await;
    deployment.settled(&client, &studies).await;
    let eligible: BTreeSet<String> = client
        .query(
            "SELECT sop_instance_uid FROM instances WHERE site_id = $1 AND eligible",
            &[&deployment.site],
        )
        .await
        .expect("query")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!eligible.is_empty());
    // Stopping flushes each service's spans still buffered.
    deployment.stop().await;

    let spans = eventually(
        "every image's spans from the three services",
        Duration::from_secs(60),
        || async {
            let spans = spans.lock().expect("spans").clone();
            let traced: BTreeSet<&String> = spans
                .iter()
                .filter(|span| span.name == "ingest.accept")
                .filter_map(|span| span.attributes.get("sop_instance_uid"))
                .collect();
            if traced.len() as i64 >= expected_images(&studies) {
                Progress::Done(spans)
            } else {
                Progress::NotYet(format!(
                    "{} spans; {} of {} images with an ingest span",
                    spans.len(),
                    traced.len(),
                    expected_images(&studies)
                ))
            }
        },
    )
    .await;
    receiver.abort();

    let by_id: BTreeMap<&[u8], &Span> = spans
        .iter()
        .map(|span| (span.span_id.as_slice(), span))
        .collect();
    let parent_of = |span: &Span| by_id.get(span.parent_span_id.as_slice()).copied();
    for sop in &eligible {
        let ingest: Vec<&Span> = spans
            .iter()
            .filter(|span| span.name == "ingest.accept")
            .filter(|span| span.attributes.get("sop_instance_uid") == Some(sop))
            .collect();
        assert_eq!(ingest.len(), 1, "{sop}: one ingest span: {ingest:?}");
        let ingest = ingest[0];
        assert_eq!(ingest.service, "fxtriage-ingest");
        let trace: Vec<&Span> = spans
            .iter()
            .filter(|span| span.trace_id == ingest.trace_id)
            .collect();
        let services: BTreeSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
        assert_eq!(
            services,
            BTreeSet::from([
                "fxtriage-inference",
                "fxtriage-ingest",
                "fxtriage-prioritizer"
            ]),
            "{sop}: its trace spans the three services"
        );
        // Inference's span hangs under a span of ingest's, in this trace.
        let inference: Vec<&&Span> = trace
            .iter()
            .filter(|span| span.name == "inference.instance")
            .collect();
        assert_eq!(inference.len(), 1, "{sop}: one inference span");
        let inference = *inference[0];
        assert_eq!(
            parent_of(inference).map(|parent| parent.service.as_str()),
            Some("fxtriage-ingest"),
            "{sop}: inference continues ingest's span"
        );
        // The prioritizer applied the instance (under ingest) and the finding
        // (under inference).
        let parents: BTreeSet<&str> = trace
            .iter()
            .filter(|span| span.name == "prioritizer.apply")
            .filter_map(|span| parent_of(span))
            .map(|parent| parent.service.as_str())
            .collect();
        assert!(
            parents.contains("fxtriage-ingest") && parents.contains("fxtriage-inference"),
            "{sop}: the prioritizer's spans continue ingest's and inference's: {parents:?}"
        );
    }
    eprintln!(
        "{} spans; {} analysed images each in one trace across three services",
        spans.len(),
        eligible.len()
    );
}
