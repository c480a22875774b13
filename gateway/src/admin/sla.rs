//! SLA reports as the gateway serves them: the JSON of `GET /sla` and `GET /sla/routes/{id}`,
//! and the SLA series of `/metrics` (Accord's own `accord_sla_*`, plus the recording-rule
//! series that Sloth's Grafana dashboards read).

use accord_policies::sla::SlaEngine;
use accord_policies::sla::report::{IndicatorReport, RouteReport};

use accord_policies::sla::EVALUATION_INTERVAL;

use super::exposition::{Exposition, Kind};
use crate::cluster::ClusterStatus;

/// Every route's report, at the engine's current time.
pub fn reports(engine: &SlaEngine) -> Vec<RouteReport> {
    let now = engine.clock().minute();
    engine
        .routes()
        .iter()
        .map(|route| RouteReport::build(route, now, engine.events().list(Some(route.id()))))
        .collect()
}

/// One route's report.
pub fn report(engine: &SlaEngine, route: &str) -> Option<RouteReport> {
    let now = engine.clock().minute();
    let sla = engine.get(route)?;
    Some(RouteReport::build(
        &sla,
        now,
        engine.events().list(Some(route)),
    ))
}

/// The body of `GET /sla`: in cluster mode every figure is the cluster's, and `cluster` says
/// which replicas it covers and what this replica served of it.
pub fn document(engine: &SlaEngine, cluster: Option<&ClusterStatus>) -> serde_json::Value {
    let mut document = serde_json::json!({
        "generated_ms": engine.clock().now_ms(),
        "evaluation_interval_seconds": EVALUATION_INTERVAL.as_secs(),
        "routes": reports(engine),
    });
    if let Some(cluster) = cluster {
        let now = engine.clock().minute();
        let five_minutes = std::time::Duration::from_secs(300);
        let routes: serde_json::Map<String, serde_json::Value> = engine
            .routes()
            .iter()
            .map(|route| {
                let local = route.meter().local_window_counts(now, five_minutes).total();
                let all = route.meter().window_counts(now, five_minutes).total();
                (
                    route.id().to_string(),
                    serde_json::json!({ "local_requests_5m": local, "cluster_requests_5m": all }),
                )
            })
            .collect();
        let mut report = serde_json::to_value(cluster.report()).unwrap_or_default();
        report["routes"] = serde_json::Value::Object(routes);
        document["cluster"] = report;
    }
    document
}

fn severity_name(severity: accord_policies::sla::Severity) -> &'static str {
    match severity {
        accord_policies::sla::Severity::Page => "page",
        accord_policies::sla::Severity::Ticket => "ticket",
    }
}

/// One sample's extra labels (after `route` and `indicator`) and value.
type Sample = (Vec<(&'static str, String)>, f64);

/// Appends the SLA series to a Prometheus text exposition: Accord's `accord_sla_*`, then the
/// series Sloth's recording rules produce.
pub fn render_metrics(page: &mut Exposition, engine: &SlaEngine, sloth: bool) {
    let reports = reports(engine);
    event_counters(page, engine);
    accord_series(page, &reports);
    if sloth {
        sloth_series(page, &reports);
    }
}

/// `accord_sla_events_total{route, indicator, outcome}`: this replica's valid events of each
/// SLI since it started, good or bad, as the SLA engine classifies them — the counters that
/// `accord slo rules` computes error ratios from in Prometheus (`rate()` over any window; sum
/// over replicas).
fn event_counters(page: &mut Exposition, engine: &SlaEngine) {
    let mut family = page.family(
        "accord_sla_events_total",
        Kind::Counter,
        "Valid events of an SLI since the gateway started, by outcome (good or bad).",
    );
    for route in engine.routes() {
        let totals = route.meter().totals();
        for (indicator, _) in route.objective().indicators() {
            let events = route.objective().events(indicator, &totals);
            let name = indicator.as_str();
            family.sample(
                &[
                    ("route", route.id()),
                    ("indicator", name),
                    ("outcome", "good"),
                ],
                events.good,
            );
            family.sample(
                &[
                    ("route", route.id()),
                    ("indicator", name),
                    ("outcome", "bad"),
                ],
                events.bad(),
            );
        }
    }
}

fn accord_series(page: &mut Exposition, reports: &[RouteReport]) {
    // Per route and SLI: the family, its help, and its samples.
    type Samples = fn(&IndicatorReport) -> Vec<Sample>;
    let per_indicator: [(&str, &str, Samples); 6] = [
        (
            "accord_sla_objective_ratio",
            "The route's target for an SLI.",
            |i| vec![(Vec::new(), i.target)],
        ),
        (
            "accord_sla_attainment_ratio",
            "Good / valid events of an SLI over a window.",
            |i| {
                i.attainment_by_window
                    .iter()
                    .map(|w| (vec![("window", w.window.clone())], w.value))
                    .collect()
            },
        ),
        (
            "accord_sla_burn_rate",
            "Error-budget burn rate of an SLI over a window (1 spends the budget over the SLO window).",
            |i| {
                i.burn_rates
                    .iter()
                    .map(|w| (vec![("window", w.window.clone())], w.value))
                    .collect()
            },
        ),
        (
            "accord_sla_error_budget_remaining_ratio",
            "Share of the error budget left over the SLO window (negative when overspent).",
            |i| vec![(Vec::new(), i.budget.remaining_ratio)],
        ),
        (
            "accord_sla_error_budget_remaining_events",
            "Bad events still allowed over the SLO window.",
            |i| vec![(Vec::new(), i.budget.remaining_events)],
        ),
        (
            "accord_sla_alert_firing",
            "1 while a burn-rate alert tier fires.",
            |i| {
                i.alerts
                    .iter()
                    .map(|a| {
                        let labels = vec![
                            ("severity", severity_name(a.severity).to_owned()),
                            ("long", a.long.clone()),
                            ("short", a.short.clone()),
                        ];
                        (labels, f64::from(u8::from(a.firing)))
                    })
                    .collect()
            },
        ),
    ];
    for (name, help, samples) in per_indicator {
        let mut family = page.family(name, Kind::Gauge, help);
        for r in reports {
            for i in &r.indicators {
                for (extra, value) in samples(i) {
                    let mut labels =
                        vec![("route", &*r.route), ("indicator", i.indicator.as_str())];
                    labels.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
                    family.sample(&labels, value);
                }
            }
        }
    }
    let mut family = page.family(
        "accord_sla_backend_breaching",
        Kind::Gauge,
        "1 while a backend breaches its route's objective.",
    );
    for r in reports {
        for b in &r.backends {
            family.sample(
                &[("route", &r.route), ("backend", &b.backend)],
                u8::from(b.state == "breaching"),
            );
        }
    }
    let mut family = page.family(
        "accord_sla_actions_total",
        Kind::Counter,
        "Requests acted on by SLA enforcement, by action and the reason for it.",
    );
    for r in reports {
        for (action, reason, value) in [
            ("reroute", "backend_breach", r.actions.rerouted),
            ("shed", "page_alert", r.actions.shed),
            ("reject", "budget_exhausted", r.actions.rejected),
        ] {
            family.sample(
                &[("route", &r.route), ("action", action), ("reason", reason)],
                value,
            );
        }
    }
    let mut family = page.family(
        "accord_sla_latency_seconds",
        Kind::Gauge,
        "Latency percentiles over the last 5 minutes.",
    );
    for r in reports {
        if let Some(p) = r.window("5m").and_then(|w| w.latency_ms.as_ref()) {
            for (q, ms) in [
                ("0.5", p.p50),
                ("0.9", p.p90),
                ("0.95", p.p95),
                ("0.99", p.p99),
                ("0.999", p.p999),
            ] {
                family.sample(
                    &[("route", &r.route), ("window", "5m"), ("quantile", q)],
                    ms / 1000.0,
                );
            }
        }
    }
}

/// Sloth's recording-rule series (names and labels as in Sloth's prometheus package), so its
/// standard Grafana SLO dashboards read Accord directly. One Sloth SLO per route and SLI:
/// `sloth_service` = route, `sloth_slo` = SLI, `sloth_id` = `<route>-<SLI>`.
fn sloth_series(page: &mut Exposition, reports: &[RouteReport]) {
    let slos: Vec<(String, &RouteReport, &IndicatorReport)> = reports
        .iter()
        .flat_map(|r| {
            r.indicators
                .iter()
                .map(move |i| (format!("{}-{}", r.route, i.indicator.as_str()), r, i))
        })
        .collect();
    let ids =
        |id: &'_ str, r: &'_ RouteReport, i: &IndicatorReport| -> [(&'static str, String); 3] {
            [
                ("sloth_id", id.to_owned()),
                ("sloth_service", r.route.to_string()),
                ("sloth_slo", i.indicator.as_str().to_owned()),
            ]
        };
    let mut windows: Vec<&str> = Vec::new();
    for (_, _, i) in &slos {
        for w in &i.attainment_by_window {
            if !windows.contains(&w.window.as_str()) {
                windows.push(&w.window);
            }
        }
    }
    for window in windows {
        let name = format!("slo:sli_error:ratio_rate{window}");
        let mut family = page.family(
            &name,
            Kind::Gauge,
            "Sloth-compatible: SLI error ratio over the window.",
        );
        for (id, r, i) in &slos {
            if let Some(w) = i.attainment_by_window.iter().find(|w| w.window == window) {
                let ids = ids(id, r, i);
                let mut labels: Vec<(&str, &str)> =
                    ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
                labels.push(("sloth_window", window));
                family.sample(&labels, 1.0 - w.value);
            }
        }
    }
    let burn = |i: &IndicatorReport, window: &str| {
        i.burn_rates
            .iter()
            .find(|w| w.window == window)
            .map_or(0.0, |w| w.value)
    };
    type Value = fn(&RouteReport, &IndicatorReport, &dyn Fn(&IndicatorReport, &str) -> f64) -> f64;
    let series: [(&str, &str, Value); 6] = [
        (
            "slo:objective:ratio",
            "Sloth-compatible: the SLO's objective.",
            |_, i, _| i.target,
        ),
        (
            "slo:error_budget:ratio",
            "Sloth-compatible: the error budget (1 - objective).",
            |_, i, _| 1.0 - i.target,
        ),
        (
            "slo:time_period:days",
            "Sloth-compatible: the SLO window in days.",
            |r, _, _| r.objective.window_seconds as f64 / 86_400.0,
        ),
        (
            "slo:current_burn_rate:ratio",
            "Sloth-compatible: burn rate over 5 minutes.",
            |_, i, burn| burn(i, "5m"),
        ),
        (
            "slo:period_burn_rate:ratio",
            "Sloth-compatible: burn rate over the SLO window.",
            |r, i, burn| burn(i, &r.objective.window),
        ),
        (
            "slo:period_error_budget_remaining:ratio",
            "Sloth-compatible: share of the error budget left.",
            |_, i, _| i.budget.remaining_ratio,
        ),
    ];
    for (name, help, value) in series {
        let mut family = page.family(name, Kind::Gauge, help);
        for (id, r, i) in &slos {
            let ids = ids(id, r, i);
            let labels: Vec<(&str, &str)> = ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
            family.sample(&labels, value(r, i, &burn));
        }
    }
    let mut family = page.family(
        "sloth_slo_info",
        Kind::Gauge,
        "Sloth-compatible: SLO metadata.",
    );
    for (id, r, i) in &slos {
        let ids = ids(id, r, i);
        let objective = ((i.target * 100.0 * 1e6).round() / 1e6).to_string();
        let mut labels: Vec<(&str, &str)> = ids.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels.extend([
            ("sloth_mode", "accord"),
            ("sloth_objective", objective.as_str()),
            ("sloth_spec", "accord/v1"),
            ("sloth_version", env!("CARGO_PKG_VERSION")),
        ]);
        family.sample(&labels, 1);
    }
}
