//! The upstream client of one endpoint.
//!
//! HTTP/1.1 connections are pooled here and driven inline, with Accord's own codec
//! ([`super::codec`]): the task of the request that holds a connection writes the request and
//! reads the response head, then the response body reads the rest as the client reads it. No
//! task per connection, no channel hop per request, no wake-up of another task. When the body
//! ends the connection goes back to the idle list (most recently used first); a connection the
//! upstream closed while idle is found closed at checkout and dropped, and a request that could
//! not be written on a reused connection is sent again on another. Idle connections past the
//! idle timeout are dropped at checkout and by the backend's reaper.
//!
//! A try's deadline is kept here too (the backend is built [`keeping_deadlines`]): each
//! connection has one timer, moved only when it fires before the deadline of the exchange it
//! watches, so a try on a pooled connection registers and cancels no timer of its own; opening a
//! connection, an upgrade and an HTTP/2 request are timed alone.
//!
//! [`keeping_deadlines`]: crate::backend::Backend::keeping_deadlines
//!
//! Protocol upgrades (WebSocket) take a hyper connection of their own, spawned so that it
//! outlives the request; HTTP/2 multiplexes many requests over one connection and keeps
//! hyper-util's pooled client, whose connection task is what HTTP/2 needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use http::header::HOST;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower::Service;

use super::codec::{Connection, ConnectionPool, Http1Error, receive};
use super::connector::Connector;
use crate::backend::{GatewayRequest, GatewayResponse};
use crate::body::{RequestBody, response_body};
use crate::clock;
use crate::error::BoxError;

/// Why a request to an endpoint failed.
#[derive(Debug)]
pub(crate) struct ClientError {
    /// Whether no connection could be opened (nothing was sent).
    pub(crate) connect: bool,
    pub(crate) source: BoxError,
}

impl ClientError {
    fn connect(source: BoxError) -> Self {
        Self {
            connect: true,
            source,
        }
    }

    fn request(source: impl Into<BoxError>) -> Self {
        Self {
            connect: false,
            source: source.into(),
        }
    }
}

/// `future`, given up at `deadline` with [`Http1Error::PastDeadline`].
async fn until<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match deadline {
        None => future.await,
        Some(deadline) => tokio::time::timeout_at(deadline, future)
            .await
            .unwrap_or_else(|_| Err(ClientError::request(Http1Error::PastDeadline))),
    }
}

/// The client of one endpoint, for the backend's protocol.
pub(crate) enum EndpointClient {
    Http1(Arc<Http1Pool>),
    Http2(Box<Client<Connector, RequestBody>>),
}

impl std::fmt::Debug for EndpointClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http1(pool) => f
                .debug_struct("Http1")
                .field("idle", &pool.idle_count())
                .finish(),
            Self::Http2(_) => f.write_str("Http2"),
        }
    }
}

impl EndpointClient {
    /// Sends `request` (origin-form URI and a `Host` header for HTTP/1.1, absolute URI for
    /// HTTP/2) and returns the response head; the body streams from the upstream as it is read.
    pub(crate) async fn request(
        &self,
        request: GatewayRequest,
    ) -> Result<GatewayResponse, ClientError> {
        match self {
            Self::Http1(pool) => pool.request(request).await,
            Self::Http2(client) => {
                let deadline = request.deadline();
                until(deadline, async {
                    match client.request(request.into_request()).await {
                        Ok(response) => Ok(response.map(response_body).into()),
                        Err(error) => Err(ClientError {
                            connect: error.is_connect(),
                            source: error.into(),
                        }),
                    }
                })
                .await
            }
        }
    }

    /// Drops idle connections past the idle timeout.
    pub(crate) fn reap_idle(&self) {
        if let Self::Http1(pool) = self {
            pool.reap();
        }
    }
}

/// An idle connection and when it became idle. Connections are boxed: one moves from the idle
/// list to a request, into its response body and back on every request.
struct Idle {
    conn: Box<Connection>,
    since: Instant,
}

/// The HTTP/1.1 connections of one endpoint.
pub(crate) struct Http1Pool {
    connector: Connector,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Http1Pool {
    pub(crate) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    fn idle_count(&self) -> usize {
        self.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    async fn request(
        self: &Arc<Self>,
        mut request: GatewayRequest,
    ) -> Result<GatewayResponse, ClientError> {
        origin_form(&mut request);
        // The rare paths are boxed: a request's future is moved as it is built, so its size
        // is paid on every request.
        let deadline = request.deadline();
        if request.wants_upgrade() {
            return Box::pin(until(deadline, self.request_upgrade(request))).await;
        }
        loop {
            // A pooled connection watches the deadline itself, with a timer re-armed only when
            // it fires early (see `codec::poll_past`); opening one is rarer, and timed alone.
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None => (Box::pin(until(deadline, self.connect())).await?, false),
            };
            match conn.send(request).await {
                Ok(head) => return Ok(receive(conn, head, self)),
                Err(error) => match error.unsent {
                    // Not written: the upstream closed the idle connection as it was taken.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(ClientError::request(error.error)),
                },
            }
        }
    }

    /// A request that asks to switch protocols gets a hyper connection of its own, driven by a
    /// task so that the upgraded stream outlives the request.
    async fn request_upgrade(
        &self,
        request: GatewayRequest,
    ) -> Result<GatewayResponse, ClientError> {
        let io = self.open().await?;
        let (mut sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ClientError::connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upgraded upstream connection closed with an error");
            }
        });
        match sender.send_request(request.into_request()).await {
            Ok(response) => Ok(response.map(response_body).into()),
            Err(error) => Err(ClientError::request(error)),
        }
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Box<Connection>> {
        let now = clock::now();
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            let mut conn = idle.conn;
            if now.duration_since(idle.since) < self.idle_timeout && conn.is_open() {
                return Some(conn);
            }
        }
    }

    /// A new connection: TCP, and TLS when the backend uses it.
    async fn open(&self) -> Result<super::connector::UpstreamIo, ClientError> {
        self.connector
            .clone()
            .call(http::Uri::default())
            .await
            .map(TokioIo::into_inner)
            .map_err(ClientError::connect)
    }

    async fn connect(&self) -> Result<Box<Connection>, ClientError> {
        Ok(Box::new(Connection::new(self.open().await?)))
    }

    /// Drops the idle connections past the idle timeout (the oldest are first in the list).
    pub(crate) fn reap(&self) {
        let now = Instant::now();
        let expired: Vec<Idle> = match self.idle.lock() {
            Ok(mut idle) => {
                let keep_from = idle
                    .iter()
                    .position(|i| now.duration_since(i.since) < self.idle_timeout)
                    .unwrap_or(idle.len());
                idle.drain(..keep_from).collect()
            }
            Err(_) => return,
        };
        // Closed outside the lock.
        drop(expired);
    }
}

impl ConnectionPool for Http1Pool {
    /// Takes a connection back after a complete exchange, if it can carry another request.
    /// Whether the upstream has closed it since is asked when it is taken out again: asking
    /// here too would cost a poll of the socket per request.
    fn put(&self, conn: Box<Connection>) {
        if !conn.is_reusable() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle {
                conn,
                since: clock::now(),
            });
        }
    }
}

/// The `Host` header an HTTP/1.1 request needs, from the authority when the client sent none.
pub(crate) fn ensure_host(request: &mut GatewayRequest, authority: &http::uri::Authority) {
    if !request.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(HOST, host);
    }
}

/// An absolute URI becomes a `Host` header (unless there is one) and an origin-form target:
/// `http://a:8080/p?q` is sent as `/p?q` with `Host: a:8080`.
fn origin_form(request: &mut GatewayRequest) {
    let Some(authority) = request.uri().authority().cloned() else {
        return;
    };
    ensure_host(request, &authority);
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *request.uri_mut() = http::Uri::from(path);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use http::Request;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What a scripted upstream does for the n-th request on a connection: the bytes it
    /// answers with, and whether it closes the connection after them.
    type Script = fn(usize) -> (String, bool);

    /// A raw TCP upstream that follows a script and counts connections opened and closed.
    struct Upstream {
        addr: std::net::SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl Upstream {
        async fn start(script: Script) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let counts = (accepted.clone(), closed.clone());
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    counts.0.fetch_add(1, SeqCst);
                    let closed = counts.1.clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut served = 0;
                        let mut buf = [0u8; 1024];
                        loop {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                                head.drain(..end + 4);
                                let (reply, close) = script(served);
                                served += 1;
                                if socket.write_all(reply.as_bytes()).await.is_err() || close {
                                    drop(socket);
                                    closed.fetch_add(1, SeqCst);
                                    return;
                                }
                            }
                        }
                        closed.fetch_add(1, SeqCst);
                    });
                }
            });
            Self {
                addr,
                accepted,
                closed,
            }
        }

        fn pool(&self, idle_timeout: Duration) -> Arc<Http1Pool> {
            let connector = Connector {
                addr: self.addr,
                tls: None,
                connect_timeout: Duration::from_secs(2),
            };
            Arc::new(Http1Pool::new(connector, 8, idle_timeout))
        }
    }

    fn ok(_: usize) -> (String, bool) {
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".into(),
            false,
        )
    }

    fn get_request() -> GatewayRequest {
        Request::get("/")
            .header(HOST, "upstream.test")
            .body(RequestBody::empty())
            .unwrap()
            .into()
    }

    /// Sends a GET and reads the whole answer: status and body.
    async fn get(pool: &Arc<Http1Pool>) -> (u16, String) {
        let response = pool.request(get_request()).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn until(count: &AtomicUsize, value: usize) {
        while count.load(SeqCst) < value {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let upstream = Upstream::start(ok).await;
        let pool = upstream.pool(Duration::from_secs(90));
        for _ in 0..5 {
            assert_eq!(get(&pool).await, (200, "ok".into()));
        }
        assert_eq!(upstream.accepted.load(SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        // Closes after each answer without saying so, as an upstream's idle timeout does.
        let upstream = Upstream::start(|_| (ok(0).0, true)).await;
        let pool = upstream.pool(Duration::from_secs(90));
        assert_eq!(get(&pool).await, (200, "ok".into()));
        until(&upstream.closed, 1).await;
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(upstream.accepted.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_from_the_upstream_is_honoured() {
        let upstream = Upstream::start(|_| {
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".into(),
                true,
            )
        })
        .await;
        let pool = upstream.pool(Duration::from_secs(90));
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(pool.idle_count(), 0, "a closing connection is not pooled");
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(upstream.accepted.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn informational_responses_are_passed_over() {
        let upstream = Upstream::start(|_| {
            (
                "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    .into(),
                false,
            )
        })
        .await;
        let pool = upstream.pool(Duration::from_secs(90));
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(upstream.accepted.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let upstream = Upstream::start(|served| {
            if served == 0 {
                let body = "x".repeat(200_000);
                (
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                    false,
                )
            } else {
                ok(served)
            }
        })
        .await;
        let pool = upstream.pool(Duration::from_secs(90));
        let response = pool.request(get_request()).await.unwrap();
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        until(&upstream.closed, 1).await;
        // The next request opens a new connection, whose first answer is the long one again.
        let (status, body) = get(&pool).await;
        assert_eq!((status, body.len()), (200, 200_000));
        assert_eq!(upstream.accepted.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed() {
        let upstream = Upstream::start(ok).await;
        let pool = upstream.pool(Duration::from_secs(30));
        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(pool.idle_count(), 1);

        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(29)).await;
        pool.reap();
        assert_eq!(pool.idle_count(), 1, "not idle for long enough yet");
        tokio::time::advance(Duration::from_secs(2)).await;
        pool.reap();
        assert_eq!(pool.idle_count(), 0);
        tokio::time::resume();
        until(&upstream.closed, 1).await;

        assert_eq!(get(&pool).await, (200, "ok".into()));
        assert_eq!(upstream.accepted.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn an_upstream_that_never_answers_is_not_pooled() {
        // Half an answer, then the connection closes: the error reaches the caller.
        let upstream = Upstream::start(|_| ("HTTP/1.1 200 OK\r\ncontent-len".into(), true)).await;
        let pool = upstream.pool(Duration::from_secs(90));
        let error = pool.request(get_request()).await.unwrap_err();
        assert!(!error.connect);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_absolute_uri_is_sent_in_origin_form_with_its_host() {
        let upstream = Upstream::start(ok).await;
        let pool = upstream.pool(Duration::from_secs(90));
        let mut request: GatewayRequest =
            Request::get(format!("http://{}/health?deep=1", upstream.addr))
                .body(RequestBody::empty())
                .unwrap()
                .into();
        origin_form(&mut request);
        assert_eq!(request.uri(), "/health?deep=1");
        assert_eq!(request.headers()[HOST], upstream.addr.to_string().as_str());
        let response = pool.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Answers the first request on a connection, and never the others.
    fn ok_then_silent(served: usize) -> (String, bool) {
        if served == 0 {
            ok(served)
        } else {
            (String::new(), false)
        }
    }

    /// The HTTP backend of `upstream`, as a route's configuration builds it.
    async fn backend_of(
        upstream: &Upstream,
    ) -> (crate::backend::Backend, Arc<crate::stats::BackendStats>) {
        let stats = Arc::new(crate::stats::BackendStats::default());
        let config = super::super::HttpBackendConfig::single(
            upstream.addr.ip().to_string(),
            upstream.addr.port(),
            None,
        );
        let backend = super::super::build("b", config, stats.clone())
            .await
            .unwrap();
        (backend, stats)
    }

    /// A try with `deadline` that is answered, its body read (its connection back in the pool).
    async fn answered(backend: &crate::backend::Backend, deadline: Duration) {
        let started = Instant::now();
        let (result, _) = backend
            .call(get_request(), started, Some(started + deadline))
            .await;
        let response = result.unwrap();
        response.into_body().collect().await.unwrap();
    }

    /// A try with `deadline` that is never answered: its error and how long it waited.
    async fn unanswered(
        backend: &crate::backend::Backend,
        deadline: Duration,
    ) -> (crate::BackendError, Duration) {
        let started = Instant::now();
        let (result, _) = backend
            .call(get_request(), started, Some(started + deadline))
            .await;
        let Err(error) = result else {
            panic!("the silent upstream answered")
        };
        (error, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_pooled_connection_gives_a_try_up_at_its_deadline_though_its_timer_was_armed_for_an_earlier_one()
     {
        let upstream = Upstream::start(ok_then_silent).await;
        let (backend, stats) = backend_of(&upstream).await;
        // The first try arms the connection's timer at its deadline, 1 s from now.
        answered(&backend, Duration::from_secs(1)).await;
        tokio::time::advance(Duration::from_millis(500)).await;
        // The second try's deadline is later: the timer fires first, and is moved to it.
        let (error, waited) = unanswered(&backend, Duration::from_secs(1)).await;
        assert_eq!(error.kind(), crate::BackendErrorKind::Timeout, "{error}");
        assert!(
            error
                .to_string()
                .contains("did not answer before the try's deadline"),
            "{error}"
        );
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1010),
            "{waited:?}"
        );
        assert_eq!(
            upstream.accepted.load(SeqCst),
            1,
            "the second try was sent on the pooled connection"
        );
        let timeouts = crate::stats::ERROR_KINDS
            .iter()
            .position(|k| *k == crate::BackendErrorKind::Timeout)
            .unwrap();
        assert_eq!(stats.errors_by_kind[timeouts].load(SeqCst), 1);
        // The connection given up on is closed: the next try opens another.
        answered(&backend, Duration::from_secs(1)).await;
        assert_eq!(upstream.accepted.load(SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_earlier_than_the_connections_timer_moves_it_earlier() {
        let upstream = Upstream::start(ok_then_silent).await;
        let (backend, _) = backend_of(&upstream).await;
        answered(&backend, Duration::from_secs(60)).await;
        let (error, waited) = unanswered(&backend, Duration::from_millis(200)).await;
        assert_eq!(error.kind(), crate::BackendErrorKind::Timeout, "{error}");
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_millis(210),
            "{waited:?}"
        );
        assert_eq!(upstream.accepted.load(SeqCst), 1);
    }
}
