//! `accord plugin check` and `accord plugin test`: a plugin author's tools, without a gateway.
//!
//! * `check` loads a component the way the gateway does (compile, link against the
//!   `accord:policy` world and WASI with nothing granted, instantiate, `configure`, a canary
//!   `on-request`) and lists what it imports and exports.
//! * `test` runs scripted cases through it: each case gives a request, the SLA state the plugin
//!   sees (a route snapshot and backend standings, written by hand) and optionally a response,
//!   and says what the plugin must decide. Cases run in order on one plugin, so state the plugin
//!   keeps (its rates, its memory) carries from one case to the next, as in a gateway.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use accord_policies::plugin::{
    BackendStats, CallContext, CallStack, Decision, HeaderEdit, Indicator, Isolation, OnError,
    Plugin, PluginEngine, PluginSpec, RequestFacts, ResponseHead, RouteSnapshot, ScriptedSla,
    SlaState, Verdict, WindowStats,
};
use serde::Deserialize;

use crate::config::types::{ByteSize, ConfigDuration};

/// Engine size for the tools: one plugin, a few instances.
const INSTANCES: u32 = 8;
const MEMORY: usize = 256 << 20;

/// Limits a plugin runs under in the tools (the gateway's defaults unless a case file says).
#[derive(Debug, Clone, Copy)]
pub struct ToolLimits {
    /// Per call.
    pub time: Duration,
    /// Per instance.
    pub memory: usize,
}

impl Default for ToolLimits {
    fn default() -> Self {
        Self {
            time: Duration::from_millis(10),
            memory: 16 << 20,
        }
    }
}

fn spec(file: &Path, config: String, limits: ToolLimits) -> PluginSpec {
    PluginSpec {
        name: file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_owned(),
        config,
        time_limit: limits.time,
        memory_limit: limits.memory,
        on_error: OnError::Reject,
        isolation: Isolation::Pooled,
        response_body: usize::MAX,
        request_body: usize::MAX,
    }
}

/// Loads every plugin of a valid configuration and runs its `configure` with its settings, as
/// the gateway would at start (what `accord check` does unless told to skip plugins). Returns
/// the plugins that refused, by id, with why; plugin paths are relative to `base_dir`.
pub async fn configure_all(
    config: &crate::config::Config,
    base_dir: &Path,
) -> Vec<(std::sync::Arc<str>, String)> {
    let mut refused = Vec::new();
    if config.plugins.is_empty() {
        return refused;
    }
    let engine = match PluginEngine::new(INSTANCES, MEMORY) {
        Ok(engine) => Arc::new(engine),
        Err(e) => {
            let message = e.to_string();
            return config
                .plugins
                .iter()
                .map(|(id, _)| (id.clone(), message.clone()))
                .collect();
        }
    };
    for (id, plugin) in &config.plugins {
        let path = base_dir.join(&plugin.path);
        let loaded = async {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let (component, _) = engine
                .compile(&bytes, &plugin.spec.name)
                .map_err(|e| e.to_string())?;
            engine
                .prepare(component, plugin.spec.clone())
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(message) = loaded.await {
            refused.push((id.clone(), message));
        }
    }
    refused
}

/// `accord plugin check`: the report, or why the plugin cannot be used. Loads a component,
/// lists its imports and exports, configures it and makes one call.
pub async fn check(file: &Path, config: Option<&str>) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let config = match config {
        Some(text) => config_json(text)?,
        None => String::new(),
    };
    let engine = Arc::new(PluginEngine::new(INSTANCES, MEMORY).map_err(|e| e.to_string())?);
    let spec = spec(file, config, ToolLimits::default());
    let (component, _) = engine
        .compile(&bytes, &spec.name)
        .map_err(|e| e.to_string())?;
    let (imports, exports) = engine.describe(&component);
    let mut out = String::new();
    let _ = writeln!(out, "{} ({} bytes)", file.display(), bytes.len());
    let _ = writeln!(out, "imports:");
    for import in &imports {
        let note = if import.starts_with("wasi:") {
            "  (WASI: linked, nothing granted)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {import}{note}");
    }
    let _ = writeln!(out, "exports:");
    for export in &exports {
        let _ = writeln!(out, "  {export}");
    }
    let plugin = engine
        .prepare(component, spec)
        .await
        .map_err(|e| format!("{out}{e}"))?;
    let _ = writeln!(out, "configure: ok");
    match plugin.calls() {
        CallStack::Caller => {
            let _ = writeln!(
                out,
                "calls: on the request's stack (nothing it imports waits: the cheapest)"
            );
        }
        CallStack::Fiber { because } => {
            let _ = writeln!(
                out,
                "calls: each on a fiber, because of {because} (its functions can wait); a plugin that imports no timer, file or socket is called on the request's stack, which costs less"
            );
        }
    }
    plugin.canary().await.map_err(|e| format!("{out}{e}"))?;
    let _ = writeln!(out, "canary on-request: ok");
    let times = time_calls(&plugin, 200).await;
    let _ = writeln!(
        out,
        "on-request (default request, no SLA state, {} calls): p50 {} µs, p99 {} µs",
        times.len(),
        percentile_micros(&times, 0.5),
        percentile_micros(&times, 0.99)
    );
    let _ = writeln!(out, "ok: a valid {} plugin", plugin.version().name());
    Ok(out)
}

/// Times `n` `on-request` calls with a default request (as the canary makes), for the cost
/// shown to the author.
async fn time_calls(
    plugin: &accord_policies::plugin::Plugin,
    n: usize,
) -> Vec<std::time::Duration> {
    let facts = RequestFacts {
        route: Arc::from("(check)"),
        request_id: http::HeaderValue::from_static("check"),
        client_ip: http::HeaderValue::from_static("127.0.0.1"),
        ..RequestFacts::default()
    };
    let (request, ()) = http::Request::get("/")
        .body(())
        .unwrap_or_default()
        .into_parts();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = tokio::time::Instant::now();
        let call = Box::new(CallContext {
            facts: facts.clone(),
            request: Some(request.clone()),
            ..CallContext::default()
        });
        let _ = plugin.on_request(call).await;
        times.push(started.elapsed());
    }
    times
}

/// The `q` percentile of `times`, in whole microseconds (nearest rank).
fn percentile_micros(times: &[std::time::Duration], q: f64) -> String {
    if times.is_empty() {
        return "-".to_owned();
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    format!("{:.1}", sorted[rank - 1].as_secs_f64() * 1e6)
}

/// A plugin configuration given on the command line: JSON, or YAML (turned into JSON).
fn config_json(text: &str) -> Result<String, String> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        return Ok(value.to_string());
    }
    serde_saphyr::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .map_err(|e| format!("--config is neither JSON nor YAML: {e}"))
}

// === test cases ===

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// The plugin's configuration.
    #[serde(default)]
    config: Option<serde_json::Value>,
    /// Limits, as in the gateway's configuration.
    #[serde(default)]
    limits: Option<CaseLimits>,
    /// The route the cases run on.
    #[serde(default)]
    route: CaseRoute,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLimits {
    #[serde(default)]
    time: Option<ConfigDuration>,
    #[serde(default)]
    memory: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaseRoute {
    id: String,
    backends: Vec<String>,
}

impl Default for CaseRoute {
    fn default() -> Self {
        Self {
            id: "route".into(),
            backends: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: CaseRequest,
    /// The route snapshot `sla.route` returns; absent: the route has no objective.
    #[serde(default)]
    sla: Option<CaseSla>,
    /// What `sla.backends` returns.
    #[serde(default)]
    backends: Vec<CaseBackend>,
    /// What `clock.now-ms` returns (ms since the epoch); default: the machine's time.
    #[serde(default)]
    now_ms: Option<i64>,
    /// What `on-request` must decide; absent: any decision (a case that only checks the
    /// response verdict).
    #[serde(default)]
    expect: Option<ExpectDecision>,
    /// A response: `on-response` runs on it when the request was allowed or rerouted.
    #[serde(default)]
    response: Option<CaseResponse>,
    #[serde(default)]
    expect_response: Option<ExpectVerdict>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaseRequest {
    method: String,
    path: String,
    query: Option<String>,
    headers: BTreeMap<String, String>,
    /// What `request.body` returns.
    body: Option<String>,
    request_id: String,
    client_ip: String,
}

impl Default for CaseRequest {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: BTreeMap::new(),
            body: None,
            request_id: "case".into(),
            client_ip: "127.0.0.1".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSla {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    paging: bool,
    #[serde(default)]
    budget_exhausted: bool,
    #[serde(default)]
    indicators: Vec<CaseIndicator>,
    #[serde(default)]
    windows: Vec<CaseWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIndicator {
    name: String,
    target: f64,
    #[serde(default)]
    attainment: Option<f64>,
    #[serde(default)]
    budget_remaining: Option<f64>,
    #[serde(default)]
    burn_rates: BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseWindow {
    window: String,
    #[serde(default)]
    total: Option<f64>,
    #[serde(default)]
    valid: Option<f64>,
    #[serde(default)]
    good: f64,
    #[serde(default)]
    bad: f64,
    #[serde(default)]
    throttled: f64,
    #[serde(default)]
    rejected: f64,
    #[serde(default)]
    client_error: f64,
    #[serde(default)]
    p50_ms: Option<f64>,
    #[serde(default)]
    p99_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseBackend {
    backend: String,
    #[serde(default)]
    breaching: bool,
    #[serde(default)]
    burn_rate: f64,
    #[serde(default)]
    requests: f64,
    #[serde(default)]
    error_ratio: f64,
    #[serde(default)]
    p99_ms: Option<f64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum DecisionKind {
    Allow,
    Reject,
    Reroute,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDecision {
    decision: DecisionKind,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    retry_after: Option<u32>,
    #[serde(default)]
    reroute: Option<String>,
    #[serde(default)]
    reason_contains: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Headers of the request the backend would get, after the plugin's changes (`null`:
    /// absent).
    #[serde(default)]
    backend_headers: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseResponse {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    latency_ms: Option<f64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum VerdictKind {
    Keep,
    Good,
    Bad,
}

impl VerdictKind {
    /// As a case file writes it.
    fn name(self) -> &'static str {
        match self {
            VerdictKind::Keep => "keep",
            VerdictKind::Good => "good",
            VerdictKind::Bad => "bad",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectVerdict {
    #[serde(default = "keep")]
    verdict: VerdictKind,
    #[serde(default)]
    reason: Option<String>,
    /// Headers of the response the client would get, after the plugin's changes (`null`:
    /// absent).
    #[serde(default)]
    client_headers: BTreeMap<String, Option<String>>,
}

fn keep() -> VerdictKind {
    VerdictKind::Keep
}

/// What `accord plugin test` found.
#[derive(Debug)]
pub struct TestOutcome {
    /// One line per case, then the summary.
    pub report: String,
    /// Cases that did not go as expected.
    pub failed: usize,
}

/// `accord plugin test`: runs every case; an error is a file or plugin that cannot be used.
pub async fn test(file: &Path, cases_path: &Path) -> Result<TestOutcome, String> {
    let text = std::fs::read_to_string(cases_path)
        .map_err(|e| format!("cannot read {}: {e}", cases_path.display()))?;
    let cases: CasesFile = serde_saphyr::from_str(&text).map_err(|error| {
        let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
        let path = crate::config::error::yaml_path_at(&text, line);
        let message = crate::config::bare_message(&error.without_snippet().to_string());
        format!(
            "{}:{line}:{column}: {}{message}",
            cases_path.display(),
            if path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            }
        )
    })?;
    check_cases(&cases).map_err(|e| format!("{}: {e}", cases_path.display()))?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut limits = ToolLimits::default();
    if let Some(l) = &cases.limits {
        if let Some(time) = &l.time {
            limits.time = time.0;
        }
        if let Some(memory) = &l.memory {
            limits.memory = usize::try_from(memory.0).unwrap_or(usize::MAX);
        }
    }
    let config = cases
        .config
        .as_ref()
        .map_or_else(String::new, serde_json::Value::to_string);
    let engine = Arc::new(PluginEngine::new(INSTANCES, MEMORY).map_err(|e| e.to_string())?);
    let spec = spec(file, config, limits);
    let (component, _) = engine
        .compile(&bytes, &spec.name)
        .map_err(|e| e.to_string())?;
    let plugin = engine
        .prepare(component, spec)
        .await
        .map_err(|e| e.to_string())?;

    let mut report = String::new();
    let mut failed = 0;
    for (i, case) in cases.cases.iter().enumerate() {
        let problems = run_case(&plugin, &cases.route, case).await;
        if problems.is_empty() {
            let _ = writeln!(report, "ok    {}", case.name);
        } else {
            failed += 1;
            let _ = writeln!(
                report,
                "FAIL  {} (cases[{i}]): {}",
                case.name,
                problems.join("; ")
            );
        }
    }
    let _ = writeln!(
        report,
        "{} passed, {failed} failed",
        cases.cases.len() - failed
    );
    let stats = plugin.stats();
    for (hook, times) in [
        ("on-request", &stats.on_request_time),
        ("on-response", &stats.on_response_time),
    ] {
        if times.count() > 0 {
            let bound = |q| {
                times
                    .quantile_bound(q)
                    .map_or("> 100000".to_owned(), |s: f64| format!("<= {:.1}", s * 1e6))
            };
            let _ = writeln!(
                report,
                "{hook}: {} calls, mean {:.1} µs, p50 {} µs, p99 {} µs",
                times.count(),
                times.sum_seconds() * 1e6 / times.count() as f64,
                bound(0.5),
                bound(0.99)
            );
        }
    }
    Ok(TestOutcome { report, failed })
}

/// Runs one case; returns what differed from the expectations.
/// The windows a route snapshot reports traffic for, and those it reports burn rates for.
const SNAPSHOT_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];
const BURN_RATE_WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// What the YAML's types cannot say: window names the gateway reports, and a response for
/// every `expect_response`.
fn check_cases(cases: &CasesFile) -> Result<(), String> {
    for (i, case) in cases.cases.iter().enumerate() {
        if let Some(sla) = &case.sla {
            for (w, window) in sla.windows.iter().enumerate() {
                if !SNAPSHOT_WINDOWS.contains(&window.window.as_str()) {
                    return Err(format!(
                        "cases[{i}].sla.windows[{w}].window: {:?} is not a window the snapshot reports (it has {})",
                        window.window,
                        SNAPSHOT_WINDOWS.join(", ")
                    ));
                }
            }
            for (n, indicator) in sla.indicators.iter().enumerate() {
                for window in indicator.burn_rates.keys() {
                    if !BURN_RATE_WINDOWS.contains(&window.as_str()) {
                        return Err(format!(
                            "cases[{i}].sla.indicators[{n}].burn_rates: {window:?} is not a burn-rate window (use {})",
                            BURN_RATE_WINDOWS.join(", ")
                        ));
                    }
                }
            }
        }
        if case.expect_response.is_some() && case.response.is_none() {
            return Err(format!(
                "cases[{i}].expect_response: set the case's response for on-response to see"
            ));
        }
    }
    Ok(())
}

async fn run_case(plugin: &Plugin, route: &CaseRoute, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let parts = match request_parts(&case.request) {
        Ok(parts) => parts,
        Err(e) => return vec![e],
    };
    let backends: Vec<Arc<str>> = if route.backends.is_empty() {
        case.backends
            .iter()
            .map(|b| Arc::from(b.backend.as_str()))
            .collect()
    } else {
        route
            .backends
            .iter()
            .map(|b| Arc::from(b.as_str()))
            .collect()
    };
    let scripted = scripted_sla(route, case, &backends);
    let value = |field: &str, text: &str| {
        http::HeaderValue::from_str(text)
            .map_err(|_| format!("request.{field}: {text:?} is not valid as a header value"))
    };
    let (request_id, client_ip) = match (
        value("request_id", &case.request.request_id),
        value("client_ip", &case.request.client_ip),
    ) {
        (Ok(id), Ok(ip)) => (id, ip),
        (Err(e), _) | (_, Err(e)) => return vec![e],
    };
    let facts = RequestFacts {
        route: Arc::from(route.id.as_str()),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        content_length: parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        request_id,
        client_ip,
    };
    let call = Box::new(CallContext {
        facts,
        request: Some(parts.clone()),
        request_body: case
            .request
            .body
            .as_ref()
            .map(|b| bytes::Bytes::from(b.clone())),
        sla: Some(SlaState::Scripted(Arc::new(scripted))),
        backends: backends.into(),
        ..CallContext::default()
    });
    let (decision, mut call) = plugin.on_request(call).await;
    let decision = match decision {
        Ok(decision) => decision,
        Err(e) => return vec![format!("on-request failed: {e}")],
    };
    if let Some(expected) = &case.expect {
        compare_decision(&decision, expected, &mut problems);
        let mut headers = parts.headers.clone();
        HeaderEdit::apply_all(&mut call.request_edits, &mut headers);
        compare_headers(
            "the backend's request",
            &headers,
            &expected.backend_headers,
            &mut problems,
        );
    }
    call.request = None;

    if let Some(response) = &case.response {
        run_response(plugin, call, &decision, response, case, &mut problems).await;
    }
    problems
}

/// The SLA state a case scripts: the route's snapshot and each backend's standing.
fn scripted_sla(route: &CaseRoute, case: &Case, backends: &[Arc<str>]) -> ScriptedSla {
    ScriptedSla {
        now_ms: case.now_ms,
        route: case.sla.as_ref().map(|sla| {
            let now_ms = case
                .now_ms
                .unwrap_or_else(|| accord_policies::sla::Clock::system().now_ms());
            snapshot(&route.id, sla, now_ms)
        }),
        backends: case
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStats {
                backend: b.backend.clone(),
                position: backends
                    .iter()
                    .position(|id| **id == *b.backend)
                    .unwrap_or(i) as u32,
                breaching: b.breaching,
                burn_rate: b.burn_rate,
                requests: b.requests,
                error_ratio: b.error_ratio,
                p99_ms: b.p99_ms,
            })
            .collect(),
    }
}

/// Calls `on-response` with the case's response (after an allowed request) and compares the
/// verdict.
async fn run_response(
    plugin: &Plugin,
    mut call: Box<CallContext>,
    decision: &Decision,
    response: &CaseResponse,
    case: &Case,
    problems: &mut Vec<String>,
) {
    if matches!(decision, Decision::Reject(_)) {
        problems.push("the case has a response, but the request was rejected".into());
        return;
    }
    let mut headers = http::HeaderMap::new();
    for (name, value) in &response.headers {
        match (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => problems.push(format!("response header {name:?} is not a valid header")),
        }
    }
    call.response_headers = Some(Arc::new(headers));
    call.response_body = response
        .body
        .as_ref()
        .map(|b| bytes::Bytes::from(b.clone()));
    let status = http::StatusCode::from_u16(response.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let head = ResponseHead {
        status: response.status,
        backend: response.backend.clone(),
        latency_ms: response.latency_ms.unwrap_or(10.0),
        class: accord_policies::classify(status, None).into(),
    };
    let (verdict, mut call) = plugin.on_response(&head, call).await;
    match (verdict, &case.expect_response) {
        (Err(e), _) => problems.push(format!("on-response failed: {e}")),
        (Ok(verdict), Some(expected)) => {
            compare_verdict(&verdict, expected, problems);
            let mut headers = (*call.response_headers.take().unwrap_or_default()).clone();
            HeaderEdit::apply_all(&mut call.response_edits, &mut headers);
            compare_headers(
                "the client's response",
                &headers,
                &expected.client_headers,
                problems,
            );
        }
        (Ok(_), None) => {}
    }
}

/// Compares the headers a message would have after the plugin's changes with the case's
/// expectations (`None`: the header must be absent).
fn compare_headers(
    what: &str,
    headers: &http::HeaderMap,
    expected: &BTreeMap<String, Option<String>>,
    problems: &mut Vec<String>,
) {
    for (name, want) in expected {
        let got: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let got = (!got.is_empty()).then(|| got.join(", "));
        if got.as_deref() != want.as_deref() {
            problems.push(format!(
                "{what}: expected {name} {}, got {}",
                want.as_ref()
                    .map_or("absent".to_owned(), |v| format!("{v:?}")),
                got.map_or("absent".to_owned(), |v| format!("{v:?}"))
            ));
        }
    }
}

fn request_parts(request: &CaseRequest) -> Result<http::request::Parts, String> {
    let uri = match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(uri);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .map_err(|e| format!("the request is not valid HTTP: {e}"))
}

fn snapshot(route: &str, sla: &CaseSla, now_ms: i64) -> RouteSnapshot {
    RouteSnapshot {
        route: route.to_owned(),
        at_ms: now_ms,
        status: sla.status.clone().unwrap_or_else(|| {
            if sla.budget_exhausted {
                "budget_exhausted".into()
            } else if sla.paging {
                "paging".into()
            } else {
                "ok".into()
            }
        }),
        paging: sla.paging,
        budget_exhausted: sla.budget_exhausted,
        indicators: sla
            .indicators
            .iter()
            .map(|i| Indicator {
                name: i.name.clone(),
                target: i.target,
                attainment: i.attainment.unwrap_or(1.0),
                budget_remaining: i.budget_remaining.unwrap_or(1.0),
                burn_rates: i.burn_rates.iter().map(|(w, r)| (w.clone(), *r)).collect(),
            })
            .collect(),
        windows: sla
            .windows
            .iter()
            .map(|w| WindowStats {
                window: w.window.clone(),
                total: w
                    .total
                    .unwrap_or(w.good + w.bad + w.throttled + w.rejected + w.client_error),
                valid: w.valid.unwrap_or(w.good + w.bad),
                good: w.good,
                bad: w.bad,
                throttled: w.throttled,
                rejected: w.rejected,
                client_error: w.client_error,
                p50_ms: w.p50_ms,
                p99_ms: w.p99_ms,
            })
            .collect(),
    }
}

fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Allow => "allow".into(),
        Decision::Reroute(backend) => format!("reroute to {backend}"),
        Decision::Reject(r) => format!("reject {} {:?}", r.status, r.reason),
    }
}

fn compare_decision(decision: &Decision, expected: &ExpectDecision, problems: &mut Vec<String>) {
    let kind = match decision {
        Decision::Allow => DecisionKind::Allow,
        Decision::Reject(_) => DecisionKind::Reject,
        Decision::Reroute(_) => DecisionKind::Reroute,
    };
    if kind != expected.decision {
        problems.push(format!(
            "expected {}, got {}",
            format!("{:?}", expected.decision).to_lowercase(),
            describe(decision)
        ));
        return;
    }
    match decision {
        Decision::Reject(rejection) => {
            if let Some(status) = expected.status
                && status != rejection.status
            {
                problems.push(format!(
                    "expected status {status}, got {}",
                    rejection.status
                ));
            }
            if expected.retry_after.is_some()
                && expected.retry_after != rejection.retry_after_seconds
            {
                let seconds = |s: Option<u32>| s.map_or("none".to_owned(), |s| format!("{s} s"));
                problems.push(format!(
                    "expected Retry-After {}, got {}",
                    seconds(expected.retry_after),
                    seconds(rejection.retry_after_seconds)
                ));
            }
            if let Some(part) = &expected.reason_contains
                && !rejection.reason.contains(part.as_str())
            {
                problems.push(format!(
                    "expected a reason containing {part:?}, got {:?}",
                    rejection.reason
                ));
            }
            for (name, value) in &expected.headers {
                let got = rejection
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value.as_str());
                if got != Some(value.as_str()) {
                    problems.push(format!(
                        "expected header {name}: {value}, got {}",
                        got.map_or("no such header".to_owned(), |g| format!("{name}: {g}"))
                    ));
                }
            }
        }
        Decision::Reroute(backend) => {
            if let Some(expected) = &expected.reroute
                && expected != backend
            {
                problems.push(format!("expected a reroute to {expected}, got {backend}"));
            }
        }
        Decision::Allow => {}
    }
}

fn compare_verdict(verdict: &Verdict, expected: &ExpectVerdict, problems: &mut Vec<String>) {
    let (kind, reason) = match verdict {
        Verdict::Keep => (VerdictKind::Keep, None),
        Verdict::Good(r) => (VerdictKind::Good, Some(r.as_str())),
        Verdict::Bad(r) => (VerdictKind::Bad, Some(r.as_str())),
    };
    if kind != expected.verdict {
        problems.push(format!(
            "expected the response verdict {}, got {}{}",
            expected.verdict.name(),
            kind.name(),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    } else if let Some(want) = &expected.reason
        && reason != Some(want.as_str())
    {
        problems.push(format!(
            "expected the reason {want:?}, got {}",
            reason.map_or("none".to_owned(), |r| format!("{r:?}"))
        ));
    }
}
