//! The Prometheus text rendering of everything the admin API's `/metrics` shows, read from the
//! counters in [`crate::stats`], the backends' and the plugins' own. Names follow
//! `accord_<noun>_<unit>[_total]` with the labels `route`, `backend`, `provider`, `class`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use accord_adapters::Backend;
use accord_adapters::stats::{BackendStats, ERROR_KINDS, LatencyHistogram};
use accord_policies::Class;
use accord_policies::plugin::{PluginHistogram, PluginStats};

use super::exposition::{Exposition, Family, Kind};
use crate::cluster::ClusterStatus;
use crate::control::generation::{Generation, LoadedPlugin};
use crate::stats::{Registry, RouteStats};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A family with one sample per route, backend or plugin: name, type, help, the counter.
type Series<S> = (&'static str, Kind, &'static str, fn(&S) -> &AtomicU64);

/// Writes the live generation's gateway, route, backend, credential and plugin families.
pub fn render(page: &mut Exposition, generation: &Generation, registry: &Registry) {
    gateway(page, registry);
    routes(page, generation);
    backends(page, generation.backends());
    credentials(page);
    plugins(page, generation.plugins());
}

/// The trace exporter's series.
pub fn render_traces(page: &mut Exposition, stats: &crate::traces::TraceStats) {
    page.family(
        "accord_traces_kept_total",
        Kind::Counter,
        "Requests whose trace was kept (always-keep classes, slow, the client's sampled flag, or the ratio).",
    )
    .sample(&[], stats.kept.load(Relaxed));
    page.family(
        "accord_traces_spans_total",
        Kind::Counter,
        "Spans by result: exported to the collector, or dropped (queue full, collector refused).",
    )
    .sample(&[("result", "exported")], stats.exported.load(Relaxed))
    .sample(&[("result", "dropped")], stats.dropped.load(Relaxed));
}

/// The notifier's series: webhook deliveries by result, the outbox, Alertmanager sends.
pub fn render_notifications(page: &mut Exposition, stats: &crate::notify::NotifyStats) {
    page.family(
        "accord_notifications_total",
        Kind::Counter,
        "Notification attempts by receiver type and result (a failed webhook attempt is retried; dropped: given up after max_age).",
    )
    .sample(
        &[("receiver", "webhook"), ("result", "delivered")],
        stats.delivered.load(Relaxed),
    )
    .sample(
        &[("receiver", "webhook"), ("result", "failed")],
        stats.failed_attempts.load(Relaxed),
    )
    .sample(
        &[("receiver", "webhook"), ("result", "dropped")],
        stats.dropped.load(Relaxed),
    )
    .sample(
        &[("receiver", "alertmanager"), ("result", "delivered")],
        stats.alertmanager_sent.load(Relaxed),
    )
    .sample(
        &[("receiver", "alertmanager"), ("result", "failed")],
        stats.alertmanager_failed.load(Relaxed),
    );
    page.family(
        "accord_notifications_pending",
        Kind::Gauge,
        "Webhook deliveries waiting in the outbox.",
    )
    .sample(&[], stats.pending.load(Relaxed));
}

/// Cluster mode's own series. Every `accord_*` counter stays this replica's (sum them over
/// replicas); the SLA series (`accord_sla_*`, `slo:*`) are the cluster's, the same on every
/// replica (take `max()` over replicas, never `sum()`).
pub fn render_cluster(page: &mut Exposition, cluster: &ClusterStatus) {
    let labels = [
        ("cluster", cluster.name.as_str()),
        ("replica", cluster.replica.as_str()),
    ];
    page.family(
        "accord_cluster_info",
        Kind::Gauge,
        "1 per replica in cluster mode: its cluster and replica names. SLA series are cluster-wide: aggregate them with max(), not sum().",
    )
    .sample(&labels, 1);
    page.family(
        "accord_cluster_redis_up",
        Kind::Gauge,
        "1 when the last sync reached Redis, 0 while degraded (enforcing on this replica's view).",
    )
    .sample(&labels, u8::from(cluster.is_ok()));
    page.family(
        "accord_cluster_syncs_total",
        Kind::Counter,
        "Syncs with the cluster by result.",
    )
    .sample(
        &[labels[0], labels[1], ("result", "ok")],
        cluster.syncs_ok.load(Relaxed),
    )
    .sample(
        &[labels[0], labels[1], ("result", "failed")],
        cluster.syncs_failed.load(Relaxed),
    );
    page.family(
        "accord_cluster_sync_seconds_total",
        Kind::Counter,
        "Time spent syncing with the cluster.",
    )
    .sample(&labels, cluster.sync_micros.load(Relaxed) as f64 / 1e6);
    page.family(
        "accord_cluster_backfilled_minutes_total",
        Kind::Counter,
        "Minutes of rollups written late, after Redis was unreachable.",
    )
    .sample(&labels, cluster.backfilled_minutes.load(Relaxed));
    page.family(
        "accord_cluster_written_bytes_total",
        Kind::Counter,
        "Bytes of rollups written to Redis.",
    )
    .sample(&labels, cluster.bytes_written.load(Relaxed));
    let report = cluster.report();
    page.family(
        "accord_cluster_replicas",
        Kind::Gauge,
        "Replicas in the cluster's registry by status (ok, stale).",
    )
    .sample(
        &[labels[0], labels[1], ("status", "ok")],
        report.replicas.iter().filter(|r| r.status == "ok").count(),
    )
    .sample(
        &[labels[0], labels[1], ("status", "stale")],
        report
            .replicas
            .iter()
            .filter(|r| r.status == "stale")
            .count(),
    );
}

fn gateway(page: &mut Exposition, registry: &Registry) {
    let g = &registry.gateway;
    let single = [
        (
            "accord_connections_active",
            Kind::Gauge,
            "Client connections open now.",
            &g.connections_active,
        ),
        (
            "accord_connections_accepted_total",
            Kind::Counter,
            "Client connections accepted.",
            &g.connections_accepted,
        ),
        (
            "accord_connections_rejected_total",
            Kind::Counter,
            "Client connections closed because limits.max_connections was reached.",
            &g.connections_rejected,
        ),
        (
            "accord_unrouted_requests_total",
            Kind::Counter,
            "Requests that matched no route.",
            &g.unrouted_requests,
        ),
    ];
    for (name, kind, help, counter) in single {
        page.family(name, kind, help)
            .sample(&[], counter.load(Relaxed));
    }
    page.family(
        "accord_config_reloads_total",
        Kind::Counter,
        "Configuration reloads by result.",
    )
    .sample(&[("result", "ok")], g.reloads_ok.load(Relaxed))
    .sample(&[("result", "failed")], g.reloads_failed.load(Relaxed));
}

fn routes(page: &mut Exposition, generation: &Generation) {
    let routes: Vec<(&str, &RouteStats)> = generation
        .routes()
        .iter()
        .map(|r| (&**r.id(), &**r.stats()))
        .collect();
    let mut family = page.family(
        "accord_requests_total",
        Kind::Counter,
        "Finished requests by route and outcome class.",
    );
    for (route, stats) in &routes {
        for class in Class::ALL {
            let value = stats.requests_by_class[class.index()].load(Relaxed);
            family.sample(&[("route", route), ("class", class.as_str())], value);
        }
    }
    let mut family = page.family(
        "accord_responses_total",
        Kind::Counter,
        "Responses sent to clients by route and status class.",
    );
    for (route, stats) in &routes {
        for (status, count) in STATUS_CLASSES.iter().zip(&stats.requests_by_status) {
            family.sample(&[("route", route), ("status", status)], count.load(Relaxed));
        }
    }
    let mut family = page.family(
        "accord_request_duration_seconds",
        Kind::Histogram,
        "Request duration, until the response body ended.",
    );
    for (route, stats) in &routes {
        let buckets = stats.duration.cumulative();
        let bounds: Vec<Option<f64>> = buckets.iter().map(|(b, _)| *b).collect();
        let exemplars = stats.exemplars.per_bucket(&bounds);
        family.histogram_with_exemplars(
            &[("route", route)],
            buckets,
            &exemplars,
            stats.duration.sum_seconds(),
            stats.duration.count(),
        );
    }
    let series: [Series<RouteStats>; 5] = [
        (
            "accord_requests_active",
            Kind::Gauge,
            "Requests in flight by route.",
            |s| &s.active,
        ),
        (
            "accord_retries_total",
            Kind::Counter,
            "Tries beyond the first, by route.",
            |s| &s.retries,
        ),
        (
            "accord_retry_budget_exhausted_total",
            Kind::Counter,
            "Retries refused by the route's retry budget.",
            |s| &s.retry_budget_exhausted,
        ),
        (
            "accord_request_bytes_total",
            Kind::Counter,
            "Request body bytes received from clients.",
            |s| &s.bytes_in,
        ),
        (
            "accord_response_bytes_total",
            Kind::Counter,
            "Response body bytes sent to clients.",
            |s| &s.bytes_out,
        ),
    ];
    for (name, kind, help, counter) in series {
        let mut family = page.family(name, kind, help);
        for (route, stats) in &routes {
            family.sample(&[("route", route)], counter(stats).load(Relaxed));
        }
    }
}

fn backends(page: &mut Exposition, backends: &[std::sync::Arc<Backend>]) {
    let labelled: Vec<([(&str, &str); 2], &Backend)> = backends
        .iter()
        .map(|b| {
            (
                [("backend", &**b.id()), ("provider", b.provider().as_str())],
                &**b,
            )
        })
        .collect();
    let mut family = page.family(
        "accord_upstream_responses_total",
        Kind::Counter,
        "Backend responses by status class.",
    );
    for ([backend, provider], b) in &labelled {
        for (status, count) in STATUS_CLASSES.iter().zip(&b.stats().responses_by_class) {
            family.sample(
                &[*backend, *provider, ("status", status)],
                count.load(Relaxed),
            );
        }
    }
    let mut family = page.family(
        "accord_upstream_errors_total",
        Kind::Counter,
        "Failed tries by kind.",
    );
    for ([backend, provider], b) in &labelled {
        for (kind, count) in ERROR_KINDS.iter().zip(&b.stats().errors_by_kind) {
            family.sample(
                &[*backend, *provider, ("kind", kind.as_str())],
                count.load(Relaxed),
            );
        }
    }
    let mut family = page.family(
        "accord_upstream_try_duration_seconds",
        Kind::Histogram,
        "Time to a backend's response head, per try.",
    );
    for (labels, b) in &labelled {
        latency(&mut family, labels, &b.stats().latency);
    }
    let series: [Series<BackendStats>; 5] = [
        (
            "accord_upstream_tries_total",
            Kind::Counter,
            "Tries sent to a backend.",
            |s| &s.tries,
        ),
        (
            "accord_upstream_tries_cancelled_total",
            Kind::Counter,
            "Tries abandoned in flight because the client went away (the upstream call is dropped).",
            |s| &s.cancelled,
        ),
        (
            "accord_upstream_requests_active",
            Kind::Gauge,
            "Tries in flight to a backend.",
            |s| &s.in_flight,
        ),
        (
            "accord_upstream_ejections_total",
            Kind::Counter,
            "Endpoints ejected by outlier detection.",
            |s| &s.ejections,
        ),
        (
            "accord_upstream_health_check_failures_total",
            Kind::Counter,
            "Failed active health checks.",
            |s| &s.health_check_failures,
        ),
    ];
    for (name, kind, help, counter) in series {
        let mut family = page.family(name, kind, help);
        for (labels, b) in &labelled {
            family.sample(labels, counter(b.stats()).load(Relaxed));
        }
    }
    let mut family = page.family(
        "accord_upstream_endpoints",
        Kind::Gauge,
        "Endpoints of a backend by state.",
    );
    for ([backend, provider], b) in &labelled {
        let counts = b.endpoint_counts();
        family
            .sample(
                &[*backend, *provider, ("state", "available")],
                counts.available,
            )
            .sample(
                &[*backend, *provider, ("state", "unavailable")],
                counts.total - counts.available,
            );
    }
}

fn credentials(page: &mut Exposition) {
    let mut family = page.family(
        "accord_credential_token_requests_total",
        Kind::Counter,
        "Token requests an Entra ID credential made to its identity provider, by result.",
    );
    for (credential, ok, refused) in accord_adapters::azure::credential::token_request_counts() {
        family
            .sample(&[("credential", &credential), ("result", "ok")], ok)
            .sample(
                &[("credential", &credential), ("result", "refused")],
                refused,
            );
    }
}

/// Per plugin: calls, failures, bypasses, decisions, reclassifications and its own counters.
fn plugins(page: &mut Exposition, plugins: &[LoadedPlugin]) {
    if plugins.is_empty() {
        return;
    }
    let series: [Series<PluginStats>; 4] = [
        (
            "accord_plugin_calls_total",
            Kind::Counter,
            "Calls into a plugin.",
            |s| &s.calls,
        ),
        (
            "accord_plugin_failures_total",
            Kind::Counter,
            "Calls that trapped, ran out of time or memory, or returned an invalid output.",
            |s| &s.failures,
        ),
        (
            "accord_plugin_bypassed_total",
            Kind::Counter,
            "Requests decided by on_error while the plugin's breaker was open.",
            |s| &s.bypassed,
        ),
        (
            "accord_plugin_instances_created_total",
            Kind::Counter,
            "Plugin instances created.",
            |s| &s.instantiations,
        ),
    ];
    for (name, kind, help, counter) in series {
        let mut family = page.family(name, kind, help);
        for p in plugins {
            family.sample(
                &[("plugin", &p.id)],
                counter(p.plugin.stats()).load(Relaxed),
            );
        }
    }
    let mut family = page.family(
        "accord_plugin_call_duration_seconds",
        Kind::Histogram,
        "How long a plugin's calls took, by hook (on_request, on_response); the load-time canary call is not counted.",
    );
    for p in plugins {
        let s = p.plugin.stats();
        for (hook, times) in [
            ("on_request", &s.on_request_time),
            ("on_response", &s.on_response_time),
        ] {
            family.histogram(
                &[("plugin", &p.id), ("hook", hook)],
                times.cumulative(),
                times.sum_seconds(),
                times.count(),
            );
        }
    }
    let mut family = page.family(
        "accord_plugin_decisions_total",
        Kind::Counter,
        "Rejections and reroutes decided by a plugin.",
    );
    for p in plugins {
        let s = p.plugin.stats();
        family
            .sample(
                &[("plugin", &p.id), ("decision", "reject")],
                s.rejections.load(Relaxed),
            )
            .sample(
                &[("plugin", &p.id), ("decision", "reroute")],
                s.reroutes.load(Relaxed),
            );
    }
    let mut family = page.family(
        "accord_plugin_reclassified_total",
        Kind::Counter,
        "Responses a plugin reclassified, by its reason.",
    );
    for p in plugins {
        for (reason, n) in p.plugin.reclassification_reasons() {
            family.sample(&[("plugin", &p.id), ("reason", &reason)], n);
        }
    }
    let mut family = page.family(
        "accord_plugin_counter_total",
        Kind::Counter,
        "Counters a plugin keeps (telemetry.counter).",
    );
    for p in plugins {
        for (counter, n) in p.plugin.counters() {
            family.sample(&[("plugin", &p.id), ("name", &counter)], n);
        }
    }
    let mut family = page.family(
        "accord_plugin_histogram",
        Kind::Histogram,
        "Values a plugin observes (telemetry.histogram), in the plugin's unit.",
    );
    for p in plugins {
        for (name, h) in p.plugin.histograms() {
            // Each bucket already counts what is at or below its bound.
            let buckets = PluginHistogram::BOUNDS
                .iter()
                .zip(h.buckets)
                .map(|(bound, count)| (Some(*bound), count))
                .chain([(None, h.count)]);
            family.histogram(
                &[("plugin", &p.id), ("name", &name)],
                buckets,
                h.sum,
                h.count,
            );
        }
    }
}

fn latency(family: &mut Family<'_>, labels: &[(&str, &str)], h: &LatencyHistogram) {
    family.histogram(labels, h.cumulative(), h.sum_seconds(), h.count());
}
