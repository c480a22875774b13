#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Plugins in Python (componentize-py) and JavaScript (componentize-js), built from the WIT
//! alone by the test command: the same policy, `priority-shed`, passes the same cases through
//! `accord plugin test` in both languages, and sheds through a real gateway.

use accord_tests::plugins::{js_component, python_component, workspace};
use accord_tests::upstream::{Upstream, respond};
use accord_tests::{TestGateway, request, send};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

fn cases() -> std::path::PathBuf {
    workspace().join("python/priority-shed/cases.yaml")
}

#[tokio::test]
#[ignore = "builds the Python and JavaScript plugins with componentize-py and componentize-js: run ./scripts/test.sh"]
async fn the_python_and_javascript_builds_pass_the_same_cases() {
    for file in [
        python_component("priority-shed"),
        js_component("priority-shed"),
    ] {
        let outcome = accord::cli::plugin::test(&file, &cases()).await.unwrap();
        assert_eq!(outcome.failed, 0, "{}:\n{}", file.display(), outcome.report);
        assert!(outcome.report.contains("7 passed"), "{}", outcome.report);
        let checked = accord::cli::plugin::check(&file, None).await.unwrap();
        assert!(
            checked.contains("ok: a valid accord:policy@0.2.x policy plugin"),
            "{checked}"
        );
    }
    // A configuration the plugin refuses is refused with its own words, in both languages.
    for file in [
        python_component("priority-shed"),
        js_component("priority-shed"),
    ] {
        let refused = accord::cli::plugin::check(&file, Some("{\"long\": \"10m\"}"))
            .await
            .unwrap_err();
        assert!(refused.contains("long: '10m' is not a window"), "{refused}");
    }
}

#[tokio::test]
#[ignore = "builds the Python and JavaScript plugins with componentize-py and componentize-js: run ./scripts/test.sh"]
async fn python_and_javascript_plugins_shed_through_the_gateway() {
    let status = Arc::new(AtomicU16::new(200));
    let current = status.clone();
    let app = Upstream::start(move |seen| {
        let status = current.load(Ordering::SeqCst);
        let priority = seen
            .headers
            .get("x-accord-priority")
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
        async move { respond(status, &priority) }
    })
    .await;
    let plugin = |name: &str, file: std::path::PathBuf| {
        format!(
            "  {name}:\n    path: {}\n    limits: {{time: 100ms, memory: 64MiB}}\n    config: {{min_valid: 5, probe_every: 1000, long: 30m, short: 5m}}\n",
            file.display()
        )
    };
    let route = |id: &str, plugin: &str| {
        format!(
            "  - id: {id}\n    match: {{path: {{prefix: /{id}}}}}\n    backends: [{{backend: app}}]\n    retry: {{retries: 0}}\n    plugins: [{plugin}]\n    slo:\n      availability: 99.9%\n"
        )
    };
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nlog:\n  access_log: false\nplugins:\n{}{}backends:\n  app:\n    http:\n      addresses: [\"{}\"]\nroutes:\n{}{}",
        plugin("python", python_component("priority-shed")),
        plugin("javascript", js_component("priority-shed")),
        app.addr,
        route("py", "python"),
        route("js", "javascript"),
    );
    let gateway = TestGateway::start(&yaml).await;
    let ask = |path: &str, priority: &str| {
        let mut r = request("GET", &gateway.url(path), "");
        r.headers_mut()
            .insert("x-priority", http::HeaderValue::from_str(priority).unwrap());
        send(r)
    };

    for path in ["/py", "/js"] {
        let healthy = ask(path, "Batch").await;
        assert_eq!(healthy.status, 200);
        assert_eq!(
            healthy.body, "batch",
            "{path}: the backend learns the priority"
        );
    }
    // The backend fails: both routes burn far above 14.4x over 30m and 5m.
    status.store(500, Ordering::SeqCst);
    for path in ["/py", "/js"] {
        for _ in 0..10 {
            ask(path, "batch").await;
        }
    }
    gateway.running.gateway.sla().tick();
    for path in ["/py", "/js"] {
        let shed = ask(path, "batch").await;
        assert_eq!(shed.status, 503, "{path}");
        assert_eq!(shed.headers["retry-after"], "30");
        assert!(
            shed.json()["message"]
                .as_str()
                .unwrap()
                .contains("batch traffic is shed"),
            "{path}"
        );
        assert_eq!(
            ask(path, "critical").await.status,
            500,
            "{path}: critical traffic still reaches the (failing) backend"
        );
    }
}
