//! The host side of the interface: each store's state and the imports plugins call (the
//! request and response, request-local storage, plugin state, SLA state, rates, telemetry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use accord_adapters::forwarding::X_REQUEST_ID;
use http::{HeaderMap, HeaderName, HeaderValue};
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

/// What the gateway knows of a request besides its headers: the fields of its head that
/// `request.route()`, `request.path()` and the like return, and that a plugin of an eager world
/// (`policy`, `request-policy`, 0.1.0) gets whole as its `request-head`. Every value is shared,
/// not copied: a plugin that reads none of them costs no copy.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The route the request matched.
    pub route: Arc<str>,
    /// Its method.
    pub method: http::Method,
    /// Its target as the client sent it (the path is read from it).
    pub uri: http::Uri,
    /// The `Content-Length` the client declared.
    pub content_length: Option<u64>,
    /// The request's `x-request-id`.
    pub request_id: HeaderValue,
    /// The address of the peer that connected, as text.
    pub client_ip: HeaderValue,
}

impl Default for RequestFacts {
    /// A `GET /` on no route, with no id and no address.
    fn default() -> Self {
        Self {
            route: Arc::from(""),
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            content_length: None,
            request_id: HeaderValue::from_static(""),
            client_ip: HeaderValue::from_static(""),
        }
    }
}

impl RequestFacts {
    /// The head an eager world's `on-request` takes.
    pub(super) fn head(&self) -> wit::RequestHead {
        wit::RequestHead {
            route: self.route.to_string(),
            method: self.method.as_str().to_owned(),
            path: self.uri.path().to_owned(),
            content_length: self.content_length,
            request_id: text(&self.request_id),
            client_ip: text(&self.client_ip),
        }
    }
}

fn text(value: &HeaderValue) -> String {
    value.to_str().unwrap_or_default().to_owned()
}

/// The most request-local keys a request keeps; a key set past them is dropped.
pub const MAX_LOCALS: usize = 64;

/// The request and route a call is about.
pub struct CallContext {
    /// The request's head fields, in both calls.
    pub facts: RequestFacts,
    /// The request head, lent for `on-request` (moved in with the boxed context, and out
    /// after the calls: no allocation, no reference count).
    pub request: Option<http::request::Parts>,
    /// The response head, in `on-response`.
    pub response_headers: Option<Arc<http::HeaderMap>>,
    /// The response body, in `on-response`, when the route reads it and it fit.
    pub response_body: Option<bytes::Bytes>,
    /// The request body, when the route reads it for plugins and it fit.
    pub request_body: Option<bytes::Bytes>,
    /// Header changes the last call made to the request towards the backend.
    pub request_edits: Vec<HeaderEdit>,
    /// Header changes the last call made to the response towards the client.
    pub response_edits: Vec<HeaderEdit>,
    /// The route's SLA state; none when the route has no objective.
    pub sla: Option<SlaState>,
    /// The route's backend ids, in its order.
    pub backends: Arc<[Arc<str>]>,
    /// Request-local storage: at most [`MAX_LOCALS`] keys, so a list (a map's random hasher
    /// state costs more to make, on every call, than searching a few keys).
    pub locals: Vec<(String, String)>,
    /// Annotations for the access log.
    pub annotations: Vec<(String, String)>,
}

impl CallContext {
    /// A call about the request `facts` on a route of `backends`, with nothing else yet: the
    /// base to fill in (`CallContext { request, ..CallContext::new(facts, backends) }`) without
    /// making default facts only to drop them.
    pub fn new(facts: RequestFacts, backends: Arc<[Arc<str>]>) -> Self {
        Self {
            facts,
            request: None,
            response_headers: None,
            response_body: None,
            request_body: None,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
            sla: None,
            backends,
            locals: Vec::new(),
            annotations: Vec::new(),
        }
    }
}

impl CallContext {
    /// The first value of the request's header `name`, as the backend gets it. A request that
    /// came without an `x-request-id` gets the gateway's as its head is written to the
    /// backend, not in the header map the plugins are lent: it is added here (and in
    /// [`CallContext::request_headers`]) from [`RequestFacts::request_id`].
    fn request_header(&self, name: &str) -> Option<String> {
        let headers = &self.request.as_ref()?.headers;
        first_value(headers, name).or_else(|| {
            (name.eq_ignore_ascii_case(X_REQUEST_ID.as_str())
                && !headers.contains_key(X_REQUEST_ID))
            .then(|| text(&self.facts.request_id))
        })
    }

    /// Every header of the request, as the backend gets them.
    fn request_headers(&self) -> Vec<wit::HttpHeader> {
        let Some(request) = &self.request else {
            return Vec::new();
        };
        let mut every = every_header(&request.headers);
        if !request.headers.contains_key(X_REQUEST_ID) {
            every.push(wit::HttpHeader {
                name: X_REQUEST_ID.as_str().to_owned(),
                value: text(&self.facts.request_id),
            });
        }
        every
    }

    /// The request-local value of `key`.
    pub fn local(&self, key: &str) -> Option<&str> {
        self.locals
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets the request-local `key`; a new key past [`MAX_LOCALS`] is dropped.
    pub fn set_local(&mut self, key: String, value: String) {
        if let Some((_, slot)) = self.locals.iter_mut().find(|(k, _)| *k == key) {
            *slot = value;
        } else if self.locals.len() < MAX_LOCALS {
            self.locals.push((key, value));
        }
    }
}

impl Default for CallContext {
    /// A call about a default request ([`RequestFacts::default`]).
    fn default() -> Self {
        Self::new(RequestFacts::default(), Arc::from([]))
    }
}

/// A plugin's change to a request's or response's headers, validated when it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderEdit {
    /// Replace every value.
    Set(HeaderName, HeaderValue),
    /// Add a value.
    Add(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

impl HeaderEdit {
    /// Applies the changes in order, emptying `edits`.
    pub fn apply_all(edits: &mut Vec<HeaderEdit>, headers: &mut HeaderMap) {
        for edit in edits.drain(..) {
            match edit {
                HeaderEdit::Set(name, value) => {
                    headers.insert(name, value);
                }
                HeaderEdit::Add(name, value) => {
                    headers.append(name, value);
                }
                HeaderEdit::Remove(name) => {
                    headers.remove(name);
                }
            }
        }
    }
}

/// Headers a plugin may not change: hop-by-hop and framing headers (the gateway owns the
/// connection and the body's framing), `host` (routing already used it) and the request id.
const PROTECTED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "x-request-id",
    "proxy-authorization",
];

/// Most header changes one request or response takes (per plugin call).
const MAX_EDITS: usize = 64;

fn header_edit(
    edits: &[HeaderEdit],
    name: &str,
    value: Option<&str>,
) -> Result<(HeaderName, Option<HeaderValue>), String> {
    let name = HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a header name"))?;
    if PROTECTED_HEADERS.contains(&name.as_str()) {
        return Err(format!("the gateway owns the {name} header"));
    }
    if edits.len() >= MAX_EDITS {
        return Err(format!("at most {MAX_EDITS} header changes per call"));
    }
    let value = value
        .map(|v| {
            HeaderValue::from_str(v).map_err(|_| format!("{v:?} is not a valid value for {name}"))
        })
        .transpose()?;
    Ok((name, value))
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
    /// Key-value state (`state`), shared by the plugin's instances (and the cluster's replicas).
    pub(super) state: Arc<super::state::PluginState>,
    /// The request body size the operator lets this plugin read (`request_body`).
    pub(super) request_body: usize,
    /// The response body size the operator lets this plugin read (`response_body`).
    pub(super) response_body: usize,
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
    pub(super) call: Box<CallContext>,
    pub(super) shared: Arc<PluginShared>,
    /// When the call under way is due: the epoch callback traps it from then on.
    pub(super) deadline: super::epoch::Deadline,
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

impl HostState {
    /// The gateway's clock, as the call sees it (a scripted case's time in `plugin test`).
    pub(super) fn now_ms(&self) -> i64 {
        match &self.call.sla {
            Some(SlaState::Live(route)) => route.clock().now_ms(),
            Some(SlaState::Scripted(scripted)) if scripted.now_ms.is_some() => {
                scripted.now_ms.unwrap_or_default()
            }
            _ => crate::sla::Clock::system().now_ms(),
        }
    }
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn every_header(headers: &HeaderMap) -> Vec<wit::HttpHeader> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            Some(wit::HttpHeader {
                name: k.as_str().to_owned(),
                value: v.to_str().ok()?.to_owned(),
            })
        })
        .collect()
}

/// A body the plugin may read: what the route buffered, within the plugin's own limit.
fn readable(body: Option<&bytes::Bytes>, limit: usize) -> Option<Vec<u8>> {
    body.filter(|b| b.len() <= limit).map(|b| b.to_vec())
}

impl bindings::accord::policy::request::Host for HostState {
    fn route(&mut self) -> String {
        self.call.facts.route.to_string()
    }

    fn method(&mut self) -> String {
        self.call.facts.method.as_str().to_owned()
    }

    fn path(&mut self) -> String {
        self.call.facts.uri.path().to_owned()
    }

    fn content_length(&mut self) -> Option<u64> {
        self.call.facts.content_length
    }

    fn request_id(&mut self) -> String {
        text(&self.call.facts.request_id)
    }

    fn client_ip(&mut self) -> String {
        text(&self.call.facts.client_ip)
    }

    fn header(&mut self, name: String) -> Option<String> {
        self.call.request_header(&name)
    }

    fn headers(&mut self) -> Vec<wit::HttpHeader> {
        self.call.request_headers()
    }

    fn query(&mut self) -> Option<String> {
        self.call.request.as_ref()?.uri.query().map(str::to_owned)
    }

    fn body(&mut self) -> Option<Vec<u8>> {
        readable(self.call.request_body.as_ref(), self.shared.request_body)
    }

    fn set_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.edit_request(&name, Some(&value), HeaderEdit::Set)
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.edit_request(&name, Some(&value), HeaderEdit::Add)
    }

    fn remove_header(&mut self, name: String) -> Result<(), String> {
        self.edit_request(&name, None, |name, _| HeaderEdit::Remove(name))
    }
}

impl bindings::accord::policy::response::Host for HostState {
    fn header(&mut self, name: String) -> Option<String> {
        first_value(self.call.response_headers.as_ref()?, &name)
    }

    fn headers(&mut self) -> Vec<wit::HttpHeader> {
        self.call
            .response_headers
            .as_ref()
            .map_or_else(Vec::new, |h| every_header(h))
    }

    fn body(&mut self) -> Option<Vec<u8>> {
        readable(self.call.response_body.as_ref(), self.shared.response_body)
    }

    fn set_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.edit_response(&name, Some(&value), HeaderEdit::Set)
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.edit_response(&name, Some(&value), HeaderEdit::Add)
    }

    fn remove_header(&mut self, name: String) -> Result<(), String> {
        self.edit_response(&name, None, |name, _| HeaderEdit::Remove(name))
    }
}

impl HostState {
    fn edit_request(
        &mut self,
        name: &str,
        value: Option<&str>,
        edit: impl FnOnce(HeaderName, HeaderValue) -> HeaderEdit,
    ) -> Result<(), String> {
        if self.call.request.is_none() {
            return Err("request headers can only be changed in on-request".into());
        }
        let (name, value) = header_edit(&self.call.request_edits, name, value)?;
        let value = value.unwrap_or_else(|| HeaderValue::from_static(""));
        self.call.request_edits.push(edit(name, value));
        Ok(())
    }

    fn edit_response(
        &mut self,
        name: &str,
        value: Option<&str>,
        edit: impl FnOnce(HeaderName, HeaderValue) -> HeaderEdit,
    ) -> Result<(), String> {
        if self.call.response_headers.is_none() {
            return Err("response headers can only be changed in on-response".into());
        }
        let (name, value) = header_edit(&self.call.response_edits, name, value)?;
        let value = value.unwrap_or_else(|| HeaderValue::from_static(""));
        self.call.response_edits.push(edit(name, value));
        Ok(())
    }
}

impl bindings::accord::policy::state::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.shared.state.get(&key, self.now_ms())
    }

    fn set(&mut self, key: String, value: String, ttl_ms: u64) -> Result<(), String> {
        self.shared.state.set(&key, &value, ttl_ms, self.now_ms())
    }

    fn delete(&mut self, key: String) -> bool {
        self.shared.state.delete(&key, self.now_ms())
    }

    fn incr(&mut self, key: String, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        self.shared.state.incr(&key, delta, ttl_ms, self.now_ms())
    }
}

impl bindings::accord::policy::locals::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.call.local(&key).map(str::to_owned)
    }

    fn set(&mut self, key: String, value: String) {
        self.call.set_local(key, value);
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
                valid: w.valid,
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
        at_ms: view.at_ms,
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
        HostState::now_ms(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locals_are_replaced_by_key_and_bounded() {
        let mut call = CallContext::default();
        call.set_local("a".into(), "1".into());
        call.set_local("a".into(), "2".into());
        assert_eq!(call.local("a"), Some("2"));
        assert_eq!(call.local("b"), None);
        for i in 0..MAX_LOCALS * 2 {
            call.set_local(format!("k{i}"), i.to_string());
        }
        assert_eq!(call.locals.len(), MAX_LOCALS);
        assert_eq!(call.local("k0"), Some("0"));
        assert_eq!(
            call.local(&format!("k{}", MAX_LOCALS)),
            None,
            "past the bound"
        );
        call.set_local("a".into(), "3".into());
        assert_eq!(
            call.local("a"),
            Some("3"),
            "a key already kept is still replaced"
        );
    }

    #[test]
    fn a_plugin_sees_the_request_id_the_backend_gets() {
        let (parts, ()) = http::Request::get("/")
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut call = CallContext {
            facts: RequestFacts {
                request_id: HeaderValue::from_static("generated"),
                ..RequestFacts::default()
            },
            request: Some(parts),
            ..CallContext::default()
        };
        // Not in the map: the gateway adds it as it writes the head.
        assert_eq!(
            call.request_header("X-Request-Id").as_deref(),
            Some("generated")
        );
        let every: Vec<_> = call
            .request_headers()
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        assert_eq!(
            every,
            [
                ("x-a".into(), "1".into()),
                ("x-request-id".into(), "generated".into())
            ]
        );
        assert_eq!(call.request_header("x-b"), None);

        // The client's own is in the map, and is the one.
        let (mut parts, ()) = http::Request::get("/")
            .header("x-request-id", "client")
            .body(())
            .unwrap()
            .into_parts();
        call.facts.request_id = HeaderValue::from_static("client");
        parts.headers.append("x-a", HeaderValue::from_static("1"));
        call.request = Some(parts);
        assert_eq!(
            call.request_header("x-request-id").as_deref(),
            Some("client")
        );
        assert_eq!(call.request_headers().len(), 2);

        // In on-response, the request head is no longer lent.
        call.request = None;
        assert_eq!(call.request_header("x-request-id"), None);
        assert!(call.request_headers().is_empty());
    }

    #[test]
    fn header_changes_are_validated_and_applied_in_order() {
        let mut edits = Vec::new();
        for (name, value) in [("x-a", Some("1")), ("x-b", Some("2"))] {
            let (name, value) = header_edit(&edits, name, value).unwrap();
            edits.push(HeaderEdit::Add(name, value.unwrap()));
        }
        let (name, _) = header_edit(&edits, "x-b", None).unwrap();
        edits.push(HeaderEdit::Remove(name));
        let (name, value) = header_edit(&edits, "X-A", Some("3")).unwrap();
        edits.push(HeaderEdit::Set(name, value.unwrap()));
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("0"));
        HeaderEdit::apply_all(&mut edits, &mut headers);
        assert!(edits.is_empty());
        assert_eq!(headers.get_all("x-a").iter().count(), 1, "set replaces");
        assert_eq!(headers["x-a"], "3");
        assert!(!headers.contains_key("x-b"));
    }

    #[test]
    fn the_gateways_own_headers_and_invalid_ones_are_refused() {
        for name in [
            "Connection",
            "content-length",
            "transfer-encoding",
            "host",
            "x-request-id",
        ] {
            let error = header_edit(&[], name, Some("x")).unwrap_err();
            assert!(error.contains("the gateway owns"), "{name}: {error}");
        }
        assert!(
            header_edit(&[], "bad header", Some("x"))
                .unwrap_err()
                .contains("not a header name")
        );
        assert!(
            header_edit(&[], "x-ok", Some("line\nbreak"))
                .unwrap_err()
                .contains("not a valid value")
        );
        let full: Vec<HeaderEdit> = (0..MAX_EDITS)
            .map(|_| HeaderEdit::Remove(HeaderName::from_static("x-a")))
            .collect();
        assert!(
            header_edit(&full, "x-a", None)
                .unwrap_err()
                .contains("at most 64")
        );
    }
}
