#![allow(clippy::unwrap_used, clippy::expect_used)]
//! OpenTelemetry traces to a real OTLP receiver (the protobuf decoded with
//! `opentelemetry-proto`), over HTTP/protobuf and gRPC: the server span continues the client's
//! `traceparent`, each backend try is a client span under it, the backend gets the server span
//! as its parent, and what is kept is decided at the end of the request (bad and slow requests
//! always; ordinary ones by the ratio).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use accord_tests::otlp::{OtlpReceiver, attribute, hex};
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, request, send};

async fn until_spans(receiver: &OtlpReceiver, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.spans().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} spans received, {n} expected: {:#?}",
            receiver.spans().len(),
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gateway_yaml(
    traces: &str,
    primary: std::net::SocketAddr,
    secondary: std::net::SocketAddr,
) -> String {
    format!(
        "listeners: [{{address: 127.0.0.1:0}}]\nadmin: {{address: 127.0.0.1:0}}\nlog: {{access_log: false}}\nsla_history: {{enabled: false}}\n\
         traces: {traces}\n\
         backends:\n  primary: {{http: {{addresses: [\"{primary}\"], outlier: {{consecutive_failures: 1000}}}}}}\n  secondary: {{http: {{addresses: [\"{secondary}\"]}}}}\n\
         routes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: primary}}, {{backend: secondary}}]\n    retry: {{retries: 1, on: [500]}}\n    slo: {{availability: 99%, latency: {{threshold: 50ms, target: 90%}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_a_server_span_with_a_client_span_per_try_continuing_the_callers_trace()
 {
    let receiver = OtlpReceiver::start().await;
    let seen_traceparents = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_traceparents.clone();
    let primary = Upstream::start(move |request| {
        let traceparent = request
            .headers
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push(traceparent);
        let fail = request.uri.path() == "/fail";
        async move {
            if request.uri.path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            respond(if fail { 500 } else { 200 }, "primary")
        }
    })
    .await;
    let secondary = Upstream::fixed("secondary", 500).await;
    let traces = format!(
        "{{endpoint: \"http://{}\", sample_ratio: 0%, service_name: orders-gateway}}",
        receiver.upstream.addr
    );
    let gateway = TestGateway::start(&gateway_yaml(&traces, primary.addr, secondary.addr)).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let with_parent = |path: &str| {
        let mut r = request("GET", &gateway.url(path), "");
        r.headers_mut().insert(
            "traceparent",
            http::HeaderValue::from_str(&format!("00-{caller_trace}-{caller_span}-00")).unwrap(),
        );
        r
    };

    // An ordinary request: not kept (ratio 0, the caller did not sample it).
    assert_eq!(send(with_parent("/ok")).await.status, 200);
    // A failing one, retried on the secondary (which fails too): kept, whatever the ratio.
    assert_eq!(send(with_parent("/fail")).await.status, 500);
    until_spans(&receiver, 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = receiver.spans();
    assert_eq!(
        spans.len(),
        3,
        "the ordinary request was not kept: {spans:#?}"
    );
    let server = spans
        .iter()
        .find(|s| s.span.kind == 2)
        .expect("a server span");
    assert_eq!(server.service, "orders-gateway");
    assert_eq!(server.via, "http");
    assert_eq!(
        hex(&server.span.trace_id),
        caller_trace,
        "the caller's trace goes on"
    );
    assert_eq!(hex(&server.span.parent_span_id), caller_span);
    assert_eq!(
        attribute(&server.span, "accord.route").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attribute(&server.span, "accord.class").as_deref(),
        Some("bad")
    );
    assert_eq!(
        attribute(&server.span, "http.response.status_code").as_deref(),
        Some("500")
    );
    assert_eq!(
        attribute(&server.span, "accord.tries").as_deref(),
        Some("2")
    );
    assert_eq!(server.span.status.as_ref().unwrap().code, 2, "error");
    let tries: Vec<_> = spans.iter().filter(|s| s.span.kind == 3).collect();
    assert_eq!(tries.len(), 2);
    for (n, backend) in ["primary", "secondary"].iter().enumerate() {
        let t = tries
            .iter()
            .find(|t| attribute(&t.span, "accord.backend").as_deref() == Some(*backend))
            .unwrap();
        assert_eq!(
            t.span.parent_span_id, server.span.span_id,
            "a child of the server span"
        );
        assert_eq!(t.span.trace_id, server.span.trace_id);
        assert_eq!(
            attribute(&t.span, "accord.retry").as_deref(),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            attribute(&t.span, "accord.provider").as_deref(),
            Some("http")
        );
        assert!(t.span.start_time_unix_nano >= server.span.start_time_unix_nano);
        assert!(t.span.end_time_unix_nano <= server.span.end_time_unix_nano);
    }
    // The backend got the trace with the server span as its parent.
    let traceparents = seen_traceparents.lock().unwrap().clone();
    let last = traceparents.last().unwrap().clone().unwrap();
    assert_eq!(
        last,
        format!("00-{caller_trace}-{}-00", hex(&server.span.span_id))
    );

    // A slow request (over the route's 50 ms threshold) is kept too.
    assert_eq!(send(with_parent("/slow")).await.status, 200);
    until_spans(&receiver, 5).await;
    let metrics = accord_tests::get(&gateway.admin_url("/metrics"))
        .await
        .text();
    assert!(metrics.contains("accord_traces_kept_total 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_and_the_ratio_keeps_ordinary_requests() {
    let receiver = OtlpReceiver::start().await;
    let primary = Upstream::fixed("primary", 200).await;
    let secondary = Upstream::fixed("secondary", 200).await;
    let traces = format!(
        "{{endpoint: \"http://{}\", protocol: grpc, sample_ratio: 100%}}",
        receiver.upstream.addr
    );
    let gateway = TestGateway::start(&gateway_yaml(&traces, primary.addr, secondary.addr)).await;
    for _ in 0..5 {
        assert_eq!(
            send(request("GET", &gateway.url("/"), "")).await.status,
            200
        );
    }
    until_spans(&receiver, 10).await;
    let spans = receiver.spans();
    assert!(
        spans
            .iter()
            .all(|s| s.via == "grpc" && s.service == "accord")
    );
    let servers: Vec<_> = spans.iter().filter(|s| s.span.kind == 2).collect();
    assert_eq!(servers.len(), 5);
    // New traces, one each, without a parent.
    let ids: std::collections::HashSet<_> =
        servers.iter().map(|s| s.span.trace_id.clone()).collect();
    assert_eq!(ids.len(), 5);
    assert!(servers.iter().all(|s| s.span.parent_span_id.is_empty()));
}
