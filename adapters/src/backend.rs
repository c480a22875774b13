//! The `Backend`: one upstream target of a route (an on-prem HTTP service, a Lambda function, an
//! Azure service): an adapter's tower [`Service`], called one try at a time through
//! [`Backend::call`], which does for every backend what a try needs besides the adapter.
//!
//! An adapter implements `Service<GatewayRequest, Response = GatewayResponse, Error =
//! BackendError, Future = BackendFuture>` (which makes it an [`Adapter`]) and says whether it can
//! take traffic ([`Availability`]). [`Backend::call`] wraps every try the same way:
//!
//! 1. it counts the try, its status or error and its latency in the backend's [`BackendStats`]
//!    (a try dropped unfinished is counted as cancelled);
//! 2. it bounds the try by the deadline the caller gives.
//!
//! Both are one `async` block around the adapter's future, not tower layers of their own: a
//! layer boxes its future, so the two layers and the type-erased service cost four allocations
//! and four moves of the future per try, for what is a timer and a few counters.
//!
//! Retries, the retry budget and failover sit above, in the failover module, because they span
//! several backends of a route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::request::Parts;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::RequestBody;
use crate::clock;
use crate::error::BackendError;
use crate::forwarding::Forwarding;
use crate::stats::{BackendStats, InFlight};

/// A request head as the route prepared it for its tries: the head, and the forwarding headers
/// that are added where it leaves the gateway (see [`crate::forwarding`]).
#[derive(Clone)]
pub struct PreparedHead {
    parts: Parts,
    forwarding: Option<Forwarding>,
    /// Whether the head asks the upstream to switch protocols, when whoever prepared it said
    /// so; `None`: looked for in its `Connection` field. Forgotten at any change to the head.
    upgrade: Option<bool>,
}

impl PreparedHead {
    /// `parts` with `forwarding` still to add.
    pub fn new(parts: Parts, forwarding: Option<Forwarding>) -> PreparedHead {
        PreparedHead {
            parts,
            forwarding,
            upgrade: None,
        }
    }

    /// Like [`PreparedHead::new`], from a caller that knows whether `parts` ask the upstream to
    /// switch protocols (`upgrade`): the gateway's pipeline keeps `Connection` only on a
    /// WebSocket handshake, so an HTTP/1.1 upstream does not look for it in the head again.
    pub fn knowing_upgrade(
        parts: Parts,
        forwarding: Option<Forwarding>,
        upgrade: bool,
    ) -> PreparedHead {
        PreparedHead {
            parts,
            forwarding,
            upgrade: Some(upgrade),
        }
    }

    /// The head.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The head, to change.
    pub fn parts_mut(&mut self) -> &mut Parts {
        self.upgrade = None;
        &mut self.parts
    }

    /// Whether the head asks the upstream to switch protocols (`Connection: upgrade`).
    pub fn wants_upgrade(&self) -> bool {
        self.upgrade.unwrap_or_else(|| {
            crate::http::header_list::has_token(
                &self.parts.headers,
                &http::header::CONNECTION,
                b"upgrade",
            )
        })
    }

    /// The forwarding headers not yet added to the head.
    pub fn forwarding(&self) -> Option<&Forwarding> {
        self.forwarding.as_ref()
    }

    /// Adds the forwarding headers to the head now.
    fn apply_forwarding(&mut self) {
        if let Some(forwarding) = self.forwarding.take() {
            forwarding.apply(&mut self.parts.headers);
        }
    }
}

impl From<Parts> for PreparedHead {
    fn from(parts: Parts) -> PreparedHead {
        PreparedHead::new(parts, None)
    }
}

/// One try's request on its way to a backend: the head the route prepared, shared by all the
/// request's tries, and this try's body.
///
/// The head is lent, not copied: most tries send it as it is (an HTTP/1.1 upstream encodes it,
/// forwarding headers included, straight from the shared one), so a request that may be retried
/// does not pay a copy of its headers per try. An adapter that changes the head (a `Host`
/// rewrite, a cloud credential) changes its own copy, made by [`GatewayRequest::head_mut`] on the
/// first change.
pub struct GatewayRequest {
    head: Arc<PreparedHead>,
    body: RequestBody,
    /// When the try is given up, for an adapter that keeps its tries' deadlines itself
    /// ([`Backend::keeping_deadlines`]).
    deadline: Option<Instant>,
}

impl GatewayRequest {
    /// A try of the request whose head is `head`, with `body`.
    pub fn new(head: Arc<PreparedHead>, body: RequestBody) -> GatewayRequest {
        GatewayRequest {
            head,
            body,
            deadline: None,
        }
    }

    /// When this try is given up with a
    /// [`BackendErrorKind::Timeout`](crate::error::BackendErrorKind::Timeout): set for an adapter that
    /// keeps its tries' deadlines itself ([`Backend::keeping_deadlines`]), `None` otherwise
    /// (no deadline, or the backend keeps it around the adapter's future).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The request head.
    pub fn head(&self) -> &Parts {
        &self.head.parts
    }

    /// The request head to change: this try's own copy, made now if the head is still shared.
    pub fn head_mut(&mut self) -> &mut Parts {
        Arc::make_mut(&mut self.head).parts_mut()
    }

    /// Whether the request asks the upstream to switch protocols (`Connection: upgrade`).
    pub fn wants_upgrade(&self) -> bool {
        self.head.wants_upgrade()
    }

    /// The forwarding headers not yet added to the head: an HTTP/1.1 upstream's encoder
    /// writes them with it.
    pub fn forwarding(&self) -> Option<&Forwarding> {
        self.head.forwarding()
    }

    /// Adds the forwarding headers to the head now (this try's copy of it), for a client that
    /// is handed the head.
    fn apply_forwarding(&mut self) {
        if self.head.forwarding.is_some() {
            Arc::make_mut(&mut self.head).apply_forwarding();
        }
    }

    /// The request method.
    pub fn method(&self) -> &http::Method {
        &self.head.parts.method
    }

    /// The request target.
    pub fn uri(&self) -> &http::Uri {
        &self.head.parts.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.head.parts.headers
    }

    /// The request extensions.
    pub fn extensions(&self) -> &http::Extensions {
        &self.head.parts.extensions
    }

    /// The request target, to change (see [`GatewayRequest::head_mut`]).
    pub fn uri_mut(&mut self) -> &mut http::Uri {
        &mut self.head_mut().uri
    }

    /// The request headers, to change (see [`GatewayRequest::head_mut`]).
    pub fn headers_mut(&mut self) -> &mut http::HeaderMap {
        &mut self.head_mut().headers
    }

    /// This try's body.
    pub fn body(&self) -> &RequestBody {
        &self.body
    }

    /// The head as it goes upstream (its forwarding headers added; copied only if another try
    /// still shares it) and the body.
    pub fn into_parts(mut self) -> (Parts, RequestBody) {
        self.apply_forwarding();
        (Arc::unwrap_or_clone(self.head).parts, self.body)
    }

    /// This try's body alone.
    pub fn into_body(self) -> RequestBody {
        self.body
    }

    /// An `http` request as it goes upstream, for a client that takes one (hyper's).
    pub fn into_request(self) -> http::Request<RequestBody> {
        let (head, body) = self.into_parts();
        http::Request::from_parts(head, body)
    }
}

impl From<http::Request<RequestBody>> for GatewayRequest {
    fn from(request: http::Request<RequestBody>) -> GatewayRequest {
        let (head, body) = request.into_parts();
        GatewayRequest::new(Arc::new(head.into()), body)
    }
}

pub use crate::response::GatewayResponse;
/// The future an adapter's tower service returns.
pub type BackendFuture =
    Pin<Box<dyn Future<Output = Result<GatewayResponse, BackendError>> + Send + 'static>>;

/// The future of one try through an [`Adapter`]: it may borrow the adapter, which outlives
/// the try (a try that took a handle on the adapter's state would pay two atomic
/// read-modify-writes for it).
pub type TryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<GatewayResponse, BackendError>> + Send + 'a>>;

/// How many endpoints a backend has, and how many can take traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// Endpoints known now (resolved addresses, or 1 for a managed service).
    pub total: usize,
    /// Endpoints neither ejected nor failing health checks.
    pub available: usize,
}

/// Whether a backend can take traffic now.
pub trait Availability: Send + Sync + 'static {
    /// `false` when every endpoint is ejected, unhealthy or unresolved.
    fn is_available(&self) -> bool {
        self.endpoint_counts().available > 0
    }

    /// The backend's endpoints and how many are available.
    fn endpoint_counts(&self) -> EndpointCounts;
}

/// What the gateway knows of a request beyond its head, set on the request's extensions once
/// for all its tries, when one of the route's backends reads it ([`Backend::reading_context`])
/// or its canary is sticky. One value rather than one extension each: a try's copy of the head
/// clones every extension into a box of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The address of the client that sent the request (client-address hashing, and event
    /// mappings that carry a source IP).
    pub client: std::net::SocketAddr,
    /// The matched route as API Gateway names it.
    pub route_key: RouteKey,
    /// The matched route's template parameters.
    pub path_params: PathParams,
}

/// Template parameters of the matched route (`("id", "42")` for `/users/{id}`), read by
/// adapters that map them (Lambda's `pathParameters`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

/// The matched route as API Gateway would name it (`routeKey`): `GET /users/{id}` for a
/// template route with one method, `ANY /users/{id}` with several, `$default` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteKey(pub std::sync::Arc<str>);

/// A backend could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend}: {message}")]
pub struct BuildError {
    backend: String,
    message: String,
}

impl BuildError {
    /// Backend `backend` could not be built, because of `message`.
    pub fn new(backend: &str, message: impl Into<String>) -> Self {
        Self {
            backend: backend.to_owned(),
            message: message.into(),
        }
    }
}

/// A backend that is always available (single-endpoint managed services).
#[derive(Debug, Clone, Copy)]
pub struct AlwaysAvailable;

impl Availability for AlwaysAvailable {
    fn endpoint_counts(&self) -> EndpointCounts {
        EndpointCounts {
            total: 1,
            available: 1,
        }
    }
}

/// The family a backend belongs to, used as the `provider` metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// An on-prem (or any plain) HTTP service.
    Http,
    /// An AWS Lambda function.
    Lambda,
    /// An Azure service.
    Azure,
}

impl Provider {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Lambda => "lambda",
            Self::Azure => "azure",
        }
    }
}

/// Background work that belongs to a backend (health checks, DNS refresh): aborted when the
/// backend is dropped, i.e. once a reload has replaced it and the last request using it is done.
#[derive(Debug, Default)]
pub struct BackgroundTasks(Vec<AbortHandle>);

impl BackgroundTasks {
    /// Adds a task to abort on drop.
    pub fn push(&mut self, handle: AbortHandle) {
        self.0.push(handle);
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One backend of the gateway, ready to be called.
pub struct Backend {
    id: Arc<str>,
    provider: Provider,
    /// Whether its adapter reads the request's [`RequestContext`].
    reads_context: bool,
    /// Whether its adapter gives a try up at the request's deadline itself.
    keeps_deadlines: bool,
    service: Box<dyn Adapter>,
    availability: Arc<dyn Availability>,
    stats: Arc<BackendStats>,
    _tasks: BackgroundTasks,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend served by an adapter's `service`.
    pub fn new(
        id: impl Into<Arc<str>>,
        provider: Provider,
        service: impl Adapter,
        availability: Arc<dyn Availability>,
        stats: Arc<BackendStats>,
        tasks: BackgroundTasks,
    ) -> Self {
        Self {
            id: id.into(),
            provider,
            reads_context: false,
            keeps_deadlines: false,
            service: Box::new(service),
            availability,
            stats,
            _tasks: tasks,
        }
    }

    /// Declares whether the adapter reads the request's [`RequestContext`] (the client
    /// address, the route key, the template parameters): only then does the gateway set it.
    pub fn reading_context(mut self, reads: bool) -> Self {
        self.reads_context = reads;
        self
    }

    /// Whether the adapter reads the request's [`RequestContext`].
    pub fn reads_context(&self) -> bool {
        self.reads_context
    }

    /// Declares that the adapter gives a try up at [`GatewayRequest::deadline`] itself, with
    /// [`BackendError::past_deadline`]. Otherwise the backend wraps each try in a timer of its
    /// own; an adapter that keeps a timer per upstream connection, re-armed only when it
    /// fires (as nginx does), saves registering and cancelling one on every try.
    pub fn keeping_deadlines(mut self, keeps: bool) -> Self {
        self.keeps_deadlines = keeps;
        self
    }

    /// The backend's id from the configuration.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Which family of adapter serves this backend.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The backend's counters.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// Whether the backend can take traffic now.
    pub fn is_available(&self) -> bool {
        self.availability.is_available()
    }

    /// The backend's endpoints and how many can take traffic.
    pub fn endpoint_counts(&self) -> EndpointCounts {
        self.availability.endpoint_counts()
    }

    /// Sends one try to the backend, given up with a timeout error at `deadline`, and counts
    /// it in the backend's [`BackendStats`] however it ends. The try started at `started` (the
    /// caller's reading of the clock, so that a try reads it once); its result comes with the
    /// time it took, as counted.
    pub fn call(
        &self,
        mut request: GatewayRequest,
        started: Instant,
        deadline: Option<Instant>,
    ) -> impl Future<Output = (Result<GatewayResponse, BackendError>, Duration)> + Send + '_ {
        let in_flight = InFlight::start(&self.stats);
        let timed = if self.keeps_deadlines {
            request.deadline = deadline;
            None
        } else {
            deadline
        };
        let future = self.service.send(request);
        async move {
            let result = match timed {
                None => future.await,
                Some(deadline) => tokio::time::timeout_at(deadline, future)
                    .await
                    .unwrap_or_else(|_| Err(BackendError::past_deadline())),
            };
            let mut in_flight = in_flight;
            let stats = in_flight.finish();
            let latency = clock::since(started);
            match &result {
                Ok(response) => stats.record_response(response.status(), latency),
                Err(error) => stats.record_error(error.kind()),
            }
            (result, latency)
        }
    }
}

/// A backend's adapter: every tower service from a [`GatewayRequest`] to a [`GatewayResponse`]
/// that is as cheap to clone as a handle on shared state, with its type erased, so that a
/// [`Backend`] calls it through a shared reference.
pub trait Adapter: Send + Sync + 'static {
    /// Starts one try (for a tower service, on a copy of it, as `oneshot` would).
    fn send(&self, request: GatewayRequest) -> TryFuture<'_>;
}

impl<S> Adapter for S
where
    S: Service<
            GatewayRequest,
            Response = GatewayResponse,
            Error = BackendError,
            Future = BackendFuture,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    fn send(&self, request: GatewayRequest) -> TryFuture<'_> {
        let mut service = self.clone();
        // Every adapter is ready at once; one that is not yet is driven to readiness by
        // `oneshot` inside the try, which costs a second box.
        match service.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => Service::call(&mut service, request),
            Poll::Ready(Err(error)) => Box::pin(std::future::ready(Err(error))),
            Poll::Pending => Box::pin(service.oneshot(request)),
        }
    }
}

/// How long until `deadline`, or zero if it has passed.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(clock::now())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;
    use crate::body::full_body;
    use crate::error::BackendErrorKind;
    use crate::stats::ERROR_KINDS;

    /// What the preparer said of an upgrade holds until the head changes; then the head's
    /// `Connection` field says.
    #[test]
    fn a_head_knows_whether_it_upgrades_until_it_changes() {
        let parts = |connection: &'static str| {
            http::Request::get("/")
                .header(http::header::CONNECTION, connection)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(PreparedHead::new(parts("Upgrade"), None).wants_upgrade());
        assert!(!PreparedHead::new(parts("close"), None).wants_upgrade());
        let said = Arc::new(PreparedHead::knowing_upgrade(parts("Upgrade"), None, false));
        let mut request = GatewayRequest::new(said, RequestBody::empty());
        assert!(!request.wants_upgrade());
        request.headers_mut().remove(http::header::HOST);
        assert!(request.wants_upgrade(), "a changed head is looked at");
    }

    /// A backend whose every try answers 200 after `delay`.
    fn answering_after(delay: Duration) -> (Backend, Arc<BackendStats>) {
        let stats = Arc::new(BackendStats::default());
        let service = tower::service_fn(move |_request: GatewayRequest| -> BackendFuture {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(full_body("ok")).into())
            })
        });
        let backend = Backend::new(
            "b",
            Provider::Http,
            service,
            Arc::new(AlwaysAvailable),
            stats.clone(),
            BackgroundTasks::default(),
        );
        (backend, stats)
    }

    fn request() -> GatewayRequest {
        http::Request::new(RequestBody::full(bytes::Bytes::new())).into()
    }

    #[test]
    fn a_lent_head_is_copied_only_when_a_try_changes_it() {
        let parts = http::Request::get("/x").body(()).unwrap().into_parts().0;
        let head = Arc::new(PreparedHead::from(parts));
        let reading = GatewayRequest::new(head.clone(), RequestBody::empty());
        assert!(
            std::ptr::eq(reading.head(), head.parts()),
            "reading borrows the shared head"
        );
        let mut changing = GatewayRequest::new(head.clone(), RequestBody::empty());
        changing
            .headers_mut()
            .insert("x-changed", http::HeaderValue::from_static("1"));
        assert!(!head.parts().headers.contains_key("x-changed"));
        assert_eq!(changing.headers()["x-changed"], "1");
        drop(reading);
        let request = GatewayRequest::new(head, RequestBody::empty()).into_request();
        assert_eq!(request.uri(), "/x");
    }

    fn errors(stats: &BackendStats, kind: BackendErrorKind) -> u64 {
        let i = ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        stats.errors_by_kind[i].load(SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_counted_with_its_class_and_latency() {
        let (backend, stats) = answering_after(Duration::from_millis(30));
        let (response, latency) = backend.call(request(), Instant::now(), None).await;
        assert_eq!(
            response.map(|r| r.status()).ok(),
            Some(http::StatusCode::OK)
        );
        assert_eq!(latency, Duration::from_millis(30));
        assert_eq!(stats.tries.load(SeqCst), 1);
        assert_eq!(stats.responses_by_class[1].load(SeqCst), 1, "2xx");
        assert_eq!(stats.latency.count(), 1);
        assert_eq!(stats.in_flight.load(SeqCst), 0);
        assert_eq!(stats.cancelled.load(SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_past_its_deadline_fails_as_a_timeout_and_is_counted_so() {
        let (backend, stats) = answering_after(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_millis(100);
        let (result, _) = backend
            .call(request(), Instant::now(), Some(deadline))
            .await;
        assert_eq!(
            result.err().map(|e| e.kind()),
            Some(BackendErrorKind::Timeout)
        );
        assert_eq!(
            Instant::now(),
            deadline,
            "given up at the deadline, not later"
        );
        assert_eq!(errors(&stats, BackendErrorKind::Timeout), 1);
        assert_eq!(
            stats
                .responses_by_class
                .iter()
                .map(|c| c.load(SeqCst))
                .sum::<u64>(),
            0
        );
        assert_eq!(stats.in_flight.load(SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_dropped_unfinished_is_counted_as_cancelled() {
        let (backend, stats) = answering_after(Duration::from_secs(5));
        let try_ = backend.call(request(), Instant::now(), None);
        assert_eq!(
            stats.in_flight.load(SeqCst),
            1,
            "in flight from the call on"
        );
        let gave_up = tokio::time::timeout(Duration::from_millis(10), try_).await;
        assert!(gave_up.is_err());
        assert_eq!(stats.cancelled.load(SeqCst), 1);
        assert_eq!(stats.in_flight.load(SeqCst), 0, "the gauge does not leak");
        assert_eq!(stats.latency.count(), 0);
    }
}
