#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Through a real upstream: Debian's nginx, started per test. These tests need nginx installed,
//! so plain `cargo test` skips them; `./scripts/test.sh` installs nginx and runs them.

use std::collections::HashSet;

use accord_tests::nginx::Nginx;
use accord_tests::{TestGateway, client, get, request, send, send_with};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SERVER: &str = r#"
    location = /hello { default_type text/plain; return 200 "hello from nginx\n"; }
    location = /conn { default_type text/plain; return 200 "$connection"; }
    location = /echo-method { default_type text/plain; return 200 "$request_method $content_length"; }
    location /files/ {
        dav_methods PUT DELETE;
        create_full_put_path on;
        client_max_body_size 100m;
    }
    location /chunked/ {
        sub_filter 'zz' 'zz';
        sub_filter_once off;
        sub_filter_types *;
    }
"#;

async fn setup() -> (Nginx, TestGateway) {
    let nginx = Nginx::start(SERVER).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  nginx:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: nginx\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: nginx}}]\n    max_body: 64MiB\n",
        nginx.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    (nginx, gateway)
}

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn get_and_post_through_nginx() {
    let (_nginx, gateway) = setup().await;
    let reply = get(&gateway.url("/hello")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from nginx\n");
    assert!(reply.header("x-request-id").is_some());

    let reply = send(request("POST", &gateway.url("/echo-method"), "a=1&b=2")).await;
    assert_eq!(reply.text(), "POST 7");
}

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn large_bodies_make_the_round_trip_both_ways() {
    let (_nginx, gateway) = setup().await;
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let put = send(request(
        "PUT",
        &gateway.url("/files/big.bin"),
        payload.clone(),
    ))
    .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let back = get(&gateway.url("/files/big.bin")).await;
    assert_eq!(back.status, 200);
    assert_eq!(back.body.len(), payload.len());
    assert!(
        back.body == payload,
        "the 8 MiB body came back byte for byte"
    );
}

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn chunked_bodies_are_streamed_both_ways() {
    let (nginx, gateway) = setup().await;
    // Upload without a length: the client sends chunked, the gateway streams it upstream.
    let chunks: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 16 * 1024]))
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(c))),
    );
    let chunked: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let response = chunked
        .request(
            http::Request::put(gateway.url("/files/chunked.bin"))
                .body(StreamBody::new(stream))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        std::fs::read(nginx.root.join("files/chunked.bin")).unwrap(),
        expected
    );

    // Download of unknown length: nginx's sub_filter drops Content-Length and answers chunked.
    std::fs::create_dir_all(nginx.root.join("chunked")).unwrap();
    let text = "zz chunked response line\n".repeat(20_000);
    std::fs::write(nginx.root.join("chunked/page.txt"), &text).unwrap();
    let response = client()
        .request(
            http::Request::get(gateway.url("/chunked/page.txt"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(
        response
            .headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), text.len());
}

#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (_nginx, gateway) = setup().await;
    let client = client();
    let mut connections = HashSet::new();
    for _ in 0..50 {
        let reply = send_with(
            &client,
            http::Request::get(gateway.url("/conn"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200);
        connections.insert(reply.text());
    }
    assert_eq!(
        connections.len(),
        1,
        "50 sequential requests used one upstream connection: {connections:?}"
    );
}

/// Issue 9's failover reproduction: a route with backends `[one, two]` (two nginx upstreams)
/// under 8 concurrent keep-alive clients, and the primary killed mid-run. Every GET may be
/// retried and a healthy secondary exists, so no client may see an error, in any of the runs.
#[tokio::test]
#[ignore = "needs nginx: run ./scripts/test.sh"]
async fn killing_the_primary_under_load_costs_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    const RUNS: usize = 12;
    const CLIENTS: usize = 8;
    let mut served_total = 0;
    let mut failures = Vec::new();
    for run in 0..RUNS {
        let mut one = Nginx::start(SERVER).await;
        let two = Nginx::start(SERVER).await;
        let yaml = format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  one:\n    http:\n      addresses: [\"{}\"]\n  two:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: pair\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: one}}, {{backend: two}}]\n",
            one.addr, two.addr
        );
        let gateway = TestGateway::start(&yaml).await;
        let url = gateway.url("/hello");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, stop, served, errors) =
                    (url.clone(), stop.clone(), served.clone(), errors.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::SeqCst) {
                        let request = http::Request::get(url.as_str()).body(Full::default());
                        let outcome = tokio::time::timeout(
                            Duration::from_secs(10),
                            client.request(request.unwrap()),
                        )
                        .await;
                        match outcome {
                            Ok(Ok(response)) if response.status() == 200 => {
                                let _ = response.into_body().collect().await;
                            }
                            Ok(Ok(response)) => {
                                let status = response.status();
                                let body = response.into_body().collect().await;
                                let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                            }
                            Ok(Err(e)) => errors.lock().unwrap().push(format!("transport: {e}")),
                            Err(_) => errors.lock().unwrap().push("no answer in 10s".into()),
                        }
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        one.kill();
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.await.unwrap();
        }
        let served = served.load(Ordering::SeqCst);
        assert!(served > 100, "run {run}: the load ran ({served} requests)");
        served_total += served;
        failures.extend(
            errors
                .lock()
                .unwrap()
                .drain(..)
                .map(|e| format!("run {run}: {e}")),
        );
        drop(two);
    }
    eprintln!(
        "{RUNS} runs, {served_total} requests, {} client errors",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "clients saw errors although the secondary was healthy:\n{}",
        failures.join("\n")
    );
}
