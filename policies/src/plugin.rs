//! The WebAssembly plugin host: SLA policy plugins as components of the `accord:policy` world
//! (`wasm-plugins/wit/policy.wit`), run on wasmtime.
//!
//! * One [`PluginEngine`] per gateway: the component model, the pooling allocator, and epoch
//!   interruption driven by a 1 ms ticker thread, so every call has a deadline.
//! * A [`Plugin`] is one loaded and configured component. In `pooled` isolation it keeps
//!   long-lived instances, checked out for one call at a time (never across the upstream
//!   request); in `strict` isolation every request gets a fresh instance. Each store has a
//!   memory limit. Any error — a trap, the deadline, the memory limit, an invalid output —
//!   discards the instance; a plugin that keeps failing is bypassed by a breaker, and its
//!   `on_error` (allow or reject) decides for it meanwhile.
//! * Imports are only what the WIT world names, plus WASI with nothing granted: no
//!   preopened directories, no sockets, no name lookup, no environment. A component that
//!   imports anything else fails to load.
//! * The request is lent to the plugin for the duration of a call (an `Arc` of its head):
//!   headers are read only when the plugin asks for them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::sla::RouteSla;

mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../wasm-plugins/wit",
        world: "policy",
        // Calls run on fibers and are awaited: WASI's streams (a guest's panic message, its
        // prints) then never block a tokio worker.
        exports: { default: async },
    });
}

use bindings::accord::policy::types as wit;
pub use bindings::accord::policy::types::{
    Decision, OutcomeClass, Rejection, RequestHead, ResponseHead, Verdict,
};
use bindings::{Policy, PolicyPre};

/// What a failing plugin's requests get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail open: the request goes on as if the plugin had allowed it.
    Allow,
    /// Fail closed: the request is refused with 503 `plugin_failed`.
    Reject,
}

/// How instances are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Long-lived instances, one call at a time each.
    Pooled,
    /// A fresh instance for every request (for plugins you do not trust with state).
    Strict,
}

/// A plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Name in logs and metrics.
    pub name: String,
    /// Its configuration, as JSON, given to `configure`.
    pub config: String,
    /// Wall time one call may take.
    pub time_limit: Duration,
    /// Linear memory an instance may use.
    pub memory_limit: usize,
    /// What happens to requests when it fails.
    pub on_error: OnError,
    /// Instance sharing.
    pub isolation: Isolation,
}

/// A plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// It could not be loaded or configured.
    #[error("plugin {plugin}: {message}")]
    Load {
        /// Plugin name.
        plugin: String,
        /// Why.
        message: String,
    },
    /// A call trapped, ran out of time or memory, or returned something invalid.
    #[error("plugin {plugin}: {message}")]
    Call {
        /// Plugin name.
        plugin: String,
        /// What happened.
        message: String,
    },
    /// The breaker is open: the plugin is bypassed for now.
    #[error("plugin {plugin} is bypassed after repeated failures")]
    Bypassed {
        /// Plugin name.
        plugin: String,
    },
}

const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The shared wasmtime engine and linker.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

/// Increments the engine's epoch every millisecond until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

impl PluginEngine {
    /// An engine for up to `max_instances` plugin instances at once, each with at most
    /// `max_memory` of linear memory.
    pub fn new(max_instances: u32, max_memory: usize) -> Result<Self, PluginError> {
        let error = |e: wasmtime::Error| PluginError::Load {
            plugin: "(engine)".into(),
            message: format!("{e:#}"),
        };
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(max_instances)
            .total_core_instances(max_instances * 4)
            .total_memories(max_instances * 2)
            .total_tables(max_instances * 2)
            .max_memory_size(max_memory);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(error)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(error)?;
        Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("accord-plugin-epoch".into())
            .spawn(move || {
                while !stopped.load(Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Load {
                plugin: "(engine)".into(),
                message: format!("cannot start the epoch ticker: {e}"),
            })?;
        Ok(Self {
            engine,
            linker,
            _ticker: EpochTicker { stop },
        })
    }

    /// Loads, links and configures a plugin from a component file.
    pub async fn load(
        self: &Arc<Self>,
        path: &Path,
        spec: PluginSpec,
    ) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Load {
            plugin: spec.name.clone(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let component = self.compile(&bytes, &spec.name)?;
        self.prepare(component, spec).await
    }

    /// Compiles a component (CPU-heavy: call it off the request path, e.g. on a blocking
    /// thread), to be prepared with [`PluginEngine::prepare`].
    pub fn compile(&self, bytes: &[u8], name: &str) -> Result<Component, PluginError> {
        Component::new(&self.engine, bytes).map_err(|e| PluginError::Load {
            plugin: name.to_owned(),
            message: format!("not a loadable component: {e:#}"),
        })
    }

    /// Links a compiled component, instantiates and configures a first instance.
    pub async fn prepare(
        self: &Arc<Self>,
        component: Component,
        spec: PluginSpec,
    ) -> Result<Plugin, PluginError> {
        let error = |message: String| PluginError::Load {
            plugin: spec.name.clone(),
            message,
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            error(format!("it needs imports this gateway does not give (only accord:policy and WASI without files or network): {e:#}"))
        })?;
        let pre = PolicyPre::new(instance_pre).map_err(|e| {
            error(format!(
                "it does not implement the accord:policy world: {e:#}"
            ))
        })?;
        let plugin = Plugin {
            shared: Arc::new(PluginShared {
                name: spec.name.clone().into(),
                rates: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
            }),
            engine: self.clone(),
            pre,
            pool: Mutex::new(Vec::new()),
            stats: PluginStats::default(),
            breaker: Breaker::default(),
            reasons: Mutex::new(HashMap::new()),
            spec,
        };
        // Instantiate and configure one instance now: a plugin that cannot start is refused
        // here, not on the first request.
        let instance = plugin.instantiate().await?;
        plugin.give_back(instance);
        Ok(plugin)
    }
}

// === Host state and imports ===

/// The request and route a call is about.
#[derive(Default)]
pub struct CallContext {
    /// The request head, lent for the call.
    pub request: Option<Arc<http::request::Parts>>,
    /// The response head, in `on-response`.
    pub response_headers: Option<Arc<http::HeaderMap>>,
    /// The route's SLA state.
    pub sla: Option<Arc<RouteSla>>,
    /// The route's backend ids, in its order.
    pub backends: Arc<[Arc<str>]>,
    /// Request-local storage.
    pub locals: HashMap<String, String>,
    /// Annotations for the access log.
    pub annotations: Vec<(String, String)>,
}

struct PluginShared {
    name: Arc<str>,
    rates: Mutex<HashMap<String, RateState>>,
    counters: Mutex<HashMap<String, u64>>,
}

/// An exponentially decaying event rate (per second) with a 1 s half-life.
struct RateState {
    rate: f64,
    at: tokio::time::Instant,
}

/// Limits one store's memory and remembers a refused growth, so that the trap that follows
/// (an allocator's abort) is reported as what it is.
struct MemoryLimit {
    bytes: usize,
    denied: bool,
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
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryLimit,
    call: CallContext,
    shared: Arc<PluginShared>,
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
        let sla = self.call.sla.as_ref()?;
        let now = sla.clock().minute();
        Some(snapshot(sla, now))
    }

    fn backends(&mut self) -> Vec<wit::BackendStats> {
        // As of the engine's last evaluation (every few seconds): no window is recomputed here.
        let Some(sla) = self.call.sla.as_ref() else {
            return Vec::new();
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

fn snapshot(sla: &RouteSla, now: i64) -> wit::RouteSnapshot {
    let objective = sla.objective();
    let slo_counts = sla
        .meter()
        .window_counts(now, objective.window.covered(now * 60_000 + 59_999));
    let indicators = objective
        .indicators()
        .into_iter()
        .map(|(indicator, target)| {
            let events = objective.events(indicator, &slo_counts);
            let burn_rates = crate::sla::report::WINDOWS
                .iter()
                .map(|(name, secs)| {
                    let counts = sla.meter().window_counts(now, Duration::from_secs(*secs));
                    (
                        (*name).to_owned(),
                        crate::sla::objective::burn_rate(
                            objective.events(indicator, &counts),
                            target,
                        ),
                    )
                })
                .collect();
            wit::Indicator {
                name: match indicator {
                    crate::sla::objective::Indicator::Availability => "availability".into(),
                    crate::sla::objective::Indicator::Latency => "latency".into(),
                },
                target,
                attainment: events.ratio(),
                budget_remaining: crate::sla::objective::budget(events, target).remaining_ratio,
                burn_rates,
            }
        })
        .collect();
    let windows = [("5m", 300u64), ("1h", 3600)]
        .iter()
        .map(|(name, secs)| {
            let w = sla.meter().window(now, Duration::from_secs(*secs));
            let c = |class| w.count(class);
            wit::WindowStats {
                window: (*name).to_owned(),
                total: w.total(),
                good: c(crate::Class::Good),
                bad: c(crate::Class::Bad),
                throttled: c(crate::Class::Throttled),
                rejected: c(crate::Class::Rejected),
                client_error: c(crate::Class::ClientError),
                p50_ms: w.latency.quantile(0.5).map(|d| d.as_secs_f64() * 1000.0),
                p99_ms: w.latency.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
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
        update_rate(&self.shared, key, f64::from(events))
    }

    fn current(&mut self, key: String) -> f64 {
        update_rate(&self.shared, key, 0.0)
    }
}

/// Decays the key's rate to now (1 s half-life), adds `events`, and returns events per second.
fn update_rate(shared: &PluginShared, key: String, events: f64) -> f64 {
    let now = tokio::time::Instant::now();
    let mut rates = shared.rates.lock().unwrap_or_else(|p| p.into_inner());
    if rates.len() > 100_000 && !rates.contains_key(&key) {
        // Forget idle keys rather than grow without bound.
        rates.retain(|_, r| now.duration_since(r.at) < Duration::from_secs(10));
    }
    let state = rates.entry(key).or_insert(RateState { rate: 0.0, at: now });
    let elapsed = now.duration_since(state.at).as_secs_f64();
    // An exponentially weighted rate: events add ln2/half-life each, decaying with the half-life.
    let decay = (-elapsed * std::f64::consts::LN_2).exp();
    state.rate = state.rate * decay + events * std::f64::consts::LN_2;
    state.at = now;
    state.rate
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

    fn annotate(&mut self, key: String, value: String) {
        if self.call.annotations.len() < 16 {
            self.call.annotations.push((key, value));
        }
    }
}

// === Plugin ===

/// Counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that failed (trap, deadline, memory, invalid output).
    pub failures: AtomicU64,
    /// Requests decided by `on_error` because the breaker was open.
    pub bypassed: AtomicU64,
    /// Instances created.
    pub instantiations: AtomicU64,
    /// Rejections decided by the plugin.
    pub rejections: AtomicU64,
    /// Reroutes decided by the plugin.
    pub reroutes: AtomicU64,
    /// Responses it reclassified.
    pub reclassified: AtomicU64,
}

/// Opens after consecutive failures; while open, calls are skipped for a cool-down.
#[derive(Debug, Default)]
struct Breaker {
    consecutive: AtomicU32,
    open_until_ms: AtomicU64,
}

const BREAKER_FAILURES: u32 = 5;
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// A loaded, configured plugin.
pub struct Plugin {
    spec: PluginSpec,
    engine: Arc<PluginEngine>,
    pre: PolicyPre<HostState>,
    pool: Mutex<Vec<Instance>>,
    shared: Arc<PluginShared>,
    stats: PluginStats,
    breaker: Breaker,
    reasons: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

struct Instance {
    store: Store<HostState>,
    policy: Policy,
}

/// The outcome of calling a plugin.
pub type CallResult<T> = Result<T, PluginError>;

impl Plugin {
    /// The plugin's settings.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The plugin's counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// Reclassifications by reason.
    pub fn reclassification_reasons(&self) -> Vec<(String, u64)> {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = reasons.iter().map(|(k, v)| (k.clone(), *v)).collect();
        list.sort();
        list
    }

    /// The plugin's own counters (`telemetry.counter`).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let counters = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
        list.sort();
        list
    }

    async fn instantiate(&self) -> CallResult<Instance> {
        let error = |message: String| PluginError::Load {
            plugin: self.spec.name.clone(),
            message,
        };
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: MemoryLimit {
                bytes: self.spec.memory_limit,
                denied: false,
            },
            call: CallContext::default(),
            shared: self.shared.clone(),
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let policy = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| error(format!("cannot instantiate: {e:#}")))?;
        self.stats.instantiations.fetch_add(1, Relaxed);
        store.set_epoch_deadline(self.deadline_ticks());
        match policy.call_configure(&mut store, &self.spec.config).await {
            Ok(Ok(())) => Ok(Instance { store, policy }),
            Ok(Err(message)) => Err(error(format!(
                "configure refused its configuration: {message}"
            ))),
            Err(e) => Err(error(format!("configure failed: {e:#}"))),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (self.spec.time_limit.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }

    async fn checkout(&self) -> CallResult<Instance> {
        if self.spec.isolation == Isolation::Pooled {
            let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(instance) = pooled {
                return Ok(instance);
            }
        }
        self.instantiate().await
    }

    fn give_back(&self, instance: Instance) {
        if self.spec.isolation == Isolation::Pooled {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 64 {
                pool.push(instance);
            }
        }
    }

    fn breaker_open(&self) -> bool {
        let until = self.breaker.open_until_ms.load(Relaxed);
        until != 0 && (now_ms() as u64) < until
    }

    fn failed(&self) {
        self.stats.failures.fetch_add(1, Relaxed);
        let n = self.breaker.consecutive.fetch_add(1, Relaxed) + 1;
        if n >= BREAKER_FAILURES {
            self.breaker.consecutive.store(0, Relaxed);
            self.breaker.open_until_ms.store(
                now_ms() as u64 + BREAKER_COOL_DOWN.as_millis() as u64,
                Relaxed,
            );
            tracing::warn!(plugin = %self.spec.name, cool_down = ?BREAKER_COOL_DOWN, "plugin failed {BREAKER_FAILURES} times in a row: bypassed");
        }
    }

    /// Runs one export on an instance with `call` lent to it; the instance is kept only when
    /// the call succeeded.
    async fn run<T>(
        &self,
        call: CallContext,
        f: impl AsyncFnOnce(&Policy, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> (CallResult<T>, CallContext) {
        if self.breaker_open() {
            self.stats.bypassed.fetch_add(1, Relaxed);
            return (
                Err(PluginError::Bypassed {
                    plugin: self.spec.name.clone(),
                }),
                call,
            );
        }
        let mut instance = match self.checkout().await {
            Ok(instance) => instance,
            Err(e) => {
                self.failed();
                return (Err(e), call);
            }
        };
        self.stats.calls.fetch_add(1, Relaxed);
        instance.store.data_mut().call = call;
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().limits.denied = false;
        let Instance { store, policy } = &mut instance;
        let result = f(policy, store).await;
        let memory_denied = instance.store.data().limits.denied;
        let call = std::mem::take(&mut instance.store.data_mut().call);
        match result {
            Ok(value) => {
                self.breaker.consecutive.store(0, Relaxed);
                self.give_back(instance);
                (Ok(value), call)
            }
            Err(e) => {
                self.failed();
                let message = if memory_denied {
                    format!(
                        "exceeded its memory limit of {} bytes ({})",
                        self.spec.memory_limit,
                        describe_trap(&e, &self.spec)
                    )
                } else {
                    describe_trap(&e, &self.spec)
                };
                (
                    Err(PluginError::Call {
                        plugin: self.spec.name.clone(),
                        message,
                    }),
                    call,
                )
            }
        }
    }

    /// Calls `on-request`. The decision is validated against the route's backends.
    pub async fn on_request(
        &self,
        head: &RequestHead,
        call: CallContext,
    ) -> (CallResult<Decision>, CallContext) {
        let (result, call) = self
            .run(
                call,
                async |policy: &Policy, store: &mut Store<HostState>| {
                    policy.call_on_request(store, head).await
                },
            )
            .await;
        let result = result.and_then(|decision| {
            match &decision {
                Decision::Reject(r) if !(400..=599).contains(&r.status) => {
                    return Err(self.invalid(format!(
                        "rejected with status {}, outside 400-599",
                        r.status
                    )));
                }
                Decision::Reroute(backend) if !call.backends.iter().any(|b| **b == **backend) => {
                    return Err(self.invalid(format!(
                        "rerouted to {backend:?}, which is not a backend of route {}",
                        head.route
                    )));
                }
                Decision::Reject(_) => self.stats.rejections.fetch_add(1, Relaxed),
                Decision::Reroute(_) => self.stats.reroutes.fetch_add(1, Relaxed),
                Decision::Allow => 0,
            };
            Ok(decision)
        });
        (result, call)
    }

    /// Calls `on-request` once with no request, as a reload does before swapping a new version
    /// in: a plugin that fails this is refused.
    pub async fn canary(&self) -> CallResult<()> {
        let head = RequestHead {
            route: "(canary)".into(),
            method: "GET".into(),
            path: "/".into(),
            content_length: None,
        };
        let (result, _) = self
            .run(
                CallContext::default(),
                async |policy: &Policy, store: &mut Store<HostState>| {
                    policy.call_on_request(store, &head).await
                },
            )
            .await;
        result.map(|_| ()).map_err(|e| PluginError::Load {
            plugin: self.spec.name.clone(),
            message: format!("the canary call failed: {e}"),
        })
    }

    /// Calls `on-response`.
    pub async fn on_response(
        &self,
        head: &ResponseHead,
        call: CallContext,
    ) -> (CallResult<Verdict>, CallContext) {
        let (result, call) = self
            .run(
                call,
                async |policy: &Policy, store: &mut Store<HostState>| {
                    policy.call_on_response(store, head).await
                },
            )
            .await;
        if let Ok(Verdict::Good(reason) | Verdict::Bad(reason)) = &result {
            self.stats.reclassified.fetch_add(1, Relaxed);
            let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            if reasons.len() < 100 || reasons.contains_key(reason.as_str()) {
                *reasons.entry(reason.clone()).or_default() += 1;
            }
        }
        (result, call)
    }

    fn invalid(&self, message: String) -> PluginError {
        self.failed();
        PluginError::Call {
            plugin: self.spec.name.clone(),
            message: format!("invalid output: {message}"),
        }
    }
}

fn describe_trap(error: &wasmtime::Error, spec: &PluginSpec) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => {
                format!("exceeded its time limit of {:?}", spec.time_limit)
            }
            other => format!("trapped: {other}"),
        };
    }
    format!("failed: {error:#}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
