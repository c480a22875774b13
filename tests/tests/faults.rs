#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Failure handling end to end, against scripted upstreams: failover, timeouts, broken
//! responses, the retry budget, active health checks and outlier ejection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use accord_tests::upstream::{self, Upstream, respond};
use accord_tests::{TestGateway, dead_address, get, request, send};
use tokio::io::AsyncWriteExt;

fn config(backends: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n{backends}\nroutes:\n{routes}"
    )
}

fn primary_secondary(primary: &str, secondary: &str, route_extra: &str) -> String {
    config(
        &format!(
            "  primary:\n    http:\n      addresses: [\"{primary}\"]\n  secondary:\n    http:\n      addresses: [\"{secondary}\"]\n"
        ),
        &format!(
            "  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends:\n      - backend: primary\n      - backend: secondary\n{route_extra}"
        ),
    )
}

#[tokio::test]
async fn a_dead_primary_fails_over_with_no_client_error_even_for_a_post() {
    let secondary = Upstream::echo("secondary").await;
    let gateway = TestGateway::start(&primary_secondary(
        &dead_address().to_string(),
        &secondary.addr.to_string(),
        "",
    ))
    .await;

    let reply = get(&gateway.url("/orders/1")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["service"], "secondary");

    let reply = send(request(
        "POST",
        &gateway.url("/orders"),
        "{\"item\":\"book\"}",
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["body"],
        "{\"item\":\"book\"}",
        "the body was replayed to the secondary"
    );
    assert_eq!(
        gateway
            .metric("accord_retries_total{route=\"orders\"}")
            .await,
        2.0
    );
    assert_eq!(gateway.metric("accord_upstream_errors_total{backend=\"primary\",provider=\"http\",kind=\"connect\"}").await, 2.0);
}

#[tokio::test]
async fn a_slow_backend_hits_the_per_try_timeout_and_the_next_backend_answers() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        respond(200, "slow")
    })
    .await;
    let fast = Upstream::fixed("fast", 200).await;
    let gateway = TestGateway::start(&primary_secondary(
        &slow.addr.to_string(),
        &fast.addr.to_string(),
        "    per_try_timeout: 200ms\n    timeout: 3s\n",
    ))
    .await;
    let reply = get(&gateway.url("/x")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "fast");
    assert_eq!(gateway.metric("accord_upstream_errors_total{backend=\"primary\",provider=\"http\",kind=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn the_route_deadline_gives_a_504_json_error() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        respond(200, "slow")
    })
    .await;
    let yaml = config(
        &format!("  slow:\n    http:\n      addresses: [\"{}\"]\n", slow.addr),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: slow}]\n    timeout: 300ms\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = get(&gateway.url("/x")).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["code"], "upstream_timeout");
    assert_eq!(
        reply.json()["request_id"],
        reply.header("x-request-id").unwrap()
    );
}

#[tokio::test]
async fn a_reset_mid_response_is_a_clean_502_json_error() {
    let broken = upstream::raw(|mut stream| async move {
        upstream::read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
        // Dropping the stream closes the connection half-way through the head.
    })
    .await;
    let yaml = config(
        &format!(
            "  broken:\n    http:\n      addresses: [\"{}\"]\n",
            broken.addr
        ),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: broken}]\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = get(&gateway.url("/x")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["code"], "upstream_reset");
    // A GET is retried on reset (twice by default), so the upstream saw three tries.
    assert_eq!(broken.hits(), 3);
}

#[tokio::test]
async fn garbage_from_the_upstream_is_a_502_invalid_response() {
    let garbage = upstream::raw(|mut stream| async move {
        upstream::read_head(&mut stream).await;
        let _ = stream.write_all(b"SMTP ready\r\n\r\n").await;
    })
    .await;
    let yaml = config(
        &format!(
            "  garbage:\n    http:\n      addresses: [\"{}\"]\n",
            garbage.addr
        ),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: garbage}]\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    let reply = get(&gateway.url("/x")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["code"], "upstream_invalid_response");
}

#[tokio::test]
async fn retries_during_a_5xx_burst_stop_at_the_retry_budget() {
    let failing = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        respond(503, "overloaded")
    })
    .await;
    let yaml = config(
        &format!(
            "  failing:\n    http:\n      addresses: [\"{}\"]\n      outlier: {{consecutive_failures: 100000}}\n",
            failing.addr
        ),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: failing}]\n    retry:\n      retries: 5\n      budget_ratio: 20%\n      budget_min_concurrent: 3\n",
    );
    let gateway = Arc::new(TestGateway::start(&yaml).await);
    let requests = 30;
    let mut handles = Vec::new();
    for _ in 0..requests {
        let url = gateway.url("/burst");
        handles.push(tokio::spawn(async move { get(&url).await.status }));
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap(), 503, "the last 503 is passed through");
    }
    // Without a budget, 30 requests × 6 tries = 180 upstream requests.
    let tries = failing.hits();
    assert!(
        tries >= requests,
        "every request reached the upstream once ({tries})"
    );
    assert!(
        tries <= 2 * requests,
        "the budget kept retries to a fraction: {tries} tries"
    );
    let exhausted = gateway
        .metric("accord_retry_budget_exhausted_total{route=\"r\"}")
        .await;
    assert!(
        exhausted >= 20.0,
        "most requests were refused a retry: {exhausted}"
    );
}

#[tokio::test]
async fn an_endpoint_failing_health_checks_is_removed_and_restored() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let flaky = Upstream::start(move |seen| {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            if seen.uri.path() == "/healthz" {
                respond(if ok { 200 } else { 500 }, "health")
            } else {
                respond(200, "flaky")
            }
        }
    })
    .await;
    let steady = Upstream::start(|_| async { respond(200, "steady") }).await;
    let yaml = config(
        &format!(
            "  pool:\n    http:\n      addresses: [\"{}\", \"{}\"]\n      health_check: {{path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1}}\n",
            flaky.addr, steady.addr
        ),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: pool}]\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    let available =
        "accord_upstream_endpoints{backend=\"pool\",provider=\"http\",state=\"available\"}";

    healthy.store(false, Ordering::SeqCst);
    wait_for(|| async { gateway.metric(available).await == 1.0 }).await;
    for _ in 0..10 {
        assert_eq!(get(&gateway.url("/x")).await.text(), "steady");
    }

    healthy.store(true, Ordering::SeqCst);
    wait_for(|| async { gateway.metric(available).await == 2.0 }).await;
    let mut saw_flaky = false;
    for _ in 0..10 {
        saw_flaky |= get(&gateway.url("/x")).await.text() == "flaky";
    }
    assert!(saw_flaky, "the restored endpoint takes traffic again");
}

#[tokio::test]
async fn consecutive_failures_eject_an_endpoint_and_clients_see_no_error() {
    let bad = Upstream::fixed("bad", 503).await;
    let good = Upstream::fixed("good", 200).await;
    let yaml = config(
        &format!(
            "  pool:\n    http:\n      addresses: [\"{}\", \"{}\"]\n      outlier: {{consecutive_failures: 3, base_ejection: 30s}}\n",
            bad.addr, good.addr
        ),
        "  - id: r\n    match: {path: {prefix: /}}\n    backends: [{backend: pool}]\n",
    );
    let gateway = TestGateway::start(&yaml).await;
    for _ in 0..20 {
        let reply = get(&gateway.url("/x")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "good");
    }
    assert_eq!(
        bad.hits(),
        3,
        "the bad endpoint was ejected after 3 failures in a row"
    );
    assert_eq!(
        gateway
            .metric("accord_upstream_ejections_total{backend=\"pool\",provider=\"http\"}")
            .await,
        1.0
    );
}

/// Polls `condition` until it holds, failing after 10 seconds.
async fn wait_for<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 10s");
}
