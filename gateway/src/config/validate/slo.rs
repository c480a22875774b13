//! A route's service-level objective: targets, window, alert tiers, classification and
//! enforcement.

use super::*;

pub(super) fn slo_config(
    v: &mut Validator<'_>,
    raw: &Located<RawSlo>,
    path: &str,
) -> Option<RouteSlo> {
    use accord_policies::sla::{
        AlertTier, Classification, Enforcement, LatencyObjective, Objective, Severity, Shedding,
        SloWindow,
    };
    let errors_before = v.errors.len();
    let slo = &raw.value;
    let check_target =
        |v: &mut Validator<'_>, target: &Located<crate::config::types::Percent>, at: String| {
            if target.value.0 >= 1.0 {
                v.error(
                    target,
                    at,
                    "must be below 100%: a 100% objective leaves no error budget",
                );
            } else if target.value.0 <= 0.0 {
                v.error(target, at, "must be above 0%");
            }
            target.value.0
        };
    let availability = slo
        .availability
        .as_ref()
        .map(|target| check_target(v, target, format!("{path}.availability")));
    let latency = match &slo.latency {
        None => None,
        Some(latency) => match (&latency.value.threshold, &latency.value.target) {
            (Some(threshold), Some(target)) => {
                if threshold.value.0.is_zero() {
                    v.error(
                        threshold,
                        format!("{path}.latency.threshold"),
                        "must be more than 0",
                    );
                }
                let target = check_target(v, target, format!("{path}.latency.target"));
                Some(LatencyObjective {
                    threshold: threshold.value.0,
                    target,
                })
            }
            (Some(_), None) => {
                v.error(latency, format!("{path}.latency"), "a latency threshold needs a target, e.g. `target: 99%` (the share of requests that must finish within it)");
                None
            }
            (None, Some(_)) => {
                v.error(
                    latency,
                    format!("{path}.latency"),
                    "a latency target needs a threshold, e.g. `threshold: 300ms`",
                );
                None
            }
            (None, None) => {
                v.error(
                    latency,
                    format!("{path}.latency"),
                    "set threshold and target, e.g. `{threshold: 300ms, target: 99%}`",
                );
                None
            }
        },
    };
    if slo.availability.is_none() && slo.latency.is_none() {
        v.error(
            raw,
            path,
            "an SLO needs an availability target, a latency objective, or both",
        );
    }
    let rolling_default = Duration::from_secs(30 * 86_400);
    let slo_window = if slo.window.value == "month" {
        let zone = slo.time_zone.as_ref().map_or("UTC", |z| z.value.as_str());
        match SloWindow::calendar_month(zone) {
            Ok(window) => window,
            Err(message) => {
                let at = slo.time_zone.as_ref().map_or(&slo.window, |z| z);
                v.error(at, format!("{path}.time_zone"), message);
                SloWindow::Rolling(rolling_default)
            }
        }
    } else {
        if let Some(zone) = &slo.time_zone {
            v.error(
                zone,
                format!("{path}.time_zone"),
                "a time zone only applies to a calendar window (`window: month`)",
            );
        }
        match slo
            .window
            .value
            .parse::<crate::config::types::ConfigDuration>()
        {
            Ok(d)
                if d.0 >= Duration::from_secs(3600) && d.0 <= Duration::from_secs(90 * 86_400) =>
            {
                SloWindow::Rolling(d.0)
            }
            Ok(_) => {
                v.error(
                    &slo.window,
                    format!("{path}.window"),
                    "must be between 1h and 90d",
                );
                SloWindow::Rolling(rolling_default)
            }
            Err(_) => {
                v.error(
                    &slo.window,
                    format!("{path}.window"),
                    format!("unknown SLO window {:?}: write a rolling window as a duration, e.g. \"30d\" or \"7d\", or \"month\" for the calendar month", slo.window.value),
                );
                SloWindow::Rolling(rolling_default)
            }
        }
    };
    // A calendar month's alert tiers are derived for 30 days, like the SRE workbook's.
    let window = match &slo_window {
        SloWindow::Rolling(length) => *length,
        SloWindow::CalendarMonth { .. } => rolling_default,
    };
    let tiers = match &slo.alerts {
        None => AlertTier::defaults(window),
        Some(list) => {
            let mut tiers = Vec::new();
            for (i, tier) in list.value.iter().enumerate() {
                let at = format!("{path}.alerts[{i}]");
                if !(tier.burn_rate.value >= 1.0 && tier.burn_rate.value.is_finite()) {
                    v.error(
                        &tier.burn_rate,
                        format!("{at}.burn_rate"),
                        "must be at least 1: a tier below 1× fires on a burn that never exhausts the budget",
                    );
                }
                if tier.short.value.0 >= tier.long.value.0 {
                    v.error(
                        &tier.short,
                        format!("{at}.short"),
                        "the short window must be shorter than the long one",
                    );
                }
                if tier.long.value.0 > window {
                    v.error(
                        &tier.long,
                        format!("{at}.long"),
                        "must not exceed the SLO window",
                    );
                }
                tiers.push(AlertTier {
                    severity: match tier.severity {
                        RawSeverity::Page => Severity::Page,
                        RawSeverity::Ticket => Severity::Ticket,
                    },
                    burn_rate: tier.burn_rate.value,
                    long: tier.long.value.0,
                    short: tier.short.value.0,
                });
            }
            tiers
        }
    };
    let e = &slo.enforcement;
    if e.breach_window.value.0 < Duration::from_secs(60)
        || e.breach_window.value.0 > Duration::from_secs(6 * 3600)
    {
        v.error(
            &e.breach_window,
            format!("{path}.enforcement.breach_window"),
            "must be between 1m and 6h",
        );
    }
    let shedding = e.shed.as_ref().map(|shed| Shedding {
        fraction: shed.fraction.value.0,
        retry_after: shed.retry_after.value.0,
    });
    let header = match HeaderName::try_from(e.priority.header.as_str()) {
        Ok(h) => h,
        Err(_) => {
            v.error(
                raw,
                format!("{path}.enforcement.priority.header"),
                format!("invalid header name {:?}", e.priority.header),
            );
            HeaderName::from_static("x-accord-priority")
        }
    };
    (v.errors.len() == errors_before).then(|| RouteSlo {
        objective: Objective {
            availability,
            latency,
            window: slo_window,
            tiers,
            classification: Classification {
                throttled_burns_budget: slo.classification.throttled == RawThrottled::Bad,
                client_errors_are_bad: slo.classification.client_errors == RawClientErrors::Bad,
                cancelled_are_bad: slo.classification.cancelled == RawCancelled::Bad,
            },
        },
        enforcement: Enforcement {
            breach_window: e.breach_window.value.0,
            min_requests: e.min_requests.max(1),
            probe: e.probe.value.0,
            recovery: e.recovery.value.0,
            shedding,
            strict: e.strict,
        },
        priority: PriorityRule {
            header,
            low: e.priority.low.clone(),
            critical: e.priority.critical.clone(),
        },
    })
}
