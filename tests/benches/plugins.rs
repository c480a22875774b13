//! Per-request cost of a plugin call (on-request): the noop plugin (the host's own overhead),
//! the Rust reference plugins, the C plugin, and priority-shed in Python and in JavaScript
//! (which does what budget-guard does: a header, the route's snapshot, a decision).
//! `cargo bench -p accord-tests --bench plugins` (builds the plugins for wasm32-wasip2).

use std::sync::Arc;
use std::time::Duration;

use accord_policies::Class;
use accord_policies::plugin::{
    CallContext, Isolation, OnError, OutcomeClass, PluginEngine, PluginSpec, RequestFacts,
    ResponseHead, SlaState,
};
use accord_policies::sla::{Clock, Enforcement, Objective, SlaEngine};
use accord_tests::plugins::component;
use criterion::{Criterion, criterion_group, criterion_main};

fn spec(name: &str, config: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        config: config.into(),
        time_limit: Duration::from_millis(10),
        memory_limit: 16 << 20,
        on_error: OnError::Allow,
        isolation: Isolation::Pooled,
        response_body: 0,
        request_body: 0,
    }
}

fn calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = Arc::new(PluginEngine::new(16, 64 << 20).unwrap_or_else(|e| panic!("{e}")));
    let sla = SlaEngine::new(Clock::system());
    let window = Duration::from_secs(30 * 86_400);
    let objective = Objective::availability(0.999, window);
    let route = sla.route(
        &Arc::from("r"),
        objective,
        Enforcement::default(),
        &[Arc::from("a"), Arc::from("b")],
    );
    for i in 0..200u64 {
        route.record_try(
            (i % 2) as usize,
            Class::Good,
            Duration::from_millis(5 + i % 20),
        );
    }
    sla.tick();
    let (parts, ()) = http::Request::get("/bench")
        .header("x-tenant", "t1")
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_parts();
    let facts = RequestFacts {
        route: Arc::from("r"),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        content_length: None,
        request_id: http::HeaderValue::from_static("bench"),
        client_ip: http::HeaderValue::from_static("127.0.0.1"),
    };
    let c_plugin = accord_tests::plugins::c_component("budget-gate");
    for (name, file, config) in [
        ("noop", component("noop"), ""),
        (
            "latency-guard",
            component("latency-guard"),
            "{\"threshold_ms\": 300}",
        ),
        ("budget-guard", component("budget-guard"), ""),
        (
            "tenant-quota",
            component("tenant-quota"),
            "{\"default_limit\": 1e12}",
        ),
        (
            "contract-check",
            component("contract-check"),
            "{\"request\": {\"required_headers\": [\"x-tenant\"]}, \"response\": {\"statuses\": [\"2xx\"], \"json\": true}}",
        ),
        ("budget-gate (C)", c_plugin.clone(), "\"x-priority\""),
        (
            "priority-shed (Python)",
            accord_tests::plugins::python_component("priority-shed"),
            "",
        ),
        (
            "priority-shed (JavaScript)",
            accord_tests::plugins::js_component("priority-shed"),
            "",
        ),
    ] {
        let plugin = runtime
            .block_on(engine.load(&file, spec(name, config)))
            .unwrap_or_else(|e| panic!("{e}"));
        c.bench_function(&format!("plugin on-request: {name}"), |b| {
            b.iter(|| {
                let call = CallContext {
                    facts: facts.clone(),
                    request: Some(parts.clone()),
                    sla: Some(SlaState::Live(route.clone())),
                    backends: Arc::from([Arc::from("a"), Arc::from("b")]),
                    ..CallContext::default()
                };
                let (decision, _) = runtime.block_on(plugin.on_request(Box::new(call)));
                std::hint::black_box(decision.is_ok())
            })
        });
        if name == "contract-check" {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            let headers = Arc::new(headers);
            let body =
                bytes::Bytes::from_static(br#"{"order": 7, "items": [1, 2, 3], "total": 12.5}"#);
            let response = ResponseHead {
                status: 200,
                backend: Some("a".into()),
                latency_ms: 12.0,
                class: OutcomeClass::Good,
            };
            c.bench_function(&format!("plugin on-response: {name} (JSON body)"), |b| {
                b.iter(|| {
                    let call = CallContext {
                        response_headers: Some(headers.clone()),
                        response_body: Some(body.clone()),
                        ..CallContext::default()
                    };
                    let (verdict, _) =
                        runtime.block_on(plugin.on_response(&response, Box::new(call)));
                    std::hint::black_box(verdict.is_ok())
                })
            });
        }
    }
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, calls);
}

criterion_main!(group::benches);
