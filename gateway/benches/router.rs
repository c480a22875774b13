//! Route lookup with 10 routes and with 10,000 (target: throughput drops by at most 5%).
//! The routes mix exact paths, templates and prefixes, some per host, as a large tenant
//! configuration would; each lookup is a request the table has to search for.
//!
//! `cargo bench -p accord --bench router`
#![allow(missing_docs)]

use accord::config::{self, ProcessEnvironment};
use accord::proxy::router::Router;
use criterion::{Criterion, criterion_group, criterion_main};

/// A configuration with `n` routes: a quarter exact paths, a quarter templates, a quarter
/// prefixes, a quarter prefixes on their own host.
fn config_with(n: usize) -> String {
    let mut yaml = String::from(
        "listeners:\n  - address: 127.0.0.1:0\nbackends:\n  app:\n    http:\n      addresses: [\"127.0.0.1:9\"]\nroutes:\n",
    );
    for i in 0..n {
        let matcher = match i % 4 {
            0 => format!("{{path: {{exact: /svc{i}/status}}}}"),
            1 => format!("{{path: {{template: \"/svc{i}/items/{{id}}\"}}}}"),
            2 => format!("{{path: {{prefix: /svc{i}}}}}"),
            _ => format!("{{host: tenant{i}.example.com, path: {{prefix: /api}}}}"),
        };
        yaml.push_str(&format!(
            "  - id: r{i}\n    match: {matcher}\n    backends: [{{backend: app}}]\n"
        ));
    }
    yaml
}

fn requests(n: usize) -> Vec<http::request::Parts> {
    (0..64)
        .map(|k| {
            let i = (k * 7919) % n;
            let (host, path) = match i % 4 {
                0 => ("gateway.example.com".to_owned(), format!("/svc{i}/status")),
                1 => (
                    "gateway.example.com".to_owned(),
                    format!("/svc{i}/items/42"),
                ),
                2 => (
                    "gateway.example.com".to_owned(),
                    format!("/svc{i}/deep/path"),
                ),
                _ => (format!("tenant{i}.example.com"), "/api/orders".to_owned()),
            };
            http::Request::get(path)
                .header("host", host)
                .body(())
                .unwrap_or_else(|e| panic!("{e}"))
                .into_parts()
                .0
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    for n in [10, 10_000] {
        let config = config::from_str(&config_with(n), &ProcessEnvironment)
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let router = Router::new(&config.routes).unwrap_or_else(|(_, e)| panic!("{e}"));
        let requests = requests(n);
        assert!(requests.iter().all(|r| router.route(r).is_some()));
        let mut next = 0;
        c.bench_function(&format!("route lookup: {n} routes"), |b| {
            b.iter(|| {
                next = (next + 1) % requests.len();
                std::hint::black_box(router.route(&requests[next]).map(|m| m.route))
            })
        });
    }
}

criterion_group!(benches, lookup);
criterion_main!(benches);
