//! The request pipeline: what happens to one client request, phase by phase. Reading this file
//! top to bottom is reading a request's life in the gateway.
//!
//! 1. **Identify**: keep or generate `x-request-id`; `Host` comes from the target's authority
//!    when there is one (HTTP/2's `:authority`, an absolute-form HTTP/1.1 target).
//! 2. **Route**: the [`Router`](crate::proxy::router::Router) picks the route (404 `no_route`).
//! 3. **Admit**: the route's `max_body` is checked against `Content-Length` (413 before any
//!    byte is read); a route with an objective applies budget protection: low-priority
//!    requests are shed while it pages with no compliant backend, and a strict route with a
//!    spent budget serves only critical requests.
//! 4. **Prepare**: hop-by-hop headers are stripped, forwarding headers added; the body is
//!    buffered up to the route's `replay_buffer` so that it can be replayed on another try,
//!    larger bodies are streamed (one try) with the limit enforced as they flow.
//! 5. **Forward**: the route's [`Failover`](accord_adapters::Failover) tries backends in
//!    priority order under the route's deadline, retry policy and retry budget.
//! 6. **Respond**: the backend's response is streamed back with hop-by-hop headers stripped,
//!    or a failure becomes a JSON error from [`crate::errors`]. WebSocket handshakes that the
//!    backend accepts (101) are tunnelled both ways.
//! 7. **Record**: when the response body ends (or the client goes away), the route's counters,
//!    its SLA meters (route and answering backend) and the access log line are written with the
//!    final byte count and duration.

pub mod errors;
pub mod headers;
pub mod router;
pub mod server;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use accord_adapters::backend::{ClientAddr, PathParams};
use accord_adapters::body::{BodyTooLarge, empty_body, response_body};
use accord_adapters::{
    BackendErrorKind, BoxError, ReplayBody, RequestBody, ResponseBody, TryResult,
};
use accord_policies::plugin::{
    CallContext, Decision, OnError, Rejection, RequestHead, ResponseHead, SlaState, Verdict,
};
use accord_policies::sla::{Admission, RouteSla};
use accord_policies::{Class, classify};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use self::errors::ErrorCode;
use crate::control::runtime::Runtime;
use crate::stats::{Registry, RouteStats};

/// What the listener knows about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The client's address.
    pub client: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// Handles one client request to completion of the response head.
pub async fn handle(
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    access_log: bool,
    mut request: Request<Incoming>,
    conn: Connection,
) -> Response<ResponseBody> {
    // 1. Identify.
    let started = Instant::now();
    let request_id = headers::ensure_request_id(request.headers_mut());
    // An absolute-form target (or HTTP/2's `:authority`) names the host: a `Host` header that
    // says otherwise is replaced (RFC 9112 §3.2.2), so routing and the upstream see one host.
    if let Some(authority) = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(HOST, authority);
    }
    let websocket = headers::is_websocket_upgrade(request.headers());
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let mut record = Record {
        route: None,
        backend: None,
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        client: conn.client,
        request_id,
        started,
        tries: 0,
        failure: None,
        status: StatusCode::OK,
        bytes_out: 0,
        access_log,
        sla: None,
        steered: false,
        annotations: Vec::new(),
        class: None,
        try_in_flight: std::sync::Mutex::new(None),
        completed: false,
    };

    // 2. Route.
    let Some(matched) = runtime.router().route(&parts) else {
        registry.gateway.unrouted_requests.fetch_add(1, Relaxed);
        let response =
            ErrorCode::NoRoute.response("no route matches this request", &record.request_id);
        return record.finish_with(response);
    };
    let route = &runtime.routes()[matched.route];
    let limits = route.config();
    record.route = Some(RouteRecord {
        id: route.id().clone(),
        stats: route.stats().clone(),
    });
    route.stats().active.fetch_add(1, Relaxed);

    // 3. Admit.
    if let (Some(sla), Some(slo)) = (route.sla(), &limits.slo) {
        record.sla = Some(sla.clone());
        match sla.admit(slo.priority.classify(&parts.headers)) {
            Admission::Admit => {}
            Admission::Shed { retry_after } => {
                record.class = Some(Class::Rejected);
                let message = format!(
                    "{} (route {})",
                    ErrorCode::LoadShed.spec().meaning,
                    route.id()
                );
                let response = ErrorCode::LoadShed.response_with_retry_after(
                    &message,
                    &record.request_id,
                    Some(retry_after),
                );
                return record.finish_with(response);
            }
            Admission::Reject => {
                record.class = Some(Class::Rejected);
                let message = format!(
                    "{} (route {})",
                    ErrorCode::BudgetExhausted.spec().meaning,
                    route.id()
                );
                let response = ErrorCode::BudgetExhausted.response(&message, &record.request_id);
                return record.finish_with(response);
            }
        }
    }
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|len| len > limits.max_body) {
        let message = format!(
            "the request body exceeds this route's limit of {} bytes",
            limits.max_body
        );
        let response = ErrorCode::BodyTooLarge.response(&message, &record.request_id);
        return record.finish_with(response);
    }
    // The route's plugins, in order: the first rejection wins, a reroute sets the preference.
    let mut plugin_call: Option<CallContext> = None;
    let mut preferred: Option<String> = None;
    if !route.plugins().is_empty() {
        let head = RequestHead {
            route: route.id().to_string(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            content_length,
        };
        // The request head is lent to the plugins for the calls, not copied.
        let lent = Arc::new(parts);
        let mut call = CallContext {
            request: Some(lent.clone()),
            sla: route.sla().cloned().map(SlaState::Live),
            backends: route.backend_ids().clone(),
            ..CallContext::default()
        };
        let mut refusal = None;
        for plugin in route.plugins() {
            let (result, returned) = plugin.on_request(&head, call).await;
            call = returned;
            match result {
                Ok(Decision::Allow) => {}
                Ok(Decision::Reroute(backend)) => preferred = Some(backend),
                Ok(Decision::Reject(rejection)) => {
                    refusal = Some(plugin_rejection(
                        &rejection,
                        plugin.spec().name.as_str(),
                        &record.request_id,
                    ));
                    break;
                }
                Err(error) => {
                    tracing::warn!(request_id = %record.request_id, route = %route.id(), error = %error, "plugin failed");
                    if plugin.spec().on_error == OnError::Reject {
                        let message = format!(
                            "{} (plugin {})",
                            ErrorCode::PluginFailed.spec().meaning,
                            plugin.spec().name
                        );
                        refusal =
                            Some(ErrorCode::PluginFailed.response(&message, &record.request_id));
                        break;
                    }
                }
            }
        }
        call.request = None;
        parts = Arc::try_unwrap(lent).unwrap_or_else(|shared| (*shared).clone());
        record.annotations = std::mem::take(&mut call.annotations);
        if let Some(response) = refusal {
            record.class = Some(Class::Rejected);
            return record.finish_with(response);
        }
        plugin_call = Some(call);
    }

    // 4. Prepare.
    headers::strip_hop_by_hop(&mut parts.headers, websocket);
    let host = router_host(&parts);
    headers::add_forwarded(
        &mut parts.headers,
        conn.client.ip(),
        conn.scheme,
        host.as_deref(),
    );
    parts.extensions.insert(ClientAddr(conn.client));
    parts.extensions.insert(PathParams(matched.params));
    parts.extensions.insert(route.route_key().clone());
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = http::Uri::from(path);
    }
    let body = match prepare_body(
        body,
        content_length,
        limits.replay_buffer,
        limits.max_body,
        route.stats(),
    )
    .await
    {
        Ok(body) => body,
        Err(PrepareError::TooLarge) => {
            let message = format!(
                "the request body exceeds this route's limit of {} bytes",
                limits.max_body
            );
            let response = ErrorCode::BodyTooLarge.response(&message, &record.request_id);
            return record.finish_with(response);
        }
        Err(PrepareError::Client(e)) => {
            tracing::debug!(request_id = %record.request_id, error = %e, "client body failed");
            let message = "the request body could not be read from the client";
            let response = ErrorCode::ClientBodyError.response(message, &record.request_id);
            return record.finish_with(response);
        }
    };

    // 5. Forward.
    let deadline = started + limits.timeout;
    // Every try counts against the backend that made it as it ends (the record observes
    // them); the request as a whole counts against the route when its response ends.
    let forwarded = route
        .failover()
        .forward_preferring(parts, body, deadline, preferred.as_deref(), &record)
        .await;
    record.tries = forwarded.tries;
    record.backend = forwarded.backend.as_ref().map(|b| b.id().clone());
    record.steered = forwarded.steered;
    if forwarded.tries > 1 {
        route
            .stats()
            .retries
            .fetch_add(u64::from(forwarded.tries - 1), Relaxed);
    }
    if forwarded.budget_exhausted {
        route.stats().retry_budget_exhausted.fetch_add(1, Relaxed);
    }

    // 6. Respond.
    match forwarded.result {
        Ok(mut response) => {
            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                tunnel(
                    client_upgrade,
                    hyper::upgrade::on(&mut response),
                    record.request_id.clone(),
                );
            } else {
                headers::strip_hop_by_hop(response.headers_mut(), false);
            }
            if let Ok(id) = HeaderValue::from_str(&record.request_id) {
                response.headers_mut().insert(headers::REQUEST_ID, id);
            }
            if let Some(call) = plugin_call {
                run_response_plugins(route, call, &mut response, &mut record).await;
            }
            record.finish_with(response)
        }
        Err(error) => {
            let code = ErrorCode::for_backend_error(&error);
            tracing::warn!(
                request_id = %record.request_id,
                route = %route.id(),
                backend = record.backend.as_deref().unwrap_or("-"),
                kind = error.kind().as_str(),
                error = %error.detailed_message(),
                "request failed"
            );
            record.failure = Some(error.kind());
            let message = match error.kind() {
                BackendErrorKind::BodyTooLarge => format!(
                    "the request body exceeds this route's limit of {} bytes",
                    limits.max_body
                ),
                _ => format!("{} (route {})", code.spec().meaning, route.id()),
            };
            let response =
                code.response_with_retry_after(&message, &record.request_id, error.retry_after());
            record.finish_with(response)
        }
    }
}

/// The response to a plugin's rejection: its status, reason, headers and `Retry-After`.
fn plugin_rejection(
    rejection: &Rejection,
    plugin: &str,
    request_id: &str,
) -> Response<ResponseBody> {
    let message = format!("{} (plugin {plugin})", rejection.reason);
    let retry_after = rejection
        .retry_after_seconds
        .map(|s| std::time::Duration::from_secs(u64::from(s)));
    let mut response =
        ErrorCode::PluginRejected.response_with_retry_after(&message, request_id, retry_after);
    if let Ok(status) = StatusCode::from_u16(rejection.status) {
        *response.status_mut() = status;
    }
    for header in &rejection.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(header.name.as_str()),
            HeaderValue::from_str(&header.value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Runs the route's plugins on the response head, in reverse order; a reclassification decides
/// how the request counts against the route's objective.
async fn run_response_plugins(
    route: &crate::control::runtime::RouteRuntime,
    mut call: CallContext,
    response: &mut Response<ResponseBody>,
    record: &mut Record,
) {
    let class = classify(response.status(), None);
    let head = ResponseHead {
        status: response.status().as_u16(),
        backend: record.backend.as_ref().map(|b| b.to_string()),
        latency_ms: record.started.elapsed().as_secs_f64() * 1000.0,
        class: class.into(),
    };
    let inspect = route.response_body_limit();
    if inspect > 0 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        match read_response_body(response, inspect).await {
            Ok(body) => call.response_body = body,
            Err(error) => {
                // The backend broke off while the body was being read: the client gets a 502
                // instead of a truncated body, and the request counts as failed.
                tracing::warn!(request_id = %record.request_id, route = %route.id(), error = %error, "the response body failed while plugins read it");
                record.failure = Some(BackendErrorKind::Reset);
                let message = format!(
                    "{} (route {})",
                    ErrorCode::UpstreamReset.spec().meaning,
                    route.id()
                );
                *response = ErrorCode::UpstreamReset.response(&message, &record.request_id);
                return;
            }
        }
    }
    let lent = Arc::new(std::mem::take(response.headers_mut()));
    call.response_headers = Some(lent.clone());
    for plugin in route.plugins().iter().rev() {
        let (result, returned) = plugin.on_response(&head, call).await;
        call = returned;
        match result {
            Ok(Verdict::Keep) => {}
            Ok(Verdict::Good(_)) => record.class = Some(Class::Good),
            Ok(Verdict::Bad(_)) => record.class = Some(Class::Bad),
            Err(error) => {
                tracing::warn!(request_id = %record.request_id, route = %route.id(), error = %error, "plugin failed on the response");
                if plugin.spec().on_error == OnError::Reject {
                    record.class = Some(Class::Bad);
                }
            }
        }
    }
    call.response_headers = None;
    call.response_body = None;
    *response.headers_mut() = Arc::try_unwrap(lent).unwrap_or_else(|shared| (*shared).clone());
    record.annotations.append(&mut call.annotations);
}

/// Reads the response body for plugins when it is at most `limit` bytes, and puts back a body
/// that replays what was read (trailers included) followed by whatever was not.
async fn read_response_body(
    response: &mut Response<ResponseBody>,
    limit: usize,
) -> Result<Option<Bytes>, BoxError> {
    if response.body().size_hint().lower() > limit as u64 {
        return Ok(None);
    }
    let mut body = std::mem::replace(response.body_mut(), empty_body());
    let mut read = BytesMut::new();
    let mut frames = std::collections::VecDeque::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            read.extend_from_slice(data);
        }
        frames.push_back(frame);
        if read.len() > limit {
            complete = false;
            break;
        }
    }
    *response.body_mut() = response_body(ReplayedBody {
        frames,
        rest: (!complete).then_some(body),
    });
    Ok(complete.then(|| read.freeze()))
}

/// Frames already read, then the rest of the body.
struct ReplayedBody {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    rest: Option<ResponseBody>,
}

impl Body for ReplayedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        grow(&mut hint, buffered);
        hint
    }
}

/// Adds `bytes` to both bounds of a size hint (the upper first: a lower bound may never pass
/// it).
fn grow(hint: &mut SizeHint, bytes: u64) {
    if let Some(upper) = hint.upper() {
        hint.set_upper(upper + bytes);
    }
    hint.set_lower(hint.lower() + bytes);
}

fn annotations(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn router_host(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Splices the client's and the backend's upgraded connections together.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    request_id: String,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%request_id, error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%request_id, error = %e, "tunnel closed with an error");
        }
    });
}

// === request bodies ===

enum PrepareError {
    TooLarge,
    Client(hyper::Error),
}

/// Buffers the body up to `replay_limit` (replayable), or streams it with `max_body` enforced.
async fn prepare_body(
    mut body: Incoming,
    content_length: Option<u64>,
    replay_limit: u64,
    max_body: u64,
    stats: &Arc<RouteStats>,
) -> Result<ReplayBody, PrepareError> {
    if body.is_end_stream() || content_length == Some(0) {
        return Ok(ReplayBody::Buffered(Bytes::new()));
    }
    let stream = |prefix: Option<Bytes>, body: Incoming| {
        let seen = prefix.as_ref().map_or(0, |p| p.len() as u64);
        ReplayBody::Streaming(Some(RequestBody::stream(LimitedBody {
            prefix,
            inner: body,
            seen,
            limit: max_body,
            stats: stats.clone(),
        })))
    };
    if content_length.is_some_and(|len| len > replay_limit) {
        return Ok(stream(None, body));
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(PrepareError::Client)?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() as u64 > max_body {
                return Err(PrepareError::TooLarge);
            }
            if buffer.len() as u64 > replay_limit {
                stats.bytes_in.fetch_add(buffer.len() as u64, Relaxed);
                return Ok(stream(Some(buffer.freeze()), body));
            }
        }
    }
    stats.bytes_in.fetch_add(buffer.len() as u64, Relaxed);
    Ok(ReplayBody::Buffered(buffer.freeze()))
}

/// A streamed request body that fails with [`BodyTooLarge`] once it passes the route's limit.
struct LimitedBody {
    prefix: Option<Bytes>,
    inner: Incoming,
    seen: u64,
    limit: u64,
    stats: Arc<RouteStats>,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.stats.bytes_in.fetch_add(data.len() as u64, Relaxed);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(prefix) = &self.prefix {
            let extra = prefix.len() as u64;
            grow(&mut hint, extra);
        }
        hint
    }
}

// === recording ===

struct RouteRecord {
    id: Arc<str>,
    stats: Arc<RouteStats>,
}

/// What is known about a request so far; written to counters and the access log exactly once:
/// when the response body has been sent, or dropped, or — if the client goes away before its
/// response head (reset, HTTP/2 `RST_STREAM`, closed connection) and hyper drops the request's
/// future at whatever await it had reached — when the record itself is dropped. Such a request
/// is logged with status 499 (nginx's convention) and counted as [`Class::Cancelled`].
struct Record {
    route: Option<RouteRecord>,
    backend: Option<Arc<str>>,
    method: http::Method,
    path: String,
    client: SocketAddr,
    request_id: String,
    started: Instant,
    tries: u32,
    failure: Option<BackendErrorKind>,
    status: StatusCode,
    bytes_out: u64,
    access_log: bool,
    sla: Option<Arc<RouteSla>>,
    steered: bool,
    /// Plugins' annotations for the access log.
    annotations: Vec<(String, String)>,
    /// Set when the gateway's own policy decided the class (shed, rejected).
    class: Option<Class>,
    /// The backend of the try in flight (or of the last one), for a request cancelled while
    /// it waited.
    try_in_flight: std::sync::Mutex<Option<Arc<str>>>,
    /// Counters and the access log have been written.
    completed: bool,
}

/// The client went away before its response head: nginx logs this as 499.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Record {
    fn finish_with(mut self, response: Response<ResponseBody>) -> Response<ResponseBody> {
        self.status = response.status();
        response.map(|body| {
            response_body(RecordedBody {
                inner: body,
                record: Some(self),
            })
        })
    }

    /// Writes the record: the route's counters and SLA meter, and the access log line.
    fn complete(&mut self) {
        if std::mem::replace(&mut self.completed, true) {
            return;
        }
        let duration = self.started.elapsed();
        let class = match (self.class, &self.route) {
            (Some(class), _) => class,
            (None, Some(_)) => classify(self.status, self.failure),
            (None, None) => Class::ClientError,
        };
        if let Some(sla) = &self.sla {
            sla.record(class, duration, self.steered);
        }
        if let Some(route) = &self.route {
            let stats = &route.stats;
            stats.active.fetch_sub(1, Relaxed);
            stats.requests_by_class[class.index()].fetch_add(1, Relaxed);
            let status_class = (self.status.as_u16() / 100).clamp(1, 5) as usize - 1;
            stats.requests_by_status[status_class].fetch_add(1, Relaxed);
            stats.duration.record(duration);
            stats.bytes_out.fetch_add(self.bytes_out, Relaxed);
        }
        if self.access_log {
            tracing::info!(
                target: "accord::access",
                request_id = %self.request_id,
                client = %self.client.ip(),
                method = %self.method,
                path = %self.path,
                route = self.route.as_ref().map_or("-", |r| &*r.id),
                backend = self.backend.as_deref().unwrap_or("-"),
                status = self.status.as_u16(),
                class = class.as_str(),
                duration_ms = duration.as_secs_f64() * 1000.0,
                bytes_out = self.bytes_out,
                retries = self.tries.saturating_sub(1),
                plugins = %annotations(&self.annotations),
            );
        }
    }

    /// The request's future was dropped before its response head: the client went away.
    fn cancel(&mut self) {
        if self.completed {
            return;
        }
        self.class = Some(Class::Cancelled);
        self.status =
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST);
        if self.backend.is_none() {
            self.backend = self
                .try_in_flight
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        self.complete();
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The record observes the route's tries: each one is metered against its backend as it ends,
/// a try in flight when the client leaves as cancelled.
impl accord_adapters::TryObserver for Record {
    fn try_ended(&self, attempt: accord_adapters::failover::Attempt<'_>) {
        let id = attempt.backend.id();
        *self.try_in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        let Some(sla) = &self.sla else { return };
        let class = match attempt.result {
            TryResult::Answered(status) => classify(status, None),
            TryResult::Failed(kind) => classify(StatusCode::BAD_GATEWAY, Some(kind)),
            TryResult::Cancelled => Class::Cancelled,
        };
        if let Some(index) = sla.backends().iter().position(|b| b.id() == id) {
            sla.record_try(index, class, attempt.latency);
        }
    }
}

/// A response body that completes its [`Record`] when it ends or is dropped.
struct RecordedBody {
    inner: ResponseBody,
    record: Option<Record>,
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                    record.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(mut record) = this.record.take() {
                    record.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The upstream broke mid-body: the client sees a truncated response, and the
                // request counts as failed.
                if let Some(mut record) = this.record.take() {
                    record.failure = Some(BackendErrorKind::Reset);
                    record.complete();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    /// The client went away while the body was streaming (or the body was never polled): the
    /// request is recorded with the status its client was sent.
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.complete();
        }
    }
}
