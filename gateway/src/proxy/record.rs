//! **Record** (the last phase, however the request ends): the route's counters, its SLA meter,
//! each backend's meter (one entry per try, as the try ends) and the access-log line, written
//! exactly once. The record travels with the response body and is written when the body ends
//! or is dropped; if the client goes away before its response head, the server drops the request's
//! future wherever it waits, and the record, dropped with it, writes itself as cancelled (499).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use accord_adapters::body::response_body;
use accord_adapters::clock;
use accord_adapters::{BackendErrorKind, BoxError, GatewayResponse, ResponseBody, TryResult};
use accord_policies::sla::RouteSla;
use accord_policies::{Class, classify};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::stats::RouteStats;

/// The route a request matched, as its record keeps it: its counters, which carry its id.
pub(super) struct RouteRecord {
    pub(super) stats: Arc<RouteStats>,
}

impl RouteRecord {
    fn id(&self) -> &str {
        &self.stats.id
    }
}

/// What is known about a request so far; written to counters and the access log exactly once:
/// when the response body has been sent, or dropped, or — if the client goes away before its
/// response head (reset, HTTP/2 `RST_STREAM`, closed connection) and the server drops the request's
/// future at whatever await it had reached — when the record itself is dropped. Such a request
/// is logged with status 499 (nginx's convention) and counted as [`Class::Cancelled`].
pub(super) struct Record {
    pub(super) route: Option<RouteRecord>,
    pub(super) backend: Option<Arc<str>>,
    pub(super) method: http::Method,
    /// The request's target as the client sent it, kept (shared, not copied) only where its
    /// path is written: the access log, a trace.
    uri: Option<http::Uri>,
    pub(super) client: SocketAddr,
    /// The request's id, as the header value the request and the response carry.
    request_id: HeaderValue,
    pub(super) started: Instant,
    pub(super) tries: u32,
    pub(super) failure: Option<BackendErrorKind>,
    pub(super) status: StatusCode,
    pub(super) bytes_out: u64,
    pub(super) access_log: bool,
    pub(super) sla: Option<Arc<RouteSla>>,
    pub(super) steered: bool,
    /// Plugins' annotations for the access log.
    pub(super) annotations: Vec<(String, String)>,
    /// Set when the gateway's own policy decided the class (shed, rejected).
    pub(super) class: Option<Class>,
    /// The backend of the try in flight (or of the last one), for a request cancelled while
    /// it waited.
    try_in_flight: Option<Arc<str>>,
    /// Set when the route's plugins see the response: the try that answered is metered
    /// against its backend only once they have (see [`Record::settle_try`]), so that a
    /// response they reclassify counts against the backend that gave it.
    pub(super) defer_answered: bool,
    /// The answered try waiting for the plugins' verdict: backend index, class, latency.
    answered_try: Option<(usize, Class, std::time::Duration)>,
    /// The request's trace, when traces are configured.
    pub(super) trace: Option<Box<crate::traces::RequestTrace>>,
    /// Counters and the access log have been written.
    completed: bool,
}

/// The client went away before its response head: nginx logs this as 499.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Record {
    /// The request's id (`x-request-id`).
    pub(super) fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The request's id as the header value the response carries.
    pub(super) fn request_id_header(&self) -> &HeaderValue {
        &self.request_id
    }

    /// A new record of a request that arrived at `started`.
    /// The record of the request whose head is `parts`; `traced` says whether it will carry a
    /// trace, which, like the access log, writes its path.
    pub(super) fn new(
        parts: &http::request::Parts,
        client: SocketAddr,
        request_id: HeaderValue,
        started: Instant,
        access_log: bool,
        traced: bool,
    ) -> Record {
        Record {
            route: None,
            backend: None,
            method: parts.method.clone(),
            uri: (access_log || traced).then(|| parts.uri.clone()),
            client,
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
            try_in_flight: None,
            defer_answered: false,
            answered_try: None,
            trace: None,
            completed: false,
        }
    }

    /// The request's path, where it is kept.
    fn path(&self) -> &str {
        self.uri.as_ref().map_or("-", http::Uri::path)
    }

    /// Hands the record to the response body, which writes it when it ends or is dropped.
    /// Boxed from the start of the request (`box_in_place!`): it moves from the pipeline to the
    /// body and into the body's box as a pointer, not as its 368 bytes.
    pub(super) fn finish_with(mut self: Box<Self>, response: GatewayResponse) -> GatewayResponse {
        self.status = response.status();
        response.map_body(|body| {
            response_body(RecordedBody {
                inner: body,
                record: Some(self),
            })
        })
    }

    /// Meters the try that answered against its backend, as `verdict` (a plugin's
    /// reclassification) when there is one, else as the gateway classified it.
    pub(super) fn settle_try(&mut self, verdict: Option<Class>) {
        let answered = self.answered_try.take();
        if let (Some((index, class, latency)), Some(sla)) = (answered, &self.sla) {
            sla.record_try(index, verdict.unwrap_or(class), latency);
        }
    }

    /// Writes the record: the route's counters and SLA meter, and the access log line.
    fn complete(&mut self) {
        if std::mem::replace(&mut self.completed, true) {
            return;
        }
        self.settle_try(None);
        let duration = clock::since(self.started);
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
        if let Some(trace) = &self.trace {
            let threshold = self
                .sla
                .as_ref()
                .and_then(|s| s.objective().latency.as_ref().map(|l| l.threshold));
            let kept = trace.finish(crate::traces::RequestOutcome {
                method: self.method.as_str(),
                path: self.path(),
                route: self.route.as_ref().map(RouteRecord::id),
                backend: self.backend.as_deref(),
                status: self.status.as_u16(),
                class,
                plugins: &self.annotations,
                sla_action: if self.steered {
                    Some("reroute")
                } else if self.class == Some(Class::Rejected) {
                    Some("reject")
                } else {
                    None
                },
                request_id: self.request_id(),
                client: self.client.ip(),
                slow: threshold.is_some_and(|t| duration > t),
                duration,
            });
            if let (Some(trace_id), Some(route)) = (kept, &self.route) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                route
                    .stats
                    .exemplars
                    .record(trace_id, duration.as_secs_f64(), now);
            }
        }
        if self.access_log {
            tracing::info!(
                target: "accord::access",
                request_id = %self.request_id(),
                client = %self.client.ip(),
                method = %self.method,
                path = %self.path(),
                route = self.route.as_ref().map_or("-", RouteRecord::id),
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

    /// The route's tries ended, `backend` (the id of the backend whose answer is final) giving
    /// the answer. It is the backend of the last try, whose id the record already holds: kept,
    /// not taken again (each handle taken and dropped is two atomic read-modify-writes).
    pub(super) fn answered_by(&mut self, backend: Option<&Arc<str>>) {
        let last_try = self.try_in_flight.take();
        self.backend = match (backend, last_try) {
            (Some(id), Some(last)) if Arc::ptr_eq(id, &last) => Some(last),
            (backend, _) => backend.cloned(),
        };
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
            self.backend = self.try_in_flight.take();
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
    fn try_ended(&mut self, attempt: accord_adapters::failover::Attempt<'_>) {
        let id = attempt.backend.id();
        self.try_in_flight = Some(id.clone());
        if let Some(trace) = &self.trace {
            trace.record_try(crate::traces::TrySpan {
                backend: id.clone(),
                provider: attempt.backend.provider().as_str(),
                result: attempt.result,
                latency: attempt.latency,
                ended: clock::now(),
            });
        }
        let Some(index) =
            (self.sla.as_ref()).and_then(|sla| sla.backends().iter().position(|b| b.id() == id))
        else {
            return;
        };
        let class = match attempt.result {
            TryResult::Answered(status) => classify(status, None),
            TryResult::Failed(kind) => classify(StatusCode::BAD_GATEWAY, Some(kind)),
            TryResult::Cancelled => Class::Cancelled,
        };
        // An earlier answer was not the last (it was retried): it counts as it was.
        self.settle_try(None);
        if self.defer_answered && matches!(attempt.result, TryResult::Answered(_)) {
            self.answered_try = Some((index, class, attempt.latency));
        } else if let Some(sla) = &self.sla {
            sla.record_try(index, class, attempt.latency);
        }
    }
}

/// A response body that completes its [`Record`] when it ends or is dropped.
pub(super) struct RecordedBody {
    inner: ResponseBody,
    record: Option<Box<Record>>,
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

fn annotations(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}
