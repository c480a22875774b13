//! SLA reports as the gateway serves them: the JSON of `GET /sla` and `GET /sla/routes/{id}`,
//! and the SLA series of `/metrics` (Accord's own `accord_sla_*`, plus the recording-rule
//! series that Sloth's Grafana dashboards read).

use std::fmt::Write as _;

use accord_policies::sla::SlaEngine;
use accord_policies::sla::report::{IndicatorReport, RouteReport, WindowValue};

use accord_policies::sla::EVALUATION_INTERVAL;

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

/// The body of `GET /sla`.
pub fn document(engine: &SlaEngine) -> serde_json::Value {
    serde_json::json!({
        "generated_ms": engine.clock().now_ms(),
        "evaluation_interval_seconds": EVALUATION_INTERVAL.as_secs(),
        "routes": reports(engine),
    })
}

fn windows(list: &[WindowValue]) -> Vec<(String, f64)> {
    list.iter()
        .map(|w| (format!(",window=\"{}\"", w.window), w.value))
        .collect()
}

fn severity_name(severity: accord_policies::sla::Severity) -> &'static str {
    match severity {
        accord_policies::sla::Severity::Page => "page",
        accord_policies::sla::Severity::Ticket => "ticket",
    }
}

fn indicator_name(indicator: accord_policies::sla::objective::Indicator) -> &'static str {
    match indicator {
        accord_policies::sla::objective::Indicator::Availability => "availability",
        accord_policies::sla::objective::Indicator::Latency => "latency",
    }
}

/// Appends the SLA series to a Prometheus text exposition.
pub fn render_metrics(out: &mut String, engine: &SlaEngine) {
    let reports = reports(engine);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // Per route and SLI: the family, its help, and its samples (extra labels, value).
    type Samples = fn(&IndicatorReport) -> Vec<(String, f64)>;
    let per_indicator: [(&str, &str, Samples); 6] = [
        (
            "accord_sla_objective_ratio",
            "The route's target for an SLI.",
            |i| vec![(String::new(), i.target)],
        ),
        (
            "accord_sla_attainment_ratio",
            "Good / valid events of an SLI over a window.",
            |i| windows(&i.attainment_by_window),
        ),
        (
            "accord_sla_burn_rate",
            "Error-budget burn rate of an SLI over a window (1 spends the budget over the SLO window).",
            |i| windows(&i.burn_rates),
        ),
        (
            "accord_sla_error_budget_remaining_ratio",
            "Share of the error budget left over the SLO window (negative when overspent).",
            |i| vec![(String::new(), i.budget.remaining_ratio)],
        ),
        (
            "accord_sla_error_budget_remaining_events",
            "Bad events still allowed over the SLO window.",
            |i| vec![(String::new(), i.budget.remaining_events)],
        ),
        (
            "accord_sla_alert_firing",
            "1 while a burn-rate alert tier fires.",
            |i| {
                i.alerts
                    .iter()
                    .map(|a| {
                        let labels = format!(
                            ",severity=\"{}\",long=\"{}\",short=\"{}\"",
                            severity_name(a.severity),
                            a.long,
                            a.short
                        );
                        (labels, f64::from(u8::from(a.firing)))
                    })
                    .collect()
            },
        ),
    ];
    for (name, help, samples) in per_indicator {
        family(out, name, "gauge", help);
        for r in &reports {
            for i in &r.indicators {
                for (labels, value) in samples(i) {
                    let _ = writeln!(
                        out,
                        "{name}{{route=\"{}\",indicator=\"{}\"{labels}}} {value}",
                        r.route,
                        indicator_name(i.indicator)
                    );
                }
            }
        }
    }
    family(
        out,
        "accord_sla_backend_breaching",
        "gauge",
        "1 while a backend breaches its route's objective.",
    );
    for r in &reports {
        for b in &r.backends {
            let _ = writeln!(
                out,
                "accord_sla_backend_breaching{{route=\"{}\",backend=\"{}\"}} {}",
                r.route,
                b.backend,
                u8::from(b.state == "breaching")
            );
        }
    }
    family(
        out,
        "accord_sla_actions_total",
        "counter",
        "Requests acted on by SLA enforcement, by action and the reason for it.",
    );
    for r in &reports {
        for (action, reason, value) in [
            ("reroute", "backend_breach", r.actions.rerouted),
            ("shed", "page_alert", r.actions.shed),
            ("reject", "budget_exhausted", r.actions.rejected),
        ] {
            let _ = writeln!(
                out,
                "accord_sla_actions_total{{route=\"{}\",action=\"{action}\",reason=\"{reason}\"}} {value}",
                r.route
            );
        }
    }
    family(
        out,
        "accord_sla_latency_seconds",
        "gauge",
        "Latency percentiles over the last 5 minutes.",
    );
    for r in &reports {
        if let Some(p) = r.window("5m").and_then(|w| w.latency_ms.as_ref()) {
            for (q, ms) in [
                ("0.5", p.p50),
                ("0.9", p.p90),
                ("0.95", p.p95),
                ("0.99", p.p99),
                ("0.999", p.p999),
            ] {
                let _ = writeln!(
                    out,
                    "accord_sla_latency_seconds{{route=\"{}\",window=\"5m\",quantile=\"{q}\"}} {}",
                    r.route,
                    ms / 1000.0
                );
            }
        }
    }

    // Sloth's recording-rule series (names and labels as in Sloth's prometheus package), so its
    // standard Grafana SLO dashboards read Accord directly. One Sloth SLO per route and SLI:
    // sloth_service = route, sloth_slo = SLI, sloth_id = "<route>-<SLI>".
    let ids = |r: &RouteReport, i: &accord_policies::sla::report::IndicatorReport| {
        let slo = indicator_name(i.indicator);
        format!(
            "sloth_id=\"{}-{slo}\",sloth_service=\"{}\",sloth_slo=\"{slo}\"",
            r.route, r.route
        )
    };
    let mut sli_windows: Vec<String> = Vec::new();
    for r in &reports {
        for i in &r.indicators {
            for w in &i.attainment_by_window {
                if !sli_windows.contains(&w.window) {
                    sli_windows.push(w.window.clone());
                }
            }
        }
    }
    for window in &sli_windows {
        let name = format!("slo:sli_error:ratio_rate{window}");
        family(
            out,
            &name,
            "gauge",
            "Sloth-compatible: SLI error ratio over the window.",
        );
        for r in &reports {
            for i in &r.indicators {
                if let Some(w) = i.attainment_by_window.iter().find(|w| &w.window == window) {
                    let _ = writeln!(
                        out,
                        "{name}{{{},sloth_window=\"{window}\"}} {}",
                        ids(r, i),
                        1.0 - w.value
                    );
                }
            }
        }
    }
    let sloth_series: [(&str, &str); 6] = [
        (
            "slo:objective:ratio",
            "Sloth-compatible: the SLO's objective.",
        ),
        (
            "slo:error_budget:ratio",
            "Sloth-compatible: the error budget (1 - objective).",
        ),
        (
            "slo:time_period:days",
            "Sloth-compatible: the SLO window in days.",
        ),
        (
            "slo:current_burn_rate:ratio",
            "Sloth-compatible: burn rate over 5 minutes.",
        ),
        (
            "slo:period_burn_rate:ratio",
            "Sloth-compatible: burn rate over the SLO window.",
        ),
        (
            "slo:period_error_budget_remaining:ratio",
            "Sloth-compatible: share of the error budget left.",
        ),
    ];
    for (name, help) in sloth_series {
        family(out, name, "gauge", help);
        for r in &reports {
            for i in &r.indicators {
                let burn = |window: &str| {
                    i.burn_rates
                        .iter()
                        .find(|w| w.window == window)
                        .map_or(0.0, |w| w.value)
                };
                let value = match name {
                    "slo:objective:ratio" => i.target,
                    "slo:error_budget:ratio" => 1.0 - i.target,
                    "slo:time_period:days" => r.objective.window_seconds as f64 / 86_400.0,
                    "slo:current_burn_rate:ratio" => burn("5m"),
                    "slo:period_burn_rate:ratio" => burn(&r.objective.window),
                    _ => i.budget.remaining_ratio,
                };
                let _ = writeln!(out, "{name}{{{}}} {value}", ids(r, i));
            }
        }
    }
    family(
        out,
        "sloth_slo_info",
        "gauge",
        "Sloth-compatible: SLO metadata.",
    );
    for r in &reports {
        for i in &r.indicators {
            let _ = writeln!(
                out,
                "sloth_slo_info{{{},sloth_mode=\"accord\",sloth_objective=\"{}\",sloth_spec=\"accord/v1\",sloth_version=\"{}\"}} 1",
                ids(r, i),
                (i.target * 100.0 * 1e6).round() / 1e6,
                env!("CARGO_PKG_VERSION")
            );
        }
    }
}
