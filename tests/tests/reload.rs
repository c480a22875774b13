#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hot reload and the admin API: a reload under steady load fails no request, an invalid
//! configuration is refused with its errors while traffic continues, and the admin API checks
//! its bearer token.

use std::sync::Arc;
use std::time::Duration;

use accord_tests::upstream::Upstream;
use accord_tests::{TestGateway, get};
use http_body_util::Full;

const TOKEN: &str = "s3cret-admin-token";

/// The admin token lives in a file, referenced by `token_file`.
fn token_file() -> tempfile::TempPath {
    accord_tests::file_holding(&format!("{TOKEN}\n"))
}

fn config(
    token: &std::path::Path,
    backend_addr: std::net::SocketAddr,
    extra_route: &str,
) -> String {
    let token_file = token.display();
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n  token_file: {token_file}\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{backend_addr}\"]\nroutes:\n  - id: app\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n{extra_route}"
    )
}

async fn post_reload(gateway: &TestGateway, token: Option<&str>) -> accord_tests::Reply {
    let mut request = http::Request::post(gateway.admin_url("/reload"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    accord_tests::send(request.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn a_reload_under_steady_load_fails_no_request() {
    let token_file = token_file();
    let blue = Upstream::fixed("blue", 200).await;
    let green = Upstream::fixed("green", 200).await;
    let gateway = Arc::new(TestGateway::start(&config(&token_file, blue.addr, "")).await);

    let load = accord_tests::SteadyLoad::start(gateway.url("/steady"), 4);
    let token = TOKEN;
    for round in 0..6 {
        let target = if round % 2 == 0 {
            green.addr
        } else {
            blue.addr
        };
        gateway.rewrite_config(&config(&token_file, target, ""));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = post_reload(&gateway, Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (served, failed) = load.stop().await;
    assert!(served > 50, "steady load ran");
    assert_eq!(failed, 0, "no request failed during reloads");
    assert!(
        blue.hits() > 0 && green.hits() > 0,
        "traffic followed the reloads"
    );
    assert_eq!(
        get(&gateway.url("/")).await.text(),
        "blue",
        "the last reload points at blue"
    );
    assert_eq!(
        gateway
            .metric("accord_config_reloads_total{result=\"ok\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn an_invalid_reload_is_refused_with_its_errors_and_traffic_continues() {
    let token_file = token_file();
    let app = Upstream::fixed("app", 200).await;
    let gateway = TestGateway::start(&config(&token_file, app.addr, "")).await;
    let token = TOKEN;
    gateway.rewrite_config(&config(
        &token_file,
        app.addr,
        "  - id: broken\n    match: {path: {prefix: /b}}\n    backends: [{backend: missing}]\n    timeout: 5 seconds\n",
    ));
    let reply = post_reload(&gateway, Some(token)).await;
    assert_eq!(reply.status, 422);
    let body = reply.json();
    assert_eq!(body["code"], "invalid_config");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(
        errors.len(),
        1,
        "parsing stops at the first syntax or type error: {body}"
    );
    assert_eq!(errors[0]["path"], "routes[1].timeout");
    assert_eq!(errors[0]["line"], 19);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid duration"),
        "{body}"
    );

    gateway.rewrite_config(&config(
        &token_file,
        app.addr,
        "  - id: broken\n    match: {path: {prefix: /b}}\n    backends: [{backend: missing}]\n",
    ));
    let body = post_reload(&gateway, Some(token)).await.json();
    assert_eq!(body["errors"][0]["path"], "routes[1].backends[0].backend");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown backend \"missing\"")
    );

    assert_eq!(
        get(&gateway.url("/b/still-served-by-app")).await.text(),
        "app"
    );
    assert_eq!(
        gateway
            .metric("accord_config_reloads_total{result=\"failed\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn the_admin_api_requires_its_token_for_post_and_serves_reads_on_loopback() {
    let token_file = token_file();
    let app = Upstream::fixed("app", 200).await;
    let gateway = TestGateway::start(&config(&token_file, app.addr, "")).await;
    assert_eq!(post_reload(&gateway, None).await.status, 401);
    assert_eq!(post_reload(&gateway, Some("wrong")).await.status, 401);
    assert_eq!(post_reload(&gateway, Some(TOKEN)).await.status, 200);

    assert_eq!(get(&gateway.admin_url("/healthz")).await.status, 200);
    assert_eq!(
        get(&gateway.admin_url("/readyz")).await.json()["ready"],
        true
    );
    let config = get(&gateway.admin_url("/config")).await.json();
    assert_eq!(
        config["admin"]["token_file"],
        token_file.display().to_string(),
        "the reference is shown"
    );
    assert!(!config.to_string().contains(TOKEN), "the secret is not");
    assert_eq!(
        get(&gateway.admin_url("/nope")).await.json()["code"],
        "not_found"
    );
    let metrics = get(&gateway.admin_url("/metrics")).await.text();
    assert!(metrics.contains("# TYPE accord_request_duration_seconds histogram"));
}

#[tokio::test]
async fn a_draining_gateway_finishes_in_flight_requests_and_reports_not_ready() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        accord_tests::upstream::respond(200, "finished")
    })
    .await;
    let token_file = token_file();
    let gateway = TestGateway::start(&config(&token_file, slow.addr, "")).await;
    let url = gateway.url("/slow");
    let admin = gateway.admin_url("/readyz");
    assert_eq!(get(&admin).await.status, 200);
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let TestGateway { running, .. } = gateway;
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = get(&admin).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["draining"], true);
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "finished");
    shutdown.await.unwrap();
}

/// The admin token and `log.access_log` are read per request, so a reload applies them at once
/// and its report does not ask for a restart (it once listed both).
#[tokio::test]
async fn a_reload_reports_exactly_what_needs_a_restart() {
    let token_file = token_file();
    let app = Upstream::fixed("app", 200).await;
    let gateway = TestGateway::start(&config(&token_file, app.addr, "")).await;
    let new_token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(new_token.path(), "the-new-token\n").unwrap();
    let rewritten = config(&token_file, app.addr, "")
        .replace(
            &token_file.display().to_string(),
            &new_token.path().display().to_string(),
        )
        .replace("access_log: false", "access_log: true");
    gateway.rewrite_config(&rewritten);
    let reply = post_reload(&gateway, Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["report"]["restart_required"],
        serde_json::json!([]),
        "{}",
        reply.text()
    );
    assert_eq!(post_reload(&gateway, Some(TOKEN)).await.status, 401);
    assert_eq!(
        post_reload(&gateway, Some("the-new-token")).await.status,
        200
    );

    let moved = rewritten.replace(
        "admin:\n  address: 127.0.0.1:0",
        "admin:\n  address: 127.0.0.2:0",
    );
    gateway.rewrite_config(&moved);
    let reply = post_reload(&gateway, Some("the-new-token")).await;
    assert_eq!(
        reply.json()["report"]["restart_required"],
        serde_json::json!(["admin.address"])
    );
}
