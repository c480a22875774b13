#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The plugin host with real components: pooling and strict isolation, and containment of a
//! trap, an endless loop, a memory bomb, invalid outputs and an unknown import.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use accord_policies::plugin::{
    CallContext, Decision, Isolation, OnError, PluginEngine, PluginError, PluginSpec, RequestHead,
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
    }
}

fn head() -> RequestHead {
    RequestHead {
        route: "r".into(),
        method: "GET".into(),
        path: "/".into(),
        content_length: None,
    }
}

fn call(misbehave: Option<&str>) -> CallContext {
    let mut builder = http::Request::get("/x");
    if let Some(how) = misbehave {
        builder = builder.header("x-misbehave", how);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    CallContext {
        request: Some(Arc::new(parts)),
        backends: vec![Arc::from("a"), Arc::from("b")],
        ..CallContext::default()
    }
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn pooled_instances_are_reused_and_strict_ones_are_not() {
    let engine = engine();
    let pooled = engine
        .load(&component("noop"), spec("noop", Isolation::Pooled))
        .unwrap();
    for _ in 0..20 {
        let (decision, _) = pooled.on_request(&head(), call(None));
        assert!(matches!(decision.unwrap(), Decision::Allow));
    }
    assert_eq!(pooled.stats().calls.load(Relaxed), 20);
    assert_eq!(
        pooled.stats().instantiations.load(Relaxed),
        1,
        "one long-lived instance served every call"
    );

    let strict = engine
        .load(&component("noop"), spec("noop", Isolation::Strict))
        .unwrap();
    for _ in 0..5 {
        strict.on_request(&head(), call(None)).0.unwrap();
    }
    assert_eq!(
        strict.stats().instantiations.load(Relaxed),
        6,
        "a fresh instance per call (plus the load check)"
    );
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn a_trap_an_endless_loop_and_a_memory_bomb_are_contained() {
    let engine = engine();
    let plugin = engine
        .load(
            &component("misbehave"),
            spec("misbehave", Isolation::Pooled),
        )
        .unwrap();

    let (trap, _) = plugin.on_request(&head(), call(Some("trap")));
    let message = trap.unwrap_err().to_string();
    assert!(message.contains("trapped"), "{message}");

    let (endless, _) = plugin.on_request(&head(), call(Some("loop")));
    let message = endless.unwrap_err().to_string();
    assert!(message.contains("time limit"), "{message}");

    let (bomb, _) = plugin.on_request(&head(), call(Some("bomb")));
    let message = bomb.unwrap_err().to_string();
    assert!(
        message.contains("exceeded its memory limit of 16777216 bytes"),
        "{message}"
    );

    // Each failure discarded its instance; the plugin still serves.
    let instantiations = plugin.stats().instantiations.load(Relaxed);
    assert!(matches!(
        plugin.on_request(&head(), call(None)).0.unwrap(),
        Decision::Allow
    ));
    assert_eq!(
        plugin.stats().instantiations.load(Relaxed),
        instantiations + 1
    );
    assert_eq!(plugin.stats().failures.load(Relaxed), 3);
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn invalid_outputs_are_refused() {
    let engine = engine();
    let plugin = engine
        .load(
            &component("misbehave"),
            spec("misbehave", Isolation::Pooled),
        )
        .unwrap();
    let message = plugin
        .on_request(&head(), call(Some("status")))
        .0
        .unwrap_err()
        .to_string();
    assert!(message.contains("status 999"), "{message}");
    let message = plugin
        .on_request(&head(), call(Some("reroute")))
        .0
        .unwrap_err()
        .to_string();
    assert!(message.contains("not a backend of route r"), "{message}");
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn a_plugin_that_keeps_failing_is_bypassed() {
    let engine = engine();
    let plugin = engine
        .load(
            &component("misbehave"),
            spec("misbehave", Isolation::Pooled),
        )
        .unwrap();
    for _ in 0..5 {
        assert!(matches!(
            plugin.on_request(&head(), call(Some("trap"))).0,
            Err(PluginError::Call { .. })
        ));
    }
    assert!(matches!(
        plugin.on_request(&head(), call(None)).0,
        Err(PluginError::Bypassed { .. })
    ));
    assert_eq!(plugin.stats().bypassed.load(Relaxed), 1);
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn a_component_with_an_unknown_import_is_refused_at_load() {
    let error = engine()
        .load(
            &component("unknown-import"),
            spec("sneaky", Isolation::Pooled),
        )
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("needs imports this gateway does not give"),
        "{message}"
    );
    assert!(message.contains("test:vault/secrets"), "{message}");
}

#[test]
#[ignore = "builds wasm32-wasip2 plugins: run ./scripts/test.sh"]
fn a_plugin_that_refuses_its_configuration_is_refused_at_load() {
    let mut bad = spec("latency-guard", Isolation::Pooled);
    bad.config = "{\"threshold_ms\": -5}".into();
    let message = engine()
        .load(&component("latency-guard"), bad)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("threshold_ms must be above 0"),
        "{message}"
    );
    let mut unknown = spec("latency-guard", Isolation::Pooled);
    unknown.config = "{\"treshold_ms\": 5}".into();
    let message = engine()
        .load(&component("latency-guard"), unknown)
        .unwrap_err()
        .to_string();
    assert!(message.contains("unknown field"), "{message}");
}
