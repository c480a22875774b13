#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile and odd input: arbitrary request targets against the admin API and the router
//! always get an HTTP answer (never a panic or a dropped connection), and the gateway keeps
//! serving afterwards.

use std::time::Duration;

use accord_tests::upstream::Upstream;
use accord_tests::{TestGateway, get};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `target` as the request target of a raw HTTP/1.1 request and returns the status line.
async fn status_line(addr: std::net::SocketAddr, target: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: accord.test\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

/// Request targets: mostly paths with separators, escapes, dots and queries (the shapes the
/// admin API and the router split), sometimes any bytes at all.
fn target() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("sla".to_owned()),
        Just("routes".to_owned()),
        Just("history".to_owned()),
        Just("orders".to_owned()),
        Just("?minutes=".to_owned()),
        Just("&".to_owned()),
        Just("%".to_owned()),
        Just("..".to_owned()),
        Just("{id}".to_owned()),
        "[a-z0-9%._~-]{0,6}",
        "\\PC{0,3}",
    ];
    prop_oneof![
        8 => proptest::collection::vec(piece, 0..10).prop_map(|p| format!("/{}", p.concat()).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream}\"]\nroutes:\n  - id: orders\n    match: {{path: {{template: \"/orders/{{id}}\"}}}}\n    backends: [{{backend: app}}]\n    slo: {{availability: 99.9%}}\n  - id: history\n    match: {{path: {{prefix: /sla}}}}\n    backends: [{{backend: app}}]\n    slo: {{availability: 99%}}\n"
    )
}

#[test]
fn arbitrary_targets_always_get_an_http_answer() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (gateway, _upstream) = runtime.block_on(async {
        let upstream = Upstream::fixed("app", 200).await;
        let gateway = TestGateway::start(&config(upstream.addr)).await;
        (gateway, upstream)
    });
    let admin = gateway.running.admin;
    let traffic = gateway.running.address();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&target(), |target| {
            for addr in [admin, traffic] {
                let line = runtime.block_on(status_line(addr, &target));
                prop_assert!(
                    line.starts_with("HTTP/1.1 "),
                    "{addr} answered {:?} to target {:?}",
                    line,
                    String::from_utf8_lossy(&target)
                );
            }
            Ok(())
        })
        .unwrap();
    // The reproduction, and the gateway still serving afterwards.
    let history = runtime.block_on(status_line(admin, b"/sla/routes/history"));
    assert_eq!(
        history, "HTTP/1.1 200 OK",
        "a route called history has a report"
    );
    runtime.block_on(async {
        assert_eq!(get(&gateway.admin_url("/healthz")).await.status, 200);
        assert_eq!(get(&gateway.url("/orders/7")).await.status, 200);
    });
}
