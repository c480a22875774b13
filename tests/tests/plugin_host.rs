#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The plugin host with real components: pooling and strict isolation, and containment of a
//! trap, an endless loop, a memory bomb, invalid outputs and an unknown import.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use accord_policies::plugin::{
    ArtifactSource, CallContext, CallResult, CallStack, Decision, Isolation, Now, OnError, Plugin,
    PluginEngine, PluginError, PluginSpec, RequestFacts,
};
use accord_tests::plugins::component;

fn engine() -> Arc<PluginEngine> {
    Arc::new(PluginEngine::new(64, 64 << 20).unwrap())
}

fn spec(name: &str, isolation: Isolation) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        config: String::new(),
        time_limit: Duration::from_millis(50),
        memory_limit: 16 << 20,
        on_error: OnError::Allow,
        isolation,
        response_body: 0,
        request_body: 0,
    }
}

async fn load(file: &str, spec: PluginSpec) -> Result<Plugin, PluginError> {
    engine().load(&component(file), spec).await
}

async fn ask(plugin: &Plugin, misbehave: Option<&str>) -> CallResult<Decision> {
    ask_with(plugin, misbehave, None).await
}

/// `on-request` for `GET /x` on a route of backends `a` and `b`, with `sla` as its SLA state.
async fn ask_with(
    plugin: &Plugin,
    misbehave: Option<&str>,
    sla: Option<accord_policies::plugin::SlaState>,
) -> CallResult<Decision> {
    plugin.on_request(call_about(misbehave, sla)).await.0
}

/// The call context of a `GET /x` on a route of backends `a` and `b`, with `sla` as its SLA
/// state, and `misbehave` as its `x-misbehave` header.
fn call_about(
    misbehave: Option<&str>,
    sla: Option<accord_policies::plugin::SlaState>,
) -> Box<CallContext> {
    let mut builder = http::Request::get("/x");
    if let Some(how) = misbehave {
        builder = builder.header("x-misbehave", how);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    let call = CallContext {
        facts: facts(&parts),
        request: Some(parts),
        backends: Arc::from([Arc::from("a"), Arc::from("b")]),
        sla,
        ..CallContext::default()
    };
    Box::new(call)
}

/// `on-request` tried at once, on the caller's stack: its decision, or `None` when the call
/// was given back for the async path.
fn ask_now(plugin: &Plugin, misbehave: Option<&str>) -> Option<CallResult<Decision>> {
    match plugin.on_request_now(call_about(misbehave, None)) {
        Now::Done(result, call) => {
            assert_eq!(
                call.facts.request_id, "test-id",
                "the context is given back"
            );
            Some(result)
        }
        Now::Later(call) => {
            assert!(
                call.request.is_some(),
                "the context is given back untouched"
            );
            None
        }
    }
}

/// The head's fields of a request on route `r`, as the gateway gives them.
fn facts(parts: &http::request::Parts) -> RequestFacts {
    RequestFacts {
        route: Arc::from("r"),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        content_length: Some(5),
        request_id: http::HeaderValue::from_static("test-id"),
        client_ip: http::HeaderValue::from_static("203.0.113.7"),
    }
}

/// The test plugin that misbehaves as its request's `x-misbehave` says, pooled.
async fn misbehave() -> Plugin {
    load("misbehave", spec("misbehave", Isolation::Pooled))
        .await
        .unwrap()
}

/// Asks `plugin` to loop for ever: the call fails at its time limit of 50 ms, not before.
async fn an_endless_loop_ends_at_the_time_limit(plugin: &Plugin) {
    let started = tokio::time::Instant::now();
    let message = ask(plugin, Some("loop")).await.unwrap_err().to_string();
    assert!(
        message.contains("exceeded its time limit of 50ms"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "not before its time limit"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn pooled_instances_are_reused_and_strict_ones_are_not() {
    let pooled = load("noop", spec("noop", Isolation::Pooled)).await.unwrap();
    for _ in 0..20 {
        assert!(matches!(ask(&pooled, None).await.unwrap(), Decision::Allow));
    }
    assert_eq!(pooled.stats().calls.load(Relaxed), 20);
    assert_eq!(
        pooled.stats().instantiations.load(Relaxed),
        1,
        "one long-lived instance served every call"
    );

    let strict = load("noop", spec("noop", Isolation::Strict)).await.unwrap();
    for _ in 0..5 {
        ask(&strict, None).await.unwrap();
    }
    assert_eq!(
        strict.stats().instantiations.load(Relaxed),
        6,
        "a fresh instance per call (plus the load check)"
    );
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_request_policy_plugin_is_not_called_for_responses() {
    use accord_policies::plugin::{OutcomeClass, ResponseHead, Verdict, WorldVersion};
    let head = ResponseHead {
        status: 200,
        backend: Some("a".into()),
        latency_ms: 1.0,
        class: OutcomeClass::Good,
    };
    // `noop` is exported with `export_request_plugin!`: it has no `on-response`.
    let noop = load("noop", spec("noop", Isolation::Pooled)).await.unwrap();
    assert_eq!(noop.version(), WorldVersion::LazyRequestPolicy);
    assert!(!noop.judges_responses());
    assert!(matches!(ask(&noop, None).await.unwrap(), Decision::Allow));
    let (verdict, _) = noop.on_response(&head, Box::default()).await;
    assert!(matches!(verdict, Ok(Verdict::Keep)));
    assert_eq!(noop.stats().calls.load(Relaxed), 1, "on-request only");
    // A `lazy-policy` plugin is called for both.
    let misbehave = misbehave().await;
    assert_eq!(misbehave.version(), WorldVersion::LazyPolicy);
    assert!(misbehave.judges_responses());
    ask(&misbehave, None).await.unwrap();
    let (verdict, _) = misbehave.on_response(&head, Box::default()).await;
    assert!(verdict.is_ok());
    assert_eq!(misbehave.stats().calls.load(Relaxed), 2);
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_trap_an_endless_loop_and_a_memory_bomb_are_contained() {
    let plugin = misbehave().await;
    let message = ask(&plugin, Some("trap")).await.unwrap_err().to_string();
    assert!(message.contains("trapped"), "{message}");
    an_endless_loop_ends_at_the_time_limit(&plugin).await;

    // Each failure discarded its instance; the plugin still serves.
    let instantiations = plugin.stats().instantiations.load(Relaxed);
    assert!(matches!(ask(&plugin, None).await.unwrap(), Decision::Allow));
    assert_eq!(
        plugin.stats().instantiations.load(Relaxed),
        instantiations + 1
    );
    assert_eq!(plugin.stats().failures.load(Relaxed), 2);

    // The memory bomb gets a generous deadline, so that only the memory limit can stop it
    // (on a loaded machine, filling 16 MiB can take longer than 50 ms).
    let roomy = PluginSpec {
        time_limit: Duration::from_secs(5),
        ..spec("bomb", Isolation::Pooled)
    };
    let plugin = load("misbehave", roomy).await.unwrap();
    let message = ask(&plugin, Some("bomb")).await.unwrap_err().to_string();
    assert!(
        message.contains("exceeded its memory limit of 16777216 bytes"),
        "{message}"
    );
    assert!(matches!(ask(&plugin, None).await.unwrap(), Decision::Allow));
}

/// A plugin whose imports never wait is called on the request's own stack, `wasi:io` (a
/// panic's message, prints) served at once; one that imports a timer is called on a fiber,
/// and its wait holds up nothing else on the thread.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_plugin_that_can_wait_is_called_on_a_fiber_and_the_others_on_the_requests_stack() {
    for name in [
        "noop",
        "misbehave",
        "latency-guard",
        "budget-guard",
        "contract-check",
    ] {
        let plugin = load(name, spec(name, Isolation::Pooled)).await.unwrap();
        assert_eq!(plugin.calls(), &CallStack::Caller, "{name}");
    }
    // Its panic message goes to standard error, through `wasi:io/streams`, and the trap is
    // reported as the trap it is.
    let plugin = misbehave().await;
    let message = ask(&plugin, Some("trap")).await.unwrap_err().to_string();
    assert!(message.contains("trapped"), "{message}");
    assert!(!message.contains("would have waited"), "{message}");

    let sleepy = PluginSpec {
        config: "200".into(),
        time_limit: Duration::from_secs(5),
        ..spec("sleeper", Isolation::Pooled)
    };
    let sleeper = load("sleeper", sleepy).await.unwrap();
    match sleeper.calls() {
        CallStack::Fiber { because } => assert!(
            because.starts_with("wasi:clocks/monotonic-clock@"),
            "{because}"
        ),
        CallStack::Caller => panic!("a plugin that sleeps is called on the request's stack"),
    }
    // This test's runtime has one thread: while the call sleeps (200 ms), other tasks run.
    let ticks = std::sync::atomic::AtomicU32::new(0);
    let ticking = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ticks.fetch_add(1, Relaxed);
        }
    };
    let asking = async {
        let decision = ask(&sleeper, None).await;
        (decision, ticks.load(Relaxed))
    };
    let ((decision, ticked), ()) = tokio::join!(asking, ticking);
    assert!(matches!(decision.unwrap(), Decision::Allow));
    assert_eq!(ticked, 5, "the other task ran while the plugin slept");
}

/// A call runs at once, with no future, only when the plugin's calls never wait and a pooled
/// instance is idle; otherwise the context is given back for the async call, which makes an
/// instance or runs on a fiber. Both paths count, validate and contain the call alike.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_call_runs_at_once_only_when_it_can() {
    let pooled = load("noop", spec("noop", Isolation::Pooled)).await.unwrap();
    assert!(
        matches!(ask_now(&pooled, None), Some(Ok(Decision::Allow))),
        "the load's instance is idle in the pool"
    );
    assert_eq!(pooled.stats().calls.load(Relaxed), 1);
    assert_eq!(pooled.stats().on_request_time.count(), 1);

    let strict = load("noop", spec("noop", Isolation::Strict)).await.unwrap();
    assert!(
        ask_now(&strict, None).is_none(),
        "no pool: an instance to make"
    );
    assert_eq!(strict.stats().calls.load(Relaxed), 0, "nothing was called");

    let sleepy = PluginSpec {
        config: "1".into(),
        ..spec("sleeper", Isolation::Pooled)
    };
    let sleeper = load("sleeper", sleepy).await.unwrap();
    assert!(
        ask_now(&sleeper, None).is_none(),
        "its calls can wait: a fiber"
    );

    let plugin = misbehave().await;
    let message = ask_now(&plugin, Some("reroute"))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(message.contains("not a backend of route r"), "{message}");
    // The invalid output discarded nothing: the call itself succeeded.
    let message = ask_now(&plugin, Some("trap"))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(message.contains("trapped"), "{message}");
    assert!(
        ask_now(&plugin, None).is_none(),
        "the trapped instance was discarded: none is idle"
    );
    assert!(matches!(ask(&plugin, None).await, Ok(Decision::Allow)));
    assert!(
        matches!(ask_now(&plugin, None), Some(Ok(Decision::Allow))),
        "the async call's new instance went back to the pool"
    );
    assert_eq!(plugin.stats().instantiations.load(Relaxed), 2);
}

/// An instance's start-up is not a call: it has its own budget, at least
/// `START_UP_LIMIT`. A start-up slower than the call's time limit still starts (Python and
/// JavaScript runtimes take milliseconds to initialize, more on a busy machine), and one that
/// never ends fails at the budget.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_start_up_has_its_own_budget_and_one_that_never_ends_fails() {
    let slow = PluginSpec {
        // The call itself must still fit its limit on a loaded machine: a 1 ms limit failed
        // a plain allow once in CI, preempted past its two ticks.
        time_limit: Duration::from_millis(20),
        config: "spin-ms 200".into(),
        ..spec("slow", Isolation::Pooled)
    };
    let plugin = load("misbehave", slow).await.unwrap();
    assert!(matches!(ask(&plugin, None).await.unwrap(), Decision::Allow));

    let endless = PluginSpec {
        config: "spin-forever".into(),
        ..spec("endless", Isolation::Pooled)
    };
    let started = tokio::time::Instant::now();
    let message = load("misbehave", endless).await.unwrap_err().to_string();
    assert!(message.contains("configure failed"), "{message}");
    assert!(
        started.elapsed() >= accord_policies::plugin::START_UP_LIMIT,
        "ended at its start-up budget, not before"
    );
}

/// The epoch ticker sleeps after a second without plugin calls; the first call after that
/// wakes it, so an endless loop still ends at its time limit.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn an_endless_loop_after_an_idle_spell_still_ends_at_its_time_limit() {
    let plugin = misbehave().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    an_endless_loop_ends_at_the_time_limit(&plugin).await;
    assert!(matches!(ask(&plugin, None).await.unwrap(), Decision::Allow));
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn invalid_outputs_are_refused() {
    let plugin = misbehave().await;
    let message = ask(&plugin, Some("status")).await.unwrap_err().to_string();
    assert!(message.contains("status 999"), "{message}");
    let message = ask(&plugin, Some("reroute")).await.unwrap_err().to_string();
    assert!(message.contains("not a backend of route r"), "{message}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_plugin_that_keeps_failing_is_bypassed() {
    let plugin = misbehave().await;
    for _ in 0..5 {
        assert!(matches!(
            ask(&plugin, Some("trap")).await,
            Err(PluginError::Call { .. })
        ));
    }
    assert!(matches!(
        ask(&plugin, None).await,
        Err(PluginError::Bypassed { .. })
    ));
    assert_eq!(plugin.stats().bypassed.load(Relaxed), 1);
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_component_with_an_unknown_import_is_refused_at_load() {
    let message = load("unknown-import", spec("sneaky", Isolation::Pooled))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("needs imports this gateway does not give"),
        "{message}"
    );
    assert!(message.contains("test:vault/secrets"), "{message}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_plugin_that_refuses_its_configuration_is_refused_at_load() {
    let mut bad = spec("latency-guard", Isolation::Pooled);
    bad.config = "{\"threshold_ms\": -5}".into();
    let message = load("latency-guard", bad).await.unwrap_err().to_string();
    assert!(
        message.contains("threshold_ms must be above 0"),
        "{message}"
    );
    let mut unknown = spec("latency-guard", Isolation::Pooled);
    unknown.config = "{\"treshold_ms\": 5}".into();
    let message = load("latency-guard", unknown)
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field"), "{message}");
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn compiled_plugins_are_cached_in_memory_and_on_disk_and_a_damaged_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(component("noop")).unwrap();
    let cached = || {
        PluginEngine::new(4, 16 << 20)
            .unwrap()
            .with_artifact_dir(dir.path().to_path_buf())
    };

    let first = cached();
    assert_eq!(
        first.compile(&bytes, "noop").unwrap().1,
        ArtifactSource::Compiled
    );
    assert_eq!(
        first.compile(&bytes, "noop").unwrap().1,
        ArtifactSource::Memory
    );
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let name = artifacts[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(name.ends_with(".cwasm") && name.len() > 64, "{name}");

    // A new engine (a restart) loads the artifact instead of compiling, and it works.
    let restarted = Arc::new(cached());
    assert_eq!(runs_noop(&restarted, &bytes).await, ArtifactSource::Disk);

    // Another component gets its own artifact.
    let other = std::fs::read(component("latency-guard")).unwrap();
    assert_eq!(
        restarted.compile(&other, "lg").unwrap().1,
        ArtifactSource::Compiled
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    // A damaged artifact is thrown away and the component compiled again.
    std::fs::write(&artifacts[0], b"not an artifact").unwrap();
    let (_, source) = cached().compile(&bytes, "noop").unwrap();
    assert_eq!(source, ArtifactSource::Compiled);
    assert_eq!(
        cached().compile(&bytes, "noop").unwrap().1,
        ArtifactSource::Disk
    );
}

#[tokio::test]
#[ignore = "builds the C plugin with clang and wasi-libc: run ./scripts/test.sh"]
async fn a_plugin_written_in_c_loads_and_refuses_a_bad_configuration() {
    let engine = engine();
    let file = accord_tests::plugins::c_component("budget-gate");
    let mut gate = spec("budget-gate", Isolation::Pooled);
    gate.config = "\"x-priority\"".into();
    let plugin = engine.load(&file, gate).await.unwrap();
    assert!(
        matches!(ask(&plugin, None).await, Ok(Decision::Allow)),
        "no objective on the route: allowed"
    );
    let mut bad = spec("budget-gate", Isolation::Pooled);
    bad.config = "{\"header\": 1}".into();
    let message = engine.load(&file, bad).await.unwrap_err().to_string();
    assert!(
        message.contains("expected a header name as a JSON string"),
        "{message}"
    );
}

#[tokio::test]
#[ignore = "builds the C plugin with clang and wasi-libc: run ./scripts/test.sh"]
async fn plugins_built_against_0_1_0_and_0_2_0_still_load_and_see_what_they_were_promised() {
    use accord_policies::plugin::{
        Indicator, RouteSnapshot, ScriptedSla, SlaState, WindowStats, WorldVersion,
    };
    let engine = engine();
    let old = accord_tests::plugins::c_component_v0_1("budget-gate");
    let v0_2 = accord_tests::plugins::c_component_v0_2("budget-gate");
    let current = accord_tests::plugins::c_component("budget-gate");
    let exhausted = || {
        let window = |name: &str| WindowStats {
            window: name.into(),
            total: 100.0,
            valid: 100.0,
            good: 50.0,
            bad: 50.0,
            throttled: 0.0,
            rejected: 0.0,
            client_error: 0.0,
            p50_ms: None,
            p99_ms: None,
        };
        SlaState::Scripted(Arc::new(ScriptedSla {
            now_ms: None,
            route: Some(RouteSnapshot {
                route: "r".into(),
                at_ms: 0,
                status: "budget_exhausted".into(),
                paging: true,
                budget_exhausted: true,
                indicators: vec![Indicator {
                    name: "availability".into(),
                    target: 0.999,
                    attainment: 0.5,
                    budget_remaining: -10.0,
                    burn_rates: vec![("5m".into(), 500.0)],
                }],
                windows: ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
                    .map(window)
                    .to_vec(),
            }),
            backends: Vec::new(),
        }))
    };
    for (file, version) in [
        (old, WorldVersion::V0_1),
        (v0_2, WorldVersion::Policy),
        (current, WorldVersion::Policy),
    ] {
        let plugin = engine
            .load(&file, spec("budget-gate", Isolation::Pooled))
            .await
            .unwrap();
        assert_eq!(plugin.version(), version);
        let decision = ask_with(&plugin, None, Some(exhausted())).await.unwrap();
        assert!(
            matches!(&decision, Decision::Reject(r) if r.status == 503),
            "{version:?}: {decision:?}"
        );
    }
}

/// A plugin compiled in a child process (the gateway's own binary, as `accord run` does)
/// loads and runs like one compiled here; a component the child refuses fails to load with
/// the child's reason; a compiler that cannot run leaves the compiling to this process.
#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn plugins_compile_in_a_child_process_and_here_when_it_cannot_run() {
    use accord_policies::plugin::Compiler;
    let bytes = std::fs::read(component("noop")).unwrap();
    // An engine that compiles in a child has no compiler of its own.
    let with =
        |compiler: Compiler| Arc::new(PluginEngine::compiling_with(4, 16 << 20, compiler).unwrap());

    let child = with(Compiler::Child(accord_tests::accord_binary()));
    assert_eq!(
        runs_noop(&child, &bytes).await,
        ArtifactSource::CompiledInChild
    );

    let refused = child.compile(b"not a component", "junk").unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("junk") && message.contains("not a loadable component"),
        "{message}"
    );

    // A program that is not there, and one that fails on its own account (as valgrind does
    // when asked to run `/proc/self/exe`): the plugin is compiled here.
    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing-accord");
    std::fs::write(&failing, "#!/bin/sh\necho 'not a compiler' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for program in [dir.path().join("no-such-accord"), failing] {
        let unavailable = with(Compiler::Child(program));
        assert_eq!(
            runs_noop(&unavailable, &bytes).await,
            ArtifactSource::Compiled
        );
    }
}

/// Compiles `noop` (`bytes`) with `engine`, checks that it allows a request, and says where
/// its compiled form came from.
async fn runs_noop(engine: &Arc<PluginEngine>, bytes: &[u8]) -> ArtifactSource {
    let (compiled, source) = engine.compile(bytes, "noop").unwrap();
    let plugin = engine
        .prepare(compiled, spec("noop", Isolation::Pooled))
        .await
        .unwrap();
    assert!(matches!(ask(&plugin, None).await, Ok(Decision::Allow)));
    source
}

#[tokio::test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_lazy_plugin_reads_the_request_head_it_asks_for_in_both_calls() {
    use accord_policies::plugin::{OutcomeClass, ResponseHead, Verdict};
    let plugin = misbehave().await;
    let (parts, ()) = http::Request::post("/orders/7?full=1")
        .header("x-misbehave", "head")
        .body(())
        .unwrap()
        .into_parts();
    let call = CallContext {
        facts: facts(&parts),
        request: Some(parts),
        ..CallContext::default()
    };
    let (decision, call) = plugin.on_request(Box::new(call)).await;
    let fields = "r POST /orders/7 Some(5) test-id 203.0.113.7";
    assert!(
        matches!(&decision, Ok(Decision::Reject(r)) if r.status == 400 && r.reason == fields),
        "{decision:?}"
    );
    // In on-response, the request's head is no longer lent; its fields still are.
    let head = ResponseHead {
        status: 200,
        backend: Some("a".into()),
        latency_ms: 1.0,
        class: OutcomeClass::Good,
    };
    let mut call = call;
    call.request = None;
    let (verdict, _) = plugin.on_response(&head, call).await;
    assert!(
        matches!(&verdict, Ok(Verdict::Bad(reason)) if reason == fields),
        "{verdict:?}"
    );
}

/// A plugin called on the request's stack runs on the gateway's own thread: a recursion that
/// exhausts its Wasm stack traps like any other failure, on a worker thread of a multi-threaded
/// runtime (2 MiB stacks) too, and the thread and the plugin go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
async fn a_recursion_that_exhausts_the_stack_traps_on_the_requests_stack() {
    let plugin = Arc::new(misbehave().await);
    assert_eq!(plugin.calls(), &CallStack::Caller);
    let on_a_worker = plugin.clone();
    let (failed, then) = tokio::spawn(async move {
        let failed = ask(&on_a_worker, Some("recurse")).await;
        (failed, ask(&on_a_worker, None).await)
    })
    .await
    .unwrap();
    let message = failed.unwrap_err().to_string();
    assert!(message.contains("trapped"), "{message}");
    assert!(matches!(then.unwrap(), Decision::Allow));
    assert_eq!(plugin.stats().failures.load(Relaxed), 1);
}
