//! SLA reports: one snapshot of a route's objective, attainment, budget, burn rates, alerts,
//! traffic, latency, backends, actions and breach events. The admin API's `/sla`, `accord
//! report`, the `accord_sla_*` metrics and the dashboard all render this same snapshot, so
//! they never disagree. The JSON schema is documented in `docs/sla-report.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Serialize;

use super::engine::{BreachEvent, RouteSla};
use super::meter::{Aggregate, Minute};
use super::objective::{Budget, Indicator, Severity, WINDOWS, budget, burn_rate, format_duration};
use crate::Class;

/// A route's overall state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    /// The error budget is spent.
    BudgetExhausted,
    /// A page-severity burn-rate alert fires.
    Paging,
    /// A ticket-severity burn-rate alert fires.
    Ticket,
    /// A backend breaches the objective (traffic is being steered away from it).
    Degraded,
    /// All is well.
    Ok,
}

/// A route's SLA snapshot.
#[derive(Debug, Serialize)]
pub struct RouteReport {
    /// Route id.
    pub route: Arc<str>,
    /// Overall state.
    pub status: RouteStatus,
    /// The objective.
    pub objective: ObjectiveReport,
    /// Per SLI: attainment, budget, burn rates, alerts.
    pub indicators: Vec<IndicatorReport>,
    /// Traffic and latency per window (the standard windows, then the SLO window).
    pub windows: Vec<WindowReport>,
    /// Each backend's standing against the objective.
    pub backends: Vec<BackendReport>,
    /// What enforcement did.
    pub actions: ActionsReport,
    /// The route's breach events, oldest first.
    pub events: Vec<Arc<BreachEvent>>,
    /// The route's canary release, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<super::canary::CanaryReport>,
}

/// The objective as configured.
#[derive(Debug, Serialize)]
pub struct ObjectiveReport {
    /// Availability target, as a ratio.
    pub availability: Option<f64>,
    /// Latency objective.
    pub latency: Option<LatencyReport>,
    /// SLO window, e.g. `30d`.
    pub window: String,
    /// SLO window in seconds.
    pub window_seconds: u64,
    /// Whether throttled requests spend budget.
    pub throttled_burns_budget: bool,
    /// Whether client errors spend budget.
    pub client_errors_are_bad: bool,
    /// Whether requests the client abandoned spend the availability budget.
    pub cancelled_are_bad: bool,
}

/// A latency objective.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    /// Threshold in milliseconds.
    pub threshold_ms: f64,
    /// Share of good requests that must be within it.
    pub target: f64,
}

/// One SLI's standing.
#[derive(Debug, Serialize)]
pub struct IndicatorReport {
    /// Which SLI.
    pub indicator: Indicator,
    /// Its target.
    pub target: f64,
    /// good ÷ valid over the SLO window.
    pub attainment: f64,
    /// Good events over the SLO window.
    pub good_events: f64,
    /// Valid events over the SLO window.
    pub valid_events: f64,
    /// The error budget over the SLO window.
    pub budget: Budget,
    /// Burn rate per window (standard windows, then the SLO window).
    pub burn_rates: Vec<WindowValue>,
    /// Attainment per window.
    pub attainment_by_window: Vec<WindowValue>,
    /// Every alert tier and whether it fires.
    pub alerts: Vec<AlertReport>,
}

/// A value for a named window.
#[derive(Debug, Serialize)]
pub struct WindowValue {
    /// Window name, e.g. `1h`.
    pub window: String,
    /// The value.
    pub value: f64,
}

/// One alert tier's state.
#[derive(Debug, Serialize)]
pub struct AlertReport {
    /// Severity.
    pub severity: Severity,
    /// Its burn-rate factor.
    pub burn_rate: f64,
    /// Long window.
    pub long: String,
    /// Short window.
    pub short: String,
    /// Burn rate now over the long window.
    pub long_burn: f64,
    /// Burn rate now over the short window.
    pub short_burn: f64,
    /// Whether both are at or above the factor.
    pub firing: bool,
}

/// Traffic and latency over one window.
#[derive(Debug, Serialize)]
pub struct WindowReport {
    /// Window name.
    pub window: String,
    /// Requests by class.
    pub requests: ClassCounts,
    /// Latency percentiles in milliseconds (absent without traffic).
    pub latency_ms: Option<Percentiles>,
}

/// Requests by class.
#[derive(Debug, Serialize)]
pub struct ClassCounts {
    /// Served as asked.
    pub good: f64,
    /// Failed by the gateway or a backend.
    pub bad: f64,
    /// Throttled.
    pub throttled: f64,
    /// Rejected by policy (shed, strict).
    pub rejected: f64,
    /// Client errors.
    pub client_error: f64,
    /// Abandoned by the client before its answer (status 499).
    pub cancelled: f64,
    /// All of them.
    pub total: f64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
}

/// A backend's standing.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    /// Backend id.
    pub backend: Arc<str>,
    /// `breaching` or `compliant`.
    pub state: &'static str,
    /// Its burn rate over the breach window.
    pub burn_rate: f64,
    /// Its traffic over the breach window.
    pub window: WindowReport,
}

/// What enforcement did.
#[derive(Debug, Serialize)]
pub struct ActionsReport {
    /// Requests moved off a breaching backend.
    pub rerouted: u64,
    /// Requests shed.
    pub shed: u64,
    /// Requests rejected (strict, budget spent).
    pub rejected: u64,
}

fn window_report(name: String, aggregate: &Aggregate) -> WindowReport {
    let ms = |q: f64| {
        aggregate
            .latency
            .quantile(q)
            .map(|d| d.as_secs_f64() * 1000.0)
    };
    let latency_ms = match (ms(0.5), ms(0.9), ms(0.95), ms(0.99), ms(0.999)) {
        (Some(p50), Some(p90), Some(p95), Some(p99), Some(p999)) => Some(Percentiles {
            p50,
            p90,
            p95,
            p99,
            p999,
        }),
        _ => None,
    };
    WindowReport {
        window: name,
        requests: ClassCounts {
            good: aggregate.count(Class::Good),
            bad: aggregate.count(Class::Bad),
            throttled: aggregate.count(Class::Throttled),
            rejected: aggregate.count(Class::Rejected),
            client_error: aggregate.count(Class::ClientError),
            cancelled: aggregate.count(Class::Cancelled),
            total: aggregate.total(),
        },
        latency_ms,
    }
}

impl RouteReport {
    /// The snapshot of `route` at minute `now`, with `events` (the route's, from the log).
    pub fn build(route: &RouteSla, now: Minute, events: Vec<Arc<BreachEvent>>) -> RouteReport {
        let objective = route.objective();
        let now_ms = now * 60_000 + 59_999;
        let slo_name = objective.window.name();
        let aggregates = window_aggregates(route, now, now_ms);
        let slo_aggregate = aggregates
            .iter()
            .find(|(name, _)| *name == slo_name)
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        let indicators: Vec<IndicatorReport> = objective
            .indicators()
            .into_iter()
            .map(|(indicator, target)| {
                indicator_report(route, now, indicator, target, &slo_aggregate, &aggregates)
            })
            .collect();
        let backends = backend_reports(route, now);
        let status = route_status(route, &indicators, &backends);
        RouteReport {
            route: route.id().clone(),
            status,
            objective: ObjectiveReport {
                availability: objective.availability,
                latency: objective.latency.map(|l| LatencyReport {
                    threshold_ms: l.threshold.as_secs_f64() * 1000.0,
                    target: l.target,
                }),
                window: slo_name,
                window_seconds: objective.window.period(now_ms).as_secs(),
                throttled_burns_budget: objective.classification.throttled_burns_budget,
                client_errors_are_bad: objective.classification.client_errors_are_bad,
                cancelled_are_bad: objective.classification.cancelled_are_bad,
            },
            indicators,
            windows: aggregates
                .iter()
                .map(|(name, a)| window_report(name.clone(), a))
                .collect(),
            backends,
            actions: ActionsReport {
                rerouted: route.actions().rerouted.load(Relaxed),
                shed: route.actions().shed.load(Relaxed),
                rejected: route.actions().rejected.load(Relaxed),
            },
            events,
            canary: route.canary().map(|c| c.report()),
        }
    }

    /// The window report named `name`, if the report has one.
    pub fn window(&self, name: &str) -> Option<&WindowReport> {
        self.windows.iter().find(|w| w.window == name)
    }
}

/// Every report window (5m … 3d, then the SLO window) with what the route did in it.
fn window_aggregates(route: &RouteSla, now: Minute, now_ms: i64) -> Vec<(String, Aggregate)> {
    let objective = route.objective();
    let slo_name = objective.window.name();
    let mut windows: Vec<(String, Duration)> = WINDOWS
        .iter()
        .map(|(name, secs)| ((*name).to_owned(), Duration::from_secs(*secs)))
        .collect();
    if !windows.iter().any(|(name, _)| *name == slo_name) {
        windows.push((slo_name, objective.window.covered(now_ms)));
    }
    windows
        .into_iter()
        .map(|(name, length)| {
            let aggregate = route.meter().window(now, length);
            (name, aggregate)
        })
        .collect()
}

/// One SLI: attainment and budget over the SLO window, burn and attainment per window, and
/// each alert tier with its two burn rates.
fn indicator_report(
    route: &RouteSla,
    now: Minute,
    indicator: Indicator,
    target: f64,
    slo_aggregate: &Aggregate,
    aggregates: &[(String, Aggregate)],
) -> IndicatorReport {
    let objective = route.objective();
    let events = objective.events(indicator, slo_aggregate);
    let per_window = |f: &dyn Fn(&Aggregate) -> f64| {
        aggregates
            .iter()
            .map(|(name, a)| WindowValue {
                window: name.clone(),
                value: f(a),
            })
            .collect::<Vec<_>>()
    };
    let burn_over = |length| {
        burn_rate(
            objective.events(indicator, &route.meter().window_counts(now, length)),
            target,
        )
    };
    let alerts = objective
        .tiers
        .iter()
        .map(|tier| {
            let (long_burn, short_burn) = (burn_over(tier.long), burn_over(tier.short));
            AlertReport {
                severity: tier.severity,
                burn_rate: tier.burn_rate,
                long: format_duration(tier.long),
                short: format_duration(tier.short),
                long_burn,
                short_burn,
                firing: long_burn + 1e-9 >= tier.burn_rate && short_burn + 1e-9 >= tier.burn_rate,
            }
        })
        .collect();
    IndicatorReport {
        indicator,
        target,
        attainment: events.ratio(),
        good_events: events.good,
        valid_events: events.valid,
        budget: budget(events, target),
        burn_rates: per_window(&|a| burn_rate(objective.events(indicator, a), target)),
        attainment_by_window: per_window(&|a| objective.events(indicator, a).ratio()),
        alerts,
    }
}

/// Each backend's standing and its traffic over the breach window.
fn backend_reports(route: &RouteSla, now: Minute) -> Vec<BackendReport> {
    let breach_window = route.enforcement().breach_window;
    route
        .backends()
        .iter()
        .map(|b| BackendReport {
            backend: b.id().clone(),
            state: if b.is_breaching() {
                "breaching"
            } else {
                "compliant"
            },
            burn_rate: b.badness(),
            window: window_report(
                format_duration(breach_window),
                &b.meter().window(now, breach_window),
            ),
        })
        .collect()
}

/// The worst of: budget exhausted, paging, ticket, a breaching backend, ok.
fn route_status(
    route: &RouteSla,
    indicators: &[IndicatorReport],
    backends: &[BackendReport],
) -> RouteStatus {
    let firing = |severity| {
        indicators
            .iter()
            .any(|i| i.alerts.iter().any(|a| a.firing && a.severity == severity))
    };
    if route.is_budget_exhausted() {
        RouteStatus::BudgetExhausted
    } else if firing(Severity::Page) {
        RouteStatus::Paging
    } else if firing(Severity::Ticket) {
        RouteStatus::Ticket
    } else if backends.iter().any(|b| b.state == "breaching") {
        RouteStatus::Degraded
    } else {
        RouteStatus::Ok
    }
}

/// One minute of a route's history, for charts.
#[derive(Debug, Serialize)]
pub struct HistoryPoint {
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    /// Requests by class in that minute.
    pub requests: ClassCounts,
    /// Latency percentiles of that minute, in milliseconds.
    pub latency_ms: Option<Percentiles>,
    /// Burn rate over the 5 minutes ending then, per SLI (in the objective's order).
    pub burn_5m: Vec<f64>,
    /// Burn rate over the hour ending then, per SLI.
    pub burn_1h: Vec<f64>,
    /// Share of the error budget left then, per SLI.
    pub budget_remaining: Vec<f64>,
}

/// A route's recent history, minute by minute (sealed minutes only).
#[derive(Debug, Serialize)]
pub struct RouteHistory {
    /// Route id.
    pub route: Arc<str>,
    /// The SLIs, in the order of the per-SLI series.
    pub indicators: Vec<Indicator>,
    /// Page-tier burn-rate thresholds (for reference lines).
    pub page_burn_rates: Vec<f64>,
    /// Minutes, oldest first; minutes without traffic are present with zero counts.
    pub points: Vec<HistoryPoint>,
}

impl RouteHistory {
    /// The last `minutes` sealed minutes before minute `now`.
    pub fn build(route: &RouteSla, now: Minute, minutes: i64) -> RouteHistory {
        let objective = route.objective();
        let indicators = objective.indicators();
        let since = now - minutes;
        let sealed: std::collections::HashMap<Minute, super::meter::Rollup> =
            route.meter().minutes_since(since).into_iter().collect();
        let points = (since..now)
            .map(|minute| {
                let empty = super::meter::Rollup::default();
                let rollup = sealed.get(&minute).unwrap_or(&empty);
                let mut aggregate = Aggregate::default();
                for (i, class) in Class::ALL.iter().enumerate() {
                    aggregate.by_class[i] = rollup.count(*class) as f64;
                }
                aggregate.within_threshold = rollup.within_threshold as f64;
                aggregate.cancelled_slow = rollup.cancelled_slow as f64;
                aggregate.latency = rollup.latency.clone();
                let window = window_report(String::new(), &aggregate);
                let burn = |length: u64| {
                    let counts = route
                        .meter()
                        .sealed_window_counts(minute, Duration::from_secs(length));
                    indicators
                        .iter()
                        .map(|(indicator, target)| {
                            burn_rate(objective.events(*indicator, &counts), *target)
                        })
                        .collect::<Vec<f64>>()
                };
                let slo_counts = route.meter().sealed_window_counts(
                    minute,
                    objective.window.covered(minute * 60_000 + 59_999),
                );
                HistoryPoint {
                    minute_ms: minute * 60_000,
                    requests: window.requests,
                    latency_ms: window.latency_ms,
                    burn_5m: burn(300),
                    burn_1h: burn(3600),
                    budget_remaining: indicators
                        .iter()
                        .map(|(indicator, target)| {
                            budget(objective.events(*indicator, &slo_counts), *target)
                                .remaining_ratio
                        })
                        .collect(),
                }
            })
            .collect();
        RouteHistory {
            route: route.id().clone(),
            indicators: indicators.iter().map(|(i, _)| *i).collect(),
            page_burn_rates: objective
                .tiers
                .iter()
                .filter(|t| t.severity == Severity::Page)
                .map(|t| t.burn_rate)
                .collect(),
            points,
        }
    }
}
