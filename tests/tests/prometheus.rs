#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `accord slo rules` against the real Prometheus: the rules pass `promtool check rules`;
//! Prometheus scrapes a running gateway under scripted load, evaluates them, and its burn
//! rates agree with the gateway's own report; the page alert the gateway fires inline fires in
//! Prometheus too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accord_tests::prometheus::{Prometheus, check_rules};
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{AccordProcess, accord_binary, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus: run ./scripts/test.sh"]
async fn prometheus_computes_the_same_burn_rates_and_fires_the_same_alert() {
    // Every other request fails: a 50% error ratio against a 99% objective burns 50x.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let app = Upstream::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move { respond(if n.is_multiple_of(2) { 500 } else { 200 }, "app") }
    })
    .await;
    let yaml = move |addr: SocketAddr, admin: SocketAddr| {
        format!(
            "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\", sloth_series: false}}\nsla_history: {{enabled: false}}\nlog: {{access_log: false}}\n\
             backends:\n  app: {{http: {{addresses: [\"{}\"]}}}}\n\
             routes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    retry: {{retries: 0}}\n    slo: {{availability: 99%, window: 1d}}\n",
            app.addr
        )
    };
    let gateway = AccordProcess::start(yaml).await;

    // The rules, written from the same configuration, and checked by promtool.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("accord.yaml");
    std::fs::write(&config, yaml(gateway.addr, gateway.admin)).unwrap();
    let rules = dir.path().join("rules.yaml");
    let output = std::process::Command::new(accord_binary())
        .args(["slo", "rules", "-c"])
        .arg(&config)
        .arg("-o")
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked = check_rules(&rules).unwrap();
    assert!(checked.contains("SUCCESS"), "{checked}");

    // Accord's own slo:* series are off: Prometheus is their one source.
    let metrics = get(&format!("http://{}/metrics", gateway.admin))
        .await
        .text();
    assert!(!metrics.contains("slo:sli_error:ratio_rate"));
    assert!(metrics.contains(
        "accord_sla_events_total{route=\"orders\",indicator=\"availability\",outcome=\"bad\"}"
    ));

    let prometheus = Prometheus::start(&gateway.admin.to_string(), &[rules], None).await;
    // 50 requests a second for up to 60 s, until both have the page alert firing.
    let client = accord_tests::client();
    let url = format!("http://{}/", gateway.addr);
    let started = tokio::time::Instant::now();
    let mut prometheus_fired = false;
    let mut accord_fired = false;
    while started.elapsed() < Duration::from_secs(60) && !(prometheus_fired && accord_fired) {
        for _ in 0..25 {
            let request = http::Request::get(url.as_str())
                .body(http_body_util::Full::default())
                .unwrap();
            accord_tests::send_with(&client, request).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sla = get(&format!("http://{}/sla/routes/orders", gateway.admin))
            .await
            .json();
        accord_fired = sla["indicators"][0]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["severity"] == "page" && a["firing"] == true);
        prometheus_fired = !prometheus
            .query("ALERTS{alertname=\"AccordSLOPageBurnRate\", alertstate=\"firing\", sloth_id=\"orders-availability\"}")
            .await
            .is_empty();
    }
    assert!(accord_fired, "the gateway pages inline");
    assert!(
        prometheus_fired,
        "and Prometheus fires the same page alert from the rules"
    );

    // The same burn rate, within what scraping every second allows.
    let sla = get(&format!("http://{}/sla/routes/orders", gateway.admin))
        .await
        .json();
    let accord_5m = sla["indicators"][0]["burn_rates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window"] == "5m")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    // Rule groups evaluate independently: the meta group records the burn rate from the SLI
    // group's series at its own next evaluation (every second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let prometheus_5m = loop {
        let value = prometheus
            .value("slo:current_burn_rate:ratio{sloth_id=\"orders-availability\"}")
            .await;
        match value {
            Some(value) => break value,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => panic!("the burn rate is not recorded within 10 s"),
        }
    };
    assert!((accord_5m - 50.0).abs() < 2.0, "accord {accord_5m}");
    assert!(
        (prometheus_5m - accord_5m).abs() / accord_5m < 0.05,
        "prometheus {prometheus_5m} vs accord {accord_5m}"
    );
    let objective = prometheus
        .value("slo:objective:ratio{sloth_id=\"orders-availability\"}")
        .await;
    assert_eq!(objective, Some(0.99));
}
