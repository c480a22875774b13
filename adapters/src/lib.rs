//! Accord's backends.
//!
//! Every upstream a route can send to is a [`Backend`]: a tower service over
//! [`GatewayRequest`] that answers a [`GatewayResponse`] or a classified [`BackendError`],
//! wrapped in the layers all backends share (metering, per-try timeouts). Above the backends,
//! [`Failover`] implements retries, the retry budget and failover for a route, so every adapter
//! family takes part in the same failover. The [`http`] module is the on-prem HTTP adapter; the
//! [`lambda`] module invokes AWS Lambda functions.
#![forbid(unsafe_code)]

pub mod azure;
pub mod backend;
pub mod body;
pub mod clock;
pub mod error;
pub mod failover;
pub mod forwarding;
pub mod http;
pub mod lambda;
pub mod outlier;
pub mod response;
pub mod retry_budget;
pub mod secret;
pub mod stats;
pub mod tls;

/// `Box::new($value)`, with `$value` made in the box. `Box::new(value)` makes the value on the
/// stack and then copies all of it into the box; allocating first lets it be written there. For
/// futures that copy was most of the cost of boxing: a future is as large as its largest state
/// (the proxy's is 2.2 KiB) while one that has not started holds only its arguments. A macro,
/// not a function: a function's argument, or a closure's captures, would be made first and
/// moved.
#[macro_export]
macro_rules! box_in_place {
    ($value:expr) => {{
        // Bound, so that the box's type is the value's, not one it is coerced to later.
        let boxed = ::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $value);
        boxed
    }};
}

pub use backend::{Backend, GatewayRequest, GatewayResponse, PreparedHead, Provider};
pub use body::{ReplayBody, RequestBody, ResponseBody};
pub use error::{BackendError, BackendErrorKind, BoxError, Fault};
pub use failover::{
    Attempt, Failover, Forwarded, RetryOn, RetryPolicy, RouteBackend, Standing, Steering,
    TryObserver, TryResult,
};
pub use retry_budget::{RetryBudget, RetryBudgetPolicy};
pub use secret::Secret;
