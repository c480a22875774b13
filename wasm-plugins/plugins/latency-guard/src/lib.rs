//! `latency-guard`: when the route's first backend is slower than the latency objective over
//! the breach window (its p99 above the threshold), send the request to the fastest backend
//! that is compliant and within it instead.
//!
//! Configuration (JSON, all optional):
//! `{"threshold_ms": 300, "min_requests": 10}` — the latency to hold the primary to (default:
//! 300 ms) and the traffic needed to judge a backend.
//!
//! Written with the SDK's [`Policy`]: typed configuration (absent: the defaults) and the
//! instance's state as a plain struct.

use accord_policy_sdk::{Decision, Policy, RequestHead, export_request_policy, sla, telemetry};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    threshold_ms: f64,
    min_requests: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold_ms: 300.0,
            min_requests: 10.0,
        }
    }
}

struct LatencyGuard {
    threshold_ms: f64,
    min_requests: f64,
}

impl Policy for LatencyGuard {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.threshold_ms.is_nan() || config.threshold_ms <= 0.0 {
            return Err("threshold_ms must be above 0".into());
        }
        Ok(LatencyGuard {
            threshold_ms: config.threshold_ms,
            min_requests: config.min_requests,
        })
    }

    fn on_request(&mut self, _head: RequestHead) -> Decision {
        let backends = sla::backends();
        let Some(primary) = backends.iter().find(|b| b.position == 0) else {
            return Decision::Allow;
        };
        let slow = |p99: Option<f64>, requests: f64| {
            requests >= self.min_requests && p99.is_some_and(|p| p > self.threshold_ms)
        };
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

export_request_policy!(LatencyGuard);
