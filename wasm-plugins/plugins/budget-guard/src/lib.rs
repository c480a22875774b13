//! `budget-guard`: protects the route's error budget by shedding traffic tier by tier. Each
//! tenant tier has a burn rate above which its requests are refused with 503 and
//! `Retry-After`, so free traffic goes first, paying traffic later, and critical traffic never;
//! once the budget is spent, the tiers listed in `exhausted` are refused too.
//!
//! The burn rate is the highest of the route's indicators over `window`, as of the SLA engine's
//! last evaluation. Routes without an objective are never shed.
//!
//! Configuration (JSON, all optional):
//!
//! ```json
//! {
//!   "tier_header": "x-tenant-tier",
//!   "default_tier": "standard",
//!   "shed_above": {"free": 2, "standard": 6},
//!   "exhausted": ["free"],
//!   "window": "5m",
//!   "min_requests": 20,
//!   "retry_after_seconds": 30
//! }
//! ```
//!
//! Tiers missing from `shed_above` (e.g. `critical`) are never shed for burn; the defaults are
//! the ones shown.

use std::cell::RefCell;
use std::collections::BTreeMap;

use accord_policy_sdk::{
    Decision, HttpHeader, Plugin, Rejection, RequestHead, export_request_plugin, request, sla,
    telemetry,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    tier_header: String,
    default_tier: String,
    shed_above: BTreeMap<String, f64>,
    exhausted: Vec<String>,
    window: String,
    min_requests: f64,
    retry_after_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tier_header: "x-tenant-tier".into(),
            default_tier: "standard".into(),
            shed_above: BTreeMap::from([("free".into(), 2.0), ("standard".into(), 6.0)]),
            exhausted: vec!["free".into()],
            window: "5m".into(),
            min_requests: 20.0,
            retry_after_seconds: 30,
        }
    }
}

const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

thread_local! {
    static CONFIG: RefCell<Config> = RefCell::new(Config::default());
}

struct BudgetGuard;

impl Plugin for BudgetGuard {
    fn configure(config: String) -> Result<(), String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&config).map_err(|e| format!("budget-guard configuration: {e}"))?
        };
        if !WINDOWS.contains(&config.window.as_str()) {
            return Err(format!(
                "budget-guard configuration: window {:?} is not one of {}",
                config.window,
                WINDOWS.join(", ")
            ));
        }
        if let Some((tier, rate)) = config
            .shed_above
            .iter()
            .find(|(_, r)| r.is_nan() || **r <= 0.0)
        {
            return Err(format!(
                "budget-guard configuration: shed_above.{tier} is {rate}, it must be above 0"
            ));
        }
        CONFIG.set(config);
        Ok(())
    }

    fn on_request(_head: RequestHead) -> Decision {
        let Some(route) = sla::route() else {
            return Decision::Allow;
        };
        CONFIG.with_borrow(|config| {
            let tier = request::header(&config.tier_header)
                .unwrap_or_else(|| config.default_tier.clone());
            if route.budget_exhausted && config.exhausted.contains(&tier) {
                return shed(config, &tier, "the error budget is spent".into());
            }
            let Some(threshold) = config.shed_above.get(&tier) else {
                return Decision::Allow;
            };
            let traffic = route
                .windows
                .iter()
                .find(|w| w.window == config.window)
                .or(route.windows.first())
                .map_or(0.0, |w| w.total);
            if traffic < config.min_requests {
                return Decision::Allow;
            }
            let burn = route
                .indicators
                .iter()
                .flat_map(|i| i.burn_rates.iter())
                .filter(|(window, _)| *window == config.window)
                .map(|(_, rate)| *rate)
                .fold(0.0, f64::max);
            if burn > *threshold {
                shed(
                    config,
                    &tier,
                    format!(
                        "the error budget burns {burn:.1}x over {}, above {threshold}x for tier {tier}",
                        config.window
                    ),
                )
            } else {
                Decision::Allow
            }
        })
    }
}

fn shed(config: &Config, tier: &str, reason: String) -> Decision {
    telemetry::counter(&format!("shed_{tier}"), 1);
    telemetry::annotate("budget_guard", &format!("shed:{tier}"));
    Decision::Reject(Rejection {
        status: 503,
        reason,
        headers: vec![HttpHeader {
            name: "x-accord-shed-tier".into(),
            value: tier.into(),
        }],
        retry_after_seconds: Some(config.retry_after_seconds),
    })
}

export_request_plugin!(BudgetGuard);
