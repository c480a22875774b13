//! The data plane: the listeners ([`server`]), the route table ([`router`]), header handling
//! ([`headers`]), the gateway's own errors ([`errors`]) and the request pipeline, [`handle`].
//!
//! # A request's life
//!
//! [`handle`] runs these phases in order; each phase either lets the request go on or answers
//! it (`ControlFlow::Break` with the response), and every answer goes through the record.
//!
//! 1. **Identify**: keep or generate `x-request-id` (a generated one is sent with the
//!    forwarding headers, or put in the head for a route's plugins); `Host` comes from the
//!    target's authority when there is one (HTTP/2's `:authority`, an absolute-form HTTP/1.1
//!    target). The request's [`Record`](record) starts here.
//! 2. **Route**: the [`Router`](router::Router) picks the route (404 `no_route`).
//! 3. **Admit** ([`admit`]): the declared body size against the route's `max_body` (413 before
//!    a byte is read), and the route's error-budget protection (shed, strict).
//! 4. **Request plugins** ([`plugins`]): the route's Wasm plugins in order — allow, reject
//!    (the first rejection answers), reroute (the backend to try first) — and their header
//!    changes. When a plugin reads the request body (`request_body`), the body is prepared
//!    (phase 5's body half) before them.
//! 5. **Prepare** ([`body`]): hop-by-hop headers stripped, the forwarding headers decided
//!    (each try adds them where the head leaves the gateway), the target made origin-form;
//!    the body buffered up to `replay_buffer` (replayable) or streamed with `max_body`
//!    enforced.
//! 6. **Forward** ([`respond`]): the route's failover tries its backends under the deadline,
//!    retry policy and retry budget; each try is metered against its backend as it ends.
//! 7. **Respond** ([`respond`]): the backend's response (hop-by-hop headers stripped, request
//!    id added, WebSocket tunnelled), or a JSON error.
//! 8. **Response plugins** ([`plugins`]): the route's plugins that have `on-response`, in
//!    reverse order, see the response head (and, if the operator allows, its body) and may
//!    reclassify it. A route whose plugins are all `request-policy` ones skips this phase.
//! 9. **Record** ([`record`]): when the response body ends, or is dropped, the route's counters,
//!    its SLA meter and the access-log line are written, exactly once.
//!
//! **Cancellation.** If the client goes away (reset, HTTP/2 `RST_STREAM`, a closed connection)
//! before its response head, the server drops this future at whatever await it reached — a plugin
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

use accord_adapters::backend::{PathParams, RequestContext};
use accord_adapters::clock;
use accord_adapters::forwarding::Forwarding;
use accord_adapters::http::hop_by_hop::{CONNECTION_AT, Present, UPGRADE_AT};
use accord_adapters::{BoxError, GatewayResponse, PreparedHead, ReplayBody, box_in_place};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request};
use http_body::Body;

use self::body::PrepareError;
use self::errors::ErrorCode;
use self::record::{Record, RouteRecord};
use crate::control::generation::Generation;

/// What the listener knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's address.
    pub client: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client's IP address as text, formatted once per connection, not per request: the
    /// `X-Forwarded-For` value and the plugins' `client-ip`.
    client_ip: HeaderValue,
}

impl Connection {
    /// A connection from `client` over `scheme` (`http` or `https`).
    pub fn new(client: SocketAddr, scheme: &'static str) -> Connection {
        Connection {
            client,
            scheme,
            client_ip: headers::client_ip_value(client.ip()),
        }
    }
}

/// What the server noted of a request's head as it read it, so that the pipeline does not look
/// for it in the header map again. HTTP/1.1's server notes; a request from HTTP/2 comes with
/// nothing noted (`None`), and the pipeline looks.
#[derive(Clone, Copy, Debug)]
pub struct HeadNotes {
    /// Which hop-by-hop fields came.
    pub hop_by_hop: Present,
    /// The body length `Content-Length` declares, when it does.
    pub content_length: Option<u64>,
    /// Whether an `x-request-id` field came.
    pub request_id_sent: bool,
}

/// Takes one client request through the pipeline (see the module doc) to its response head;
/// the record is written when the response body ends. Generic over the request body so that
/// tests can drive it in-process.
///
/// An `async` block rather than an `async fn`: the function's arguments would be kept twice in
/// its future (as arguments and as the locals they are moved to), and the future is moved into
/// its box on every request.
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above.
pub fn handle<B>(
    generation: Arc<Generation>,
    access_log: bool,
    mut request: Request<B>,
    conn: Connection,
    notes: Option<HeadNotes>,
) -> impl Future<Output = GatewayResponse> + Send + 'static
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async move {
        // 1. Identify.
        let started = clock::now();
        let (request_id, unsent_id) = identify(&mut request, notes);
        let websocket = notes.is_none_or(|notes| {
            notes.hop_by_hop.contains(CONNECTION_AT) && notes.hop_by_hop.contains(UPGRADE_AT)
        }) && headers::is_websocket_upgrade(request.headers());
        let client_upgrade = if websocket {
            request.extensions_mut().remove::<server::ClientUpgrade>()
        } else {
            None
        };
        let (mut parts, body) = request.into_parts();
        let tracer = generation.tracer();
        let traced = tracer.is_some();
        let mut record = box_in_place!(Record::new(
            &parts,
            conn.client,
            request_id,
            started,
            access_log,
            traced
        ));
        if let Some(tracer) = tracer {
            record.trace = Some(Box::new(
                tracer.begin(parts.headers.get(headers::TRACEPARENT)),
            ));
        }

        // 2. Route.
        let Some(matched) = generation.router().route(&parts) else {
            generation
                .gateway_stats()
                .unrouted_requests
                .fetch_add(1, Relaxed);
            let response =
                ErrorCode::NoRoute.response("no route matches this request", record.request_id());
            return record.finish_with(response);
        };
        let route = &generation.routes()[matched.route];
        record.route = Some(RouteRecord {
            stats: route.stats().clone(),
        });
        route.stats().active.fetch_add(1, Relaxed);

        // 3. Admit.
        let content_length = match notes {
            Some(notes) => notes.content_length,
            None => declared_length(&parts),
        };
        if let ControlFlow::Break(refusal) =
            admit::admit(route, &parts, content_length, &mut record)
        {
            return record.finish_with(refusal);
        }

        // 4. Request plugins; the body is prepared (5) first when one of them reads it.
        let reads_body = route.request_body_limit() > 0 && !websocket;
        let (body, plugin_body) = if reads_body {
            let body = match prepare_body(route, body, content_length, &record).await {
                ControlFlow::Continue(body) => body,
                ControlFlow::Break(refusal) => return record.finish_with(refusal),
            };
            let read = match &body {
                ReplayBody::Buffered(bytes) if bytes.len() <= route.request_body_limit() => {
                    Some(bytes.clone())
                }
                _ => None,
            };
            (ClientBody::Prepared(body), read)
        } else {
            (ClientBody::Unread(body), None)
        };
        let inputs = plugins::RequestInputs {
            content_length,
            body: plugin_body,
            client_ip: &conn.client_ip,
        };
        let allowed = if route.plugins().is_empty() {
            None
        } else {
            let call = plugins::lend_head(route, parts, inputs, &record);
            let (mut call, decided) = plugins::on_request(route, call, &mut record).await;
            parts = plugins::take_head(&mut call);
            match decided {
                ControlFlow::Continue(preferred) => Some(plugins::Allowed { preferred, call }),
                ControlFlow::Break(refusal) => return record.finish_with(*refusal),
            }
        };
        // The response plugins may reclassify the answer: its backend is metered after them.
        record.defer_answered = allowed.is_some() && route.judges_responses();

        // 5. Prepare.
        let forwarding = prepare_head(
            &mut parts,
            websocket,
            notes.map(|notes| notes.hop_by_hop),
            &conn,
            matched.params,
            route,
            unsent_id,
        );
        if let Some(trace) = &record.trace {
            // The backend's spans join the trace under this request's server span.
            parts
                .headers
                .insert(headers::TRACEPARENT, trace.traceparent());
        }
        let body = match body {
            ClientBody::Prepared(body) => body,
            // Most requests have no body: nothing to wait for.
            ClientBody::Unread(body) if body::known_empty(&body, content_length) => {
                ReplayBody::Buffered(Bytes::new())
            }
            ClientBody::Unread(body) => {
                match prepare_body(route, body, content_length, &record).await {
                    ControlFlow::Continue(body) => body,
                    ControlFlow::Break(refusal) => return record.finish_with(refusal),
                }
            }
        };

        // 6. Forward.
        let preferred = allowed.as_ref().and_then(|a| a.preferred.as_deref());
        // The prepared head is lent to every try, not copied for each.
        // Only a WebSocket handshake keeps its `Connection` field (prepare_head).
        let head = Arc::new(PreparedHead::knowing_upgrade(
            parts,
            Some(forwarding),
            websocket,
        ));
        let forwarded = respond::forward(route, head, body, preferred, &mut record).await;

        // 7. Respond.
        let succeeded = forwarded.result.is_ok();
        let mut response = respond::respond(route, forwarded.result, client_upgrade, &mut record);

        // 8. Response plugins.
        if succeeded
            && route.judges_responses()
            && let Some(allowed) = allowed
        {
            plugins::on_response(route, allowed.call, &mut response, &mut record).await;
        }

        // 9. Record (when the body ends).
        record.finish_with(response)
    }
}

/// A request body as the client sends it, or made ready for the tries.
enum ClientBody<B> {
    Unread(B),
    Prepared(ReplayBody),
}

/// The body made ready for the tries ([`body::prepare`]), or the answer when it cannot be:
/// 413 past the route's `max_body`, 400 when the client's stream failed. A body the route's
/// plugins read is buffered up to their `request_body` too.
async fn prepare_body<B>(
    route: &crate::control::generation::LiveRoute,
    body: B,
    content_length: Option<u64>,
    record: &Record,
) -> ControlFlow<GatewayResponse, ReplayBody>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let limits = route.config();
    let prepared = body::prepare(
        body,
        content_length,
        limits.replay_buffer.max(route.request_body_limit() as u64),
        limits.max_body,
        route.stats(),
    )
    .await;
    match prepared {
        Ok(body) => ControlFlow::Continue(body),
        Err(PrepareError::TooLarge) => ControlFlow::Break(admit::body_too_large(route, record)),
        Err(PrepareError::Client(e)) => {
            tracing::debug!(request_id = %record.request_id(), error = %e, "client body failed");
            let message = "the request body could not be read from the client";
            ControlFlow::Break(ErrorCode::ClientBodyError.response(message, record.request_id()))
        }
    }
}

/// Keeps or generates the request id, and takes `Host` from the target's authority: an
/// absolute-form target (or HTTP/2's `:authority`) names the host, and a `Host` header that
/// says otherwise is replaced (RFC 9112 §3.2.2), so routing and the upstream see one host.
///
/// Returns the id, and the id again when it is one generated for a head the server noted has
/// none: it is not put in the head (an insertion into its map), but sent with the forwarding
/// headers, unless something reads the head before it leaves.
fn identify<B>(
    request: &mut Request<B>,
    notes: Option<HeadNotes>,
) -> (HeaderValue, Option<HeaderValue>) {
    let ids = match notes {
        Some(notes) if !notes.request_id_sent => {
            let id = headers::new_request_id();
            (id.clone(), Some(id))
        }
        _ => (headers::ensure_request_id(request.headers_mut()), None),
    };
    if let Some(authority) = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(HOST, authority);
    }
    ids
}

/// The body size the client declared, if it did.
fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Readies the request head for the upstream: hop-by-hop headers out, what adapters read
/// (client address, template parameters, route key) on its extensions when they read it, and an
/// origin-form target. Returns the forwarding headers, with the generated request id the head
/// does not carry (`unsent_id`), which the tries add where the head leaves the gateway.
fn prepare_head(
    parts: &mut http::request::Parts,
    websocket: bool,
    hop_by_hop: Option<Present>,
    conn: &Connection,
    params: Vec<(String, String)>,
    route: &crate::control::generation::LiveRoute,
    unsent_id: Option<HeaderValue>,
) -> Forwarding {
    if hop_by_hop.is_none_or(|present| !present.is_empty()) {
        headers::strip_hop_by_hop(&mut parts.headers, websocket);
    }
    let mut forwarding = Forwarding::new(conn.client_ip.clone(), conn.scheme, &parts.headers);
    if let Some(id) = unsent_id {
        forwarding.set_request_id(id);
    }
    // Only for routes that read it: an extension costs an allocation, and another in each
    // try's copy of the head.
    if route.failover().reads_context() {
        parts.extensions.insert(RequestContext {
            client: conn.client,
            route_key: route.route_key().clone(),
            path_params: PathParams(params),
        });
    }
    if parts.uri.scheme().is_some()
        && let Some(path) = parts.uri.path_and_query().cloned()
    {
        parts.uri = http::Uri::from(path);
    }
    forwarding
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    //! The pipeline driven in-process, without a client socket: a request goes in, a response
    //! comes out, and the record is read back from the route's counters.

    use std::time::Duration;

    use accord_policies::Class;
    use accord_policies::sla::{Clock, SlaEngine};
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::config::{ProcessEnvironment, from_str};
    use crate::control::generation::PluginHost;
    use crate::stats::Registry;

    struct Pipeline {
        generation: Arc<Generation>,
        registry: Arc<Registry>,
    }

    impl Pipeline {
        async fn new(backend: SocketAddr, route_extra: &str) -> Pipeline {
            let yaml = format!(
                "listeners:\n  - address: 127.0.0.1:0\nbackends:\n  app:\n    http:\n      addresses: [\"{backend}\"]\nroutes:\n  - id: r\n    match: {{path: {{prefix: /r}}}}\n    backends: [{{backend: app}}]\n    max_body: 16B\n    replay_buffer: 16B\n{route_extra}"
            );
            let config = from_str(&yaml, &ProcessEnvironment).unwrap();
            let registry = Arc::new(Registry::default());
            let sla = SlaEngine::new(Clock::system());
            let plugins = PluginHost::new(".".into(), None, config.limits.plugin_instances);
            let generation = Generation::build(config, &registry, &sla, &plugins, None)
                .await
                .unwrap();
            Pipeline {
                generation: Arc::new(generation),
                registry,
            }
        }

        fn handle(
            &self,
            request: Request<Full<Bytes>>,
        ) -> impl std::future::Future<Output = GatewayResponse> + use<> {
            let conn = Connection::new("127.0.0.1:50000".parse().unwrap(), "http");
            handle(self.generation.clone(), false, request, conn, None)
        }

        fn count(&self, class: Class) -> u64 {
            let stats = self.generation.routes()[0].stats();
            stats.requests_by_class[class.index()].load(Relaxed)
        }

        fn active(&self) -> u64 {
            self.generation.routes()[0].stats().active.load(Relaxed)
        }
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path).body(Full::default()).unwrap()
    }

    /// A backend address nothing listens on.
    fn nowhere() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    /// A backend that accepts connections and never answers.
    async fn silent() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (addr, task)
    }

    async fn finish(response: GatewayResponse) -> (u16, String) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_request_no_route_matches_is_a_404_counted_as_unrouted() {
        let pipeline = Pipeline::new(nowhere(), "").await;
        let (status, body) = finish(pipeline.handle(get("/elsewhere")).await).await;
        assert_eq!(status, 404);
        assert!(body.contains("no_route"), "{body}");
        assert_eq!(pipeline.registry.gateway.unrouted_requests.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
        let pipeline = Pipeline::new(nowhere(), "").await;
        let request = Request::post("/r")
            .header(CONTENT_LENGTH, "17")
            .body(Full::new(Bytes::from_static(b"seventeen bytes!!")))
            .unwrap();
        let (status, body) = finish(pipeline.handle(request).await).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(pipeline.count(Class::ClientError), 1);
        assert_eq!(pipeline.active(), 0);
    }

    #[tokio::test]
    async fn a_backend_that_refuses_connections_is_a_503_counted_bad() {
        let pipeline = Pipeline::new(nowhere(), "").await;
        let (status, body) = finish(pipeline.handle(get("/r")).await).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("upstream_unavailable"), "{body}");
        assert_eq!(pipeline.count(Class::Bad), 1);
        assert_eq!(pipeline.active(), 0);
    }

    /// The client goes away while the try waits on the backend: dropping the pipeline's
    /// future writes the record as cancelled and releases the route's and the backend's gauges.
    #[tokio::test]
    async fn a_request_dropped_during_its_try_is_recorded_as_cancelled() {
        let (backend, _task) = silent().await;
        let pipeline = Pipeline::new(backend, "    timeout: 30s\n").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(200), pipeline.handle(get("/r")));
        assert!(gave_up.await.is_err(), "the backend never answers");
        assert_eq!(pipeline.count(Class::Cancelled), 1);
        assert_eq!(pipeline.active(), 0);
        let route = &pipeline.generation.routes()[0];
        let stats = route.failover().backends()[0].backend.stats();
        assert_eq!(stats.in_flight.load(Relaxed), 0);
        assert_eq!(stats.cancelled.load(Relaxed), 1);
        let status_4xx = route.stats().requests_by_status[3].load(Relaxed);
        assert_eq!(status_4xx, 1, "499 is a 4xx status");
    }

    /// Dropped before it is even routed or admitted: still exactly one record.
    #[tokio::test]
    async fn a_request_dropped_before_its_first_poll_is_recorded_once() {
        let pipeline = Pipeline::new(nowhere(), "").await;
        drop(pipeline.handle(get("/r")));
        // An async fn does nothing until polled: nothing was recorded, nothing leaked.
        assert_eq!(pipeline.active(), 0);
        assert_eq!(pipeline.count(Class::Cancelled), 0);
    }
}
