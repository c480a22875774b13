#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Notifications against the real Alertmanager and a webhook receiver: a spent budget is
//! pushed to Alertmanager (which routes it to its receiver) and to a signed webhook as it fires
//! and as it resolves; a webhook receiver that is down gets the resolution once it is back,
//! exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accord_tests::alertmanager::Alertmanager;
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, get, request, send};
use serde_json::Value;

/// What the receiver got: path, signature header, body.
type Received = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

async fn until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager: run ./scripts/test.sh"]
async fn a_spent_budget_reaches_alertmanager_and_a_signed_webhook_as_it_fires_and_resolves() {
    let received: Received = Arc::default();
    let down = Arc::new(AtomicBool::new(false));
    let (log, hook_down) = (received.clone(), down.clone());
    let receiver = Upstream::start(move |seen| {
        let (log, hook_down) = (log.clone(), hook_down.clone());
        async move {
            let path = seen.uri.path().to_owned();
            if path == "/hook" && hook_down.load(Ordering::SeqCst) {
                return respond(503, "down");
            }
            let signature = seen
                .headers
                .get("x-accord-signature-256")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
            log.lock().unwrap().push((path, signature, body));
            respond(200, "ok")
        }
    })
    .await;
    let alertmanager = Alertmanager::start(&format!("http://{}/am", receiver.addr)).await;

    let failing = Arc::new(AtomicBool::new(true));
    let fail = failing.clone();
    let app = Upstream::start(move |_| {
        let status = if fail.load(Ordering::SeqCst) {
            500
        } else {
            200
        };
        async move { respond(status, "app") }
    })
    .await;
    let standby = Upstream::fixed("standby", 200).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let gateway = TestGateway::start(&format!(
        "listeners: [{{address: 127.0.0.1:0}}]\nadmin: {{address: 127.0.0.1:0}}\nlog: {{access_log: false}}\nsla_history: {{enabled: false}}\n\
         notifications:\n  alertmanager: {{url: \"http://127.0.0.1:{}\", resend_interval: 1s}}\n  webhooks:\n    - {{url: \"http://{}/hook\", secret_file: \"{}\", kinds: [budget_exhausted]}}\n\
         backends:\n  app: {{http: {{addresses: [\"{}\"], outlier: {{consecutive_failures: 100000}}}}}}\n  standby: {{http: {{addresses: [\"{}\"]}}}}\n\
         routes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}, {{backend: standby}}]\n    retry: {{retries: 0}}\n    slo: {{availability: 99%, window: 1h, enforcement: {{breach_window: 1m, min_requests: 10}}}}\n",
        alertmanager.port,
        receiver.addr,
        secret.display(),
        app.addr,
        standby.addr
    ))
    .await;
    let sla = gateway.running.gateway.sla().clone();

    // Twenty failures spend a 1% budget at once.
    for _ in 0..20 {
        send(request("GET", &gateway.url("/"), "")).await;
    }
    sla.tick();
    let hooks = |state: &str| {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _, body)| path == "/hook" && body["state"] == state)
            .cloned()
            .collect::<Vec<_>>()
    };
    until("the firing webhook", Duration::from_secs(10), || {
        !hooks("firing").is_empty()
    })
    .await;
    let (_, signature, body) = hooks("firing")[0].clone();
    assert_eq!(body["kind"], "budget_exhausted");
    assert_eq!(body["route"], "orders");
    let raw = serde_json::to_vec(&body).unwrap();
    // The signature covers the body as sent; serde_json writes it back byte for byte.
    assert_eq!(
        signature.as_deref(),
        Some(accord::notify::sign("s3cret", &raw).as_str())
    );
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.ends_with("-firing"), "{id}");

    // Alertmanager holds the alert, with Sloth's labels, and routed it to its receiver.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let alerts = alertmanager.alerts().await;
        if let Some(alert) = alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "AccordErrorBudgetExhausted")
        {
            break alert.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert in alertmanager: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["labels"]["sloth_service"], "orders");
    assert_eq!(alert["labels"]["sloth_slo"], "availability");
    assert_eq!(alert["labels"]["sloth_id"], "orders-availability");
    assert_eq!(alert["labels"]["sloth_severity"], "page");
    assert_eq!(alert["status"]["state"], "active");
    // The backend that breached is an alert of its own, labelled with the backend.
    let breach = alertmanager
        .alerts()
        .await
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "AccordBackendBreach")
        .expect("the backend breach reached alertmanager");
    assert_eq!(breach["labels"]["backend"], "app");
    assert_eq!(breach["labels"]["sloth_severity"], "ticket");
    let routed = |status: &str| {
        received.lock().unwrap().iter().any(|(path, _, body)| {
            path == "/am"
                && body["status"] == status
                && body["alerts"].as_array().is_some_and(|a| {
                    a.iter().any(|a| {
                        a["labels"]["alertname"] == "AccordErrorBudgetExhausted"
                            && a["status"] == status
                    })
                })
        })
    };
    until(
        "alertmanager's firing notification",
        Duration::from_secs(15),
        || routed("firing"),
    )
    .await;

    // The webhook receiver goes down; the budget recovers meanwhile.
    down.store(true, Ordering::SeqCst);
    failing.store(false, Ordering::SeqCst);
    for _ in 0..2500 {
        send(request("GET", &gateway.url("/"), "")).await;
    }
    sla.tick();
    let metrics = |name: &str| {
        let url = gateway.admin_url("/metrics");
        let name = name.to_owned();
        async move {
            get(&url)
                .await
                .text()
                .lines()
                .find(|l| l.starts_with(&name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics("accord_notifications_total{receiver=\"webhook\",result=\"failed\"}").await < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resolution was attempted while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(hooks("resolved").is_empty());
    assert_eq!(
        metrics("accord_notifications_pending").await,
        1.0,
        "kept in the outbox"
    );

    // Back up: delivered at the next attempt (backoff 1 s, 2 s, …), once.
    down.store(false, Ordering::SeqCst);
    until("the resolved webhook", Duration::from_secs(20), || {
        !hooks("resolved").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resolved = hooks("resolved");
    assert_eq!(resolved.len(), 1, "delivered once: {resolved:?}");
    assert_eq!(resolved[0].2["event_id"], body["event_id"]);
    assert_eq!(metrics("accord_notifications_pending").await, 0.0);
    assert_eq!(
        hooks("firing").len(),
        1,
        "the firing one was not sent again"
    );

    // Alertmanager resolves it too, and tells its receiver.
    until(
        "alertmanager's resolved notification",
        Duration::from_secs(20),
        || routed("resolved"),
    )
    .await;
}
