//! Per-request cost of a plugin call (on-request): the noop plugin (the host's own overhead)
//! and latency-guard, which reads the route's backends through the SLA host interface.
//! `cargo bench -p accord-tests --bench plugins` (builds the plugins for wasm32-wasip2).

use std::sync::Arc;
use std::time::Duration;

use accord_policies::Class;
use accord_policies::plugin::{
    CallContext, Isolation, OnError, PluginEngine, PluginSpec, RequestHead, SlaState,
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
    let parts = Arc::new(parts);
    let head = RequestHead {
        route: "r".into(),
        method: "GET".into(),
        path: "/bench".into(),
        content_length: None,
    };
    for (name, file, config) in [
        ("noop", "noop", ""),
        ("latency-guard", "latency-guard", "{\"threshold_ms\": 300}"),
    ] {
        let plugin = runtime
            .block_on(engine.load(&component(file), spec(name, config)))
            .unwrap_or_else(|e| panic!("{e}"));
        c.bench_function(&format!("plugin on-request: {name}"), |b| {
            b.iter(|| {
                let call = CallContext {
                    request: Some(parts.clone()),
                    sla: Some(SlaState::Live(route.clone())),
                    backends: Arc::from([Arc::from("a"), Arc::from("b")]),
                    ..CallContext::default()
                };
                let (decision, _) = runtime.block_on(plugin.on_request(&head, call));
                std::hint::black_box(decision.is_ok())
            })
        });
    }
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, calls);
}

criterion_main!(group::benches);
