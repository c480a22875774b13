//! `accord slo rules`: Prometheus recording and alerting rules for every SLO of a configuration,
//! computed from the counters Accord exports (`accord_sla_events_total`), with Sloth's series
//! names and labels so that Sloth's Grafana dashboards and alert routing read them unchanged.
//!
//! Per route and SLI (Sloth's `sloth_id` = `<route>-<sli>`), three groups:
//!
//! * `…-sli-recordings`: `slo:sli_error:ratio_rate<window>` = bad ÷ valid events over each
//!   window the report and the alert tiers use, from `rate()` of the counters, summed over
//!   replicas;
//! * `…-meta-recordings`: `slo:objective:ratio`, `slo:error_budget:ratio`,
//!   `slo:time_period:days`, `slo:current_burn_rate:ratio` (5m), `slo:period_burn_rate:ratio`,
//!   `slo:period_error_budget_remaining:ratio`, `sloth_slo_info`;
//! * `…-alerts`: one multi-window multi-burn-rate alert per severity (`page`, `ticket`), the
//!   same tiers the gateway evaluates inline (the SRE workbook's by default, scaled to the SLO
//!   window), firing while any of its tiers has both windows at or above the factor.
//!
//! A calendar-month objective is written as a rolling 30 days (Prometheus has no calendar
//! windows). Accord's own `slo:*` gauges carry the same names: set `admin.sloth_series: false`
//! when Prometheus computes them from these rules.

use std::fmt::Write as _;
use std::time::Duration;

use accord_policies::sla::objective::{Indicator, format_duration};
use accord_policies::sla::{Objective, Severity, SloWindow};

use crate::config::Config;

/// The report windows every SLI is recorded over (the alert tiers add theirs).
const WINDOWS: [Duration; 7] = [
    Duration::from_secs(300),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
    Duration::from_secs(21_600),
    Duration::from_secs(86_400),
    Duration::from_secs(259_200),
];

/// The rules file for every route of `config` that has an `slo`; an error when none has.
pub fn rules(config: &Config) -> Result<String, String> {
    let slos: Vec<_> = config
        .routes
        .iter()
        .filter_map(|r| r.slo.as_ref().map(|slo| (r.id.as_ref(), &slo.objective)))
        .collect();
    if slos.is_empty() {
        return Err("no route has an slo: there is nothing to write rules for".into());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Prometheus rules for Accord's SLOs, written by `accord slo rules` (Sloth-compatible series).\n# Check with: promtool check rules FILE\ngroups:"
    );
    for (route, objective) in slos {
        for (indicator, target) in objective.indicators() {
            write_slo(&mut out, route, objective, indicator, target);
        }
    }
    Ok(out)
}

/// The SLO window as Prometheus can compute it: rolling, 30 days for a calendar month.
fn period(objective: &Objective) -> Duration {
    match objective.window {
        SloWindow::Rolling(length) => length,
        SloWindow::CalendarMonth { .. } => Duration::from_secs(30 * 86_400),
    }
}

/// A ratio as its decimal (0.0144, not 0.014400000000000001).
fn decimal(value: f64) -> String {
    let rounded = (value * 1e12).round() / 1e12;
    rounded.to_string()
}

/// YAML single-quoted scalar.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn write_slo(
    out: &mut String,
    route: &str,
    objective: &Objective,
    indicator: Indicator,
    target: f64,
) {
    let sli = indicator.as_str();
    let id = format!("{route}-{sli}");
    let budget = 1.0 - target;
    let period = period(objective);
    let selector = format!("sloth_id=\"{id}\", sloth_service=\"{route}\", sloth_slo=\"{sli}\"");
    let labels = |out: &mut String, indent: &str| {
        let _ = writeln!(out, "{indent}labels:");
        let _ = writeln!(out, "{indent}  sloth_id: {}", quoted(&id));
        let _ = writeln!(out, "{indent}  sloth_service: {}", quoted(route));
        let _ = writeln!(out, "{indent}  sloth_slo: {}", quoted(sli));
    };

    // Every window the report, the period and the alert tiers need, shortest first.
    let mut windows: Vec<Duration> = WINDOWS.to_vec();
    windows.push(period);
    for tier in &objective.tiers {
        windows.push(tier.long);
        windows.push(tier.short);
    }
    windows.sort();
    windows.dedup();

    let _ = writeln!(out, "  - name: accord-{id}-sli-recordings\n    rules:");
    for window in &windows {
        let w = format_duration(*window);
        let events = format!("accord_sla_events_total{{route=\"{route}\", indicator=\"{sli}\"");
        let _ = writeln!(out, "      - record: slo:sli_error:ratio_rate{w}");
        let _ = writeln!(
            out,
            "        expr: {}",
            quoted(&format!(
                "(sum(rate({events}, outcome=\"bad\"}}[{w}])) / sum(rate({events}}}[{w}])))"
            ))
        );
        labels(out, "        ");
        let _ = writeln!(out, "          sloth_window: {}", quoted(&w));
    }

    let p = format_duration(period);
    let _ = writeln!(out, "  - name: accord-{id}-meta-recordings\n    rules:");
    let meta: [(&str, String); 6] = [
        (
            "slo:objective:ratio",
            format!("vector({})", decimal(target)),
        ),
        (
            "slo:error_budget:ratio",
            format!("vector({})", decimal(budget)),
        ),
        (
            "slo:time_period:days",
            format!("vector({})", period.as_secs() as f64 / 86_400.0),
        ),
        (
            "slo:current_burn_rate:ratio",
            format!(
                "slo:sli_error:ratio_rate5m{{{selector}}} / on(sloth_id, sloth_slo, sloth_service) group_left slo:error_budget:ratio{{{selector}}}"
            ),
        ),
        (
            "slo:period_burn_rate:ratio",
            format!(
                "slo:sli_error:ratio_rate{p}{{{selector}}} / on(sloth_id, sloth_slo, sloth_service) group_left slo:error_budget:ratio{{{selector}}}"
            ),
        ),
        (
            "slo:period_error_budget_remaining:ratio",
            format!("1 - slo:period_burn_rate:ratio{{{selector}}}"),
        ),
    ];
    for (record, expr) in meta {
        let _ = writeln!(out, "      - record: {record}");
        let _ = writeln!(out, "        expr: {}", quoted(&expr));
        labels(out, "        ");
    }
    let _ = writeln!(out, "      - record: sloth_slo_info");
    let _ = writeln!(out, "        expr: 'vector(1)'");
    labels(out, "        ");
    let objective_percent = (target * 100.0 * 1e6).round() / 1e6;
    let _ = writeln!(out, "          sloth_mode: 'accord-rules'");
    let _ = writeln!(out, "          sloth_objective: '{objective_percent}'");
    let _ = writeln!(out, "          sloth_spec: 'accord/v1'");

    let _ = writeln!(out, "  - name: accord-{id}-alerts\n    rules:");
    for severity in [Severity::Page, Severity::Ticket] {
        let tiers: Vec<String> = objective
            .tiers
            .iter()
            .filter(|t| t.severity == severity)
            .map(|t| {
                // The gateway compares with `>=` (and a tolerance for binary fractions).
                let threshold = decimal(t.burn_rate * budget);
                let side = |w: Duration| {
                    format!(
                        "max(slo:sli_error:ratio_rate{}{{{selector}}} >= {threshold}) without (sloth_window)",
                        format_duration(w)
                    )
                };
                format!("({} and {})", side(t.long), side(t.short))
            })
            .collect();
        if tiers.is_empty() {
            continue;
        }
        let (name, severity_name) = match severity {
            Severity::Page => ("AccordSLOPageBurnRate", "page"),
            Severity::Ticket => ("AccordSLOTicketBurnRate", "ticket"),
        };
        let _ = writeln!(out, "      - alert: {name}");
        let _ = writeln!(out, "        expr: {}", quoted(&tiers.join(" or ")));
        labels(out, "        ");
        let _ = writeln!(out, "          sloth_severity: '{severity_name}'");
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(
            out,
            "          summary: {}",
            quoted(&format!(
                "Route {route} is burning its {sli} error budget too fast ({severity_name})"
            ))
        );
        let _ = writeln!(
            out,
            "          title: {}",
            quoted(&format!(
                "({severity_name}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget burn rate is too fast."
            ))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(slo: &str) -> Config {
        crate::config::from_str(
            &format!(
                "listeners: [{{address: 127.0.0.1:0}}]\nbackends:\n  app: {{http: {{addresses: [\"127.0.0.1:1\"]}}}}\nroutes:\n  - id: orders\n    match: {{path: {{prefix: /}}}}\n    backends: [{{backend: app}}]\n{slo}"
            ),
            &crate::config::ProcessEnvironment,
        )
        .unwrap()
    }

    #[test]
    fn every_window_of_the_report_and_the_tiers_is_recorded_from_the_event_counters() {
        let text = rules(&config(
            "    slo: {availability: 99.9%, latency: {threshold: 300ms, target: 99%}}\n",
        ))
        .unwrap();
        for window in ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"] {
            assert!(
                text.contains(&format!("record: slo:sli_error:ratio_rate{window}\n")),
                "{window}"
            );
        }
        assert!(text.contains("expr: '(sum(rate(accord_sla_events_total{route=\"orders\", indicator=\"availability\", outcome=\"bad\"}[5m])) / sum(rate(accord_sla_events_total{route=\"orders\", indicator=\"availability\"}[5m])))'"), "{text}");
        assert!(text.contains("- name: accord-orders-latency-alerts"));
        // The default 30-day page tiers: 14.4x over 1h and 5m, 6x over 6h and 30m.
        assert!(text.contains("slo:sli_error:ratio_rate1h{sloth_id=\"orders-availability\", sloth_service=\"orders\", sloth_slo=\"availability\"} >= 0.0144"), "{text}");
        assert!(text.contains("sloth_severity: 'page'"));
        assert!(text.contains("sloth_severity: 'ticket'"));
    }

    #[test]
    fn a_configuration_without_objectives_has_no_rules() {
        assert!(
            rules(&config(""))
                .unwrap_err()
                .contains("no route has an slo")
        );
    }
}
