//! The release gate: whether a route can take a deployment now, as the SRE workbook's error
//! budget policy has it. A pipeline asks before it ships (`GET /sla/routes/{id}/gate`,
//! `accord gate`) and is refused, with every reason, while:
//!
//! * any SLI's error budget left is below the floor it asks for (`min_budget`);
//! * a page-severity burn-rate alert is firing;
//! * a canary release is in progress (progressing or paused) on the route;
//! * a canary of the route was rolled back (by a breach or an operator) within the last hour.

use serde::Serialize;

use super::canary::Phase;
use super::clock::UnixMillis;
use super::engine::{EventKind, RouteSla};
use super::objective::Severity;

/// How long a rolled-back canary keeps the gate closed.
pub const ROLLBACK_HOLD_MS: i64 = 3_600_000;

/// The gate's answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateVerdict {
    /// Whether a release may go ahead.
    pub allow: bool,
    /// The route.
    pub route: String,
    /// The floor asked for, as a ratio of the budget.
    pub min_budget: f64,
    /// The least budget left among the route's SLIs (as of the last evaluation).
    pub budget_remaining: f64,
    /// Why not, one sentence each; empty when allowed.
    pub reasons: Vec<String>,
    /// When it was decided (ms since the epoch).
    pub at_ms: UnixMillis,
}

/// Decides the gate for `route` with a budget floor of `min_budget` (0 to 1).
pub fn gate(route: &RouteSla, min_budget: f64) -> GateVerdict {
    let now_ms = route.clock().now_ms();
    let view = route.view();
    let mut reasons = Vec::new();
    let mut least = f64::INFINITY;
    for indicator in &view.indicators {
        least = least.min(indicator.budget_remaining);
        if indicator.budget_remaining < min_budget {
            reasons.push(format!(
                "the {} error budget has {:.1}% left, below the {:.1}% floor",
                indicator.indicator.as_str(),
                indicator.budget_remaining * 100.0,
                min_budget * 100.0
            ));
        }
    }
    if route.is_paging() {
        let events = route.events().list(Some(route.id()));
        let firing: Vec<String> = events
            .iter()
            .filter(|e| {
                e.kind == EventKind::BurnRateAlert
                    && e.severity == Some(Severity::Page)
                    && e.is_open()
            })
            .map(|e| {
                format!(
                    "{} burning {:.1}x over {}",
                    e.trigger.indicator.as_str(),
                    e.trigger.measured,
                    super::objective::format_duration(std::time::Duration::from_secs(
                        e.trigger.window_seconds
                    ))
                )
            })
            .collect();
        reasons.push(if firing.is_empty() {
            "a page alert is firing".to_owned()
        } else {
            format!("a page alert is firing ({})", firing.join("; "))
        });
    }
    if let Some(canary) = route.canary() {
        let report = canary.report();
        match report.phase {
            Phase::Progressing | Phase::Paused => reasons.push(format!(
                "canary {} is in progress ({}) at step {} of {}, {:.0}% of the traffic",
                report.backend,
                super::canary::phase_name(report.phase),
                report.step + 1,
                report.steps.len(),
                report.share * 100.0
            )),
            Phase::RolledBack | Phase::Promoted => {}
        }
        if let Some(rollback) = report.timeline.iter().rev().find(|t| {
            (t.what == "rolled_back" || t.what == "aborted") && now_ms - t.at_ms < ROLLBACK_HOLD_MS
        }) {
            let minutes = (now_ms - rollback.at_ms) / 60_000;
            let why = rollback
                .comparisons
                .iter()
                .find(|c| c.verdict == super::canary::Verdict::Breach)
                .map(|c| {
                    format!(
                        ": {} {:.2}% bad against {:.2}%",
                        c.indicator.as_str(),
                        c.canary_bad_ratio * 100.0,
                        c.limit * 100.0
                    )
                })
                .unwrap_or_else(|| format!(" by the {}", rollback.by));
            reasons.push(format!(
                "canary {} was rolled back {minutes} min ago{why}",
                report.backend
            ));
        }
    }
    GateVerdict {
        allow: reasons.is_empty(),
        route: route.id().to_string(),
        min_budget,
        budget_remaining: if least.is_finite() { least } else { 1.0 },
        reasons,
        at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::Class;
    use crate::sla::canary::{CanarySpec, Command, Compare, OnBreach};
    use crate::sla::{Clock, Enforcement, Objective, SlaEngine};

    fn route() -> (SlaEngine, Arc<RouteSla>) {
        let engine = SlaEngine::new(Clock::starting_at(1_767_225_600_000));
        let route = engine.route(
            &Arc::from("orders"),
            Objective::availability(0.99, Duration::from_secs(3600)),
            Enforcement::default(),
            &[Arc::from("v1"), Arc::from("v2")],
        );
        (engine, route)
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_route_lets_a_release_through() {
        let (engine, route) = route();
        for _ in 0..100 {
            route.record(Class::Good, Duration::from_millis(5), false);
        }
        engine.tick();
        let verdict = gate(&route, 0.25);
        assert!(verdict.allow, "{:?}", verdict.reasons);
        assert_eq!(verdict.budget_remaining, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_low_budget_a_page_and_a_canary_each_close_the_gate_with_their_reason() {
        let (engine, route) = route();
        // 20% bad against a 1% allowance: the budget is overspent, and 20x burn pages.
        for i in 0..1000 {
            let class = if i % 5 == 0 { Class::Bad } else { Class::Good };
            route.record(class, Duration::from_millis(5), false);
        }
        let canary = route
            .set_canary(Some((
                1,
                CanarySpec {
                    steps: vec![0.1, 1.0],
                    step_for: Duration::from_secs(60),
                    min_requests: 10,
                    compare: Compare::Objective,
                    on_breach: OnBreach::Rollback,
                },
            )))
            .unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        engine.tick();
        let verdict = gate(&route, 0.25);
        assert!(!verdict.allow);
        let reasons = verdict.reasons.join("\n");
        assert!(
            reasons.contains("availability error budget has -1900.0% left, below the 25.0% floor"),
            "{reasons}"
        );
        assert!(
            reasons.contains("a page alert is firing (availability burning"),
            "{reasons}"
        );
        assert!(
            reasons.contains("canary v2 is in progress (progressing) at step 1 of 2, 10%"),
            "{reasons}"
        );
        canary
            .command(Command::Abort, engine.clock().now_ms())
            .unwrap();
        let reasons = gate(&route, 0.25).reasons.join("\n");
        assert!(
            reasons.contains("canary v2 was rolled back 0 min ago by the operator"),
            "{reasons}"
        );
    }
}
