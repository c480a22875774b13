//! The gateway's own counters: per route, gateway-wide, and the [`Registry`] that keeps them by
//! route or backend id in `Arc`s, so they survive a reload that keeps the id. Recording is a
//! relaxed atomic add: no lock on the request path. The metrics module renders them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use accord_adapters::stats::{BackendStats, LatencyHistogram};
use accord_policies::Class;

/// Counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// The route's id (so that a request's record reaches it through the one handle on these
    /// counters it holds).
    pub id: Arc<str>,
    /// Finished requests by [`Class`].
    pub requests_by_class: [AtomicU64; Class::COUNT],
    /// Finished requests by status class (1xx … 5xx).
    pub requests_by_status: [AtomicU64; 5],
    /// Requests in flight.
    pub active: AtomicU64,
    /// Full request duration (until the response body ended).
    pub duration: LatencyHistogram,
    /// Tries beyond the first.
    pub retries: AtomicU64,
    /// Retries refused by the retry budget.
    pub retry_budget_exhausted: AtomicU64,
    /// Request bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Response bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Kept traces' requests, for the duration histogram's exemplars.
    pub exemplars: Exemplars,
}

/// The latest requests whose trace was kept (trace id, seconds, when), from which each bucket of
/// the duration histogram takes its exemplar: the latest that fell in it.
#[derive(Debug, Default)]
pub struct Exemplars(Mutex<std::collections::VecDeque<(String, f64, f64)>>);

/// Exemplars kept per route.
const EXEMPLARS: usize = 64;

impl Exemplars {
    /// A kept trace's request took `seconds`, ending at `timestamp` (seconds since the epoch).
    pub fn record(&self, trace_id: String, seconds: f64, timestamp: f64) {
        let mut latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if latest.len() >= EXEMPLARS {
            latest.pop_front();
        }
        latest.push_back((trace_id, seconds, timestamp));
    }

    /// One exemplar per bucket of `bounds` (upper bounds, `None` for `+Inf`), or none.
    pub fn per_bucket(
        &self,
        bounds: &[Option<f64>],
    ) -> Vec<Option<crate::admin::exposition::Exemplar>> {
        let latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut lower = f64::NEG_INFINITY;
        bounds
            .iter()
            .map(|upper| {
                let upper_value = upper.unwrap_or(f64::INFINITY);
                let found = latest
                    .iter()
                    .rev()
                    .find(|(_, v, _)| *v > lower && *v <= upper_value)
                    .map(
                        |(trace_id, value, timestamp)| crate::admin::exposition::Exemplar {
                            trace_id: trace_id.clone(),
                            value: *value,
                            timestamp: *timestamp,
                        },
                    );
                lower = upper_value;
                found
            })
            .collect()
    }
}

/// Counters of the whole gateway.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Client connections open now.
    pub connections_active: AtomicU64,
    /// Client connections accepted.
    pub connections_accepted: AtomicU64,
    /// Client connections closed at once because `limits.max_connections` was reached.
    pub connections_rejected: AtomicU64,
    /// Requests that matched no route.
    pub unrouted_requests: AtomicU64,
    /// Reloads, by result.
    pub reloads_ok: AtomicU64,
    /// Reloads refused.
    pub reloads_failed: AtomicU64,
}

/// Where counters are kept across reloads.
#[derive(Debug, Default)]
pub struct Registry {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteStats>>>,
    backends: Mutex<HashMap<Arc<str>, Arc<BackendStats>>>,
    /// Gateway-wide counters.
    pub gateway: Arc<GatewayStats>,
}

impl Registry {
    /// The gateway-wide counters, shared with the listeners.
    pub fn gateway_stats(&self) -> Arc<GatewayStats> {
        self.gateway.clone()
    }

    /// The counters of route `id`, created on first use.
    pub fn route(&self, id: &Arc<str>) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(RouteStats {
                    id: id.clone(),
                    ..RouteStats::default()
                })
            })
            .clone()
    }

    /// The counters of backend `id`, created on first use.
    pub fn backend(&self, id: &Arc<str>) -> Arc<BackendStats> {
        let mut backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        backends.entry(id.clone()).or_default().clone()
    }
}
