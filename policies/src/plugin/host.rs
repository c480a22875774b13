//! The host side of the interface: each store's state and the imports plugins call (the
//! request, request-local storage, SLA state, rates, telemetry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pingora_limits::rate::{PROPORTIONAL_RATE_ESTIMATE_CALC_FN, Rate};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::bindings::accord::policy::types as wit;
use crate::Class;
use crate::sla::RouteSla;
use crate::sla::objective::Indicator;

// === Host state and imports ===

/// The request and route a call is about.
#[derive(Default)]
pub struct CallContext {
    /// The request head, lent for the call.
    pub request: Option<Arc<http::request::Parts>>,
    /// The response head, in `on-response`.
    pub response_headers: Option<Arc<http::HeaderMap>>,
    /// The response body, in `on-response`, when the plugin asked for it and it fit.
    pub response_body: Option<bytes::Bytes>,
    /// The route's SLA state; none when the route has no objective.
    pub sla: Option<SlaState>,
    /// The route's backend ids, in its order.
    pub backends: Arc<[Arc<str>]>,
    /// Request-local storage.
    pub locals: HashMap<String, String>,
    /// Annotations for the access log.
    pub annotations: Vec<(String, String)>,
}

/// Where a call's SLA state comes from.
#[derive(Clone)]
pub enum SlaState {
    /// The SLA engine's, for a route of a running gateway.
    Live(Arc<RouteSla>),
    /// Given by a test (`accord plugin test`): what the plugin sees, verbatim.
    Scripted(Arc<ScriptedSla>),
}

/// An SLA state written by hand, to test a plugin without a gateway.
#[derive(Debug, Clone, Default)]
pub struct ScriptedSla {
    /// What `clock.now-ms` returns (the machine's time when absent).
    pub now_ms: Option<i64>,
    /// What `sla.route` returns.
    pub route: Option<wit::RouteSnapshot>,
    /// What `sla.backends` returns.
    pub backends: Vec<wit::BackendStats>,
}

/// What every instance of one plugin shares.
pub(super) struct PluginShared {
    pub(super) name: Arc<str>,
    /// Event rates by key (`rate.observe`): pingora-limits' estimator over 1 s intervals, a
    /// count-min sketch, so memory stays fixed however many keys plugins use.
    pub(super) rates: Rate,
    /// Rates shared across a cluster's replicas (`cluster-rate.observe`).
    pub(super) cluster_rates: Arc<super::shared_rates::SharedRates>,
    pub(super) counters: Mutex<HashMap<String, u64>>,
    pub(super) histograms: Mutex<HashMap<String, PluginHistogram>>,
}

/// A plugin's histogram (`telemetry.histogram`), in Prometheus' cumulative form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginHistogram {
    /// Observations at or below each of [`PluginHistogram::BOUNDS`].
    pub buckets: [u64; PluginHistogram::BOUNDS.len()],
    /// Observations in all.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl PluginHistogram {
    /// Upper bounds: 1-2.5-5 steps over seven decades, for values in whatever unit the plugin
    /// chose (milliseconds, bytes, ratios).
    pub const BOUNDS: [f64; 22] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
        100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    ];

    fn observe(&mut self, value: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(Self::BOUNDS) {
            if value <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }
}

/// Limits one store's memory and remembers a refused growth, so that the trap that follows
/// (an allocator's abort) is reported as what it is.
pub(super) struct MemoryLimit {
    pub(super) bytes: usize,
    pub(super) denied: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One store's state.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryLimit,
    pub(super) call: CallContext,
    pub(super) shared: Arc<PluginShared>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl bindings::accord::policy::request::Host for HostState {
    fn header(&mut self, name: String) -> Option<String> {
        let request = self.call.request.as_ref()?;
        request
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn headers(&mut self) -> Vec<wit::HttpHeader> {
        let Some(request) = self.call.request.as_ref() else {
            return Vec::new();
        };
        request
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some(wit::HttpHeader {
                    name: k.as_str().to_owned(),
                    value: v.to_str().ok()?.to_owned(),
                })
            })
            .collect()
    }

    fn query(&mut self) -> Option<String> {
        self.call.request.as_ref()?.uri.query().map(str::to_owned)
    }

    fn response_body(&mut self) -> Option<Vec<u8>> {
        self.call.response_body.as_ref().map(|b| b.to_vec())
    }

    fn response_header(&mut self, name: String) -> Option<String> {
        let headers = self.call.response_headers.as_ref()?;
        headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl bindings::accord::policy::locals::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.call.locals.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: String) {
        if self.call.locals.len() < 64 || self.call.locals.contains_key(&key) {
            self.call.locals.insert(key, value);
        }
    }
}

impl bindings::accord::policy::sla::Host for HostState {
    fn route(&mut self) -> Option<wit::RouteSnapshot> {
        // As of the engine's last evaluation (every few seconds), like `backends`.
        match self.call.sla.as_ref()? {
            SlaState::Live(sla) => Some(snapshot(sla)),
            SlaState::Scripted(scripted) => scripted.route.clone(),
        }
    }

    fn backends(&mut self) -> Vec<wit::BackendStats> {
        // As of the engine's last evaluation (every few seconds): no window is recomputed here.
        let sla = match self.call.sla.as_ref() {
            None => return Vec::new(),
            Some(SlaState::Scripted(scripted)) => return scripted.backends.clone(),
            Some(SlaState::Live(sla)) => sla,
        };
        sla.backends()
            .iter()
            .enumerate()
            .map(|(position, b)| {
                let view = b.view();
                wit::BackendStats {
                    backend: b.id().to_string(),
                    position: position as u32,
                    breaching: b.is_breaching(),
                    burn_rate: b.badness(),
                    requests: view.requests,
                    error_ratio: view.error_ratio,
                    p99_ms: view.p99_ms,
                }
            })
            .collect()
    }
}

/// The route's SLA state as of the engine's last evaluation, in the interface's terms.
fn snapshot(sla: &RouteSla) -> wit::RouteSnapshot {
    let view = sla.view();
    let indicators = view
        .indicators
        .iter()
        .map(|i| wit::Indicator {
            name: match i.indicator {
                Indicator::Availability => "availability".into(),
                Indicator::Latency => "latency".into(),
            },
            target: i.target,
            attainment: i.attainment,
            budget_remaining: i.budget_remaining,
            burn_rates: i
                .burn_rates
                .iter()
                .map(|(window, rate)| ((*window).to_owned(), *rate))
                .collect(),
        })
        .collect();
    let windows = view
        .windows
        .iter()
        .map(|w| {
            let count = |class: Class| w.by_class[class.index()];
            wit::WindowStats {
                window: w.window.to_owned(),
                total: w.total(),
                good: count(Class::Good),
                bad: count(Class::Bad),
                throttled: count(Class::Throttled),
                rejected: count(Class::Rejected),
                client_error: count(Class::ClientError),
                p50_ms: w.p50_ms,
                p99_ms: w.p99_ms,
            }
        })
        .collect();
    wit::RouteSnapshot {
        route: sla.id().to_string(),
        status: if sla.is_budget_exhausted() {
            "budget_exhausted".into()
        } else if sla.is_paging() {
            "paging".into()
        } else if sla.backends().iter().any(|b| b.is_breaching()) {
            "degraded".into()
        } else {
            "ok".into()
        },
        paging: sla.is_paging(),
        budget_exhausted: sla.is_budget_exhausted(),
        indicators,
        windows,
    }
}

impl bindings::accord::policy::rate::Host for HostState {
    fn observe(&mut self, key: String, events: u32) -> f64 {
        let rates = &self.shared.rates;
        rates.observe(&key, events as isize);
        rates.rate_with(&key, PROPORTIONAL_RATE_ESTIMATE_CALC_FN)
    }

    fn current(&mut self, key: String) -> f64 {
        self.shared
            .rates
            .rate_with(&key, PROPORTIONAL_RATE_ESTIMATE_CALC_FN)
    }
}

impl bindings::accord::policy::cluster_rate::Host for HostState {
    fn observe(&mut self, key: String, events: u32) -> f64 {
        self.shared.cluster_rates.observe(&key, events)
    }

    fn current(&mut self, key: String) -> f64 {
        self.shared.cluster_rates.current(&key)
    }
}

impl bindings::accord::policy::clock::Host for HostState {
    fn now_ms(&mut self) -> i64 {
        match &self.call.sla {
            Some(SlaState::Live(route)) => route.clock().now_ms(),
            Some(SlaState::Scripted(scripted)) if scripted.now_ms.is_some() => {
                scripted.now_ms.unwrap_or_default()
            }
            _ => crate::sla::Clock::system().now_ms(),
        }
    }
}

impl bindings::accord::policy::telemetry::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        let plugin = &*self.shared.name;
        match level {
            wit::Level::Debug => tracing::debug!(target: "accord::plugin", plugin, "{message}"),
            wit::Level::Info => tracing::info!(target: "accord::plugin", plugin, "{message}"),
            wit::Level::Warn => tracing::warn!(target: "accord::plugin", plugin, "{message}"),
            wit::Level::Error => tracing::error!(target: "accord::plugin", plugin, "{message}"),
        }
    }

    fn counter(&mut self, name: String, delta: u64) {
        let mut counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if counters.len() < 1000 || counters.contains_key(&name) {
            *counters.entry(name).or_default() += delta;
        }
    }

    fn histogram(&mut self, name: String, value: f64) {
        if !value.is_finite() {
            return;
        }
        let mut histograms = self
            .shared
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if histograms.len() < 100 || histograms.contains_key(&name) {
            histograms.entry(name).or_default().observe(value);
        }
    }

    fn annotate(&mut self, key: String, value: String) {
        if self.call.annotations.len() < 16 {
            self.call.annotations.push((key, value));
        }
    }
}
