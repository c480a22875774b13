//! Every error the gateway itself answers with, in one table: a stable `code`, the HTTP status,
//! and whether `Retry-After` is sent. Bodies are JSON: `{"code", "message", "request_id"}`.
//! The README's error table is checked against this one by a test.

use std::time::Duration;

use accord_adapters::body::full_body;
use accord_adapters::{BackendError, BackendErrorKind, GatewayResponse};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

/// A failure the gateway answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No route matches the request.
    NoRoute,
    /// The request body is larger than the route allows.
    BodyTooLarge,
    /// No backend of the route could be reached.
    UpstreamUnavailable,
    /// The route's deadline passed before a backend answered.
    UpstreamTimeout,
    /// The backend's connection broke before a complete response.
    UpstreamReset,
    /// The backend answered something that is not valid HTTP or cannot be mapped.
    UpstreamInvalidResponse,
    /// The backend refused the gateway's credentials.
    UpstreamAuthFailed,
    /// The backend throttled the request and no other backend could take it.
    UpstreamThrottled,
    /// A serverless function raised an error.
    FunctionError,
    /// The backend's cloud service failed the call.
    UpstreamServiceError,
    /// The client's request body failed while being forwarded.
    ClientBodyError,
    /// A backend is misconfigured.
    BackendMisconfigured,
    /// Low-priority traffic is being shed to protect the route's error budget.
    LoadShed,
    /// The route's error budget is spent and the route is strict.
    BudgetExhausted,
    /// A policy plugin refused the request.
    PluginRejected,
    /// A policy plugin failed and fails closed.
    PluginFailed,
    /// The admin API needs a bearer token.
    Unauthorized,
    /// The admin API path does not exist.
    NotFound,
    /// The admin API path exists but not for this method.
    MethodNotAllowed,
    /// A reload was refused because the new configuration is invalid.
    InvalidConfig,
}

/// One row of the table.
pub struct ErrorSpec {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// HTTP status sent.
    pub status: StatusCode,
    /// `Retry-After` seconds sent with it, if any.
    pub retry_after: Option<u64>,
    /// When it happens.
    pub meaning: &'static str,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 20] = [
        Self::NoRoute,
        Self::BodyTooLarge,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
        Self::UpstreamReset,
        Self::UpstreamInvalidResponse,
        Self::UpstreamAuthFailed,
        Self::UpstreamThrottled,
        Self::FunctionError,
        Self::UpstreamServiceError,
        Self::ClientBodyError,
        Self::BackendMisconfigured,
        Self::LoadShed,
        Self::BudgetExhausted,
        Self::PluginRejected,
        Self::PluginFailed,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InvalidConfig,
    ];

    /// The code's row.
    pub fn spec(self) -> ErrorSpec {
        use StatusCode as S;
        let (code, status, retry_after, meaning) = match self {
            Self::NoRoute => (
                "no_route",
                S::NOT_FOUND,
                None,
                "no route matches the request's host, path, method and headers",
            ),
            Self::BodyTooLarge => (
                "body_too_large",
                S::PAYLOAD_TOO_LARGE,
                None,
                "the request body exceeds the route's max_body",
            ),
            Self::UpstreamUnavailable => (
                "upstream_unavailable",
                S::SERVICE_UNAVAILABLE,
                Some(1),
                "no backend of the route could be connected to",
            ),
            Self::UpstreamTimeout => (
                "upstream_timeout",
                S::GATEWAY_TIMEOUT,
                None,
                "no backend answered before the route's timeout",
            ),
            Self::UpstreamReset => (
                "upstream_reset",
                S::BAD_GATEWAY,
                None,
                "the backend closed the connection before a complete response",
            ),
            Self::UpstreamInvalidResponse => (
                "upstream_invalid_response",
                S::BAD_GATEWAY,
                None,
                "the backend's response is not valid HTTP or cannot be mapped",
            ),
            Self::UpstreamAuthFailed => (
                "upstream_auth_failed",
                S::BAD_GATEWAY,
                None,
                "the backend refused the gateway's credentials",
            ),
            Self::UpstreamThrottled => (
                "upstream_throttled",
                S::TOO_MANY_REQUESTS,
                Some(1),
                "the backend throttled the request and no other backend took it",
            ),
            Self::FunctionError => (
                "lambda_function_error",
                S::BAD_GATEWAY,
                None,
                "a Lambda function raised an error (X-Amz-Function-Error: Handled or Unhandled)",
            ),
            Self::UpstreamServiceError => (
                "upstream_service_error",
                S::BAD_GATEWAY,
                None,
                "the backend's cloud service failed the call (e.g. Lambda ServiceException); the log names the error type",
            ),
            Self::ClientBodyError => (
                "client_body_error",
                S::BAD_REQUEST,
                None,
                "the client's request body failed while it was forwarded",
            ),
            Self::BackendMisconfigured => (
                "backend_misconfigured",
                S::BAD_GATEWAY,
                None,
                "a backend of the route is misconfigured (see the gateway log)",
            ),
            Self::LoadShed => (
                "load_shed",
                S::SERVICE_UNAVAILABLE,
                Some(30),
                "low-priority traffic is shed: a page-level burn-rate alert fires and no backend meets the route's objective",
            ),
            Self::BudgetExhausted => (
                "error_budget_exhausted",
                S::SERVICE_UNAVAILABLE,
                Some(60),
                "the route's error budget is spent and the route is strict: only critical requests are served",
            ),
            Self::PluginRejected => (
                "plugin_rejected",
                S::FORBIDDEN,
                None,
                "a policy plugin refused the request (with the status, reason, headers and Retry-After it chose; 403 is only the default)",
            ),
            Self::PluginFailed => (
                "plugin_failed",
                S::SERVICE_UNAVAILABLE,
                Some(1),
                "a policy plugin failed (trap, time or memory limit, invalid output) and is configured with on_error: reject",
            ),
            Self::Unauthorized => (
                "unauthorized",
                S::UNAUTHORIZED,
                None,
                "the admin API needs a valid bearer token",
            ),
            Self::NotFound => (
                "not_found",
                S::NOT_FOUND,
                None,
                "no such admin API endpoint",
            ),
            Self::MethodNotAllowed => (
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                None,
                "the admin API endpoint does not take this method",
            ),
            Self::InvalidConfig => (
                "invalid_config",
                S::UNPROCESSABLE_ENTITY,
                None,
                "a reload was refused: the new configuration is invalid; the old one keeps serving",
            ),
        };
        ErrorSpec {
            code,
            status,
            retry_after,
            meaning,
        }
    }

    /// The code a failed backend call is answered with.
    pub fn for_backend_error(error: &BackendError) -> Self {
        match error.kind() {
            BackendErrorKind::Connect | BackendErrorKind::NoHealthyEndpoint => {
                Self::UpstreamUnavailable
            }
            BackendErrorKind::Timeout => Self::UpstreamTimeout,
            BackendErrorKind::Reset => Self::UpstreamReset,
            BackendErrorKind::InvalidResponse => Self::UpstreamInvalidResponse,
            BackendErrorKind::Auth => Self::UpstreamAuthFailed,
            BackendErrorKind::Throttled => Self::UpstreamThrottled,
            BackendErrorKind::FunctionError => Self::FunctionError,
            BackendErrorKind::ServiceError => Self::UpstreamServiceError,
            BackendErrorKind::ClientBody => Self::ClientBodyError,
            BackendErrorKind::BodyTooLarge => Self::BodyTooLarge,
            BackendErrorKind::Config => Self::BackendMisconfigured,
        }
    }

    /// The JSON error response.
    pub fn response(self, message: &str, request_id: &str) -> GatewayResponse {
        self.response_with_retry_after(message, request_id, None)
    }

    /// The JSON error response, with a `Retry-After` that overrides the table's (a throttling
    /// backend's own value).
    pub fn response_with_retry_after(
        self,
        message: &str,
        request_id: &str,
        retry_after: Option<Duration>,
    ) -> GatewayResponse {
        let spec = self.spec();
        let body =
            serde_json::json!({ "code": spec.code, "message": message, "request_id": request_id });
        let mut response = http::Response::new(full_body(body.to_string()));
        *response.status_mut() = spec.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let seconds = retry_after
            .map(|d| d.as_secs_f64().ceil() as u64)
            .or(spec.retry_after);
        if let Some(seconds) = seconds {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(crate::proxy::headers::REQUEST_ID, id);
        }
        response.into()
    }
}

/// The error table as Markdown (`accord errors` prints it; the README embeds it).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| code | status | Retry-After | when |\n| --- | --- | --- | --- |\n");
    for code in ErrorCode::ALL {
        let spec = code.spec();
        let retry = spec.retry_after.map_or("".to_owned(), |s| format!("{s}s"));
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            spec.code,
            spec.status.as_u16(),
            retry,
            spec.meaning
        ));
    }
    out
}
