//! The WebAssembly plugin host: SLA policy plugins as components of the `accord:policy` world
//! (`wasm-plugins/wit/policy.wit`, 0.2.1; 0.2.0's and 0.1.0's plugins keep loading), run on
//! wasmtime.
//!
//! * One [`PluginEngine`] per gateway: the component model, the pooling allocator, and epoch
//!   interruption, so every call has a deadline: a watcher thread advances the epoch when a
//!   call is past its deadline, and the call's store traps it (`epoch.rs`; the thread parks
//!   after a second without plugin calls, and the next call wakes it).
//! * A [`Plugin`] is one loaded and configured component. In `pooled` isolation it keeps
//!   long-lived instances, checked out for one call at a time (never across the upstream
//!   request); in `strict` isolation every request gets a fresh instance. Each store has a
//!   memory limit. Any error — a trap, the deadline, the memory limit, an invalid output —
//!   discards the instance; a plugin that keeps failing is bypassed by a breaker, and its
//!   `on_error` (allow or reject) decides for it meanwhile.
//! * A call runs on the stack of the request that makes it when nothing the component imports
//!   can wait ([`CallStack::Caller`]: the reference plugins; `wasi:io` is then served at once,
//!   `wasi_io.rs`), and on a fiber of its own otherwise ([`CallStack::Fiber`]: a timer, a file,
//!   a socket), which a wait suspends without holding up the thread.
//! * Imports are only what the WIT world names, plus WASI with nothing granted: no
//!   preopened directories, no sockets, no name lookup, no environment. A component that
//!   imports anything else fails to load.
//! * The request is lent to the plugin for the duration of a call (its head moved into the
//!   boxed call context, and out after the chain): headers are read only when the plugin asks
//!   for them, and so are the head's fields in the
//!   lazy worlds ([`RequestFacts`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

mod artifacts;
mod engine;
mod epoch;
mod host;
pub mod shared_rates;
pub mod state;
mod versions;
mod wasi_io;

pub use artifacts::{ArtifactSource, REFUSED as COMPILE_REFUSED};
pub use engine::{CallStack, Compiler, EngineLimits, PluginEngine, compile_artifact, set_compiler};
pub use host::{
    CallContext, HeaderEdit, HostState, PluginHistogram, RequestFacts, ScriptedSla, SlaState,
};
pub use versions::WorldVersion;

/// The least time an instance's start-up may take, each of instantiation and `configure`. A
/// start-up is not a call: it initializes the component's memory and, in languages with a
/// runtime (Python, JavaScript), the runtime, which takes milliseconds and more on a busy
/// machine, whatever a call's time limit. It is bounded still, so a start-up that never ends
/// fails.
pub const START_UP_LIMIT: Duration = Duration::from_secs(1);
use host::{MemoryLimit, PluginShared};

mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../wasm-plugins/wit",
        world: "policy",
        // These calls run on fibers and are awaited, for plugins whose imports can wait
        // (`CallStack::Fiber`); the others' `on-request` and `on-response` are called on the
        // caller's stack (`versions::Direct`). Instantiation and `configure` always run on a
        // fiber: they are rare, and may take long.
        exports: { default: async },
    });
}

pub use bindings::accord::policy::types::{
    BackendStats, Decision, HttpHeader, Indicator, OutcomeClass, Rejection, RequestHead,
    ResponseHead, RouteSnapshot, Verdict, WindowStats,
};
use versions::{Guest, GuestPre};

/// How a response's class reads in the plugin interface. A response exists, so its client has
/// not gone away: [`Class::Cancelled`] never reaches `on-response` (0.1.0 has no such case).
impl From<crate::Class> for OutcomeClass {
    fn from(class: crate::Class) -> Self {
        match class {
            crate::Class::Good => OutcomeClass::Good,
            crate::Class::Bad => OutcomeClass::Bad,
            crate::Class::Throttled => OutcomeClass::Throttled,
            crate::Class::Rejected => OutcomeClass::Rejected,
            crate::Class::ClientError | crate::Class::Cancelled => OutcomeClass::ClientError,
        }
    }
}

/// Something each plugin has one of, by plugin name, made on first use and kept as long as
/// the registry (across reloads).
#[derive(Debug)]
pub struct ByPlugin<T> {
    by_plugin: Mutex<HashMap<String, Arc<T>>>,
}

impl<T> Default for ByPlugin<T> {
    fn default() -> Self {
        Self {
            by_plugin: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Default> ByPlugin<T> {
    /// Plugin `name`'s, made on first use.
    pub fn plugin(&self, name: &str) -> Arc<T> {
        let mut by_plugin = self.by_plugin.lock().unwrap_or_else(|p| p.into_inner());
        by_plugin.entry(name.to_owned()).or_default().clone()
    }

    /// Every plugin's, by name.
    pub fn all(&self) -> Vec<(String, Arc<T>)> {
        let by_plugin = self.by_plugin.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = by_plugin
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// What plugins keep beyond one engine, by plugin name: their `cluster-rate` counts and their
/// `state`. Kept across reloads; the cluster sync shares both with the other replicas.
#[derive(Debug, Default, Clone)]
pub struct PluginShares {
    /// `cluster-rate` counts.
    pub rates: Arc<shared_rates::SharedRateRegistry>,
    /// Key-value state.
    pub state: Arc<state::PluginStateRegistry>,
}

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
    /// How much of a response body the gateway buffers for `on-response` to read
    /// (`response.body`); 0 for none. A longer body is streamed unread.
    pub response_body: usize,
    /// How much of a request body the gateway reads before `on-request` (`request.body`); 0
    /// for none. A longer body is forwarded unread.
    pub request_body: usize,
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
    /// How long `on-request` calls took (the load-time canary call is not counted).
    pub on_request_time: CallTimes,
    /// How long `on-response` calls took.
    pub on_response_time: CallTimes,
}

/// Upper bounds (seconds) of the plugin call-time buckets: calls take microseconds.
pub const CALL_TIME_BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 1e-1,
];

/// Plugin call times, for `accord_plugin_call_duration_seconds`: the gateway's latency
/// histogram on [`CALL_TIME_BUCKETS`].
#[derive(Debug)]
pub struct CallTimes(accord_adapters::stats::LatencyHistogram);

impl Default for CallTimes {
    fn default() -> Self {
        Self(accord_adapters::stats::LatencyHistogram::with_bounds(
            &CALL_TIME_BUCKETS,
        ))
    }
}

impl std::ops::Deref for CallTimes {
    type Target = accord_adapters::stats::LatencyHistogram;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Which export a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    OnRequest,
    OnResponse,
    /// The call made once at load: not traffic, not counted.
    Canary,
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
    version: WorldVersion,
    calls: CallStack,
    pre: GuestPre,
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

/// An instance of the plugin: two pointers, so that taking one from the pool and giving it
/// back moves 16 bytes on every call, not the bindings' 128.
struct Instance {
    store: Store<HostState>,
    policy: Box<Guest>,
}

/// The outcome of calling a plugin.
pub type CallResult<T> = Result<T, PluginError>;

/// A call tried on the caller's stack ([`Plugin::on_request_now`], [`Plugin::on_response_now`]).
#[must_use]
pub enum Now<T> {
    /// It ran: its result, and the call context given back.
    Done(CallResult<T>, Box<CallContext>),
    /// It could not run at once (its calls can wait, or no instance is ready): the call
    /// context, untouched, for the async call.
    Later(Box<CallContext>),
}

impl Plugin {
    /// The plugin's settings.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// The version of the world it implements.
    pub fn version(&self) -> WorldVersion {
        self.version
    }

    /// Where its calls run.
    pub fn calls(&self) -> &CallStack {
        &self.calls
    }

    /// Whether it has `on-response` (a `request-policy` plugin has not).
    pub fn judges_responses(&self) -> bool {
        self.version.judges_responses()
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

    /// The plugin's own histograms (`telemetry.histogram`).
    pub fn histograms(&self) -> Vec<(String, PluginHistogram)> {
        let histograms = self
            .shared
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = histograms
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
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
            call: Box::default(),
            shared: self.shared.clone(),
            deadline: epoch::Deadline::passed(),
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limits);
        // The epoch moves only when some call is past its deadline (`epoch.rs`): each
        // increment asks whether this store's call is the one.
        store.epoch_deadline_callback(|store| {
            Ok(if store.data().deadline.has_passed() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        let start_up = self.spec.time_limit.max(START_UP_LIMIT);
        let watch = self.watch(&mut store, start_up);
        let policy = self
            .pre
            .instantiate(&mut store)
            .await
            .map_err(|e| error(format!("cannot instantiate: {e:#}")))?;
        drop(watch);
        self.stats.instantiations.fetch_add(1, Relaxed);
        let watch = self.watch(&mut store, start_up);
        let configured = policy.configure(&mut store, &self.spec.config).await;
        drop(watch);
        match configured {
            Ok(Ok(())) => Ok(Instance {
                store,
                policy: Box::new(policy),
            }),
            Ok(Err(message)) => Err(error(format!(
                "configure refused its configuration: {message}"
            ))),
            Err(e) => Err(error(format!("configure failed: {e:#}"))),
        }
    }

    /// Watches what `store` runs next, for at most `limit`: its epoch callback traps it once
    /// the watch's deadline has passed.
    fn watch(&self, store: &mut Store<HostState>, limit: Duration) -> epoch::Watch<'_> {
        let watch = self.engine.ticker.watch(limit);
        store.data_mut().deadline = watch.deadline();
        // The next move of the epoch asks the callback.
        store.set_epoch_deadline(1);
        watch
    }

    async fn checkout(&self) -> CallResult<Instance> {
        if let Some(instance) = self.pooled() {
            return Ok(instance);
        }
        // Boxed: instantiating is the exception, and its future (about 2 KiB) would otherwise
        // be part of every call's.
        Box::pin(self.instantiate()).await
    }

    /// An instance of the pool, in `pooled` isolation, when one is idle.
    fn pooled(&self) -> Option<Instance> {
        if self.spec.isolation != Isolation::Pooled {
            return None;
        }
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop()
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

    /// Runs one export on an instance with `call` lent to it, on a fiber when the export is
    /// async (see [`Self::run_now`] for the caller's stack); the instance is kept only when
    /// the call succeeded.
    async fn run<T>(
        &self,
        hook: Hook,
        call: Box<CallContext>,
        f: impl AsyncFnOnce(&Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> (CallResult<T>, Box<CallContext>) {
        if let Some(bypassed) = self.bypassed() {
            return (Err(bypassed), call);
        }
        let mut instance = match self.checkout().await {
            Ok(instance) => instance,
            Err(e) => {
                self.failed();
                return (Err(e), call);
            }
        };
        let (call, watch) = self.enter(hook, &mut instance, call);
        let Instance { store, policy } = &mut instance;
        let result = f(policy, store).await;
        self.leave(hook, instance, call, watch, result)
    }

    /// Runs one export at once, on the caller's stack, when it can: the plugin's calls never
    /// wait ([`CallStack::Caller`]) and a pooled instance is ready. Otherwise `call` is given
    /// back untouched, for [`Self::run`]: no instance is made here, since instantiating runs
    /// on a fiber. No future is built on this path, and none of a fiber's is carried in the
    /// caller's.
    fn run_now<T>(
        &self,
        hook: Hook,
        call: Box<CallContext>,
        f: impl FnOnce(&Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Now<T> {
        if matches!(self.calls, CallStack::Fiber { .. }) {
            return Now::Later(call);
        }
        if let Some(bypassed) = self.bypassed() {
            return Now::Done(Err(bypassed), call);
        }
        let Some(mut instance) = self.pooled() else {
            return Now::Later(call);
        };
        let (call, watch) = self.enter(hook, &mut instance, call);
        let result = f(&instance.policy, &mut instance.store);
        let (result, call) = self.leave(hook, instance, call, watch, result);
        Now::Done(result, call)
    }

    /// The refusal of a call while the breaker is open.
    fn bypassed(&self) -> Option<PluginError> {
        if !self.breaker_open() {
            return None;
        }
        self.stats.bypassed.fetch_add(1, Relaxed);
        Some(PluginError::Bypassed {
            plugin: self.spec.name.clone(),
        })
    }

    /// Begins a call on `instance`: lends it `call` and watches its deadline.
    ///
    /// The context is boxed, and swapped with the store's (idle) one for the call: a few
    /// hundred bytes are lent by moving a pointer, with no allocation. What is returned is
    /// the store's idle box, which [`Self::leave`] swaps back.
    fn enter(
        &self,
        hook: Hook,
        instance: &mut Instance,
        mut call: Box<CallContext>,
    ) -> (Box<CallContext>, epoch::Watch<'_>) {
        if hook != Hook::Canary {
            self.stats.calls.fetch_add(1, Relaxed);
        }
        std::mem::swap(&mut instance.store.data_mut().call, &mut call);
        let watch = self.watch(&mut instance.store, self.spec.time_limit);
        instance.store.data_mut().limits.denied = false;
        (call, watch)
    }

    /// Ends a call begun by [`Self::enter`]: records its time, takes the context back, and
    /// keeps the instance only when the call succeeded.
    fn leave<T>(
        &self,
        hook: Hook,
        mut instance: Instance,
        mut call: Box<CallContext>,
        watch: epoch::Watch<'_>,
        result: wasmtime::Result<T>,
    ) -> (CallResult<T>, Box<CallContext>) {
        let took = watch.elapsed();
        drop(watch);
        match hook {
            Hook::OnRequest => self.stats.on_request_time.record(took),
            Hook::OnResponse => self.stats.on_response_time.record(took),
            Hook::Canary => {}
        }
        let memory_denied = instance.store.data().limits.denied;
        std::mem::swap(&mut instance.store.data_mut().call, &mut call);
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

    /// Calls `on-request` about `call` (its `facts` are the request head's fields), at once
    /// when it can ([`Self::run_now`]): [`Now::Later`] gives `call` back for
    /// [`Self::on_request`]. The decision is validated against the route's backends.
    pub fn on_request_now(&self, call: Box<CallContext>) -> Now<Decision> {
        match self.run_now(Hook::OnRequest, call, Guest::on_request_now) {
            Now::Done(result, call) => Now::Done(self.checked(result, &call), call),
            later => later,
        }
    }

    /// Calls `on-request` about `call` (its `facts` are the request head's fields), making an
    /// instance when none is ready, and on a fiber when the plugin's calls can wait. The
    /// decision is validated against the route's backends.
    pub async fn on_request(
        &self,
        call: Box<CallContext>,
    ) -> (CallResult<Decision>, Box<CallContext>) {
        let (result, call) = self
            .run(
                Hook::OnRequest,
                call,
                async |policy: &Guest, store: &mut Store<HostState>| policy.on_request(store).await,
            )
            .await;
        (self.checked(result, &call), call)
    }

    /// `result`, with a decision the route cannot carry out turned into the plugin's error;
    /// counts the rejections and reroutes.
    fn checked(&self, result: CallResult<Decision>, call: &CallContext) -> CallResult<Decision> {
        result.and_then(|decision| {
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
                        call.facts.route
                    )));
                }
                Decision::Reject(_) => self.stats.rejections.fetch_add(1, Relaxed),
                Decision::Reroute(_) => self.stats.reroutes.fetch_add(1, Relaxed),
                Decision::Allow => 0,
            };
            Ok(decision)
        })
    }

    /// Calls `on-request` once with no request, as a reload does before swapping a new version
    /// in: a plugin that fails this is refused.
    pub async fn canary(&self) -> CallResult<()> {
        // A plain `GET /` with no headers and no SLA state: what the plugin must cope with.
        let (request, ()) = http::Request::get("/")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let call = Box::new(CallContext {
            facts: RequestFacts {
                route: Arc::from("(canary)"),
                request_id: http::HeaderValue::from_static("canary"),
                client_ip: http::HeaderValue::from_static("127.0.0.1"),
                ..RequestFacts::default()
            },
            request: Some(request),
            ..CallContext::default()
        });
        let (result, _) = self
            .run(
                Hook::Canary,
                call,
                async |policy: &Guest, store: &mut Store<HostState>| policy.on_request(store).await,
            )
            .await;
        result.map(|_| ()).map_err(|e| PluginError::Load {
            plugin: self.spec.name.clone(),
            message: format!("the canary call failed: {e}"),
        })
    }

    /// Calls `on-response`, at once when it can ([`Self::run_now`]): [`Now::Later`] gives
    /// `call` back for [`Self::on_response`]. A plugin without one keeps the class, with no
    /// call.
    pub fn on_response_now(&self, head: &ResponseHead, call: Box<CallContext>) -> Now<Verdict> {
        if !self.judges_responses() {
            return Now::Done(Ok(Verdict::Keep), call);
        }
        match self.run_now(Hook::OnResponse, call, |policy, store| {
            policy.on_response_now(store, head)
        }) {
            Now::Done(result, call) => Now::Done(self.counted(result), call),
            later => later,
        }
    }

    /// Calls `on-response`, making an instance when none is ready, and on a fiber when the
    /// plugin's calls can wait. A plugin without one keeps the class, with no call.
    pub async fn on_response(
        &self,
        head: &ResponseHead,
        call: Box<CallContext>,
    ) -> (CallResult<Verdict>, Box<CallContext>) {
        if !self.judges_responses() {
            return (Ok(Verdict::Keep), call);
        }
        let (result, call) = self
            .run(
                Hook::OnResponse,
                call,
                async |policy: &Guest, store: &mut Store<HostState>| {
                    policy.on_response(store, head).await
                },
            )
            .await;
        (self.counted(result), call)
    }

    /// `result`, with a reclassification counted by its reason.
    fn counted(&self, result: CallResult<Verdict>) -> CallResult<Verdict> {
        if let Ok(Verdict::Good(reason) | Verdict::Bad(reason)) = &result {
            self.stats.reclassified.fetch_add(1, Relaxed);
            let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            if reasons.len() < 100 || reasons.contains_key(reason.as_str()) {
                *reasons.entry(reason.clone()).or_default() += 1;
            }
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_times_give_bucketed_quantiles() {
        let times = CallTimes::default();
        assert_eq!(times.quantile_bound(0.5), None);
        for micros in [1, 2, 3, 4, 8, 9, 9, 9, 9, 40] {
            times.record(Duration::from_micros(micros));
        }
        assert_eq!(times.count(), 10);
        assert_eq!(times.quantile_bound(0.5), Some(1e-5));
        assert_eq!(times.quantile_bound(0.99), Some(5e-5));
        assert!((times.sum_seconds() - 94e-6).abs() < 1e-12);
    }
}
