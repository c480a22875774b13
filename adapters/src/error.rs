//! What can go wrong when a backend is called, classified the way failover and the SLA engine
//! need it: *what* failed, *who* is at fault, and whether another try may help.

use std::time::Duration;

/// A boxed error, the currency of body and transport errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which side of the proxy a failure belongs to (pingora's `ErrorSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the gateway or the backend could not accept.
    Client,
    /// The backend failed or misbehaved.
    Upstream,
    /// The gateway itself (its configuration or its limits) failed the request.
    Gateway,
}

/// What failed. Each kind maps to one stable gateway error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// No connection could be made (refused, unreachable, DNS, TLS handshake). The request was
    /// never sent, so a retry is always safe.
    Connect,
    /// A try did not complete in time.
    Timeout,
    /// The connection broke after the request was (possibly) sent: reset, closed early, or a
    /// malformed response head.
    Reset,
    /// The backend answered something that cannot be turned into an HTTP response.
    InvalidResponse,
    /// The backend refused the gateway's credentials.
    Auth,
    /// The backend asked the gateway to slow down.
    Throttled,
    /// A serverless function raised an error.
    FunctionError,
    /// The provider's own service failed the call (Lambda's `ServiceException`, a function
    /// being updated, no network interface available): the backend's platform, not the code.
    ServiceError,
    /// Every endpoint of the backend is unavailable (none resolved, all ejected or unhealthy).
    NoHealthyEndpoint,
    /// The client's request body failed while it was being sent upstream.
    ClientBody,
    /// The client's request body exceeded the route's limit while it was being sent upstream.
    BodyTooLarge,
    /// The backend is misconfigured (unknown function, bad URL, missing credential).
    Config,
}

impl BackendErrorKind {
    /// Who is at fault for this kind of failure.
    pub fn fault(self) -> Fault {
        match self {
            Self::ClientBody | Self::BodyTooLarge => Fault::Client,
            Self::Config => Fault::Gateway,
            _ => Fault::Upstream,
        }
    }

    /// A short, stable, lower-case name used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::InvalidResponse => "invalid_response",
            Self::Auth => "auth",
            Self::Throttled => "throttled",
            Self::FunctionError => "function_error",
            Self::ServiceError => "service_error",
            Self::NoHealthyEndpoint => "no_healthy_endpoint",
            Self::ClientBody => "client_body",
            Self::BodyTooLarge => "body_too_large",
            Self::Config => "config",
        }
    }
}

/// A failed call to a backend.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
    retry_after: Option<Duration>,
    #[source]
    source: Option<BoxError>,
}

impl BackendError {
    /// A new error of `kind` with a message a person can act on.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// The try's deadline passed before the backend answered.
    pub fn past_deadline() -> Self {
        Self::new(
            BackendErrorKind::Timeout,
            "the backend did not answer before the try's deadline",
        )
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Attaches the delay the backend asked for (a throttle's `Retry-After`).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// What failed.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        self.kind.fault()
    }

    /// How long the backend asked callers to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message including the chain of causes, for logs and error bodies.
    pub fn detailed_message(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            let next = err.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = err.source();
        }
        text
    }
}
