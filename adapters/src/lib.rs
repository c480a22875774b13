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

pub use backend::{Backend, GatewayRequest, GatewayResponse, PreparedHead, Provider};
pub use body::{ReplayBody, RequestBody, ResponseBody};
pub use error::{BackendError, BackendErrorKind, BoxError, Fault};
pub use failover::{
    Attempt, Failover, Forwarded, RetryOn, RetryPolicy, RouteBackend, Standing, Steering,
    TryObserver, TryResult,
};
pub use retry_budget::{RetryBudget, RetryBudgetPolicy};
pub use secret::Secret;
