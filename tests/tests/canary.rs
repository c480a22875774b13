#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SLO-guarded canary releases end to end, through the `accord` binary: a healthy canary steps
//! up to all the traffic, a failing one is rolled back within one evaluation having served no
//! more than its step's share, operators drive it with `accord canary`, and `accord gate`
//! refuses a release while the budget is low or a canary was just rolled back.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use accord_policies::sla::EVALUATION_INTERVAL;
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{AccordProcess, SteadyLoad, accord_binary, file_holding, get};
use serde_json::Value;

/// The admin token the gateways of these tests require (for `POST /canary/...`).
const TOKEN: &str = "canary-test-token";

/// A gateway with route `orders`: `v1`, and `v2` as a canary with `canary` (flow YAML).
fn gateway(
    v1: SocketAddr,
    v2: SocketAddr,
    canary: &'static str,
    slo: &'static str,
    token: &std::path::Path,
) -> impl Fn(SocketAddr, SocketAddr) -> String {
    let token = token.to_path_buf();
    move |addr, admin| {
        format!(
            "listeners: [{{address: \"{addr}\"}}]\nadmin: {{address: \"{admin}\", token_file: \"{}\"}}\nsla_history: {{enabled: false}}\nlog: {{access_log: false}}\n\
             backends:\n  v1: {{http: {{addresses: [\"{v1}\"]}}}}\n  v2: {{http: {{addresses: [\"{v2}\"]}}}}\n\
             routes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: v1}}, {{backend: v2, canary: {canary}}}]\n    retry: {{retries: 0}}\n    slo: {slo}\n",
            token.display()
        )
    }
}

async fn canary(gateway: &AccordProcess) -> Value {
    get(&format!("http://{}/canary/orders", gateway.admin))
        .await
        .json()
}

/// Waits until the canary's phase is `phase`, for at most `within`.
async fn until_phase(gateway: &AccordProcess, phase: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let report = canary(gateway).await;
        if report["phase"] == phase {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {phase} within {within:?}: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn accord(args: &[&str]) -> (bool, String) {
    let output = Command::new(accord_binary())
        .args(args)
        .env("ACCORD_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run accord");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_steps_up_to_all_the_traffic() {
    let v1 = Upstream::start(|_| async { respond(200, "v1") }).await;
    let v2 = Upstream::start(|_| async { respond(200, "v2") }).await;
    let token = file_holding(TOKEN);
    let gateway = AccordProcess::start(gateway(
        v1.addr,
        v2.addr,
        "{steps: [10%, 50%, 100%], step_for: 1s, min_requests: 20, compare: baseline}",
        "{availability: 99.9%}",
        &token,
    ))
    .await;
    let load = SteadyLoad::start(format!("http://{}/", gateway.addr), 2);
    // Three steps, each judged at an evaluation (every 5 s): promoted after three or four
    // evaluations (more time allowed for a loaded machine; the check is the step count).
    let report = until_phase(&gateway, "promoted", EVALUATION_INTERVAL * 12).await;
    let (served, failed) = load.stop().await;
    assert_eq!(failed, 0);
    let whats: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, ["started", "advanced", "advanced", "promoted"]);
    assert_eq!(report["share"], 1.0);
    for entry in &report["timeline"].as_array().unwrap()[1..] {
        assert_eq!(entry["comparisons"][0]["verdict"], "ok", "{entry}");
    }
    // After promotion every request goes to v2.
    let before = v2.hits.load(Ordering::SeqCst);
    for _ in 0..20 {
        get(&format!("http://{}/", gateway.addr)).await;
    }
    assert_eq!(v2.hits.load(Ordering::SeqCst) - before, 20);
    assert!(served > 100);

    let (ok, text) = accord(&[
        "canary",
        "status",
        "--route",
        "orders",
        "--admin",
        &gateway.admin.to_string(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("canary v2 promoted at 100% of the traffic (step 3 of 3: 10% → 50% → 100%)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_within_one_evaluation_having_served_only_its_share() {
    let v1 = Upstream::start(|_| async { respond(200, "v1") }).await;
    // v2 fails one request in 20.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let v2 = Upstream::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move { respond(if n % 20 == 19 { 500 } else { 200 }, "v2") }
    })
    .await;
    let token = file_holding(TOKEN);
    let gateway = AccordProcess::start(gateway(
        v1.addr,
        v2.addr,
        "{steps: [10%, 100%], step_for: 1h, min_requests: 20, compare: objective}",
        "{availability: 99.9%}",
        &token,
    ))
    .await;
    let load = SteadyLoad::start(format!("http://{}/", gateway.addr), 2);
    let report = until_phase(&gateway, "rolled_back", EVALUATION_INTERVAL * 6).await;
    let at_rollback = v2.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (served, failed) = load.stop().await;
    assert_eq!(
        v2.hits.load(Ordering::SeqCst),
        at_rollback,
        "no request reaches a rolled-back canary"
    );
    // Only the step's share (10%) of the requests ever reached v2, so at most that share of
    // clients saw its failures.
    let share = at_rollback as f64 / served as f64;
    assert!(
        share < 0.15,
        "{at_rollback} of {served} requests reached v2"
    );
    assert!(
        (failed as f64) < 0.15 * 0.05 * served as f64 + 5.0,
        "{failed} failed"
    );
    let rollback = report["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(rollback["what"], "rolled_back");
    assert_eq!(rollback["by"], "gateway");
    let breach = &rollback["comparisons"][0];
    assert_eq!(breach["verdict"], "breach");
    assert!(
        (breach["canary_bad_ratio"].as_f64().unwrap() - 0.05).abs() < 0.02,
        "{breach}"
    );
    // The event log has it, with the values that triggered it.
    let sla = get(&format!("http://{}/sla/routes/orders", gateway.admin))
        .await
        .json();
    let event = sla["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "canary_breach")
        .cloned()
        .expect("a canary_breach event");
    assert_eq!(event["action"], "rollback");
    assert_eq!(event["backend"], "v2");
    assert!((event["trigger"]["limit"].as_f64().unwrap() - 0.001).abs() < 1e-9);

    // The gate refuses releases for an hour after a rollback; the operator resumes it.
    let admin = gateway.admin.to_string();
    let (ok, text) = accord(&[
        "gate",
        "--route",
        "orders",
        "--min-budget",
        "0%",
        "--admin",
        &admin,
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("canary v2 was rolled back 0 min ago: availability"),
        "{text}"
    );
    let (ok, text) = accord(&["canary", "resume", "--route", "orders", "--admin", &admin]);
    assert!(ok, "{text}");
    assert!(text.contains("canary v2 progressing at 10%"), "{text}");
    let (ok, text) = accord(&["canary", "pause", "--route", "orders", "--admin", &admin]);
    assert!(ok, "{text}");
    let (ok, text) = accord(&["canary", "pause", "--route", "orders", "--admin", &admin]);
    assert!(!ok);
    assert!(
        text.contains("only a progressing canary can be paused (it is paused)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_while_the_error_budget_is_low() {
    let failing = Arc::new(AtomicUsize::new(1));
    let fail = failing.clone();
    let v1 = Upstream::start(move |_| {
        let status = if fail.load(Ordering::SeqCst) == 1 {
            500
        } else {
            200
        };
        async move { respond(status, "v1") }
    })
    .await;
    let v2 = Upstream::start(|_| async { respond(200, "v2") }).await;
    // The canary is promoted already (one step): only the budget matters here.
    let token = file_holding(TOKEN);
    let gateway = AccordProcess::start(gateway(
        v1.addr,
        v2.addr,
        "{steps: [100%], step_for: 1s, min_requests: 1}",
        "{availability: 99%, window: 1h}",
        &token,
    ))
    .await;
    let admin = gateway.admin.to_string();
    // Spend the budget through v1 before the canary takes the traffic: abort the canary first.
    let (ok, text) = accord(&["canary", "abort", "--route", "orders", "--admin", &admin]);
    assert!(ok, "{text}");
    for _ in 0..50 {
        get(&format!("http://{}/", gateway.addr)).await;
    }
    tokio::time::sleep(EVALUATION_INTERVAL + Duration::from_secs(1)).await;
    let url = format!("http://{admin}/sla/routes/orders/gate?min_budget=25%25");
    let refused = get(&url).await;
    assert_eq!(refused.status, 409);
    let reasons = refused.json()["reasons"].to_string();
    assert!(
        reasons.contains("the availability error budget has"),
        "{reasons}"
    );
    assert!(reasons.contains("below the 25.0% floor"), "{reasons}");
    let (ok, text) = accord(&[
        "gate",
        "--route",
        "orders",
        "--min-budget",
        "25%",
        "--admin",
        &admin,
    ]);
    assert!(!ok, "{text}");
    assert!(text.starts_with("refuse: route orders"), "{text}");
    // A floor that is not a percentage is a clear error.
    let bad = get(&format!(
        "http://{admin}/sla/routes/orders/gate?min_budget=lots"
    ))
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("min_budget: invalid percentage"),
        "{}",
        bad.text()
    );
    // Another route's gate: 404 with why.
    let unknown = get(&format!("http://{admin}/sla/routes/nope/gate")).await;
    assert_eq!(unknown.status, 404);
    failing.store(0, Ordering::SeqCst);
}
