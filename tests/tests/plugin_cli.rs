#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The plugin author's tools, `accord plugin check` and `accord plugin test`, on the reference
//! plugins and their case files (`wasm-plugins/plugins/<name>/cases.yaml`).

use accord::cli::plugin;
use accord_tests::plugins::{component, workspace};

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn check_lists_imports_and_exports_and_runs_configure() {
    let report = plugin::check(&component("budget-guard"), Some("{shed_above: {free: 3}}"))
        .await
        .unwrap();
    for line in [
        "accord:policy/sla@0.2.1",
        "accord:policy/request@0.2.1",
        "ok: a valid accord:policy@0.2.x lazy-request-policy plugin",
        "on-request",
        "configure: ok",
        "calls: on the request's stack",
        "canary on-request: ok",
    ] {
        assert!(report.contains(line), "{line} missing from:\n{report}");
    }
    // Exported with `export_request_plugin!`: no `on-response`.
    assert!(!report.contains("on-response"), "{report}");
    let judging = plugin::check(&component("contract-check"), None)
        .await
        .unwrap();
    assert!(
        judging.contains("ok: a valid accord:policy@0.2.x lazy-policy plugin")
            && judging.contains("  on-response"),
        "{judging}"
    );
    assert!(
        report.contains("(WASI: linked, nothing granted)"),
        "{report}"
    );

    let refused = plugin::check(&component("budget-guard"), Some("{window: 7m}"))
        .await
        .unwrap_err();
    assert!(refused.contains("window \"7m\" is not one of"), "{refused}");
    let sneaky = plugin::check(&component("unknown-import"), None)
        .await
        .unwrap_err();
    assert!(sneaky.contains("test:vault/secrets"), "{sneaky}");
    let not_wasm = plugin::check(&workspace().join("wit/policy.wit"), None)
        .await
        .unwrap_err();
    assert!(not_wasm.contains("not a loadable component"), "{not_wasm}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn every_reference_plugin_passes_its_cases() {
    for name in [
        "budget-guard",
        "tenant-quota",
        "contract-check",
        "latency-guard",
    ] {
        let cases = workspace().join("plugins").join(name).join("cases.yaml");
        let outcome = plugin::test(&component(name), &cases).await.unwrap();
        assert_eq!(outcome.failed, 0, "{name}:\n{}", outcome.report);
        assert!(
            outcome.report.contains(" passed, 0 failed"),
            "{}",
            outcome.report
        );
    }
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_wrong_expectation_fails_with_what_differed_and_a_bad_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "config: {shed_above: {free: 2}, min_requests: 1}\ncases:\n  - name: expects the wrong status\n    request: {headers: {x-tenant-tier: free}}\n    sla:\n      indicators: [{name: availability, target: 0.999, burn_rates: {5m: 9}}]\n      windows: [{window: 5m, bad: 5}]\n    expect: {decision: reject, status: 429}\n  - name: expects a reroute\n    expect: {decision: reroute, reroute: elsewhere}\n",
    )
    .unwrap();
    let outcome = plugin::test(&component("budget-guard"), &cases)
        .await
        .unwrap();
    assert_eq!(outcome.failed, 2, "{}", outcome.report);
    assert!(
        outcome
            .report
            .contains("FAIL  expects the wrong status (cases[0]): expected status 429, got 503"),
        "{}",
        outcome.report
    );
    assert!(
        outcome.report.contains("expected reroute, got allow"),
        "{}",
        outcome.report
    );

    std::fs::write(
        &cases,
        "cases:\n  - name: a typo\n    expect: {decision: allow}\n    respone: {status: 200}\n",
    )
    .unwrap();
    let error = plugin::test(&component("budget-guard"), &cases)
        .await
        .unwrap_err();
    assert!(error.contains("cases.yaml:4:"), "{error}");
    assert!(error.contains("respone"), "{error}");
}

/// Case files say what they mean: window names are checked, `expect` can be left out of a case
/// that checks the response, and results read in the file's own terms.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn case_files_check_windows_allow_response_only_cases_and_speak_the_users_terms() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    let contract = component("contract-check");
    let run = |text: &str| {
        std::fs::write(&cases, text).unwrap();
        plugin::test(&contract, &cases)
    };
    let error = run("cases:
  - name: a window the snapshot does not have
    sla:
      windows: [{window: 10m, good: 1}]
")
    .await
    .unwrap_err();
    assert!(
        error.contains("cases[0].sla.windows[0].window: \"10m\" is not a window the snapshot reports (it has 5m, 30m, 1h, 2h, 6h, 1d, 3d)"),
        "{error}"
    );
    let error = run("cases:
  - name: a burn rate over an unknown window
    sla:
      indicators: [{name: availability, target: 0.99, burn_rates: {10m: 2}}]
")
    .await
    .unwrap_err();
    assert!(
        error.contains("cases[0].sla.indicators[0].burn_rates: \"10m\""),
        "{error}"
    );
    let error = run("cases:
  - name: a verdict without a response
    expect_response: {verdict: bad}
")
    .await
    .unwrap_err();
    assert!(
        error.contains("cases[0].expect_response: set the case's response"),
        "{error}"
    );

    // Only the response is checked; the verdict is reported as the file writes it.
    let outcome = run("config: {response: {json: true}}
cases:
  - name: a broken body
    response: {status: 200, headers: {content-type: application/json}, body: \"{\\\"a\\\":\"}
    expect_response: {verdict: good}
")
    .await
    .unwrap();
    assert_eq!(outcome.failed, 1, "{}", outcome.report);
    assert!(
        outcome
            .report
            .contains("expected the response verdict good, got bad (invalid_json)"),
        "{}",
        outcome.report
    );
}

/// `accord check` loads each plugin and runs its `configure` with its configuration: a refusal
/// is an error at the plugin in the file, not a surprise at start or reload.
#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn accord_check_runs_each_plugins_configure() {
    let dir = tempfile::tempdir().unwrap();
    let write = |limit: &str| {
        let path = dir.path().join("accord.yaml");
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - address: 127.0.0.1:0\nplugins:\n  quota:\n    path: {}\n    config: {{default_limit: {limit}}}\nbackends:\n  app:\n    http:\n      addresses: [\"127.0.0.1:1\"]\nroutes:\n  - id: r\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n    plugins: [quota]\n",
                component("tenant-quota").display()
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(accord_tests::accord_binary())
            .args(["check", "-c"])
            .arg(path)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = check(&write("ten"), &[]);
    let errors = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{errors}");
    assert!(errors.contains("plugins.quota.config"), "{errors}");
    assert!(
        errors.contains("accord.yaml:5:5"),
        "located at the plugin: {errors}"
    );
    assert!(
        errors.contains("default_limit"),
        "the plugin's own words: {errors}"
    );
    assert!(check(&write("ten"), &["--skip-plugins"]).status.success());
    let ok = check(&write("10"), &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// The plugin example's configurations pass each plugin's `configure` (the plugins built).
#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn the_plugin_example_passes_accord_check() {
    let _built = component("tenant-quota");
    let example = workspace().join("../examples/plugins.yaml");
    let output = std::process::Command::new(accord_tests::accord_binary())
        .args(["check", "-c"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `clock.now-ms` reads the gateway's clock: in a case file, the case's `now_ms`.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn the_clock_interface_reads_the_scripted_time() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n  - name: scripted time\n    now_ms: 1767225600000\n    request: {headers: {x-misbehave: clock}}\n    expect: {decision: reject, reason_contains: \"now-ms 1767225600000\"}\n",
    )
    .unwrap();
    let outcome = plugin::test(&component("misbehave"), &cases).await.unwrap();
    assert_eq!(outcome.failed, 0, "{}", outcome.report);
}

#[tokio::test]
#[ignore = "builds the C plugin with clang and wasi-libc: run ./scripts/test.sh"]
async fn check_links_a_plugin_built_against_0_2_0_to_the_0_2_1_host() {
    let file = accord_tests::plugins::c_component_v0_2("budget-gate");
    let report = plugin::check(&file, None).await.unwrap();
    for line in [
        "accord:policy/sla@0.2.0",
        "ok: a valid accord:policy@0.2.x policy plugin",
        "canary on-request: ok",
    ] {
        assert!(report.contains(line), "{line} missing from:\n{report}");
    }
}
