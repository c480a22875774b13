//! `tenant-quota`: per-tenant request rate limits. Each request counts against its tenant's
//! rate (the host's estimator: a sliding second over a count-min sketch, shared by every
//! instance of the plugin, so by every route that lists it, and in cluster mode by every
//! replica: `cluster-rate`, whose other replicas' part is at most one sync interval old, so a
//! burst starting on N replicas at once can pass N times the limit for one sync interval);
//! a tenant above its limit gets 429
//! with `Retry-After: 1` and `x-ratelimit-limit`. Refusals count as `rejected`, not against
//! the route's objective.
//!
//! Configuration (JSON):
//!
//! ```json
//! {
//!   "tenant_header": "x-tenant",
//!   "default_limit": 100,
//!   "limits": {"acme": 500, "trial-co": 5},
//!   "anonymous": "reject"
//! }
//! ```
//!
//! Limits are requests per second. `anonymous` says what happens to requests without the
//! header: `reject` (401, the default), `allow`, or a number (a limit shared by all of them).

use std::cell::RefCell;
use std::collections::BTreeMap;

use accord_policy_sdk::{
    Decision, HttpHeader, Plugin, Rejection, RequestHead, cluster_rate, export_request_plugin,
    request, telemetry,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_header")]
    tenant_header: String,
    default_limit: f64,
    #[serde(default)]
    limits: BTreeMap<String, f64>,
    #[serde(default)]
    anonymous: Anonymous,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Anonymous {
    Limit(f64),
    Policy(AnonymousPolicy),
}

impl Default for Anonymous {
    fn default() -> Self {
        Self::Policy(AnonymousPolicy::Reject)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum AnonymousPolicy {
    Reject,
    Allow,
}

fn default_header() -> String {
    "x-tenant".into()
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

/// The key anonymous requests share (not a valid header value, so no tenant can claim it).
const ANONYMOUS_KEY: &str = "\n(anonymous)";

struct TenantQuota;

impl Plugin for TenantQuota {
    fn configure(config: String) -> Result<(), String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| {
            format!("tenant-quota configuration (it needs at least default_limit): {e}")
        })?;
        let mut limits = config
            .limits
            .iter()
            .map(|(t, l)| (t.as_str(), *l))
            .collect::<Vec<_>>();
        limits.push(("default_limit", config.default_limit));
        if let Anonymous::Limit(limit) = config.anonymous {
            limits.push(("anonymous", limit));
        }
        if let Some((tenant, limit)) = limits.iter().find(|(_, l)| l.is_nan() || *l <= 0.0) {
            return Err(format!(
                "tenant-quota configuration: the limit for {tenant} is {limit}, it must be above 0"
            ));
        }
        CONFIG.set(Some(config));
        Ok(())
    }

    fn on_request(_head: RequestHead) -> Decision {
        CONFIG.with_borrow(|config| {
            let Some(config) = config else {
                return Decision::Allow;
            };
            let (key, limit) = match request::header(&config.tenant_header) {
                Some(tenant) => {
                    let limit = config
                        .limits
                        .get(&tenant)
                        .copied()
                        .unwrap_or(config.default_limit);
                    (tenant, limit)
                }
                None => match config.anonymous {
                    Anonymous::Policy(AnonymousPolicy::Allow) => return Decision::Allow,
                    Anonymous::Limit(limit) => (ANONYMOUS_KEY.to_owned(), limit),
                    Anonymous::Policy(AnonymousPolicy::Reject) => {
                        telemetry::counter("anonymous_rejected", 1);
                        return Decision::reject(
                            401,
                            &format!("the {} header is required", config.tenant_header),
                        );
                    }
                },
            };
            let current = cluster_rate::observe(&key, 1);
            if current <= limit {
                return Decision::Allow;
            }
            telemetry::counter("over_quota", 1);
            let tenant = if key == ANONYMOUS_KEY {
                "(anonymous)"
            } else {
                &key
            };
            telemetry::annotate("tenant_quota", &format!("over:{tenant}"));
            Decision::Reject(Rejection {
                status: 429,
                reason: format!("tenant {tenant} is over its quota of {limit} requests per second"),
                headers: vec![HttpHeader {
                    name: "x-ratelimit-limit".into(),
                    value: format!("{limit}"),
                }],
                retry_after_seconds: Some(1),
            })
        })
    }
}

export_request_plugin!(TenantQuota);
