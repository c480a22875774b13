//! Write Accord SLA policy plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`export_plugin!`]:
//!
//! ```ignore
//! use accord_policy_sdk::{export_plugin, Decision, Plugin, RequestHead, ResponseHead, Verdict};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn on_request(head: RequestHead) -> Decision {
//!         if accord_policy_sdk::request::header("x-api-key").is_none() {
//!             return Decision::reject(401, "an API key is required");
//!         }
//!         Decision::Allow
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the `.wasm` is a component the
//! gateway loads. `configure` and `on_response` have defaults (accept any configuration; keep
//! the gateway's classification).
//!
//! The component implements the `lazy-policy` world: `on_request`'s [`RequestHead`] reads the
//! request's route, method, path and so on from the gateway when first asked for, so a call
//! costs only what the plugin reads.
//!
//! A plugin that only checks requests, as `Hello` does, is better exported with
//! [`export_request_plugin!`] (or [`export_request_policy!`]): the component then implements
//! the `lazy-request-policy` world, which has no `on-response`, and the gateway does not call
//! it once the request is forwarded. On a route whose plugins are all of this kind, that halves
//! what the plugins cost per request.
//!
//! A plugin with settings and state implements [`Policy`] instead: its `Config` is read from
//! the `config:` the operator writes (absent: `Config::default()`), and the value `new` builds
//! from it lives as long as the instance, given to every call:
//!
//! ```ignore
//! use accord_policy_sdk::{export_policy, Decision, Policy, RequestHead};
//!
//! #[derive(serde::Deserialize, Default)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config { header: String }
//!
//! struct ApiKey { header: String, seen: u64 }
//!
//! impl Policy for ApiKey {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> {
//!         let header = if config.header.is_empty() { "x-api-key".into() } else { config.header };
//!         Ok(ApiKey { header, seen: 0 })
//!     }
//!     fn on_request(&mut self, _head: RequestHead) -> Decision {
//!         self.seen += 1;
//!         match accord_policy_sdk::request::header(&self.header) {
//!             Some(_) => Decision::Allow,
//!             None => Decision::reject(401, &format!("the {} header is required", self.header)),
//!         }
//!     }
//! }
//!
//! export_policy!(ApiKey);
//! ```
//!
//! What `configure` receives, in every language: the operator's `config:` as JSON text, or the
//! empty string when there is none.

// The generated code names this crate by its public path, from inside it too.
extern crate self as accord_policy_sdk;

/// The `lazy-policy` world: `on-request` takes no head, which [`RequestHead`] reads when asked.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "lazy-policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy",
        default_bindings_module: "accord_policy_sdk::bindings",
        runtime_path: "accord_policy_sdk::__wit_bindgen::rt",
    });
}

/// The `lazy-request-policy` world's exports (its imports and types are `lazy-policy`'s,
/// above).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod request_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "lazy-request-policy",
        pub_export_macro: true,
        export_macro_name: "__export_request_policy",
        default_bindings_module: "accord_policy_sdk::request_bindings",
        runtime_path: "accord_policy_sdk::__wit_bindgen::rt",
        with: {
            "accord:policy/types@0.2.1": crate::bindings::accord::policy::types,
            "accord:policy/request@0.2.1": crate::bindings::accord::policy::request,
            "accord:policy/response@0.2.1": crate::bindings::accord::policy::response,
            "accord:policy/locals@0.2.1": crate::bindings::accord::policy::locals,
            "accord:policy/state@0.2.1": crate::bindings::accord::policy::state,
            "accord:policy/sla@0.2.1": crate::bindings::accord::policy::sla,
            "accord:policy/rate@0.2.1": crate::bindings::accord::policy::rate,
            "accord:policy/cluster-rate@0.2.1": crate::bindings::accord::policy::cluster_rate,
            "accord:policy/clock@0.2.1": crate::bindings::accord::policy::clock,
            "accord:policy/telemetry@0.2.1": crate::bindings::accord::policy::telemetry,
        },
    });
}

use std::cell::OnceCell;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::accord::policy::types::{
    BackendStats, Decision, HttpHeader, Indicator, Level, OutcomeClass, Rejection, ResponseHead,
    RouteSnapshot, Verdict, WindowStats,
};

/// The request's head, read from the gateway when first asked for and kept for the rest of the
/// call: a plugin pays only for the fields it reads (a call that reads none copies no string
/// into the plugin). The same fields are [`request`]'s functions, in `on_response` too.
pub struct RequestHead {
    route: OnceCell<String>,
    method: OnceCell<String>,
    path: OnceCell<String>,
    request_id: OnceCell<String>,
    client_ip: OnceCell<String>,
}

impl RequestHead {
    fn unread() -> Self {
        Self {
            route: OnceCell::new(),
            method: OnceCell::new(),
            path: OnceCell::new(),
            request_id: OnceCell::new(),
            client_ip: OnceCell::new(),
        }
    }

    /// The route the request matched.
    pub fn route(&self) -> &str {
        self.route.get_or_init(request::route)
    }

    /// `GET`, `POST`, …
    pub fn method(&self) -> &str {
        self.method.get_or_init(request::method)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.path.get_or_init(request::path)
    }

    /// `Content-Length`, when the client declared one.
    pub fn content_length(&self) -> Option<u64> {
        request::content_length()
    }

    /// The request's `x-request-id` (the client's, or the one the gateway generated): the id in
    /// the access log and in the backend's request.
    pub fn request_id(&self) -> &str {
        self.request_id.get_or_init(request::request_id)
    }

    /// The address of the peer that connected to the gateway: the client, or the last proxy in
    /// front of it (whose `x-forwarded-for` is then a header to read).
    pub fn client_ip(&self) -> &str {
        self.client_ip.get_or_init(request::client_ip)
    }
}

impl core::fmt::Debug for RequestHead {
    /// What has been read so far (formatting reads nothing).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RequestHead")
            .field("route", &self.route.get())
            .field("method", &self.method.get())
            .field("path", &self.path.get())
            .field("request_id", &self.request_id.get())
            .field("client_ip", &self.client_ip.get())
            .finish()
    }
}

/// The current request, read lazily (each call crosses into the gateway); in `on_request`,
/// changes to the headers the backend gets.
pub mod request {
    pub use crate::bindings::accord::policy::request::{
        add_header, body, client_ip, content_length, header, headers, method, path, query,
        remove_header, request_id, route, set_header,
    };
}

/// The response (in `on_response`), read lazily; changes to the headers the client gets.
pub mod response {
    pub use crate::bindings::accord::policy::response::{
        add_header, body, header, headers, remove_header, set_header,
    };
}

/// Key-value state with expiry, shared by every instance of the plugin and, in cluster mode,
/// by every replica (another replica's writes arrive within a sync interval): `set` is
/// last-writer-wins, `incr` adds every replica's increments.
pub mod state {
    pub use crate::bindings::accord::policy::state::{delete, get, incr, set};
}

/// Storage carried from a request's `on_request` to its `on_response`.
pub mod locals {
    pub use crate::bindings::accord::policy::locals::{get, set};
}

/// The route's live SLA state, and helpers for policies that act on it.
pub mod sla {
    pub use crate::bindings::accord::policy::sla::{backends, route};

    use crate::RouteSnapshot;

    /// Whether the route burns its error budget at `factor` times the sustainable rate or
    /// faster over **both** `long` and `short` (window names: `5m` … `3d`), for the worst of
    /// its indicators, with at least `min_valid` valid events in the short window.
    ///
    /// **Why both windows, and why valid events: self-lock.** A policy that rejects requests
    /// while a window burns makes no new valid events (its rejections do not count), so a
    /// long window alone stays high until the bad events age out of it: an hour of refusals
    /// for a `1h` window, whatever the backends do meanwhile. The short window empties within
    /// minutes once traffic stops reaching the backend, so this turns false, requests flow,
    /// and the burn is judged again on fresh traffic. Use a short window of about a twelfth of
    /// the long one (the SRE workbook's pairs: 1h/5m, 6h/30m, 3d/6h); let a few requests
    /// through with [`Probe`] if the decision must never stall.
    pub fn burning(
        route: &RouteSnapshot,
        long: &str,
        short: &str,
        factor: f64,
        min_valid: f64,
    ) -> bool {
        let enough = route
            .windows
            .iter()
            .find(|w| w.window == short)
            .is_some_and(|w| w.valid >= min_valid);
        let rate = |window: &str| {
            route
                .indicators
                .iter()
                .filter_map(|i| i.burn_rates.iter().find(|(w, _)| w == window))
                .map(|(_, rate)| *rate)
                .fold(0.0_f64, f64::max)
        };
        enough && rate(long) >= factor && rate(short) >= factor
    }

    /// Lets one in every `n` requests a policy would refuse through anyway, so that the SLA
    /// windows keep seeing valid events (the way out of self-lock; see [`burning`]). Keep one
    /// per instance, in the policy's state.
    #[derive(Debug, Clone)]
    pub struct Probe {
        every: u32,
        refused: u32,
    }

    impl Probe {
        /// A probe every `every` refusals (at least 1: every request).
        pub fn every(every: u32) -> Self {
            Self {
                every: every.max(1),
                refused: 0,
            }
        }

        /// Call for each request about to be refused: true means let this one through.
        pub fn let_through(&mut self) -> bool {
            self.refused += 1;
            if self.refused >= self.every {
                self.refused = 0;
                return true;
            }
            false
        }
    }
}

/// Event rates by key, shared by all instances of the plugin (on this gateway).
pub mod rate {
    pub use crate::bindings::accord::policy::rate::{current, observe};
}

/// The gateway's clock (the time its SLA windows use; scripted in `accord plugin test` cases
/// with `now_ms`). Prefer it to `std::time::SystemTime`, which reads the machine's clock.
pub mod clock {
    pub use crate::bindings::accord::policy::clock::now_ms;
}

/// Event rates by key, shared by every replica of the gateway's cluster (cluster mode): this
/// replica's rate plus the others' latest, at most one sync interval old. Without cluster
/// mode, the same as [`rate`].
pub mod cluster_rate {
    pub use crate::bindings::accord::policy::cluster_rate::{current, observe};
}

/// Logs, counters and access-log annotations, tagged with the plugin's name.
pub mod telemetry {
    pub use crate::bindings::accord::policy::telemetry::{annotate, counter, histogram, log};
}

/// An SLA policy plugin.
pub trait Plugin {
    /// Receives the plugin's configuration (JSON) once per instance; an `Err` refuses the
    /// plugin with that message.
    fn configure(config: String) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Decides what happens to a request before it is forwarded.
    fn on_request(head: RequestHead) -> Decision;

    /// Judges a response (the contract check); by default keeps the gateway's classification.
    fn on_response(head: ResponseHead) -> Verdict {
        let _ = head;
        Verdict::Keep
    }
}

impl Decision {
    /// A rejection with a status and a reason.
    pub fn reject(status: u16, reason: &str) -> Decision {
        Decision::Reject(Rejection {
            status,
            reason: reason.into(),
            headers: Vec::new(),
            retry_after_seconds: None,
        })
    }

    /// A 503 with `Retry-After`.
    pub fn shed(reason: &str, retry_after_seconds: u32) -> Decision {
        Decision::Reject(Rejection {
            status: 503,
            reason: reason.into(),
            headers: Vec::new(),
            retry_after_seconds: Some(retry_after_seconds),
        })
    }

    /// Prefer a backend of the route.
    pub fn reroute(backend: &str) -> Decision {
        Decision::Reroute(backend.into())
    }
}

/// A plugin with typed configuration and per-instance state (see the crate docs).
pub trait Policy: Sized + 'static {
    /// The configuration: JSON from the operator's `config:`; `Default` when there is none.
    type Config: serde::de::DeserializeOwned + Default;

    /// Builds the instance's state from its configuration; an `Err` refuses the plugin with
    /// that message (and `accord check` reports it at the plugin's place in the file).
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Decides what happens to a request before it is forwarded.
    fn on_request(&mut self, head: RequestHead) -> Decision;

    /// Judges a response; by default keeps the gateway's classification.
    fn on_response(&mut self, head: ResponseHead) -> Verdict {
        let _ = head;
        Verdict::Keep
    }
}

/// Reads a plugin's configuration: the empty string (no `config:`) is `T::default()`; anything
/// else is JSON for `T`, and an error says which field and why.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    if config.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(config).map_err(|e| format!("configuration: {e}"))
}

#[doc(hidden)]
pub mod __policy {
    use std::any::Any;
    use std::cell::RefCell;

    std::thread_local! {
        // The instance's state: a component instance runs one call at a time on one thread.
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn configure<P: super::Policy>(config: String) -> Result<(), String> {
        let config = super::parse_config::<P::Config>(&config)?;
        let state = P::new(config)?;
        STATE.with_borrow_mut(|s| *s = Some(Box::new(state)));
        Ok(())
    }

    pub fn with<P: super::Policy, R>(default: R, f: impl FnOnce(&mut P) -> R) -> R {
        STATE.with_borrow_mut(|s| match s.as_mut().and_then(|s| s.downcast_mut::<P>()) {
            Some(state) => f(state),
            None => default,
        })
    }
}

#[doc(hidden)]
pub struct PolicyAdapter<P>(core::marker::PhantomData<P>);

impl<P: Policy> bindings::Guest for PolicyAdapter<P> {
    fn configure(config: String) -> Result<(), String> {
        __policy::configure::<P>(config)
    }

    fn on_request() -> Decision {
        // Not configured (the gateway always configures first): let the request through.
        __policy::with::<P, _>(Decision::Allow, |p| p.on_request(RequestHead::unread()))
    }

    fn on_response(head: ResponseHead) -> Verdict {
        __policy::with::<P, _>(Verdict::Keep, |p| p.on_response(head))
    }
}

impl<P: Policy> request_bindings::Guest for PolicyAdapter<P> {
    fn configure(config: String) -> Result<(), String> {
        __policy::configure::<P>(config)
    }

    fn on_request() -> Decision {
        __policy::with::<P, _>(Decision::Allow, |p| p.on_request(RequestHead::unread()))
    }
}

/// Exports a [`Policy`] as the component's `accord:policy@0.2.1` `lazy-policy` implementation.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        type __AccordPolicy = $crate::PolicyAdapter<$policy>;
        $crate::bindings::__export_policy!(__AccordPolicy);
    };
}

/// Exports a [`Policy`] that only checks requests, as an `accord:policy@0.2.1`
/// `lazy-request-policy` component: it has no `on-response` (its `on_response`, if written, is
/// never called), and the gateway skips the response chain of a route whose plugins are all
/// of this kind.
#[macro_export]
macro_rules! export_request_policy {
    ($policy:ty) => {
        type __AccordPolicy = $crate::PolicyAdapter<$policy>;
        $crate::request_bindings::__export_request_policy!(__AccordPolicy);
    };
}

#[doc(hidden)]
pub struct Adapter<P>(core::marker::PhantomData<P>);

impl<P: Plugin> bindings::Guest for Adapter<P> {
    fn configure(config: String) -> Result<(), String> {
        P::configure(config)
    }

    fn on_request() -> Decision {
        P::on_request(RequestHead::unread())
    }

    fn on_response(head: ResponseHead) -> Verdict {
        P::on_response(head)
    }
}

impl<P: Plugin> request_bindings::Guest for Adapter<P> {
    fn configure(config: String) -> Result<(), String> {
        P::configure(config)
    }

    fn on_request() -> Decision {
        P::on_request(RequestHead::unread())
    }
}

/// Exports a [`Plugin`] as the component's `accord:policy@0.2.1` `lazy-policy` implementation.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __AccordPlugin = $crate::Adapter<$plugin>;
        $crate::bindings::__export_policy!(__AccordPlugin);
    };
}

/// Exports a [`Plugin`] that only checks requests, as an `accord:policy@0.2.1`
/// `lazy-request-policy` component: it has no `on-response` (its `on_response`, if written, is
/// never called), and the gateway skips the response chain of a route whose plugins are all
/// of this kind. A plugin that keeps the default `on_response` should be exported this way.
#[macro_export]
macro_rules! export_request_plugin {
    ($plugin:ty) => {
        type __AccordPlugin = $crate::Adapter<$plugin>;
        $crate::request_bindings::__export_request_policy!(__AccordPlugin);
    };
}
