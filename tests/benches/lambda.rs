//! The Lambda adapter's own cost per invoke, function time excluded: mapping the request to an
//! event and the output back, and a whole invoke through aws-sdk-lambda (serialisation, SigV4
//! signing, the HTTP exchange) against an endpoint that answers at once, next to the same HTTP
//! exchange made by a plain hyper client — the difference is what the SDK and signing add.
//!
//! `cargo bench -p accord-tests --bench lambda`
#![allow(missing_docs)]

use std::sync::Arc;

use accord_adapters::Secret;
use accord_adapters::backend::{PathParams, RequestContext, RouteKey};
use accord_adapters::body::RequestBody;
use accord_adapters::lambda::{
    Invocation, LambdaBackendConfig, LambdaCredentials, PayloadFormat, event, response,
};
use accord_adapters::stats::BackendStats;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const OUTPUT: &str = r#"{"statusCode":200,"headers":{"content-type":"application/json"},"cookies":["a=1"],"body":"{\"id\":42,\"status\":\"shipped\"}"}"#;

/// An Invoke endpoint that answers every request with [`OUTPUT`] at once.
async fn instant_endpoint() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(OUTPUT.as_bytes()),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn request(body: &'static str) -> http::Request<RequestBody> {
    let mut request = http::Request::post("/orders/42?expand=items&expand=customer")
        .header("host", "api.example.com")
        .header("content-type", "application/json")
        .header("user-agent", "bench/1.0")
        .header("x-request-id", "7f3c9a2e")
        .header("cookie", "session=abc; theme=dark")
        .body(RequestBody::full(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|e| panic!("{e}"));
    request.extensions_mut().insert(RequestContext {
        client: "198.51.100.7:40000"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        route_key: RouteKey("POST /orders/{id}".into()),
        path_params: PathParams(vec![("id".into(), "42".into())]),
    });
    request
}

fn lambda(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let body =
        r#"{"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"leave at the door"}"#;

    let (parts, _) = request(body).into_parts();
    c.bench_function("lambda mapping: request to 2.0 event", |b| {
        b.iter(|| {
            std::hint::black_box(event::build(
                &parts,
                body.as_bytes(),
                PayloadFormat::V2,
                "$default",
            ))
        })
    });
    c.bench_function("lambda mapping: output to response", |b| {
        b.iter(|| std::hint::black_box(response::map(OUTPUT.as_bytes(), PayloadFormat::V2).is_ok()))
    });

    let addr = runtime.block_on(instant_endpoint());
    let backend = runtime
        .block_on(accord_adapters::lambda::build(
            "bench",
            LambdaBackendConfig {
                function: "orders".into(),
                qualifier: None,
                region: Some("us-east-1".into()),
                payload_format: PayloadFormat::V2,
                invocation: Invocation::RequestResponse,
                endpoint: Some(format!("http://{addr}")),
                credentials: LambdaCredentials::Static {
                    access_key_id: Secret::new("AKIDBENCH".into()),
                    secret_access_key: Secret::new("bench-secret".into()),
                    session_token: None,
                },
                stage: "$default".into(),
                timeout: None,
            },
            Arc::new(BackendStats::default()),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function(
        "lambda invoke: whole try against an instant endpoint",
        |b| {
            b.iter(|| {
                let started = tokio::time::Instant::now();
                let (response, _) =
                    runtime.block_on(backend.call(request(body).into(), started, None));
                std::hint::black_box(response.map(|r| r.status()).ok())
            })
        },
    );

    let payload = Bytes::from(event::build(
        &parts,
        body.as_bytes(),
        PayloadFormat::V2,
        "$default",
    ));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri = format!("http://{addr}/2015-03-31/functions/orders/invocations");
    c.bench_function(
        "lambda baseline: the same exchange by a plain hyper client",
        |b| {
            b.iter(|| {
                let request = http::Request::post(uri.as_str())
                    .body(Full::new(payload.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                let result = runtime.block_on(async {
                    let response = client.request(request).await?;
                    let body = response.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(body.to_bytes().len())
                });
                std::hint::black_box(result.ok())
            })
        },
    );
}

criterion_group!(benches, lambda);
criterion_main!(benches);
