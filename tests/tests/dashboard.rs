#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SLA dashboard in a real browser: Debian's Chromium, driven by playwright-core, loads
//! `/dashboard` from a gateway that has ten minutes of history with a breach in it, and the
//! numbers on the page must equal those of `GET /sla`. Needs Chromium and `npm ci` in
//! `tests/browser`: `./scripts/test.sh` provides both.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, get};

#[tokio::test]
#[ignore = "needs Chromium and playwright-core: run ./scripts/test.sh"]
async fn the_dashboard_shows_the_same_numbers_as_the_sla_report() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run ./scripts/test.sh (npm ci in tests/browser)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: run ./scripts/test.sh"
    );

    let status = Arc::new(AtomicU16::new(200));
    let current = status.clone();
    let primary = Upstream::start(move |_| {
        let status = current.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            respond(status, "primary")
        }
    })
    .await;
    let secondary = Upstream::fixed("secondary", 200).await;
    let next = Upstream::fixed("next", 200).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nbackends:\n  primary:\n    http:\n      addresses: [\"{}\"]\n      outlier: {{consecutive_failures: 1000000}}\n  secondary:\n    http:\n      addresses: [\"{}\"]\n  next:\n    http:\n      addresses: [\"{}\"]\nroutes:\n  - id: checkout\n    match: {{path: {{prefix: /}}}}\n    backends:\n      - backend: primary\n      - backend: secondary\n      - backend: next\n        canary: {{steps: [10%, 100%], step_for: 1h, compare: objective}}\n    slo:\n      availability: 99%\n      latency: {{threshold: 250ms, target: 95%}}\n      enforcement: {{breach_window: 2m, min_requests: 10, probe: 10%, recovery: 1m}}\n",
        primary.addr, secondary.addr, next.addr
    );
    let gateway = TestGateway::start(&yaml).await;
    let sla = gateway.running.gateway.sla().clone();
    // Start the traffic at minute 30 of an hour, so that the hour holding the breach also
    // holds quiet minutes before it: the budget chart must not drop in those.
    let past_hour = sla.clock().minute().rem_euclid(60);
    sla.clock()
        .advance(Duration::from_secs((90 - past_hour as u64) % 60 * 60));
    sla.tick();
    let first_drop_ms = (sla.clock().minute() + 4) * 60_000;
    for minute in 0..10 {
        // Minutes 4 to 6: the primary fails; POSTs are not retried, so some failures show.
        status.store(
            if (4..7).contains(&minute) { 503 } else { 200 },
            Ordering::SeqCst,
        );
        for i in 0..30 {
            let method = if i % 5 == 0 { "POST" } else { "GET" };
            accord_tests::send(accord_tests::request(method, &gateway.url("/buy"), "{}")).await;
        }
        sla.clock().advance(Duration::from_secs(60));
        sla.tick();
    }
    // An operator pauses the canary: its timeline has two entries to show.
    let paused = gateway
        .running
        .gateway
        .sla()
        .get("checkout")
        .unwrap()
        .command_canary(accord_policies::sla::canary::Command::Pause);
    assert!(paused.is_ok());
    let report = get(&gateway.admin_url("/sla/routes/checkout")).await.json();
    let events = report["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "backend_breach"),
        "the run has a backend breach to show: {events:?}"
    );

    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("http://{}", gateway.running.admin))
        .arg(&screenshot)
        .arg(first_drop_ms.to_string())
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["routes"], 1);
    assert!(summary["checked"].as_u64().unwrap() >= 9, "{summary}");
    assert_eq!(summary["charts"], 4);
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 20_000,
        "a real screenshot was taken"
    );
}
