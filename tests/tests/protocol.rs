#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What crosses the proxy: header rules, HTTP/2 clients, WebSocket tunnelling, body and
//! connection limits, and gateway errors.

use std::time::Duration;

use accord_tests::upstream::{self, Upstream};
use accord_tests::{Reply, TestGateway, get, request, send};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn single_backend(addr: std::net::SocketAddr, route_extra: &str, top_extra: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\n{top_extra}backends:\n  app:\n    http:\n      addresses: [\"{addr}\"]\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n{route_extra}"
    )
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(echo.addr, "", "")).await;
    let request = http::Request::get(gateway.url("/headers?x=1"))
        .header("host", "api.example.com")
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    let headers = &seen["headers"];
    for hop in ["x-private-hop", "keep-alive", "proxy-authorization"] {
        assert!(
            headers.get(hop).is_none(),
            "{hop} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["te"], "trailers");
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["host"], "api.example.com");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "api.example.com");
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(seen["uri"], "/headers?x=1");
    let request_id = headers["x-request-id"]
        .as_str()
        .expect("a request id was generated");
    assert_eq!(reply.header("x-request-id"), Some(request_id));

    let with_id = send(
        http::Request::get(gateway.url("/"))
            .header("x-request-id", "client-chosen-id")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        with_id.json()["headers"]["x-request-id"],
        "client-chosen-id"
    );
    assert_eq!(with_id.header("x-request-id"), Some("client-chosen-id"));
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_stripped() {
    let raw = upstream::raw(|mut stream| async move {
        upstream::read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-upstream-hop\r\nx-upstream-hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nx-kept: yes\r\n\r\nok")
            .await;
    })
    .await;
    let gateway = TestGateway::start(&single_backend(raw.addr, "", "")).await;
    let reply = get(&gateway.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    assert_eq!(reply.header("x-kept"), Some("yes"));
    for hop in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert!(reply.header(hop).is_none(), "{hop} reached the client");
    }
}

#[tokio::test]
async fn an_http2_client_reaches_an_http1_upstream_with_host_from_authority() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(echo.addr, "", "")).await;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let url = format!("http://localhost:{}/h2", gateway.running.address().port());
    let response = h2
        .request(
            http::Request::post(url)
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(
        body["headers"]["host"],
        format!("localhost:{}", gateway.running.address().port())
    );
    assert_eq!(body["body"], "hello");
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = ws.send(message).await;
                    }
                }
            });
        }
    });
    let gateway = TestGateway::start(&single_backend(addr, "", "")).await;
    let url = format!("ws://{}/chat", gateway.running.address());
    let (mut ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake through the gateway");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "accord"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_whether_declared_or_streamed() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(
        echo.addr,
        "    max_body: 1KiB\n    replay_buffer: 512\n",
        "",
    ))
    .await;

    let declared = send(request("POST", &gateway.url("/up"), vec![b'x'; 4096])).await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.json()["code"], "body_too_large");
    assert_eq!(
        echo.hits(),
        0,
        "a declared oversize body is refused before it is forwarded"
    );

    // Chunked, no length: the limit is enforced as the body streams.
    let chunks = futures_util::stream::iter((0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b'y'; 512])))
    }));
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(
            http::Request::post(gateway.url("/up"))
                .body(StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    let small = send(request("POST", &gateway.url("/up"), vec![b'z'; 1000])).await;
    assert_eq!(small.status, 200);
    assert_eq!(small.json()["body_len"], 1000);
}

#[tokio::test]
async fn a_request_matching_no_route_gets_a_404_json_error() {
    let echo = Upstream::echo("echo").await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nbackends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: api\n    match: {{path: {{prefix: /api}}, methods: [GET]}}\n    backends: [{{backend: app}}]\n",
        echo.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply: Reply = get(&gateway.url("/other")).await;
    assert_eq!(reply.status, 404);
    let body = reply.json();
    assert_eq!(body["code"], "no_route");
    assert_eq!(body["request_id"], reply.header("x-request-id").unwrap());
    assert_eq!(
        send(request("DELETE", &gateway.url("/api/x"), ""))
            .await
            .status,
        404
    );
    assert_eq!(get(&gateway.url("/api/x")).await.status, 200);
    assert_eq!(gateway.metric("accord_unrouted_requests_total").await, 2.0);
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_read_timeout() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(
        echo.addr,
        "",
        "limits:\n  header_read_timeout: 200ms\n",
    ))
    .await;
    let mut stream = TcpStream::connect(gateway.running.address()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway closed the connection of a client that never finished its headers"
    );
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(
        echo.addr,
        "",
        "limits:\n  max_connections: 2\n",
    ))
    .await;
    let _first = TcpStream::connect(gateway.running.address()).await.unwrap();
    let _second = TcpStream::connect(gateway.running.address()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(gateway.running.address()).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the third connection was closed"
    );
    assert_eq!(
        gateway.metric("accord_connections_rejected_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused() {
    let echo = Upstream::echo("echo").await;
    let gateway = TestGateway::start(&single_backend(
        echo.addr,
        "",
        "limits:\n  max_header_size: 8KiB\n",
    ))
    .await;
    let mut stream = TcpStream::connect(gateway.running.address()).await.unwrap();
    let huge = "a".repeat(16 * 1024);
    let _ = stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n").as_bytes())
        .await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431"), "got: {text}");
    assert_eq!(echo.hits(), 0);
    // The gateway keeps serving other requests.
    assert_eq!(get(&gateway.url("/")).await.status, 200);
}

#[tokio::test]
async fn a_backend_may_be_named_by_dns() {
    let echo = Upstream::echo("echo").await;
    let named = format!("localhost:{}", echo.addr.port());
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{named}\"]\n      dns_refresh: 1s\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n"
    );
    let gateway = TestGateway::start(&yaml).await;
    for _ in 0..5 {
        assert_eq!(get(&gateway.url("/dns")).await.status, 200);
    }
    let resolved = gateway.metric("accord_upstream_endpoints{backend=\"app\",provider=\"http\",state=\"available\"}").await
        + gateway.metric("accord_upstream_endpoints{backend=\"app\",provider=\"http\",state=\"unavailable\"}").await;
    assert!(
        resolved >= 1.0,
        "localhost resolved to at least one address"
    );
}

#[tokio::test]
async fn an_http2_upstream_is_spoken_to_with_prior_knowledge() {
    let echo = Upstream::echo("echo").await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{}\"]\n      protocol: http2\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n",
        echo.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    let mut post = request("POST", &gateway.url("/h2c"), "over h2");
    post.headers_mut()
        .insert("host", "api.example.com".parse().unwrap());
    let reply = send(post).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["body"], "over h2");
    assert_eq!(
        seen["uri"], "http://api.example.com/h2c",
        "the client's host travels as :authority"
    );
    assert!(
        seen["headers"].get("host").is_none(),
        "and not as a conflicting Host header"
    );
    // The forwarding headers travel over HTTP/2 too.
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "api.example.com");
}

/// Consistent hashing on `X-Forwarded-For` hashes the list the upstream receives, the client's
/// address appended: each client list keeps its endpoint.
#[tokio::test]
async fn consistent_hashing_on_forwarded_for_sees_the_forwarded_list() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{}\", \"{}\"]\n      balancer: {{consistent_hash: {{header: x-forwarded-for}}}}\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n",
        a.addr, b.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    // None sent (the list is the client's address alone), and lists sent by the client.
    for list in ["", "203.0.113.1", "203.0.113.2", "198.51.100.7"] {
        let mut seen = Vec::new();
        for _ in 0..6 {
            let mut request = request("GET", &gateway.url("/hashed"), "");
            if !list.is_empty() {
                request
                    .headers_mut()
                    .insert("x-forwarded-for", list.parse().unwrap());
            }
            let reply = send(request).await;
            assert_eq!(reply.status, 200);
            let json = reply.json();
            let forwarded = if list.is_empty() {
                "127.0.0.1".to_owned()
            } else {
                format!("{list}, 127.0.0.1")
            };
            assert_eq!(json["headers"]["x-forwarded-for"], forwarded.as_str());
            seen.push(json["service"].as_str().unwrap().to_owned());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{list}: {seen:?}");
    }
}
