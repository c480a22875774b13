//! The data plane: the listeners ([`server`]), the route table ([`router`]), header handling
//! ([`headers`]), the gateway's own errors ([`errors`]) and the request pipeline, [`handle`].
//!
//! # A request's life
//!
//! [`handle`] runs these phases in order; each phase either lets the request go on or answers
//! it (`ControlFlow::Break` with the response), and every answer goes through the record.
//!
//! 1. **Identify**: keep or generate `x-request-id`; `Host` comes from the target's authority
//!    when there is one (HTTP/2's `:authority`, an absolute-form HTTP/1.1 target). The
//!    request's [`Record`](record) starts here.
//! 2. **Route**: the [`Router`](router::Router) picks the route (404 `no_route`).
//! 3. **Admit** ([`admit`]): the declared body size against the route's `max_body` (413 before
//!    a byte is read), and the route's error-budget protection (shed, strict).
//! 4. **Request plugins** ([`plugins`]): the route's Wasm plugins in order — allow, reject
//!    (the first rejection answers), reroute (the backend to try first).
//! 5. **Prepare** ([`body`]): hop-by-hop headers stripped, forwarding headers added, the
//!    target made origin-form; the body buffered up to `replay_buffer` (replayable) or streamed
//!    with `max_body` enforced.
//! 6. **Forward** ([`respond`]): the route's failover tries its backends under the deadline,
//!    retry policy and retry budget; each try is metered against its backend as it ends.
//! 7. **Respond** ([`respond`]): the backend's response (hop-by-hop headers stripped, request
//!    id added, WebSocket tunnelled), or a JSON error.
//! 8. **Response plugins** ([`plugins`]): the route's plugins in reverse order see the
//!    response head (and, if the operator allows, its body) and may reclassify it.
//! 9. **Record** ([`record`]): when the response body ends, or is dropped, the route's counters,
//!    its SLA meter and the access-log line are written, exactly once.
//!
//! **Cancellation.** If the client goes away (reset, HTTP/2 `RST_STREAM`, a closed connection)
//! before its response head, hyper drops this future at whatever await it reached — a plugin
//! call, reading the body, a try. Nothing is skipped: the record is written by its `Drop` as
//! class `cancelled` with status 499 and the time the client waited, the try in flight is
//! metered against its backend as cancelled, the upstream call is dropped with it, and every
//! in-flight gauge is released by its guard.

mod admit;
mod body;
pub mod errors;
pub mod headers;
mod plugins;
mod record;
mod respond;
pub mod router;
pub mod server;

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use accord_adapters::backend::{ClientAddr, PathParams};
use accord_adapters::{BoxError, ResponseBody};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::time::Instant;

use self::body::PrepareError;
use self::errors::ErrorCode;
use self::record::{Record, RouteRecord};
use crate::control::runtime::Runtime;
use crate::stats::Registry;

/// What the listener knows about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The client's address.
    pub client: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// Takes one client request through the pipeline (see the module doc) to its response head;
/// the record is written when the response body ends. Generic over the request body so that
/// tests can drive it in-process.
pub async fn handle<B>(
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    access_log: bool,
    mut request: Request<B>,
    conn: Connection,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // 1. Identify.
    let started = Instant::now();
    let request_id = identify(&mut request);
    let websocket = headers::is_websocket_upgrade(request.headers());
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let mut record = Record::new(&parts, conn.client, request_id, started, access_log);

    // 2. Route.
    let Some(matched) = runtime.router().route(&parts) else {
        registry.gateway.unrouted_requests.fetch_add(1, Relaxed);
        let response =
            ErrorCode::NoRoute.response("no route matches this request", &record.request_id);
        return record.finish_with(response);
    };
    let route = &runtime.routes()[matched.route];
    record.route = Some(RouteRecord {
        id: route.id().clone(),
        stats: route.stats().clone(),
    });
    route.stats().active.fetch_add(1, Relaxed);

    // 3. Admit.
    let content_length = declared_length(&parts);
    if let ControlFlow::Break(refusal) = admit::admit(route, &parts, content_length, &mut record) {
        return record.finish_with(refusal);
    }

    // 4. Request plugins.
    let allowed = match plugins::on_request(route, &mut parts, content_length, &mut record).await {
        ControlFlow::Continue(allowed) => allowed,
        ControlFlow::Break(refusal) => return record.finish_with(refusal),
    };

    // 5. Prepare.
    prepare_head(&mut parts, websocket, conn, matched.params, route);
    let limits = route.config();
    let body = match body::prepare(
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
            let response = admit::body_too_large(route, &record);
            return record.finish_with(response);
        }
        Err(PrepareError::Client(e)) => {
            tracing::debug!(request_id = %record.request_id, error = %e, "client body failed");
            let message = "the request body could not be read from the client";
            let response = ErrorCode::ClientBodyError.response(message, &record.request_id);
            return record.finish_with(response);
        }
    };

    // 6. Forward.
    let preferred = allowed.as_ref().and_then(|a| a.preferred.as_deref());
    let forwarded = respond::forward(route, parts, body, preferred, &mut record).await;

    // 7. Respond.
    let succeeded = forwarded.result.is_ok();
    let mut response = respond::respond(route, forwarded.result, client_upgrade, &mut record);

    // 8. Response plugins.
    if succeeded && let Some(allowed) = allowed {
        plugins::on_response(route, allowed.call, &mut response, &mut record).await;
    }

    // 9. Record (when the body ends).
    record.finish_with(response)
}

/// Keeps or generates the request id, and takes `Host` from the target's authority: an
/// absolute-form target (or HTTP/2's `:authority`) names the host, and a `Host` header that
/// says otherwise is replaced (RFC 9112 §3.2.2), so routing and the upstream see one host.
fn identify<B>(request: &mut Request<B>) -> String {
    let request_id = headers::ensure_request_id(request.headers_mut());
    if let Some(authority) = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(HOST, authority);
    }
    request_id
}

/// The body size the client declared, if it did.
fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Readies the request head for the upstream: hop-by-hop headers out, forwarding headers in,
/// what adapters read (client address, template parameters, route key) on its extensions, and
/// an origin-form target.
fn prepare_head(
    parts: &mut http::request::Parts,
    websocket: bool,
    conn: Connection,
    params: Vec<(String, String)>,
    route: &crate::control::runtime::RouteRuntime,
) {
    headers::strip_hop_by_hop(&mut parts.headers, websocket);
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    headers::add_forwarded(
        &mut parts.headers,
        conn.client.ip(),
        conn.scheme,
        host.as_deref(),
    );
    parts.extensions.insert(ClientAddr(conn.client));
    parts.extensions.insert(PathParams(params));
    parts.extensions.insert(route.route_key().clone());
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = http::Uri::from(path);
    }
}
