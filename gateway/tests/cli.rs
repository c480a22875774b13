#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `accord` command as a user runs it: `check` (golden error output), `schema`, the shipped
//! examples, and a served configuration that reloads on SIGHUP and drains on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ACCORD: &str = env!("CARGO_BIN_EXE_accord");

fn accord(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(ACCORD)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run accord")
}

/// Bad configurations and the exact errors `accord check` prints for them, kept in
/// `tests/config-errors/*.stderr`. `ACCORD_BLESS=1 cargo test` rewrites the expectations.
#[test]
fn check_prints_every_error_with_its_location_golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-errors");
    let bless = std::env::var("ACCORD_BLESS").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "golden cases are present");
    let mut mismatches = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let output = accord(&dir, &["check", "-c", name]);
        assert!(!output.status.success(), "{name}: check must fail");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let golden = case.with_extension("stderr");
        if bless {
            std::fs::write(&golden, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} is missing: run with ACCORD_BLESS=1", golden.display()));
        if expected != stderr {
            mismatches.push(format!(
                "--- {name}: expected\n{expected}\n--- got\n{stderr}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn check_can_report_errors_as_json() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-errors");
    let output = accord(
        &dir,
        &["check", "-c", "unknown_backend.yaml", "--format", "json"],
    );
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["path"], "routes[0].backends[0].backend");
    assert_eq!(report["errors"][0]["line"], 12);
    assert_eq!(report["errors"][0]["column"], 18);
}

#[test]
fn every_shipped_example_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(!examples.is_empty());
    for example in examples {
        // The secrets the examples reference by environment variable. The plugins are not
        // built in this crate's tests: their configurations are checked by accord-tests'
        // `the_plugin_example_passes_accord_check`, which builds them.
        let output = Command::new(ACCORD)
            .args(["check", "--skip-plugins", "-c"])
            .arg(&example)
            .current_dir(&root)
            .env("ACCORD_AZURE_SECRET", "example-secret")
            .env("ORDERS_FUNCTION_KEY", "example-key")
            .env("ACCORD_ADMIN_TOKEN", "example-token")
            .env("ACCORD_WEBHOOK_SECRET", "example-secret")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            example.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn schema_describes_the_configuration() {
    let output = accord(Path::new("."), &["schema"]);
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["title"], "RawConfig");
    assert!(schema["properties"]["listeners"].is_object());
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("listeners"))
    );
    let text = output.stdout.len();
    assert!(text > 5_000, "every field is described");
}

#[test]
fn the_readme_lists_every_error_code() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        readme.contains(&accord::proxy::errors::markdown_table()),
        "README's error table is out of date: paste `accord errors`"
    );
}

/// A served configuration: SIGHUP applies an edited file, SIGTERM lets an in-flight request
/// finish before the process exits.
#[tokio::test]
async fn run_reloads_on_sighup_and_drains_on_sigterm() {
    reloads_on_sighup_and_drains_on_sigterm(&[]).await;
}

/// The same on one thread, which runs tokio's single-threaded scheduler: the signals, the
/// reload's work and the drain share the thread that serves.
#[tokio::test]
async fn run_on_one_thread_reloads_on_sighup_and_drains_on_sigterm() {
    reloads_on_sighup_and_drains_on_sigterm(&["--threads", "1"]).await;
}

async fn reloads_on_sighup_and_drains_on_sigterm(run_args: &[&str]) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = upstream.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        if request.uri().path().ends_with("/slow") {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(
                                request.uri().path().to_owned(),
                            )),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let port = free_port();
    let admin = free_port();
    let dir = tempfile_dir();
    let config_path = dir.path().join("accord.yaml");
    let config = |prefix: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlimits:\n  shutdown_grace: 10s\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream_addr}\"]\nroutes:\n  - id: app\n    match: {{path: {{prefix: {prefix}}}}}\n    backends: [{{backend: app}}]\n"
        )
    };
    std::fs::write(&config_path, config("/v1")).unwrap();
    let mut child = tokio::process::Command::new(ACCORD)
        .args(["run", "-c"])
        .arg(&config_path)
        .args(run_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_listening(port).await;
    assert_eq!(status(&format!("{base}/v1/a")).await, 200);
    assert_eq!(status(&format!("{base}/v2/a")).await, 404);

    std::fs::write(&config_path, config("/v2")).unwrap();
    signal(child.id().unwrap(), "-HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        if status(&format!("{base}/v2/a")).await == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP applied the edited configuration");

    let slow =
        tokio::spawn(async move { status(&format!("http://127.0.0.1:{port}/v2/slow")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(child.id().unwrap(), "-TERM");
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the in-flight request finished during the drain"
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert!(exit.success());
}

/// An HTTP/1.1 upstream answering every request with `body`.
async fn fixed_upstream(body: &'static [u8]) -> std::net::SocketAddr {
    scripted_upstream(move |_, _| (200, String::from_utf8_lossy(body).into_owned())).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory, removed when the test ends.
fn tempfile_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("accord-cli-")
        .tempdir()
        .unwrap()
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_until_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("accord did not start listening on {port}");
}

async fn status(url: &str) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    match client.get(url.parse().unwrap()).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// With `log.format: json`, each request writes one access-log line with its route, backend,
/// status, latency, bytes, request id and retries.
#[tokio::test]
async fn run_writes_one_json_access_log_line_per_request() {
    let upstream_addr = fixed_upstream(b"twelve bytes").await;
    let (child, port, _admin, _dir) =
        start_logging(|port, admin| format!("listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  format: json\n  level: info\n  access_log: true\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream_addr}\"]\nroutes:\n  - id: logged\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let request = http::Request::get(format!("http://127.0.0.1:{port}/some/path"))
        .header("x-request-id", "log-me-123")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    let stderr = stop_and_read_log(child).await;
    let lines = access_lines(&stderr);
    assert_eq!(lines.len(), 1, "one access-log line:\n{stderr}");
    let line = &lines[0];
    assert_eq!(line["request_id"], "log-me-123");
    assert_eq!(line["route"], "logged");
    assert_eq!(line["backend"], "app");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/some/path");
    assert_eq!(line["class"], "good");
    assert_eq!(line["bytes_out"], 12);
    assert_eq!(line["retries"], 0);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
}

/// SLA history survives a graceful restart exactly, and a `kill -9` up to the flush interval.
#[tokio::test]
async fn sla_history_survives_a_restart_and_a_kill_9() {
    let upstream_addr = fixed_upstream(b"ok").await;
    let port = free_port();
    let admin = free_port();
    let dir = tempfile_dir();
    let config_path = dir.path().join("accord.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  access_log: false\nsla_history:\n  path: history/sla.db\n  flush_interval: 1s\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream_addr}\"]\nroutes:\n  - id: kept\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    slo:\n      availability: 99.9%\n"
        ),
    )
    .unwrap();
    let start = || {
        tokio::process::Command::new(ACCORD)
            .args(["run", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let total = || async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let response = client
            .get(
                format!("http://127.0.0.1:{admin}/sla/routes/kept")
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let day = report["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["window"] == "1d")
            .unwrap()
            .clone();
        day["requests"]["total"].as_f64().unwrap()
    };

    // First life: 30 requests, then a graceful stop (final flush).
    let child = start();
    wait_until_listening(port).await;
    for _ in 0..30 {
        assert_eq!(status(&format!("http://127.0.0.1:{port}/x")).await, 200);
    }
    signal(child.id().unwrap(), "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .unwrap();
    assert!(
        dir.path().join("history/sla.db").exists(),
        "the store sits next to the configuration"
    );

    // Second life: the 30 are there; 20 more, then kill -9 after a flush interval.
    let mut child = start();
    wait_until_listening(port).await;
    assert_eq!(total().await, 30.0, "a graceful restart keeps everything");
    for _ in 0..20 {
        assert_eq!(status(&format!("http://127.0.0.1:{port}/x")).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().await.unwrap();

    // Third life: everything recorded before the last flush survived the kill.
    let _child = start();
    wait_until_listening(port).await;
    assert_eq!(
        total().await,
        50.0,
        "kill -9 loses at most the flush interval"
    );
}

/// `accord report` reads a running gateway's SLA report; `accord slo export` writes OpenSLO.
#[tokio::test]
async fn report_and_slo_export_work_against_a_real_gateway() {
    let upstream_addr = fixed_upstream(b"ok").await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile_dir();
    let config_path = dir.path().join("accord.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream_addr}\"]\nroutes:\n  - id: checkout\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    slo:\n      availability: 99.9%\n      latency: {{threshold: 300ms, target: 99%}}\n"
        ),
    )
    .unwrap();
    let _gateway = tokio::process::Command::new(ACCORD)
        .args(["run", "-c"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_listening(port).await;
    for _ in 0..12 {
        assert_eq!(status(&format!("http://127.0.0.1:{port}/buy")).await, 200);
    }
    let config_arg = config_path.to_str().unwrap();
    let output = accord(
        dir.path(),
        &[
            "report", "-c", config_arg, "--format", "csv", "--window", "5m",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("route,status,sli,objective"));
    assert!(
        rows[1].starts_with("checkout,ok,availability,99.9% / 30d,5m,100%,100%"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].starts_with("checkout,ok,latency,99% < 300ms / 30d,5m,100%"),
        "{}",
        rows[2]
    );
    assert!(
        rows[1].contains(",12,0,0,0,"),
        "12 good requests: {}",
        rows[1]
    );

    let table = accord(dir.path(), &["report", "-c", config_arg]);
    assert!(
        String::from_utf8(table.stdout)
            .unwrap()
            .starts_with("ROUTE")
    );
    let missing = accord(dir.path(), &["report", "--admin", "127.0.0.1:1"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot reach the admin API at 127.0.0.1:1")
    );

    let export = accord(dir.path(), &["slo", "export", "-c", config_arg]);
    assert!(export.status.success());
    let text = String::from_utf8(export.stdout).unwrap();
    assert_eq!(text.matches("apiVersion: openslo/v1").count(), 2);
    assert!(text.contains("name: checkout-availability"));
}

/// `accord demo` (the README's first command) serves its routes — on-prem, and Lambda through
/// the real adapter on the demo's simulated Invoke endpoint — reports SLAs, and stops cleanly
/// after `--duration`.
#[tokio::test]
async fn the_demo_serves_its_routes_and_reports_slas() {
    let port = free_port();
    let admin = free_port();
    let child = tokio::process::Command::new(ACCORD)
        .args(["demo", "--duration", "12s", "--rps", "20", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_listening(port).await;
    assert_eq!(
        status(&format!("http://127.0.0.1:{port}/orders/42")).await,
        200
    );
    assert_eq!(
        status(&format!("http://127.0.0.1:{port}/quotes/ACME")).await,
        200,
        "the Lambda route answers (from the function, or its fallback)"
    );
    assert_eq!(
        status(&format!("http://127.0.0.1:{port}/catalog/items/1")).await,
        200
    );
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the demo stops after --duration")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Accord demo is running",
        "SLA orders",
        "SLA quotes",
        "quotes-fn",
        "lambda",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

/// A loopback HTTP/1.1 server answering each request with `answer(headers, path)`.
async fn scripted_upstream(
    answer: impl Fn(&http::HeaderMap, &str) -> (u16, String) + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let path = request
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        let (status, body) = answer(request.headers(), &path);
                        async move {
                            let mut response = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn body_of(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Starts `accord run` on `yaml` with extra environment variables; returns the child and the
/// traffic port.
async fn run_with_env(
    yaml: impl Fn(u16, u16) -> String,
    env: &[(&str, String)],
) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let port = free_port();
    let admin = free_port();
    let dir = tempfile_dir();
    let config_path = dir.path().join("accord.yaml");
    std::fs::write(&config_path, yaml(port, admin)).unwrap();
    let mut command = tokio::process::Command::new(ACCORD);
    command
        .args(["run", "-c"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    wait_until_listening(port).await;
    (child, port, dir)
}

/// A Lambda backend with no credentials configured uses AWS's default chain: here its first
/// link, the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
#[tokio::test]
async fn a_lambda_backend_signs_with_the_default_chain_from_the_environment() {
    let lambda = scripted_upstream(|headers, _| {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // SigV4: Credential=<key id>/<date>/<region>/lambda/aws4_request
        if authorization.contains("Credential=AKIDFROMENVIRONMENT/")
            && authorization.contains("/eu-north-1/lambda/aws4_request")
        {
            (
                200,
                r#"{"statusCode":200,"body":"signed by the environment's key"}"#.into(),
            )
        } else {
            (
                403,
                format!(r#"{{"message":"unexpected signature: {authorization}"}}"#),
            )
        }
    })
    .await;
    let (_child, port, _dir) = run_with_env(
        |port, admin| format!("listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  access_log: false\nsla_history:\n  enabled: false\nbackends:\n  fn:\n    lambda:\n      function: orders\n      endpoint: http://{lambda}\nroutes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: fn}}]\n"),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT".into()),
            ("AWS_SECRET_ACCESS_KEY", "secret-from-environment".into()),
            ("AWS_REGION", "eu-north-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ],
    )
    .await;
    let (status, body) = body_of(&format!("http://127.0.0.1:{port}/orders")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "signed by the environment's key")
    );
}

/// An Azure backend with a system-assigned managed identity gets its token from the platform's
/// identity endpoint (App Service's `IDENTITY_ENDPOINT` / `IDENTITY_HEADER`), and sends it.
#[tokio::test]
async fn an_azure_backend_uses_the_managed_identity_endpoint_of_its_platform() {
    let identity = scripted_upstream(|headers, path| {
        let header_ok = headers.get("x-identity-header").is_some_and(|v| v == "platform-secret");
        if header_ok && path.contains("resource=api%3A%2F%2Forders") {
            let expires = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            (200, format!(r#"{{"access_token":"token-from-managed-identity","expires_on":"{expires}","resource":"api://orders","token_type":"Bearer"}}"#))
        } else {
            (400, format!(r#"{{"error":"unexpected request {path}"}}"#))
        }
    })
    .await;
    let function = scripted_upstream(|headers, path| {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if bearer == "Bearer token-from-managed-identity" && path == "/api/orders" {
            (200, "served with the managed identity's token".into())
        } else {
            (401, String::new())
        }
    })
    .await;
    let (_child, port, _dir) = run_with_env(
        |port, admin| format!("listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  access_log: false\nsla_history:\n  enabled: false\nazure_credentials:\n  platform:\n    managed_identity: {{}}\nbackends:\n  fn:\n    azure_function:\n      url: http://{function}/api/orders\n      entra: {{credential: platform, scope: \"api://orders/.default\"}}\nroutes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: fn}}]\n"),
        &[
            ("IDENTITY_ENDPOINT", format!("http://{identity}/msi/token")),
            ("IDENTITY_HEADER", "platform-secret".into()),
        ],
    )
    .await;
    let (status, body) = body_of(&format!("http://127.0.0.1:{port}/orders")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "served with the managed identity's token")
    );
}

/// An HTTP/1.1 and HTTP/2 (h2c) upstream answering every request with 200 after `delay`.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |_: http::Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"late")),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One request from a client of its own that gives up after `patience` (as `curl -m`): its
/// connection (HTTP/1.1) or stream (HTTP/2, `RST_STREAM`) is dropped. The status, if answered.
async fn impatient_get(url: String, http2: bool, patience: Duration) -> Option<u16> {
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.http2_only(http2);
    let client = builder.build_http::<http_body_util::Empty<bytes::Bytes>>();
    let answered = tokio::time::timeout(patience, client.get(url.parse().unwrap())).await;
    answered
        .ok()
        .and_then(Result::ok)
        .map(|r| r.status().as_u16())
}

/// Issue 9's reproduction: a backend that answers after 3 s, 20 HTTP/1.1 and 10 HTTP/2 clients
/// that give up after 0.5 s, then one patient request. Every request is metered exactly once:
/// the gauges come back to 0, the route counts 31 requests (30 cancelled) in its counters and
/// its SLA window, 30 access-log lines say 499, and the latency SLI burns.
#[tokio::test]
async fn requests_the_client_abandons_are_metered_and_release_every_gauge() {
    let upstream = slow_upstream(Duration::from_secs(3)).await;
    let (child, port, admin, _dir) =
        start_logging(|port, admin| format!("listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  format: json\n  level: info\n  access_log: true\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream}\"]\nroutes:\n  - id: slow\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    slo:\n      availability: 99.9%\n      latency: {{threshold: 300ms, target: 99%}}\n")).await;
    let url = format!("http://127.0.0.1:{port}/orders");
    let impatient: Vec<_> = (0..30)
        .map(|i| {
            tokio::spawn(impatient_get(
                url.clone(),
                i >= 20,
                Duration::from_millis(500),
            ))
        })
        .collect();
    for client in impatient {
        assert_eq!(client.await.unwrap(), None, "the impatient client gave up");
    }
    let patient = impatient_get(url.clone(), false, Duration::from_secs(10)).await;
    assert_eq!(patient, Some(200));
    // The upstream answers the abandoned tries only if the gateway kept them: give the last
    // records a moment to be written, then read what the gateway says.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let metrics = body_of(&format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1;
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert_eq!(series("accord_requests_active{route=\"slow\"}"), 0.0);
    assert_eq!(
        series("accord_requests_total{route=\"slow\",class=\"cancelled\"}"),
        30.0
    );
    assert_eq!(
        series("accord_requests_total{route=\"slow\",class=\"good\"}"),
        1.0
    );
    assert_eq!(
        series("accord_upstream_requests_active{backend=\"app\",provider=\"http\"}"),
        0.0
    );
    assert_eq!(
        series("accord_upstream_tries_cancelled_total{backend=\"app\",provider=\"http\"}"),
        30.0
    );
    assert_eq!(
        series("accord_upstream_tries_total{backend=\"app\",provider=\"http\"}"),
        31.0
    );

    let report: serde_json::Value = serde_json::from_str(
        &body_of(&format!("http://127.0.0.1:{admin}/sla/routes/slow"))
            .await
            .1,
    )
    .unwrap();
    let five = &report["windows"][0];
    assert_eq!(five["window"], "5m");
    assert_eq!(five["requests"]["total"], 31.0, "{report}");
    assert_eq!(five["requests"]["cancelled"], 30.0);
    let latency = report["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["indicator"] == "latency")
        .expect("latency SLI");
    let burn = latency["burn_rates"][0]["value"].as_f64().unwrap();
    assert!(
        (burn - 100.0).abs() < 1e-6,
        "31 of 31 too slow against 99%: burn 100, got {burn}"
    );
    let availability = report["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["indicator"] == "availability")
        .expect("availability SLI");
    assert_eq!(
        availability["burn_rates"][0]["value"], 0.0,
        "cancelled requests are excluded from availability by default"
    );
    let backend = &report["backends"][0]["window"]["requests"];
    assert_eq!(backend["cancelled"], 30.0, "{report}");

    let stderr = stop_and_read_log(child).await;
    let lines = access_lines(&stderr);
    assert_eq!(
        lines.len(),
        31,
        "one access-log line per request:\n{stderr}"
    );
    let abandoned: Vec<&serde_json::Value> = lines.iter().filter(|l| l["status"] == 499).collect();
    assert_eq!(abandoned.len(), 30);
    for line in abandoned {
        assert_eq!(line["class"], "cancelled");
        assert_eq!(
            line["backend"], "app",
            "the backend whose try was in flight"
        );
        let waited = line["duration_ms"].as_f64().unwrap();
        assert!(
            (400.0..3000.0).contains(&waited),
            "logged with the time until the client left: {waited} ms"
        );
    }
}

/// Text logs written to a pipe (or a file) carry no ANSI colour codes: colour is for terminals.
#[tokio::test]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let upstream_addr = fixed_upstream(b"plain").await;
    let (child, port, _admin, _dir) =
        start_logging(|port, admin| format!("listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  format: text\n  access_log: true\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream_addr}\"]\nroutes:\n  - id: plain\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n")).await;
    assert_eq!(status(&format!("http://127.0.0.1:{port}/x")).await, 200);
    let stderr = stop_and_read_log(child).await;
    assert!(stderr.contains("accord::access"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes:\n{stderr:?}");
}

/// Starts `accord run` on `yaml(port, admin)` (written to a scratch directory) with its log on a
/// pipe, and waits until it listens: the child, its traffic and admin ports, the directory.
async fn start_logging(
    yaml: impl Fn(u16, u16) -> String,
) -> (tokio::process::Child, u16, u16, tempfile::TempDir) {
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile_dir();
    let config_path = dir.path().join("accord.yaml");
    std::fs::write(&config_path, yaml(port, admin)).unwrap();
    let child = spawn_logging(&config_path);
    wait_until_listening(port).await;
    (child, port, admin, dir)
}

/// Starts `accord run -c config` with its log on a pipe.
fn spawn_logging(config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(ACCORD)
        .args(["run", "-c"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Drains the gateway with SIGTERM and returns everything it logged.
async fn stop_and_read_log(child: tokio::process::Child) -> String {
    signal(child.id().unwrap(), "-TERM");
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(output.stderr).unwrap()
}

/// The JSON access-log lines of a log.
fn access_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "accord::access")
        .collect()
}

/// `accord run --watch` reloads when its configuration changes: through a Kubernetes
/// ConfigMap's symlink swap (`accord.yaml -> ..data/accord.yaml`, `..data` re-pointed by an
/// atomic rename, as the kubelet does) and through an in-place edit.
#[tokio::test]
async fn run_watch_reloads_on_a_configmap_swap_and_an_edit() {
    let first = fixed_upstream(b"first").await;
    let second = fixed_upstream(b"second").await;
    let port = free_port();
    let admin = free_port();
    let yaml = |upstream: std::net::SocketAddr| {
        format!(
            "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlog:\n  access_log: false\nbackends:\n  app:\n    http:\n      addresses: [\"{upstream}\"]\nroutes:\n  - id: watched\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n"
        )
    };
    let dir = tempfile_dir();
    let version = |name: &str, upstream| {
        let version = dir.path().join(name);
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("accord.yaml"), yaml(upstream)).unwrap();
    };
    version("..2026_11_30_a", first);
    std::os::unix::fs::symlink("..2026_11_30_a", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/accord.yaml", dir.path().join("accord.yaml")).unwrap();
    let child = tokio::process::Command::new(ACCORD)
        .args(["run", "--watch", "-c"])
        .arg(dir.path().join("accord.yaml"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_listening(port).await;
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(body_of(&url).await.1, "first");

    let serves = |expected: &'static str| {
        let url = url.clone();
        async move {
            for _ in 0..100 {
                if body_of(&url).await.1 == expected {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    // The ConfigMap update: a new version directory, `..data` swapped to it atomically.
    version("..2026_11_30_b", second);
    std::os::unix::fs::symlink("..2026_11_30_b", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    assert!(serves("second").await, "reloaded after the symlink swap");

    // An edit in place.
    std::fs::write(dir.path().join("..2026_11_30_b/accord.yaml"), yaml(first)).unwrap();
    assert!(serves("first").await, "reloaded after the edit");
    signal(child.id().unwrap(), "-TERM");
}

/// The Kubernetes example: its manifests pass the Kubernetes 1.37 schemas (PyPI's
/// `kubernetes-validate`, offline; `./scripts/test.sh` installs it) and the configuration in its
/// ConfigMap passes `accord check`.
#[test]
#[ignore = "needs kubernetes-validate: run ./scripts/test.sh"]
fn the_kubernetes_example_is_valid() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/accord.yaml");
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.37"])
        .arg(&manifest)
        .output()
        .expect("kubernetes-validate runs (./scripts/test.sh installs it from PyPI)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The ConfigMap's `accord.yaml: |` block, unindented.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "accord.yaml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    assert!(block.len() > 10, "the ConfigMap holds a configuration");
    let dir = tempfile_dir();
    let config = dir.path().join("accord.yaml");
    std::fs::write(&config, block.join("\n")).unwrap();
    let check = Command::new(ACCORD)
        .args(["check", "-c"])
        .arg(&config)
        .env("ACCORD_ADMIN_TOKEN", "from-the-secret")
        .env("ACCORD_REDIS_PASSWORD", "from-the-secret-too")
        .env("HOSTNAME", "accord-7d9f8-x2x4q")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
