//! The worlds a component may implement, all served by one host:
//! * 0.2's (`wasm-plugins/wit/`, 0.2.1; 0.2.0's plugins link to it unchanged, wasmtime matching
//!   an import of `@0.2.0` with the host's `@0.2.1`): `policy`, `request-policy` (the same
//!   without `on-response`), and their lazy twins `lazy-policy` and `lazy-request-policy`,
//!   whose `on-request` takes no head (the plugin asks `request` for it);
//! * 0.1.0's `policy` (`wasm-plugins/wit-0.1.0/`, frozen), whose imports are served by the
//!   current host's functions, its values converted at the boundary.
//!
//! A component's world is read from what it imports (0.1.0's interfaces), from whether it
//! exports `on-response`, and from whether its `on-request` takes a head.

use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Instance, InstancePre, Linker, TypedFunc};

use super::bindings;
use super::bindings::accord::policy as current;
use super::host::HostState;
use current::types as wit;

/// The 0.1.0 world, as its plugins were built against it.
pub(super) mod v0_1 {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "../wasm-plugins/wit-0.1.0",
        world: "policy",
        exports: { default: async },
    });
}
use v0_1::accord::policy as old;

/// The exports of a 0.2 world other than `policy`: its imports and types are `policy`'s.
macro_rules! exports_of {
    ($world:tt) => {
        wasmtime::component::bindgen!({
            path: "../wasm-plugins/wit",
            world: $world,
            exports: { default: async },
            with: {
                "accord:policy/types": crate::plugin::bindings::accord::policy::types,
                "accord:policy/request": crate::plugin::bindings::accord::policy::request,
                "accord:policy/response": crate::plugin::bindings::accord::policy::response,
                "accord:policy/locals": crate::plugin::bindings::accord::policy::locals,
                "accord:policy/state": crate::plugin::bindings::accord::policy::state,
                "accord:policy/sla": crate::plugin::bindings::accord::policy::sla,
                "accord:policy/rate": crate::plugin::bindings::accord::policy::rate,
                "accord:policy/cluster-rate": crate::plugin::bindings::accord::policy::cluster_rate,
                "accord:policy/clock": crate::plugin::bindings::accord::policy::clock,
                "accord:policy/telemetry": crate::plugin::bindings::accord::policy::telemetry,
            },
        });
    };
}

/// `request-policy`'s exports.
pub(super) mod request_only {
    #![allow(missing_docs)]
    exports_of!("request-policy");
}

/// `lazy-policy`'s exports.
pub(super) mod lazy {
    #![allow(missing_docs)]
    exports_of!("lazy-policy");
}

/// `lazy-request-policy`'s exports.
pub(super) mod lazy_request_only {
    #![allow(missing_docs)]
    exports_of!("lazy-request-policy");
}

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldVersion {
    /// 0.2's `policy`: `on-request` takes the request head.
    Policy,
    /// 0.2's `request-policy`: `policy` without `on-response`.
    RequestPolicy,
    /// 0.2's `lazy-policy`: `on-request` takes no head; the plugin reads it from `request`.
    LazyPolicy,
    /// 0.2's `lazy-request-policy`: `lazy-policy` without `on-response`.
    LazyRequestPolicy,
    /// `accord:policy@0.1.0`'s `policy`.
    V0_1,
}

impl WorldVersion {
    /// The world a component implements: 0.1.0's if it imports any of 0.1.0's interfaces.
    pub fn of(component: &Component, engine: &wasmtime::Engine) -> Self {
        let kind = component.component_type();
        let old = kind
            .imports(engine)
            .any(|(name, _)| name.starts_with("accord:policy/") && name.ends_with("@0.1.0"));
        if old {
            return WorldVersion::V0_1;
        }
        let mut judges = false;
        let mut lazy = false;
        for (name, item) in kind.exports(engine) {
            match (name, item.ty) {
                ("on-response", _) => judges = true,
                ("on-request", ComponentItem::ComponentFunc(f)) => lazy = f.params().len() == 0,
                _ => {}
            }
        }
        match (lazy, judges) {
            (false, true) => WorldVersion::Policy,
            (false, false) => WorldVersion::RequestPolicy,
            (true, true) => WorldVersion::LazyPolicy,
            (true, false) => WorldVersion::LazyRequestPolicy,
        }
    }

    /// Whether the world has `on-response`.
    pub fn judges_responses(self) -> bool {
        !matches!(
            self,
            WorldVersion::RequestPolicy | WorldVersion::LazyRequestPolicy
        )
    }

    /// The package's version line and the world, as the WIT writes them.
    pub fn name(self) -> &'static str {
        match self {
            WorldVersion::Policy => "accord:policy@0.2.x policy",
            WorldVersion::RequestPolicy => "accord:policy@0.2.x request-policy",
            WorldVersion::LazyPolicy => "accord:policy@0.2.x lazy-policy",
            WorldVersion::LazyRequestPolicy => "accord:policy@0.2.x lazy-request-policy",
            WorldVersion::V0_1 => "accord:policy@0.1.0 policy",
        }
    }
}

/// Adds both versions' imports to the linker.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    bindings::Policy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    v0_1::Policy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// A component's exports, ready to instantiate.
pub(super) struct GuestPre {
    pre: InstancePre<HostState>,
    world: WorldIndices,
    direct: bool,
}

/// Where a world's exports are in a component.
enum WorldIndices {
    Policy(bindings::PolicyIndices),
    RequestPolicy(request_only::RequestPolicyIndices),
    LazyPolicy(lazy::LazyPolicyIndices),
    LazyRequestPolicy(lazy_request_only::LazyRequestPolicyIndices),
    V0_1(v0_1::PolicyIndices),
}

/// An instance's exports.
pub(super) struct Guest {
    world: World,
    /// `on-request` and `on-response` called on the caller's stack, when the plugin's calls
    /// can never wait ([`GuestPre::new`]'s `direct`).
    direct: Option<Direct>,
}

/// An instance's exports, as its world has them (called on a fiber).
enum World {
    Policy(bindings::Policy),
    RequestPolicy(request_only::RequestPolicy),
    LazyPolicy(lazy::LazyPolicy),
    LazyRequestPolicy(lazy_request_only::LazyRequestPolicy),
    V0_1(v0_1::Policy),
}

/// A 0.2 world's hot exports as typed functions, called on the caller's stack: no fiber to
/// create, switch to and back from on every call.
struct Direct {
    on_request: DirectOnRequest,
    on_response: Option<TypedFunc<(wit::ResponseHead,), (wit::Verdict,)>>,
}

enum DirectOnRequest {
    /// A lazy world's: no head.
    Lazy(TypedFunc<(), (wit::Decision,)>),
    /// An eager world's: the head made.
    Eager(TypedFunc<(wit::RequestHead,), (wit::Decision,)>),
}

impl Direct {
    /// The typed exports of `instance`, of the world `world` says: `None` for 0.1.0's.
    fn load(
        store: &mut Store<HostState>,
        instance: &Instance,
        world: &WorldIndices,
    ) -> wasmtime::Result<Option<Self>> {
        let (lazy, judges) = match world {
            WorldIndices::Policy(_) => (false, true),
            WorldIndices::RequestPolicy(_) => (false, false),
            WorldIndices::LazyPolicy(_) => (true, true),
            WorldIndices::LazyRequestPolicy(_) => (true, false),
            WorldIndices::V0_1(_) => return Ok(None),
        };
        let on_request = if lazy {
            DirectOnRequest::Lazy(instance.get_typed_func(&mut *store, "on-request")?)
        } else {
            DirectOnRequest::Eager(instance.get_typed_func(&mut *store, "on-request")?)
        };
        let on_response = if judges {
            Some(instance.get_typed_func(&mut *store, "on-response")?)
        } else {
            None
        };
        Ok(Some(Self {
            on_request,
            on_response,
        }))
    }
}

impl GuestPre {
    /// `direct`: whether the calls may run on the caller's stack (the component's imports
    /// never wait: `CallStack::Caller`); 0.1.0's world is always called on a fiber.
    pub(super) fn new(
        version: WorldVersion,
        pre: InstancePre<HostState>,
        direct: bool,
    ) -> wasmtime::Result<Self> {
        let world = match version {
            WorldVersion::Policy => WorldIndices::Policy(bindings::PolicyIndices::new(&pre)?),
            WorldVersion::RequestPolicy => {
                WorldIndices::RequestPolicy(request_only::RequestPolicyIndices::new(&pre)?)
            }
            WorldVersion::LazyPolicy => {
                WorldIndices::LazyPolicy(lazy::LazyPolicyIndices::new(&pre)?)
            }
            WorldVersion::LazyRequestPolicy => WorldIndices::LazyRequestPolicy(
                lazy_request_only::LazyRequestPolicyIndices::new(&pre)?,
            ),
            WorldVersion::V0_1 => WorldIndices::V0_1(v0_1::PolicyIndices::new(&pre)?),
        };
        Ok(Self { pre, world, direct })
    }

    pub(super) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Guest> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        let world = match &self.world {
            WorldIndices::Policy(i) => World::Policy(i.load(&mut *store, &instance)?),
            WorldIndices::RequestPolicy(i) => World::RequestPolicy(i.load(&mut *store, &instance)?),
            WorldIndices::LazyPolicy(i) => World::LazyPolicy(i.load(&mut *store, &instance)?),
            WorldIndices::LazyRequestPolicy(i) => {
                World::LazyRequestPolicy(i.load(&mut *store, &instance)?)
            }
            WorldIndices::V0_1(i) => World::V0_1(i.load(&mut *store, &instance)?),
        };
        let direct = if self.direct {
            Direct::load(store, &instance, &self.world)?
        } else {
            None
        };
        Ok(Guest { world, direct })
    }
}

impl Guest {
    pub(super) async fn configure(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match &self.world {
            World::Policy(p) => p.call_configure(store, config).await,
            World::RequestPolicy(p) => p.call_configure(store, config).await,
            World::LazyPolicy(p) => p.call_configure(store, config).await,
            World::LazyRequestPolicy(p) => p.call_configure(store, config).await,
            World::V0_1(p) => p.call_configure(store, config).await,
        }
    }

    /// Calls `on-request` about the store's call on the caller's stack: a lazy world reads
    /// the head from it, an eager world gets it made. Only for a plugin whose calls never
    /// wait ([`CallStack::Caller`](super::CallStack::Caller)); others fail.
    pub(super) fn on_request_now(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<wit::Decision> {
        let Some(direct) = &self.direct else {
            return Err(not_direct("on-request"));
        };
        let (decision,) = match &direct.on_request {
            DirectOnRequest::Lazy(f) => f.call(&mut *store, ())?,
            DirectOnRequest::Eager(f) => {
                let head = store.data().call.facts.head();
                f.call(&mut *store, (head,))?
            }
        };
        Ok(decision)
    }

    /// Calls `on-request` about the store's call: on the caller's stack when the plugin's
    /// calls never wait ([`Self::on_request_now`]), on a fiber otherwise.
    pub(super) async fn on_request(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<wit::Decision> {
        if self.direct.is_some() {
            return self.on_request_now(store);
        }
        match &self.world {
            World::LazyPolicy(p) => p.call_on_request(store).await,
            World::LazyRequestPolicy(p) => p.call_on_request(store).await,
            World::Policy(p) => {
                let head = store.data().call.facts.head();
                p.call_on_request(store, &head).await
            }
            World::RequestPolicy(p) => {
                let head = store.data().call.facts.head();
                p.call_on_request(store, &head).await
            }
            World::V0_1(p) => {
                let head = store.data().call.facts.head();
                let head = old::types::RequestHead {
                    route: head.route,
                    method: head.method,
                    path: head.path,
                    content_length: head.content_length,
                };
                Ok(match p.call_on_request(store, &head).await? {
                    old::types::Decision::Allow => wit::Decision::Allow,
                    old::types::Decision::Reroute(b) => wit::Decision::Reroute(b),
                    old::types::Decision::Reject(r) => wit::Decision::Reject(wit::Rejection {
                        status: r.status,
                        reason: r.reason,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|h| wit::HttpHeader {
                                name: h.name,
                                value: h.value,
                            })
                            .collect(),
                        retry_after_seconds: r.retry_after_seconds,
                    }),
                })
            }
        }
    }

    /// Calls `on-response` on the caller's stack. Only for a plugin whose calls never wait
    /// and that judges responses; others fail.
    pub(super) fn on_response_now(
        &self,
        store: &mut Store<HostState>,
        head: &wit::ResponseHead,
    ) -> wasmtime::Result<wit::Verdict> {
        let Some(on_response) = self.direct.as_ref().and_then(|d| d.on_response.as_ref()) else {
            return Err(not_direct("on-response"));
        };
        Ok(on_response.call(&mut *store, (head.clone(),))?.0)
    }

    /// Calls `on-response`: on the caller's stack when the plugin's calls never wait
    /// ([`Self::on_response_now`]), on a fiber otherwise.
    pub(super) async fn on_response(
        &self,
        store: &mut Store<HostState>,
        head: &wit::ResponseHead,
    ) -> wasmtime::Result<wit::Verdict> {
        if self
            .direct
            .as_ref()
            .is_some_and(|d| d.on_response.is_some())
        {
            return self.on_response_now(store, head);
        }
        match &self.world {
            World::Policy(p) => p.call_on_response(store, head).await,
            World::LazyPolicy(p) => p.call_on_response(store, head).await,
            // Not called (the plugin does not judge responses); as if it kept the class.
            World::RequestPolicy(_) | World::LazyRequestPolicy(_) => Ok(wit::Verdict::Keep),
            World::V0_1(p) => {
                let head = old::types::ResponseHead {
                    status: head.status,
                    backend: head.backend.clone(),
                    latency_ms: head.latency_ms,
                    class: match head.class {
                        wit::OutcomeClass::Good => old::types::OutcomeClass::Good,
                        wit::OutcomeClass::Bad => old::types::OutcomeClass::Bad,
                        wit::OutcomeClass::Throttled => old::types::OutcomeClass::Throttled,
                        wit::OutcomeClass::Rejected => old::types::OutcomeClass::Rejected,
                        wit::OutcomeClass::ClientError => old::types::OutcomeClass::ClientError,
                    },
                };
                Ok(match p.call_on_response(store, &head).await? {
                    old::types::Verdict::Keep => wit::Verdict::Keep,
                    old::types::Verdict::Good(r) => wit::Verdict::Good(r),
                    old::types::Verdict::Bad(r) => wit::Verdict::Bad(r),
                })
            }
        }
    }
}

/// The error of a call made on the caller's stack to an export that is not called there: a
/// host bug, reported as the plugin's failed call rather than a panic.
fn not_direct(export: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "the host called {export} on its own stack, but this plugin's calls run on a fiber"
    ))
}

// === 0.1.0's imports, served by the current host ===

fn old_header(h: wit::HttpHeader) -> old::types::HttpHeader {
    old::types::HttpHeader {
        name: h.name,
        value: h.value,
    }
}

impl old::types::Host for HostState {}

impl old::request::Host for HostState {
    fn header(&mut self, name: String) -> Option<String> {
        current::request::Host::header(self, name)
    }

    fn headers(&mut self) -> Vec<old::types::HttpHeader> {
        current::request::Host::headers(self)
            .into_iter()
            .map(old_header)
            .collect()
    }

    fn query(&mut self) -> Option<String> {
        current::request::Host::query(self)
    }

    fn response_header(&mut self, name: String) -> Option<String> {
        current::response::Host::header(self, name)
    }

    fn response_body(&mut self) -> Option<Vec<u8>> {
        current::response::Host::body(self)
    }
}

impl old::locals::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        current::locals::Host::get(self, key)
    }

    fn set(&mut self, key: String, value: String) {
        current::locals::Host::set(self, key, value)
    }
}

impl old::sla::Host for HostState {
    fn route(&mut self) -> Option<old::types::RouteSnapshot> {
        let route = current::sla::Host::route(self)?;
        Some(old::types::RouteSnapshot {
            route: route.route,
            status: route.status,
            paging: route.paging,
            budget_exhausted: route.budget_exhausted,
            indicators: route
                .indicators
                .into_iter()
                .map(|i| old::types::Indicator {
                    name: i.name,
                    target: i.target,
                    attainment: i.attainment,
                    budget_remaining: i.budget_remaining,
                    burn_rates: i.burn_rates,
                })
                .collect(),
            // 0.1.0 promised the 5m and 1h windows.
            windows: route
                .windows
                .into_iter()
                .filter(|w| w.window == "5m" || w.window == "1h")
                .map(|w| old::types::WindowStats {
                    window: w.window,
                    total: w.total,
                    good: w.good,
                    bad: w.bad,
                    throttled: w.throttled,
                    rejected: w.rejected,
                    client_error: w.client_error,
                    p50_ms: w.p50_ms,
                    p99_ms: w.p99_ms,
                })
                .collect(),
        })
    }

    fn backends(&mut self) -> Vec<old::types::BackendStats> {
        current::sla::Host::backends(self)
            .into_iter()
            .map(|b| old::types::BackendStats {
                backend: b.backend,
                position: b.position,
                breaching: b.breaching,
                burn_rate: b.burn_rate,
                requests: b.requests,
                error_ratio: b.error_ratio,
                p99_ms: b.p99_ms,
            })
            .collect()
    }
}

impl old::rate::Host for HostState {
    fn observe(&mut self, key: String, events: u32) -> f64 {
        current::rate::Host::observe(self, key, events)
    }

    fn current(&mut self, key: String) -> f64 {
        current::rate::Host::current(self, key)
    }
}

impl old::cluster_rate::Host for HostState {
    fn observe(&mut self, key: String, events: u32) -> f64 {
        current::cluster_rate::Host::observe(self, key, events)
    }

    fn current(&mut self, key: String) -> f64 {
        current::cluster_rate::Host::current(self, key)
    }
}

impl old::clock::Host for HostState {
    fn now_ms(&mut self) -> i64 {
        HostState::now_ms(self)
    }
}

impl old::telemetry::Host for HostState {
    fn log(&mut self, level: old::types::Level, message: String) {
        let level = match level {
            old::types::Level::Debug => wit::Level::Debug,
            old::types::Level::Info => wit::Level::Info,
            old::types::Level::Warn => wit::Level::Warn,
            old::types::Level::Error => wit::Level::Error,
        };
        current::telemetry::Host::log(self, level, message)
    }

    fn counter(&mut self, name: String, delta: u64) {
        current::telemetry::Host::counter(self, name, delta)
    }

    fn histogram(&mut self, name: String, value: f64) {
        current::telemetry::Host::histogram(self, name, value)
    }

    fn annotate(&mut self, key: String, value: String) {
        current::telemetry::Host::annotate(self, key, value)
    }
}
