//! `latency-guard`: when the route's first backend is slower than the latency objective over
//! the breach window (its p99 above the threshold), send the request to the fastest backend
//! that is compliant and within it instead.
//!
//! Configuration (JSON, all optional):
//! `{"threshold_ms": 300, "min_requests": 10}` — the latency to hold the primary to (default:
//! the route's latency objective, else 300 ms) and the traffic needed to judge a backend.

use std::cell::Cell;

use accord_policy_sdk::{Decision, Plugin, RequestHead, export_plugin, sla, telemetry};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    threshold_ms: Option<f64>,
    min_requests: Option<f64>,
}

thread_local! {
    static THRESHOLD_MS: Cell<Option<f64>> = const { Cell::new(None) };
    static MIN_REQUESTS: Cell<f64> = const { Cell::new(10.0) };
}

struct LatencyGuard;

impl Plugin for LatencyGuard {
    fn configure(config: String) -> Result<(), String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&config)
                .map_err(|e| format!("latency-guard configuration: {e}"))?
        };
        if config.threshold_ms.is_some_and(|t| t <= 0.0) {
            return Err("threshold_ms must be above 0".into());
        }
        THRESHOLD_MS.set(config.threshold_ms);
        MIN_REQUESTS.set(config.min_requests.unwrap_or(10.0));
        Ok(())
    }

    fn on_request(_head: RequestHead) -> Decision {
        let backends = sla::backends();
        let Some(primary) = backends.iter().find(|b| b.position == 0) else {
            return Decision::Allow;
        };
        let threshold = THRESHOLD_MS.get().unwrap_or(300.0);
        let min = MIN_REQUESTS.get();
        let slow =
            |p99: Option<f64>, requests: f64| requests >= min && p99.is_some_and(|p| p > threshold);
        if !slow(primary.p99_ms, primary.requests) {
            return Decision::Allow;
        }
        let fastest = backends
            .iter()
            .filter(|b| b.position != 0 && !b.breaching && !slow(b.p99_ms, b.requests))
            .min_by(|a, b| a.p99_ms.unwrap_or(0.0).total_cmp(&b.p99_ms.unwrap_or(0.0)));
        match fastest {
            Some(backend) => {
                telemetry::counter("rerouted", 1);
                telemetry::annotate("latency_guard", &backend.backend);
                Decision::reroute(&backend.backend)
            }
            None => Decision::Allow,
        }
    }
}

export_plugin!(LatencyGuard);
