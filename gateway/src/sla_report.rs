//! SLA reports as the gateway serves them: the JSON of `GET /sla` and `GET /sla/routes/{id}`,
//! and the SLA series of `/metrics` (Accord's own `accord_sla_*`, plus the recording-rule
//! series that Sloth's Grafana dashboards read).

use std::fmt::Write as _;

use accord_policies::sla::SlaEngine;
use accord_policies::sla::report::RouteReport;

use crate::gateway::SLA_EVALUATION_INTERVAL;

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
        "evaluation_interval_seconds": SLA_EVALUATION_INTERVAL.as_secs(),
        "routes": reports(engine),
    })
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
    family(
        out,
        "accord_sla_objective_ratio",
        "gauge",
        "The route's target for an SLI.",
    );
    for r in &reports {
        for i in &r.indicators {
            let _ = writeln!(
                out,
                "accord_sla_objective_ratio{{route=\"{}\",indicator=\"{}\"}} {}",
                r.route,
                indicator_name(i.indicator),
                i.target
            );
        }
    }
    family(
        out,
        "accord_sla_attainment_ratio",
        "gauge",
        "Good / valid events of an SLI over a window.",
    );
    for r in &reports {
        for i in &r.indicators {
            for w in &i.attainment_by_window {
                let _ = writeln!(
                    out,
                    "accord_sla_attainment_ratio{{route=\"{}\",indicator=\"{}\",window=\"{}\"}} {}",
                    r.route,
                    indicator_name(i.indicator),
                    w.window,
                    w.value
                );
            }
        }
    }
    family(
        out,
        "accord_sla_burn_rate",
        "gauge",
        "Error-budget burn rate of an SLI over a window (1 spends the budget over the SLO window).",
    );
    for r in &reports {
        for i in &r.indicators {
            for w in &i.burn_rates {
                let _ = writeln!(
                    out,
                    "accord_sla_burn_rate{{route=\"{}\",indicator=\"{}\",window=\"{}\"}} {}",
                    r.route,
                    indicator_name(i.indicator),
                    w.window,
                    w.value
                );
            }
        }
    }
    family(
        out,
        "accord_sla_error_budget_remaining_ratio",
        "gauge",
        "Share of the error budget left over the SLO window (negative when overspent).",
    );
    for r in &reports {
        for i in &r.indicators {
            let _ = writeln!(
                out,
                "accord_sla_error_budget_remaining_ratio{{route=\"{}\",indicator=\"{}\"}} {}",
                r.route,
                indicator_name(i.indicator),
                i.budget.remaining_ratio
            );
        }
    }
    family(
        out,
        "accord_sla_error_budget_remaining_events",
        "gauge",
        "Bad events still allowed over the SLO window.",
    );
    for r in &reports {
        for i in &r.indicators {
            let _ = writeln!(
                out,
                "accord_sla_error_budget_remaining_events{{route=\"{}\",indicator=\"{}\"}} {}",
                r.route,
                indicator_name(i.indicator),
                i.budget.remaining_events
            );
        }
    }
    family(
        out,
        "accord_sla_alert_firing",
        "gauge",
        "1 while a burn-rate alert tier fires.",
    );
    for r in &reports {
        for i in &r.indicators {
            for a in &i.alerts {
                let severity = match a.severity {
                    accord_policies::sla::Severity::Page => "page",
                    accord_policies::sla::Severity::Ticket => "ticket",
                };
                let _ = writeln!(
                    out,
                    "accord_sla_alert_firing{{route=\"{}\",indicator=\"{}\",severity=\"{severity}\",long=\"{}\",short=\"{}\"}} {}",
                    r.route,
                    indicator_name(i.indicator),
                    a.long,
                    a.short,
                    u8::from(a.firing)
                );
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
