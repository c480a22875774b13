#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Plugins through the gateway: containment (fail open and fail closed, neighbours unaffected),
//! rejections, reclassification feeding the SLA meter, latency-guard's reroute, and hot reload
//! of a plugin under steady load.

use std::sync::Arc;
use std::time::Duration;

use accord_tests::plugins::component;
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, get, send};
use http_body_util::Full;

fn plugin(name: &str, file: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    path: {}\n    limits: {{time: 20ms, memory: 16MiB}}\n{extra}",
        component(file).display()
    )
}

fn request(url: &str, misbehave: &str) -> http::Request<Full<bytes::Bytes>> {
    http::Request::get(url)
        .header("x-misbehave", misbehave)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn misbehaving_plugins_are_contained_open_or_closed_and_other_routes_are_unaffected() {
    let app = Upstream::fixed("app", 200).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}{}backends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: open\n    match: {{path: {{prefix: /open}}}}\n    backends: [{{backend: app}}]\n    plugins: [open]\n  - id: closed\n    match: {{path: {{prefix: /closed}}}}\n    backends: [{{backend: app}}]\n    plugins: [closed]\n  - id: plain\n    match: {{path: {{prefix: /plain}}}}\n    backends: [{{backend: app}}]\n",
        plugin("open", "misbehave", "    on_error: allow\n"),
        plugin("closed", "misbehave", "    on_error: reject\n"),
        app.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    for how in ["trap", "loop", "bomb", "status", "reroute", "response-trap"] {
        let open = send(request(&gateway.url("/open"), how)).await;
        assert_eq!(open.status, 200, "{how}: fail open serves the request");
        assert_eq!(open.text(), "app");
        let closed = send(request(&gateway.url("/closed"), how)).await;
        if how == "response-trap" {
            // The response was already the backend's: failing closed counts it as bad instead.
            assert_eq!(closed.status, 200);
        } else {
            assert_eq!(closed.status, 503, "{how}: fail closed refuses it");
            assert_eq!(closed.json()["code"], "plugin_failed");
        }
        assert_eq!(
            get(&gateway.url("/plain")).await.status,
            200,
            "{how}: other routes are unaffected"
        );
    }
    assert_eq!(
        get(&gateway.url("/open")).await.text(),
        "app",
        "a well-behaved call after all that"
    );
    let failures = gateway
        .metric("accord_plugin_failures_total{plugin=\"open\"}")
        .await;
    assert!(failures >= 5.0, "{failures}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_rejection_carries_its_status_headers_and_retry_after_and_a_reclassification_feeds_the_sla()
 {
    let app = Upstream::fixed("app", 200).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}backends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: checked\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [contract]\n    slo:\n      availability: 99%\n",
        plugin("contract", "misbehave", ""),
        app.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    let rejected = send(request(&gateway.url("/x"), "reject")).await;
    assert_eq!(rejected.status, 429);
    assert_eq!(rejected.json()["code"], "plugin_rejected");
    assert!(
        rejected.json()["message"]
            .as_str()
            .unwrap()
            .contains("slow down")
    );
    assert_eq!(rejected.header("x-quota"), Some("0"));
    assert_eq!(rejected.header("retry-after"), Some("7"));
    assert_eq!(
        app.hits(),
        0,
        "a rejected request never reaches the backend"
    );

    let reclassified = send(request(&gateway.url("/x"), "reclassify")).await;
    assert_eq!(
        reclassified.status, 200,
        "the client still gets the backend's answer"
    );
    let report = get(&gateway.admin_url("/sla/routes/checked")).await.json();
    let five = &report["windows"][0]["requests"];
    assert_eq!(five["bad"], 1.0, "the contract check counted it bad");
    assert_eq!(
        five["rejected"], 1.0,
        "the plugin's rejection counts as rejected"
    );
    assert_eq!(
        gateway
            .metric(
                "accord_plugin_reclassified_total{plugin=\"contract\",reason=\"contract-violated\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        gateway
            .metric("accord_plugin_decisions_total{plugin=\"contract\",decision=\"reject\"}")
            .await,
        1.0
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn latency_guard_moves_traffic_off_a_slow_primary() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        respond(200, "slow")
    })
    .await;
    let fast = Upstream::fixed("fast", 200).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}backends:\n  slow:\n    http:\n      addresses: [\"{}\"]\n  fast:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: guarded\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: slow}}, {{backend: fast}}]\n    plugins: [guard]\n    slo:\n      availability: 99%\n",
        plugin(
            "guard",
            "latency-guard",
            "    config: {threshold_ms: 20, min_requests: 5}\n"
        ),
        slow.addr,
        fast.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    // Until the primary has served enough requests to be judged, it keeps its traffic.
    for _ in 0..5 {
        assert_eq!(get(&gateway.url("/")).await.text(), "slow");
    }
    // Plugins read the SLA state as of the engine's last evaluation (every 5 s).
    gateway.running.gateway.sla().tick();
    // Its p99 (40 ms) is over the 20 ms threshold: the guard reroutes to the fast backend.
    for _ in 0..5 {
        assert_eq!(get(&gateway.url("/")).await.text(), "fast");
    }
    assert_eq!(
        gateway
            .metric("accord_plugin_counter_total{plugin=\"guard\",name=\"rerouted\"}")
            .await,
        5.0
    );
    assert_eq!(
        gateway
            .metric("accord_plugin_decisions_total{plugin=\"guard\",decision=\"reroute\"}")
            .await,
        5.0
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_plugin_is_hot_reloaded_under_steady_load_without_failures_and_a_bad_one_is_refused() {
    let app = Upstream::fixed("app", 200).await;
    let config = |file: &str, config: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}backends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [policy]\n",
            plugin("policy", file, config),
            app.addr
        )
    };
    let gateway = Arc::new(TestGateway::start(&config("noop", "")).await);
    let load = accord_tests::SteadyLoad::start(gateway.url("/"), 4);
    let reload = |gateway: Arc<TestGateway>| async move {
        accord_tests::send(
            http::Request::post(gateway.admin_url("/reload"))
                .body(Full::default())
                .unwrap(),
        )
        .await
    };
    for round in 0..4 {
        let (file, extra) = if round % 2 == 0 {
            ("latency-guard", "    config: {threshold_ms: 500}\n")
        } else {
            ("noop", "")
        };
        gateway.rewrite_config(&config(file, extra));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = reload(gateway.clone()).await;
        assert_eq!(
            reply.status, 401,
            "POST /reload needs a token; reload through the gateway API instead"
        );
        gateway.running.gateway.reload().await.unwrap();
    }
    // A plugin that refuses its configuration is refused, and the old one keeps serving.
    gateway.rewrite_config(&config("latency-guard", "    config: {threshold_ms: -1}\n"));
    let error = gateway
        .running
        .gateway
        .reload()
        .await
        .unwrap_err()
        .describe();
    assert!(error.contains("threshold_ms must be above 0"), "{error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (served, failed) = load.stop().await;
    assert!(served > 50);
    assert_eq!(failed, 0, "no request failed while plugins were swapped");
    assert_eq!(get(&gateway.url("/")).await.status, 200);
}

/// The head a plugin chain is lent goes on to the backend whole: method, target, headers (a
/// plugin's edits applied), and the request id the client sees, on a route whose plugins only
/// check requests and on one whose plugins judge responses too.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn the_backend_gets_the_head_the_plugins_were_lent() {
    let app = Upstream::echo("app").await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}{}backends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: checked\n    match: {{path: {{prefix: /checked}}}}\n    backends: [{{backend: app}}]\n    plugins: [noop]\n  - id: judged\n    match: {{path: {{prefix: /judged}}}}\n    backends: [{{backend: app}}]\n    plugins: [misbehave]\n",
        plugin("noop", "noop", ""),
        plugin("misbehave", "misbehave", ""),
        app.addr
    );
    let gateway = TestGateway::start(&config).await;
    for path in ["/checked/orders/7?full=1", "/judged/orders/7?full=1"] {
        let reply = send(accord_tests::request("PUT", &gateway.url(path), "body")).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = reply.json();
        assert_eq!(seen["method"], "PUT", "{path}");
        assert_eq!(seen["uri"], path, "{path}");
        assert_eq!(seen["body"], "body", "{path}");
        let id = reply.header("x-request-id").unwrap();
        assert_eq!(seen["headers"]["x-request-id"], id, "{path}");
    }
}
