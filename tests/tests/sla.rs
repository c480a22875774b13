#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SLA engine end to end, through real sockets: a backend that starts failing loses its
//! traffic and gets it back after it recovers; low-priority traffic is shed with `Retry-After`;
//! throttles are classified apart; the reports agree with what happened.
//!
//! The engine's clock is advanced by the test (the seam a paused tokio clock would be, for a
//! gateway that talks over real sockets), and evaluations are run explicitly with `tick()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, get, send};
use http_body_util::Full;

fn config(primary: std::net::SocketAddr, secondary: std::net::SocketAddr, slo: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  primary:\n    http:\n      addresses: [\"{primary}\"]\n      outlier: {{consecutive_failures: 1000000}}\n  secondary:\n    http:\n      addresses: [\"{secondary}\"]\n      outlier: {{consecutive_failures: 1000000}}\nroutes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends:\n      - backend: primary\n      - backend: secondary\n    slo:\n{slo}"
    )
}

/// An upstream answering with whatever status the test sets.
async fn switchable(name: &'static str) -> (Upstream, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let current = status.clone();
    let upstream = Upstream::start(move |_| {
        let status = current.load(Ordering::SeqCst);
        async move { respond(status, name) }
    })
    .await;
    (upstream, status)
}

fn advance(gateway: &TestGateway, by: Duration) {
    gateway.running.gateway.sla().clock().advance(by);
    gateway.running.gateway.sla().tick();
}

async fn sla_report(gateway: &TestGateway) -> serde_json::Value {
    get(&gateway.admin_url("/sla/routes/orders")).await.json()
}

#[tokio::test]
async fn a_failing_backend_loses_its_traffic_and_gets_it_back_after_recovering() {
    let (primary, primary_status) = switchable("primary").await;
    let (secondary, _) = switchable("secondary").await;
    let slo = "      availability: 99%\n      enforcement:\n        breach_window: 1m\n        min_requests: 10\n        probe: 20%\n        recovery: 1m\n";
    let gateway = TestGateway::start(&config(primary.addr, secondary.addr, slo)).await;
    gateway.running.gateway.sla().tick();

    // The primary starts failing. Retries hide it from clients, but every try is metered.
    primary_status.store(503, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get(&gateway.url("/o")).await.text(), "secondary");
    }
    assert_eq!(primary.hits(), 20);
    gateway.running.gateway.sla().tick();

    // Within one evaluation, the primary is breaching and traffic moved.
    let report = sla_report(&gateway).await;
    assert_eq!(report["backends"][0]["backend"], "primary");
    assert_eq!(report["backends"][0]["state"], "breaching");
    assert_eq!(report["status"], "degraded");
    let hits_before = primary.hits();
    let mut probed = 0;
    for _ in 0..100 {
        let reply = get(&gateway.url("/o")).await;
        assert_eq!(reply.status, 200);
        probed += usize::from(primary.hits() > hits_before + probed);
    }
    assert!(
        probed > 0 && probed < 50,
        "about 20% of requests still probe the primary: {probed}"
    );
    let report = sla_report(&gateway).await;
    let rerouted = report["actions"]["rerouted"].as_u64().unwrap();
    assert!(rerouted >= 50, "rerouted requests are counted: {rerouted}");
    let event = &report["events"][0];
    assert_eq!(event["kind"], "backend_breach");
    assert_eq!(event["backend"], "primary");
    assert_eq!(event["action"], "reroute");
    assert_eq!(event["trigger"]["indicator"], "availability");
    assert_eq!(
        event["trigger"]["measured"], 1.0,
        "every try of the primary failed"
    );
    assert!(
        (event["trigger"]["limit"].as_f64().unwrap() - 0.01).abs() < 1e-9,
        "the allowed error ratio of a 99% objective"
    );
    assert!(event["ended_ms"].is_null());
    assert_eq!(event["requests_affected"].as_u64().unwrap(), rerouted);

    // The primary heals. The failing minute leaves the 1-minute window; clean probes start the
    // compliant run; a minute of compliance later, it gets its traffic back.
    primary_status.store(200, Ordering::SeqCst);
    advance(&gateway, Duration::from_secs(61));
    for _ in 0..150 {
        get(&gateway.url("/o")).await;
    }
    gateway.running.gateway.sla().tick();
    assert_eq!(
        sla_report(&gateway).await["backends"][0]["state"],
        "breaching",
        "not yet: hysteresis"
    );
    advance(&gateway, Duration::from_secs(61));
    for _ in 0..150 {
        get(&gateway.url("/o")).await;
    }
    gateway.running.gateway.sla().tick();
    let report = sla_report(&gateway).await;
    assert_eq!(report["backends"][0]["state"], "compliant");
    assert!(
        report["events"][0]["ended_ms"].is_u64(),
        "the breach event is closed"
    );
    for _ in 0..5 {
        assert_eq!(
            get(&gateway.url("/o")).await.text(),
            "primary",
            "traffic is back on the primary"
        );
    }
}

#[tokio::test]
async fn low_priority_traffic_is_shed_with_retry_after_while_paging_with_no_compliant_backend() {
    let (primary, primary_status) = switchable("primary").await;
    let (secondary, secondary_status) = switchable("secondary").await;
    let slo = "      availability: 99.9%\n      enforcement:\n        min_requests: 10\n        shed: {fraction: 100%, retry_after: 20s}\n        priority: {header: x-tenant-tier, low: [free], critical: [enterprise]}\n";
    let gateway = TestGateway::start(&config(primary.addr, secondary.addr, slo)).await;
    gateway.running.gateway.sla().tick();
    // Both fail with 503, which is retried, so each backend is tried and judged.
    primary_status.store(503, Ordering::SeqCst);
    secondary_status.store(503, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get(&gateway.url("/o")).await.status, 503);
    }
    gateway.running.gateway.sla().tick();
    let report = sla_report(&gateway).await;
    // Every request failed: the budget is gone at once (that outranks paging in the status),
    // and the 14.4x page fires.
    assert_eq!(report["status"], "budget_exhausted");
    let page = &report["indicators"][0]["alerts"][0];
    assert_eq!(
        (page["severity"].as_str(), page["firing"].as_bool()),
        (Some("page"), Some(true))
    );
    let request = |tier: &str| {
        http::Request::get(gateway.url("/o"))
            .header("x-tenant-tier", tier)
            .body(Full::default())
            .unwrap()
    };
    let shed = send(request("free")).await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.json()["code"], "load_shed");
    assert_eq!(shed.header("retry-after"), Some("20"));
    for tier in ["gold", "enterprise"] {
        let served = send(request(tier)).await;
        assert!(
            ["primary", "secondary"].contains(&served.text().as_str()),
            "{tier}: forwarded, not shed"
        );
    }

    let report = sla_report(&gateway).await;
    assert_eq!(report["actions"]["shed"], 1);
    assert_eq!(report["windows"][0]["window"], "5m");
    assert_eq!(
        report["windows"][0]["requests"]["rejected"], 1.0,
        "shed requests are counted apart"
    );
    let page = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "burn_rate_alert" && e["severity"] == "page")
        .unwrap();
    assert_eq!(page["action"], "shed");
    assert_eq!(page["requests_affected"], 1);
}

#[tokio::test]
async fn throttles_are_classified_apart_and_do_not_burn_the_budget_unless_configured() {
    let (primary, primary_status) = switchable("primary").await;
    let (secondary, secondary_status) = switchable("secondary").await;
    primary_status.store(429, Ordering::SeqCst);
    secondary_status.store(429, Ordering::SeqCst);
    let gateway = TestGateway::start(&config(
        primary.addr,
        secondary.addr,
        "      availability: 99.9%\n",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(get(&gateway.url("/o")).await.status, 429);
    }
    let report = sla_report(&gateway).await;
    assert_eq!(report["windows"][0]["requests"]["throttled"], 10.0);
    assert_eq!(report["windows"][0]["requests"]["bad"], 0.0);
    assert_eq!(report["indicators"][0]["budget"]["consumed_events"], 0.0);
    assert_eq!(report["indicators"][0]["valid_events"], 0.0);

    let strict = TestGateway::start(&config(
        primary.addr,
        secondary.addr,
        "      availability: 99.9%\n      classification: {throttled: bad}\n",
    ))
    .await;
    for _ in 0..10 {
        get(&strict.url("/o")).await;
    }
    let report = sla_report(&strict).await;
    assert_eq!(report["indicators"][0]["budget"]["consumed_events"], 10.0);
}

#[tokio::test]
async fn the_reports_and_metrics_show_the_same_numbers() {
    let (primary, _) = switchable("primary").await;
    let (secondary, _) = switchable("secondary").await;
    let slo = "      availability: 99%\n      latency: {threshold: 250ms, target: 95%}\n";
    let gateway = TestGateway::start(&config(primary.addr, secondary.addr, slo)).await;
    for _ in 0..40 {
        get(&gateway.url("/o")).await;
    }
    let all = get(&gateway.admin_url("/sla")).await.json();
    assert_eq!(all["routes"][0]["route"], "orders");
    let report = sla_report(&gateway).await;
    assert_eq!(report["objective"]["window"], "30d");
    assert_eq!(report["indicators"][0]["indicator"], "availability");
    assert_eq!(report["indicators"][1]["indicator"], "latency");
    assert_eq!(report["indicators"][1]["good_events"], 40.0);
    let alerts = report["indicators"][0]["alerts"].as_array().unwrap();
    let factors: Vec<f64> = alerts
        .iter()
        .map(|a| a["burn_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(factors, vec![14.4, 6.0, 3.0, 1.0]);
    let metrics = get(&gateway.admin_url("/metrics")).await.text();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} missing"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("accord_sla_objective_ratio{route=\"orders\",indicator=\"availability\"}"),
        0.99
    );
    assert_eq!(
        value(
            "accord_sla_error_budget_remaining_ratio{route=\"orders\",indicator=\"availability\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            "slo:objective:ratio{sloth_id=\"orders-availability\",sloth_service=\"orders\",sloth_slo=\"availability\"}"
        ),
        0.99
    );
    assert_eq!(
        value(
            "slo:time_period:days{sloth_id=\"orders-latency\",sloth_service=\"orders\",sloth_slo=\"latency\"}"
        ),
        30.0
    );
    assert_eq!(
        value(
            "slo:sli_error:ratio_rate5m{sloth_id=\"orders-availability\",sloth_service=\"orders\",sloth_slo=\"availability\",sloth_window=\"5m\"}"
        ),
        0.0
    );
    assert!(metrics.contains("sloth_slo_info{sloth_id=\"orders-availability\""));
    assert!(
        metrics.contains(
            "accord_sla_latency_seconds{route=\"orders\",window=\"5m\",quantile=\"0.99\"}"
        )
    );
    assert_eq!(
        value(
            "accord_sla_actions_total{route=\"orders\",action=\"reroute\",reason=\"backend_breach\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn a_calendar_month_window_is_reported_as_the_month_so_far() {
    let (primary, _) = switchable("primary").await;
    let (secondary, _) = switchable("secondary").await;
    let slo = "      availability: 99.5%\n      window: month\n      time_zone: Europe/Paris\n";
    let gateway = TestGateway::start(&config(primary.addr, secondary.addr, slo)).await;
    for _ in 0..5 {
        get(&gateway.url("/o")).await;
    }
    let report = sla_report(&gateway).await;
    assert_eq!(report["objective"]["window"], "month");
    let days = report["objective"]["window_seconds"].as_u64().unwrap() / 86_400;
    assert!(
        (28..=31).contains(&days),
        "the period is this month's length: {days} days"
    );
    let month = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "month")
        .unwrap();
    assert_eq!(month["requests"]["total"], 5.0);
    assert_eq!(report["indicators"][0]["valid_events"], 5.0);
}
