//! SLA engine hot paths: recording an outcome (the request path's whole cost, target ≤ 100 ns)
//! and building reports (the admin API's cost), for `cargo bench -p accord-policies`.

use std::sync::Arc;
use std::time::Duration;

use accord_policies::Class;
use accord_policies::sla::report::RouteReport;
use accord_policies::sla::{Clock, Enforcement, LatencyObjective, Objective, SlaEngine};
use criterion::{Criterion, criterion_group, criterion_main};

fn objective() -> Objective {
    Objective {
        latency: Some(LatencyObjective {
            threshold: Duration::from_millis(300),
            target: 0.99,
        }),
        ..Objective::availability(0.999, Duration::from_secs(30 * 86_400))
    }
}

fn record(c: &mut Criterion) {
    let engine = SlaEngine::new(Clock::starting_at(1_767_225_600_000));
    let route = engine.route(
        &Arc::from("r"),
        objective(),
        Enforcement::default(),
        &[Arc::from("a"), Arc::from("b")],
    );
    let mut i = 0u64;
    c.bench_function("meter record (route + backend try)", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            let latency = Duration::from_micros(1_000 + i % 200_000);
            route.record_try(0, Class::Good, latency);
            route.record(Class::Good, latency, false);
        })
    });
    let meter = route.meter();
    c.bench_function("meter record (one meter)", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            meter.record(Class::Good, Duration::from_micros(1_000 + i % 200_000));
        })
    });
}

fn reports(c: &mut Criterion) {
    // 1,000 routes with two backends each and a day of minute traffic.
    let engine = SlaEngine::new(Clock::starting_at(1_767_225_600_000));
    let routes: Vec<_> = (0..1000)
        .map(|n| {
            engine.route(
                &Arc::from(format!("route-{n}")),
                objective(),
                Enforcement::default(),
                &[Arc::from("a"), Arc::from("b")],
            )
        })
        .collect();
    for minute in 0..1440 {
        for route in &routes {
            for k in 0..3u64 {
                let latency = Duration::from_millis(10 + (minute as u64 * 7 + k * 13) % 400);
                route.record(
                    if k == 0 && minute % 50 == 0 {
                        Class::Bad
                    } else {
                        Class::Good
                    },
                    latency,
                    false,
                );
                route.record_try(0, Class::Good, latency);
            }
            route.meter().seal(29_462_093 + minute);
            route.backends()[0].meter().seal(29_462_093 + minute);
        }
    }
    let now = 29_462_093 + 1440;
    let mut group = c.benchmark_group("reports");
    group.sample_size(10);
    group.bench_function("report for 1,000 routes", |b| {
        b.iter(|| {
            let built: Vec<_> = routes
                .iter()
                .map(|r| RouteReport::build(r, now, Vec::new()))
                .collect();
            std::hint::black_box(built.len())
        })
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::*;
    criterion_group!(benches, record, reports);
}

criterion_main!(group::benches);
