//! The Prometheus text rendering of everything the admin API's `/metrics` shows, read from the
//! counters in [`crate::stats`]. Names follow `accord_<noun>_<unit>[_total]` with the labels
//! `route`, `backend`, `provider`, `class`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use accord_adapters::stats::{BackendStats, ERROR_KINDS, LatencyHistogram};
use accord_policies::Class;

use crate::control::runtime::Runtime;
use crate::stats::{Registry, RouteStats};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A series with one value per route or backend: name, type, help, and the counter to read.
type Series<S> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&S) -> &AtomicU64,
);

/// Renders the Prometheus text exposition of the live runtime's routes and backends.
pub fn render(runtime: &Runtime, registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let g = &registry.gateway;
    family(
        &mut out,
        "accord_connections_active",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        out,
        "accord_connections_active {}",
        g.connections_active.load(Relaxed)
    );
    family(
        &mut out,
        "accord_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    );
    let _ = writeln!(
        out,
        "accord_connections_accepted_total {}",
        g.connections_accepted.load(Relaxed)
    );
    family(
        &mut out,
        "accord_connections_rejected_total",
        "counter",
        "Client connections closed because limits.max_connections was reached.",
    );
    let _ = writeln!(
        out,
        "accord_connections_rejected_total {}",
        g.connections_rejected.load(Relaxed)
    );
    family(
        &mut out,
        "accord_unrouted_requests_total",
        "counter",
        "Requests that matched no route.",
    );
    let _ = writeln!(
        out,
        "accord_unrouted_requests_total {}",
        g.unrouted_requests.load(Relaxed)
    );
    family(
        &mut out,
        "accord_config_reloads_total",
        "counter",
        "Configuration reloads by result.",
    );
    let _ = writeln!(
        out,
        "accord_config_reloads_total{{result=\"ok\"}} {}",
        g.reloads_ok.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "accord_config_reloads_total{{result=\"failed\"}} {}",
        g.reloads_failed.load(Relaxed)
    );

    let routes: Vec<_> = runtime
        .routes()
        .iter()
        .map(|r| (format!("route=\"{}\"", r.id()), r.stats().clone()))
        .collect();
    family(
        &mut out,
        "accord_requests_total",
        "counter",
        "Finished requests by route and outcome class.",
    );
    for (labels, stats) in &routes {
        for class in Class::ALL {
            let value = stats.requests_by_class[class.index()].load(Relaxed);
            let _ = writeln!(
                out,
                "accord_requests_total{{{labels},class=\"{}\"}} {value}",
                class.as_str()
            );
        }
    }
    family(
        &mut out,
        "accord_responses_total",
        "counter",
        "Responses sent to clients by route and status class.",
    );
    for (labels, stats) in &routes {
        for (i, status) in STATUS_CLASSES.iter().enumerate() {
            let value = stats.requests_by_status[i].load(Relaxed);
            let _ = writeln!(
                out,
                "accord_responses_total{{{labels},status=\"{status}\"}} {value}"
            );
        }
    }
    family(
        &mut out,
        "accord_request_duration_seconds",
        "histogram",
        "Request duration, until the response body ended.",
    );
    for (labels, stats) in &routes {
        histogram(
            &mut out,
            "accord_request_duration_seconds",
            labels,
            &stats.duration,
        );
    }
    let route_series: [Series<RouteStats>; 5] = [
        (
            "accord_requests_active",
            "gauge",
            "Requests in flight by route.",
            |s| &s.active,
        ),
        (
            "accord_retries_total",
            "counter",
            "Tries beyond the first, by route.",
            |s| &s.retries,
        ),
        (
            "accord_retry_budget_exhausted_total",
            "counter",
            "Retries refused by the route's retry budget.",
            |s| &s.retry_budget_exhausted,
        ),
        (
            "accord_request_bytes_total",
            "counter",
            "Request body bytes received from clients.",
            |s| &s.bytes_in,
        ),
        (
            "accord_response_bytes_total",
            "counter",
            "Response body bytes sent to clients.",
            |s| &s.bytes_out,
        ),
    ];
    for (name, kind, help, field) in route_series {
        family(&mut out, name, kind, help);
        for (labels, stats) in &routes {
            let _ = writeln!(out, "{name}{{{labels}}} {}", field(stats).load(Relaxed));
        }
    }

    let backends: Vec<_> = runtime
        .backends()
        .iter()
        .map(|b| {
            (
                format!(
                    "backend=\"{}\",provider=\"{}\"",
                    b.id(),
                    b.provider().as_str()
                ),
                b.clone(),
            )
        })
        .collect();
    family(
        &mut out,
        "accord_upstream_responses_total",
        "counter",
        "Backend responses by status class.",
    );
    for (labels, b) in &backends {
        for (i, status) in STATUS_CLASSES.iter().enumerate() {
            let value = b.stats().responses_by_class[i].load(Relaxed);
            let _ = writeln!(
                out,
                "accord_upstream_responses_total{{{labels},status=\"{status}\"}} {value}"
            );
        }
    }
    family(
        &mut out,
        "accord_upstream_errors_total",
        "counter",
        "Failed tries by kind.",
    );
    for (labels, b) in &backends {
        for (i, kind) in ERROR_KINDS.iter().enumerate() {
            let value = b.stats().errors_by_kind[i].load(Relaxed);
            let _ = writeln!(
                out,
                "accord_upstream_errors_total{{{labels},kind=\"{}\"}} {value}",
                kind.as_str()
            );
        }
    }
    family(
        &mut out,
        "accord_upstream_try_duration_seconds",
        "histogram",
        "Time to a backend's response head, per try.",
    );
    for (labels, b) in &backends {
        histogram(
            &mut out,
            "accord_upstream_try_duration_seconds",
            labels,
            &b.stats().latency,
        );
    }
    family(
        &mut out,
        "accord_credential_token_requests_total",
        "counter",
        "Token requests an Entra ID credential made to its identity provider, by result.",
    );
    for (credential, ok, refused) in accord_adapters::azure::credential::token_request_counts() {
        for (result, value) in [("ok", ok), ("refused", refused)] {
            let _ = writeln!(
                out,
                "accord_credential_token_requests_total{{credential=\"{credential}\",result=\"{result}\"}} {value}"
            );
        }
    }
    let backend_series: [Series<BackendStats>; 5] = [
        (
            "accord_upstream_tries_total",
            "counter",
            "Tries sent to a backend.",
            |s| &s.tries,
        ),
        (
            "accord_upstream_tries_cancelled_total",
            "counter",
            "Tries abandoned in flight because the client went away (the upstream call is dropped).",
            |s| &s.cancelled,
        ),
        (
            "accord_upstream_requests_active",
            "gauge",
            "Tries in flight to a backend.",
            |s| &s.in_flight,
        ),
        (
            "accord_upstream_ejections_total",
            "counter",
            "Endpoints ejected by outlier detection.",
            |s| &s.ejections,
        ),
        (
            "accord_upstream_health_check_failures_total",
            "counter",
            "Failed active health checks.",
            |s| &s.health_check_failures,
        ),
    ];
    for (name, kind, help, field) in backend_series {
        family(&mut out, name, kind, help);
        for (labels, b) in &backends {
            let _ = writeln!(out, "{name}{{{labels}}} {}", field(b.stats()).load(Relaxed));
        }
    }
    family(
        &mut out,
        "accord_upstream_endpoints",
        "gauge",
        "Endpoints of a backend by state.",
    );
    for (labels, b) in &backends {
        let counts = b.endpoint_counts();
        let _ = writeln!(
            out,
            "accord_upstream_endpoints{{{labels},state=\"available\"}} {}",
            counts.available
        );
        let _ = writeln!(
            out,
            "accord_upstream_endpoints{{{labels},state=\"unavailable\"}} {}",
            counts.total - counts.available
        );
    }
    render_plugins(&mut out, runtime);
    out
}

/// Per plugin: calls, failures, bypasses, decisions, reclassifications and its own counters.
fn render_plugins(out: &mut String, runtime: &Runtime) {
    let plugins = runtime.plugins();
    if plugins.is_empty() {
        return;
    }
    type Counter = fn(&accord_policies::plugin::PluginStats) -> &AtomicU64;
    let series: [(&str, &str, Counter); 4] = [
        ("accord_plugin_calls_total", "Calls into a plugin.", |s| {
            &s.calls
        }),
        (
            "accord_plugin_failures_total",
            "Calls that trapped, ran out of time or memory, or returned an invalid output.",
            |s| &s.failures,
        ),
        (
            "accord_plugin_bypassed_total",
            "Requests decided by on_error while the plugin's breaker was open.",
            |s| &s.bypassed,
        ),
        (
            "accord_plugin_instances_created_total",
            "Plugin instances created.",
            |s| &s.instantiations,
        ),
    ];
    for (name, help, counter) in series {
        family(out, name, "counter", help);
        for p in plugins {
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\"}} {}",
                p.id,
                counter(p.plugin.stats()).load(Relaxed)
            );
        }
    }
    family(
        out,
        "accord_plugin_decisions_total",
        "counter",
        "Rejections and reroutes decided by a plugin.",
    );
    for p in plugins {
        let s = p.plugin.stats();
        let _ = writeln!(
            out,
            "accord_plugin_decisions_total{{plugin=\"{}\",decision=\"reject\"}} {}",
            p.id,
            s.rejections.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "accord_plugin_decisions_total{{plugin=\"{}\",decision=\"reroute\"}} {}",
            p.id,
            s.reroutes.load(Relaxed)
        );
    }
    family(
        out,
        "accord_plugin_reclassified_total",
        "counter",
        "Responses a plugin reclassified, by its reason.",
    );
    for p in plugins {
        for (reason, n) in p.plugin.reclassification_reasons() {
            let _ = writeln!(
                out,
                "accord_plugin_reclassified_total{{plugin=\"{}\",reason=\"{}\"}} {n}",
                p.id,
                label(&reason)
            );
        }
    }
    family(
        out,
        "accord_plugin_counter_total",
        "counter",
        "Counters a plugin keeps (telemetry.counter).",
    );
    for p in plugins {
        for (counter, n) in p.plugin.counters() {
            let _ = writeln!(
                out,
                "accord_plugin_counter_total{{plugin=\"{}\",name=\"{}\"}} {n}",
                p.id,
                label(&counter)
            );
        }
    }
    family(
        out,
        "accord_plugin_histogram",
        "histogram",
        "Values a plugin observes (telemetry.histogram), in the plugin's unit.",
    );
    for p in plugins {
        for (name, h) in p.plugin.histograms() {
            let labels = format!("plugin=\"{}\",name=\"{}\"", p.id, label(&name));
            let bounds = accord_policies::plugin::PluginHistogram::BOUNDS;
            for (bound, count) in bounds.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "accord_plugin_histogram_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "accord_plugin_histogram_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "accord_plugin_histogram_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "accord_plugin_histogram_count{{{labels}}} {}", h.count);
        }
    }
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    for (upper, count) in h.cumulative() {
        let le = upper.map_or_else(|| "+Inf".to_owned(), |u| u.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}
