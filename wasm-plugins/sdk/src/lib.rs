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

// The generated code names this crate by its public path, from inside it too.
extern crate self as accord_policy_sdk;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy",
        default_bindings_module: "accord_policy_sdk::bindings",
        runtime_path: "accord_policy_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::accord::policy::types::{
    BackendStats, Decision, HttpHeader, Indicator, Level, OutcomeClass, Rejection, RequestHead,
    ResponseHead, RouteSnapshot, Verdict, WindowStats,
};

/// The current request, read lazily (each call crosses into the gateway).
pub mod request {
    pub use crate::bindings::accord::policy::request::{
        header, headers, query, response_body, response_header,
    };
}

/// Storage carried from a request's `on_request` to its `on_response`.
pub mod locals {
    pub use crate::bindings::accord::policy::locals::{get, set};
}

/// The route's live SLA state.
pub mod sla {
    pub use crate::bindings::accord::policy::sla::{backends, route};
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

#[doc(hidden)]
pub struct Adapter<P>(core::marker::PhantomData<P>);

impl<P: Plugin> bindings::Guest for Adapter<P> {
    fn configure(config: String) -> Result<(), String> {
        P::configure(config)
    }

    fn on_request(head: RequestHead) -> Decision {
        P::on_request(head)
    }

    fn on_response(head: ResponseHead) -> Verdict {
        P::on_response(head)
    }
}

/// Exports a [`Plugin`] as the component's `accord:policy` implementation.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __AccordPlugin = $crate::Adapter<$plugin>;
        $crate::bindings::__export_policy!(__AccordPlugin);
    };
}
