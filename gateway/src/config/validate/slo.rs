//! A route's service-level objective: targets, window, alert tiers, classification and
//! enforcement.

use accord_policies::sla::{
    AlertTier, Classification, Enforcement, LatencyObjective, Objective, Severity, Shedding,
    SloWindow,
};

use super::*;

/// Rolling windows default to 30 days, and calendar months take the 30-day alert tiers (the
/// SRE workbook's).
const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The objective of the route at `path`, when every part of it is valid.
pub(super) fn slo_config(
    v: &mut Validator<'_>,
    raw: &Located<RawSlo>,
    path: &str,
) -> Option<RouteSlo> {
    let errors_before = v.errors.len();
    let slo = &raw.value;
    let availability = slo
        .availability
        .as_ref()
        .map(|target| check_target(v, target, format!("{path}.availability")));
    let latency = slo
        .latency
        .as_ref()
        .and_then(|latency| check_latency(v, latency, path));
    if slo.availability.is_none() && slo.latency.is_none() {
        v.error(
            raw,
            path,
            "an SLO needs an availability target, a latency objective, or both",
        );
    }
    let window = check_window(v, slo, path);
    let tier_window = match &window {
        SloWindow::Rolling(length) => *length,
        SloWindow::CalendarMonth { .. } => DEFAULT_WINDOW,
    };
    let tiers = match &slo.alerts {
        None => AlertTier::defaults(tier_window),
        Some(list) => check_tiers(v, list, tier_window, path),
    };
    let (enforcement, priority) = check_enforcement(v, raw, path);
    (v.errors.len() == errors_before).then(|| RouteSlo {
        objective: Objective {
            availability,
            latency,
            window,
            tiers,
            classification: Classification {
                throttled_burns_budget: slo.classification.throttled == RawThrottled::Bad,
                client_errors_are_bad: slo.classification.client_errors == RawClientErrors::Bad,
                cancelled_are_bad: slo.classification.cancelled == RawCancelled::Bad,
            },
        },
        enforcement,
        priority,
    })
}

/// A target is a share strictly between 0 and 100%.
fn check_target(
    v: &mut Validator<'_>,
    target: &Located<crate::config::types::Percent>,
    at: String,
) -> f64 {
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
}

/// A latency objective has both a threshold above 0 and a target.
fn check_latency(
    v: &mut Validator<'_>,
    latency: &Located<RawLatencyObjective>,
    path: &str,
) -> Option<LatencyObjective> {
    match (&latency.value.threshold, &latency.value.target) {
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
    }
}

/// `month` (a calendar month in `time_zone`, UTC by default) or a rolling duration from 1h to
/// 90d; a time zone only with a calendar window.
fn check_window(v: &mut Validator<'_>, slo: &RawSlo, path: &str) -> SloWindow {
    if slo.window.value == "month" {
        let zone = slo.time_zone.as_ref().map_or("UTC", |z| z.value.as_str());
        match SloWindow::calendar_month(zone) {
            Ok(window) => window,
            Err(message) => {
                let at = slo.time_zone.as_ref().map_or(&slo.window, |z| z);
                v.error(at, format!("{path}.time_zone"), message);
                SloWindow::Rolling(DEFAULT_WINDOW)
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
                SloWindow::Rolling(DEFAULT_WINDOW)
            }
            Err(_) => {
                v.error(
                    &slo.window,
                    format!("{path}.window"),
                    format!("unknown SLO window {:?}: write a rolling window as a duration, e.g. \"30d\" or \"7d\", or \"month\" for the calendar month", slo.window.value),
                );
                SloWindow::Rolling(DEFAULT_WINDOW)
            }
        }
    }
}

/// Explicit alert tiers: a factor of at least 1, a short window shorter than the long one, a
/// long window no longer than the SLO window.
fn check_tiers(
    v: &mut Validator<'_>,
    list: &Located<Vec<RawAlertTier>>,
    slo_window: Duration,
    path: &str,
) -> Vec<AlertTier> {
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
        if tier.long.value.0 > slo_window {
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

/// Breach judgement over 1m to 6h, shedding, and a valid priority header.
fn check_enforcement(
    v: &mut Validator<'_>,
    raw: &Located<RawSlo>,
    path: &str,
) -> (Enforcement, PriorityRule) {
    let e = &raw.value.enforcement;
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
    (
        Enforcement {
            breach_window: e.breach_window.value.0,
            min_requests: e.min_requests.max(1),
            probe: e.probe.value.0,
            recovery: e.recovery.value.0,
            shedding,
            strict: e.strict,
        },
        PriorityRule {
            header,
            low: e.priority.low.clone(),
            critical: e.priority.critical.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{config, refused};

    /// One case per objective rule: the route's `slo:` and the error expected.
    #[test]
    fn every_objective_rule() {
        let cases = [
            (
                "{availability: 100%}",
                "routes[0].slo.availability: must be below 100%",
            ),
            (
                "{availability: 0%}",
                "routes[0].slo.availability: must be above 0%",
            ),
            (
                "{latency: {threshold: 0ms, target: 99%}}",
                "routes[0].slo.latency.threshold: must be more than 0",
            ),
            (
                "{latency: {threshold: 300ms}}",
                "a latency threshold needs a target",
            ),
            (
                "{latency: {target: 99%}}",
                "a latency target needs a threshold",
            ),
            ("{latency: {}}", "set threshold and target"),
            (
                "{window: 30d}",
                "an SLO needs an availability target, a latency objective, or both",
            ),
            (
                "{availability: 99%, window: month, time_zone: Mars/Base}",
                "routes[0].slo.time_zone: unknown time zone",
            ),
            (
                "{availability: 99%, time_zone: UTC}",
                "a time zone only applies to a calendar window",
            ),
            (
                "{availability: 99%, window: 10m}",
                "routes[0].slo.window: must be between 1h and 90d",
            ),
            (
                "{availability: 99%, window: fortnight}",
                "unknown SLO window \"fortnight\"",
            ),
            (
                "{availability: 99%, alerts: [{severity: page, burn_rate: 2, long: 5m, short: 1h}]}",
                "the short window must be shorter than the long one",
            ),
            (
                "{availability: 99%, enforcement: {breach_window: 10s}}",
                "routes[0].slo.enforcement.breach_window: must be between 1m and 6h",
            ),
            (
                "{availability: 99%, enforcement: {priority: {header: \"bad header\"}}}",
                "routes[0].slo.enforcement.priority.header: invalid header name",
            ),
        ];
        for (slo, expected) in cases {
            refused(&config("", "", &format!("    slo: {slo}\n")), expected);
        }
    }
}
