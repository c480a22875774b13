#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The reference plugins end to end through the gateway: `budget-guard` sheds tier by tier as
//! the budget burns, `tenant-quota` holds each tenant to its rate, and `contract-check`
//! refuses requests that break the contract and counts responses that break it as bad, and the
//! C plugin `budget-gate` serves only critical requests once the budget is spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use accord_tests::plugins::component;
use accord_tests::upstream::{Upstream, json_response, respond};
use accord_tests::{TestGateway, get, request, send};
use bytes::Bytes;
use http_body_util::Full;

fn plugin(name: &str, file: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    path: {}\n    limits: {{time: 20ms, memory: 16MiB}}\n{extra}",
        component(file).display()
    )
}

fn gateway_yaml(plugins: &str, upstream: std::net::SocketAddr, chain: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{plugins}backends:\n  app:\n    http:\n      addresses: [\"{upstream}\"]\nroutes:\n  - id: api\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    retry: {{retries: 0}}\n    plugins: [{chain}]\n    slo:\n      availability: 99.9%\n"
    )
}

fn with_header(
    mut request: http::Request<Full<Bytes>>,
    name: &'static str,
    value: &str,
) -> http::Request<Full<Bytes>> {
    request
        .headers_mut()
        .insert(name, http::HeaderValue::from_str(value).unwrap());
    request
}

async fn requests_by_class(gateway: &TestGateway) -> serde_json::Value {
    let report = get(&gateway.admin_url("/sla/routes/api")).await.json();
    report["windows"][0]["requests"].clone()
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn budget_guard_sheds_the_lower_tiers_first_while_the_budget_burns() {
    let status = Arc::new(AtomicU16::new(200));
    let current = status.clone();
    let app = Upstream::start(move |_| {
        let status = current.load(Ordering::SeqCst);
        async move { respond(status, "app") }
    })
    .await;
    let guard = plugin(
        "guard",
        "budget-guard",
        "    config: {shed_above: {free: 2, standard: 5000}, exhausted: [], min_requests: 10, retry_after_seconds: 12}\n",
    );
    let gateway = TestGateway::start(&gateway_yaml(&guard, app.addr, "guard")).await;
    let tiered = |tier: &str| {
        with_header(
            request("GET", &gateway.url("/x"), ""),
            "x-tenant-tier",
            tier,
        )
    };

    // Healthy: every tier is served.
    for _ in 0..10 {
        assert_eq!(send(tiered("free")).await.status, 200);
    }
    gateway.running.gateway.sla().tick();
    assert_eq!(
        send(tiered("free")).await.status,
        200,
        "no burn, no shedding"
    );

    // The backend fails every request: the 5m burn rate is about 600x (of a 99.9% objective).
    status.store(500, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(send(tiered("critical")).await.status, 500);
    }
    gateway.running.gateway.sla().tick();
    let hits = app.hits();
    let shed = send(tiered("free")).await;
    assert_eq!(shed.status, 503, "free traffic is shed above 2x");
    assert_eq!(shed.json()["code"], "plugin_rejected");
    assert_eq!(shed.header("retry-after"), Some("12"));
    assert_eq!(shed.header("x-accord-shed-tier"), Some("free"));
    assert!(
        shed.json()["message"].as_str().unwrap().contains("burns"),
        "{}",
        shed.text()
    );
    assert_eq!(app.hits(), hits, "a shed request never reaches the backend");
    assert_eq!(
        send(tiered("standard")).await.status,
        500,
        "standard traffic has a higher threshold: it still goes through"
    );
    assert_eq!(
        send(request("GET", &gateway.url("/x"), "")).await.status,
        500,
        "no tier header: the default tier (standard)"
    );
    assert_eq!(
        gateway
            .metric("accord_plugin_counter_total{plugin=\"guard\",name=\"shed_free\"}")
            .await,
        1.0
    );
    assert_eq!(
        requests_by_class(&gateway).await["rejected"],
        1.0,
        "shed requests count as rejected, not against the objective"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn tenant_quota_holds_each_tenant_to_its_own_rate() {
    let app = Upstream::fixed("app", 200).await;
    let quota = plugin(
        "quota",
        "tenant-quota",
        "    config: {default_limit: 1000, limits: {trial: 5}}\n",
    );
    let gateway = TestGateway::start(&gateway_yaml(&quota, app.addr, "quota")).await;
    let as_tenant =
        |tenant: &str| with_header(request("GET", &gateway.url("/x"), ""), "x-tenant", tenant);

    // Twenty requests in well under a second: a tenant limited to 5 per second gets most of
    // them refused, whichever second boundary falls among them.
    let mut refused = 0;
    for _ in 0..20 {
        let reply = send(as_tenant("trial")).await;
        match reply.status.as_u16() {
            200 => {}
            429 => {
                refused += 1;
                assert_eq!(reply.header("retry-after"), Some("1"));
                assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
                assert!(reply.json()["message"].as_str().unwrap().contains("trial"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused >= 10, "only {refused} of 20 refused");
    for _ in 0..20 {
        assert_eq!(
            send(as_tenant("acme")).await.status,
            200,
            "another tenant has its own rate"
        );
    }
    let anonymous = send(request("GET", &gateway.url("/x"), "")).await;
    assert_eq!(
        anonymous.status, 401,
        "no tenant header: refused by default"
    );
    assert_eq!(app.hits(), 40 - refused);
    assert_eq!(
        requests_by_class(&gateway).await["rejected"],
        (refused + 1) as f64,
        "refusals do not count against the objective"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn contract_check_refuses_bad_requests_and_counts_bad_responses() {
    let large = format!("[{}0]", "0,".repeat(40_000));
    let large_body = large.clone();
    let app = Upstream::start(move |seen| {
        let large = large_body.clone();
        async move {
            match seen.uri.path() {
                "/ok" => json_response(200, &serde_json::json!({"a": 1})),
                "/broken" => {
                    let mut response = json_response(200, &serde_json::json!({}));
                    *response.body_mut() = Full::new(Bytes::from_static(b"{\"a\":"));
                    response
                }
                "/teapot" => json_response(418, &serde_json::json!({"tea": true})),
                "/large" => {
                    let mut response = json_response(200, &serde_json::json!({}));
                    *response.body_mut() = Full::new(Bytes::from(large));
                    response
                }
                _ => respond(200, "no content type"),
            }
        }
    })
    .await;
    let contract = plugin(
        "contract",
        "contract-check",
        "    response_body: 64KiB\n    config:\n      request: {required_headers: [x-api-key], content_types: [application/json], max_body_bytes: 100}\n      response: {statuses: [2xx, 404], required_headers: [content-type], json: true}\n",
    );
    let gateway = TestGateway::start(&gateway_yaml(&contract, app.addr, "contract")).await;
    let keyed = |method: &str, path: &str, body: &'static str| {
        with_header(request(method, &gateway.url(path), body), "x-api-key", "k")
    };

    // The request contract: refused before the backend.
    let missing = send(request("GET", &gateway.url("/ok"), "")).await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key")
    );
    let text = send(with_header(
        keyed("POST", "/ok", "hello"),
        "content-type",
        "text/plain",
    ))
    .await;
    assert_eq!(text.status, 415);
    let long = "x".repeat(200);
    let too_long = send(with_header(
        with_header(request("POST", &gateway.url("/ok"), long), "x-api-key", "k"),
        "content-type",
        "application/json; charset=utf-8",
    ))
    .await;
    assert_eq!(too_long.status, 413);
    assert_eq!(app.hits(), 0, "no refused request reached the backend");
    let posted = send(with_header(
        keyed("POST", "/ok", "{}"),
        "content-type",
        "application/json",
    ))
    .await;
    assert_eq!(
        posted.status, 200,
        "a request within the contract goes through"
    );

    // The response contract: the client gets the backend's answer, the SLA counts it bad.
    let ok = send(keyed("GET", "/ok", "")).await;
    assert_eq!(
        (ok.status.as_u16(), ok.text()),
        (200, "{\"a\":1}".to_owned())
    );
    let broken = send(keyed("GET", "/broken", "")).await;
    assert_eq!(
        (broken.status.as_u16(), broken.text()),
        (200, "{\"a\":".to_owned())
    );
    assert_eq!(send(keyed("GET", "/teapot", "")).await.status, 418);
    assert_eq!(send(keyed("GET", "/plain", "")).await.status, 200);
    let large_reply = send(keyed("GET", "/large", "")).await;
    assert_eq!(
        large_reply.text(),
        large,
        "a body longer than response_body streams through whole"
    );

    let reason =
        |r: &str| format!("accord_plugin_reclassified_total{{plugin=\"contract\",reason=\"{r}\"}}");
    assert_eq!(gateway.metric(&reason("invalid_json")).await, 1.0);
    assert_eq!(gateway.metric(&reason("status_418")).await, 1.0);
    assert_eq!(gateway.metric(&reason("missing_content-type")).await, 1.0);
    assert_eq!(
        gateway
            .metric("accord_plugin_counter_total{plugin=\"contract\",name=\"json_unchecked\"}")
            .await,
        1.0
    );
    let classes = requests_by_class(&gateway).await;
    assert_eq!(classes["bad"], 3.0, "{classes}");
    assert_eq!(classes["good"], 3.0, "{classes}");
    assert_eq!(classes["rejected"], 3.0, "{classes}");
    // Every call is timed, by hook; the load-time canary call is not traffic.
    let calls = |hook: &str| {
        format!("accord_plugin_call_duration_seconds_count{{plugin=\"contract\",hook=\"{hook}\"}}")
    };
    assert_eq!(gateway.metric(&calls("on_request")).await, 9.0);
    assert_eq!(gateway.metric(&calls("on_response")).await, 6.0);
    assert_eq!(
        gateway
            .metric("accord_plugin_calls_total{plugin=\"contract\"}")
            .await,
        15.0
    );
    // A contract violation counts against the backend that answered, so breach detection and
    // rerouting react to it.
    let report = get(&gateway.admin_url("/sla/routes/api")).await.json();
    let backend = accord_tests::backend_requests(&report, "app");
    assert_eq!(
        (backend["bad"].as_f64(), backend["good"].as_f64()),
        (Some(3.0), Some(3.0)),
        "the backend's window: {backend}"
    );
}

#[tokio::test]
#[ignore = "builds the C plugin with clang and wasi-libc: run ./scripts/test.sh"]
async fn the_c_plugin_budget_gate_serves_only_critical_requests_once_the_budget_is_spent() {
    let status = Arc::new(AtomicU16::new(500));
    let current = status.clone();
    let app = Upstream::start(move |_| {
        let status = current.load(Ordering::SeqCst);
        async move { respond(status, "app") }
    })
    .await;
    let gate = format!(
        "  gate:\n    path: {}\n    config: x-priority\n",
        accord_tests::plugins::c_component("budget-gate").display()
    );
    let gateway = TestGateway::start(&gateway_yaml(&gate, app.addr, "gate")).await;
    for _ in 0..5 {
        assert_eq!(
            send(request("GET", &gateway.url("/x"), "")).await.status,
            500
        );
    }
    gateway.running.gateway.sla().tick();
    status.store(200, Ordering::SeqCst);

    let gated = send(request("GET", &gateway.url("/x"), "")).await;
    assert_eq!(gated.status, 503);
    assert_eq!(gated.json()["code"], "plugin_rejected");
    assert_eq!(gated.header("retry-after"), Some("60"));
    assert!(
        gated.json()["message"]
            .as_str()
            .unwrap()
            .contains("budget is spent")
    );
    let critical = send(with_header(
        request("GET", &gateway.url("/x"), ""),
        "x-priority",
        "critical",
    ))
    .await;
    assert_eq!(
        (critical.status.as_u16(), critical.text()),
        (200, "app".to_owned())
    );
    assert_eq!(
        gateway
            .metric("accord_plugin_counter_total{plugin=\"gate\",name=\"gated\"}")
            .await,
        1.0
    );
}

/// A plugin's rejection and its reclassification of a response, with the plugin's name and
/// reason, are in the request's access-log line.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn plugin_decisions_and_their_reasons_are_in_the_access_log() {
    let app = Upstream::start(|seen| async move {
        match seen.uri.path() {
            "/broken" => {
                let mut response = json_response(200, &serde_json::json!({}));
                *response.body_mut() = Full::new(Bytes::from_static(b"{\"a\":"));
                response
            }
            _ => json_response(200, &serde_json::json!({"a": 1})),
        }
    })
    .await;
    let contract = plugin(
        "contract",
        "contract-check",
        "    response_body: 64KiB\n    config:\n      request: {required_headers: [x-api-key]}\n      response: {json: true}\n",
    );
    let gateway = accord_tests::AccordProcess::start_logged(|addr, admin| {
        gateway_yaml(&contract, app.addr, "contract")
            .replace(
                "127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0",
                &format!("\"{addr}\"\nadmin:\n  address: \"{admin}\""),
            )
            .replace("access_log: false", "access_log: true")
    })
    .await;
    let url = |path: &str| format!("http://{}{path}", gateway.addr);
    assert_eq!(send(request("GET", &url("/ok"), "")).await.status, 400);
    let broken = send(with_header(
        request("GET", &url("/broken"), ""),
        "x-api-key",
        "k",
    ))
    .await;
    assert_eq!(broken.status, 200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = gateway.log();
        let line = |path: &str| {
            log.lines()
                .find(|l| l.contains("accord::access") && l.contains(&format!("path={path} ")))
                .map(str::to_owned)
        };
        if let (Some(rejected), Some(reclassified)) = (line("/ok"), line("/broken")) {
            assert!(
                rejected.contains("contract=reject 400 ") && rejected.contains("x-api-key"),
                "{rejected}"
            );
            assert!(
                reclassified.contains("class=\"bad\"")
                    && reclassified.contains("contract=bad invalid_json"),
                "{reclassified}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access-log lines in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn contract_check_validates_request_bodies_against_a_json_schema() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = seen.clone();
    let app = Upstream::start(move |request| {
        bodies.lock().unwrap().push(request.body.clone());
        async move { json_response(200, &serde_json::json!({"ok": true})) }
    })
    .await;
    let contract = plugin(
        "contract",
        "contract-check",
        "    request_body: 1KiB\n    config:\n      request:\n        json_schema: {type: object, required: [sku], properties: {sku: {type: string}, qty: {type: integer, minimum: 1}}}\n",
    );
    let gateway = TestGateway::start(&gateway_yaml(&contract, app.addr, "contract")).await;

    // A body that matches is read by the plugin and still reaches the backend whole.
    let valid = r#"{"sku": "A-1", "qty": 2}"#;
    let ok = send(request("POST", &gateway.url("/orders"), valid)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(seen.lock().unwrap().as_slice(), [Bytes::from(valid)]);

    // Breaking the schema: 422 with where and why; the backend never sees it.
    let broken = send(request("POST", &gateway.url("/orders"), r#"{"qty": 0}"#)).await;
    assert_eq!(broken.status, 422);
    let message = broken.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("\"sku\" is a required property"),
        "{message}"
    );
    assert!(
        message.contains("/qty: 0 is less than the minimum of 1"),
        "{message}"
    );
    let not_json = send(request("POST", &gateway.url("/orders"), "sku=A-1")).await;
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["message"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );

    // A body longer than `request_body` is not read: it passes, counted as unchecked.
    let long = format!(r#"{{"qty": 0, "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(
        send(request("POST", &gateway.url("/orders"), long))
            .await
            .status,
        200
    );
    // A request without a body is not a schema violation.
    assert_eq!(
        send(request("GET", &gateway.url("/orders"), ""))
            .await
            .status,
        200
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
}

/// The gateway sends a request id it generated with the forwarding headers, not through the
/// head's map, except on a route with plugins, whose head carries it for them: a contract that
/// requires `x-request-id` lets a request without one through, and the backend still sees the
/// id once, the same one the client is answered with. A client's own id is kept.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_generated_request_id_is_in_the_head_the_plugins_read_and_is_sent_once() {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ids.clone();
    let app = Upstream::start(move |request| {
        let sent: Vec<String> = request
            .headers
            .get_all("x-request-id")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        seen.lock().unwrap().push(sent);
        async move { respond(200, "ok") }
    })
    .await;
    let contract = plugin(
        "contract",
        "contract-check",
        "    config:\n      request: {required_headers: [x-request-id]}\n",
    );
    let gateway = TestGateway::start(&gateway_yaml(&contract, app.addr, "contract")).await;

    let generated = send(request("GET", &gateway.url("/a"), "")).await;
    assert_eq!(generated.status, 200, "the plugin saw the generated id");
    let answered = generated.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(answered.len(), 32, "{answered}");
    let kept = send(with_header(
        request("GET", &gateway.url("/b"), ""),
        "x-request-id",
        "mine",
    ))
    .await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.headers["x-request-id"], "mine");
    assert_eq!(
        ids.lock().unwrap().as_slice(),
        [vec![answered], vec!["mine".to_owned()]],
        "each request's id reached the backend once"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn idempotency_refuses_a_repeated_key_and_changes_headers_both_ways() {
    let marks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = marks.clone();
    let app = Upstream::start(move |request| {
        let mark = request
            .headers
            .get("x-idempotency")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push(mark);
        async move { respond(201, "created") }
    })
    .await;
    let guard = plugin("idem", "idempotency", "    config: {ttl_ms: 600000}\n");
    let gateway = TestGateway::start(&gateway_yaml(&guard, app.addr, "idem")).await;
    let post = |key: &str, id: &str| {
        with_header(
            with_header(
                request("POST", &gateway.url("/pay"), "{}"),
                "idempotency-key",
                key,
            ),
            "x-request-id",
            id,
        )
    };

    let first = send(post("k-1", "req-first")).await;
    assert_eq!(first.status, 201);
    assert_eq!(
        first.headers["x-idempotency-key"], "k-1",
        "set for the client"
    );
    let repeat = send(post("k-1", "req-again")).await;
    assert_eq!(repeat.status, 409);
    assert!(
        repeat.json()["message"]
            .as_str()
            .unwrap()
            .contains("already used by request req-first"),
        "the head carries the request id"
    );
    assert_eq!(send(post("k-2", "req-other")).await.status, 201);
    // The backend saw each first use, marked by the plugin; never the repeat.
    assert_eq!(
        marks.lock().unwrap().as_slice(),
        [Some("first".to_owned()), Some("first".to_owned())]
    );
}
