//! Failover and retries across the backends of one route.
//!
//! A route lists backends in priority order (lower `priority` first; equal priorities share
//! traffic by `weight`). The first try goes to a weighted pick among the best available priority
//! group; each retry goes to the next available backend in order, so a dead primary fails over
//! to the secondary. A retry happens only when the outcome matches the [`RetryPolicy`], the body
//! can be replayed, and the route's [`RetryBudget`] has room.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::backend::{Backend, GatewayRequest, GatewayResponse, PreparedHead};
use crate::body::ReplayBody;
use crate::clock;
use crate::error::{BackendError, BackendErrorKind};
use crate::retry_budget::{RetryBudget, RetryGuard};

/// One backend as a route uses it.
#[derive(Debug, Clone)]
pub struct RouteBackend {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Lower is preferred.
    pub priority: u32,
    /// Share of traffic among backends of the same priority.
    pub weight: u32,
    /// What the route's SLA engine says about this backend, if the route has an SLO.
    pub steering: Option<Arc<dyn Steering>>,
}

/// Whether a route should send traffic to one of its backends, as judged by something that
/// watches outcomes (the SLA engine). Failover consults it when ordering backends.
pub trait Steering: Send + Sync + std::fmt::Debug {
    /// The current standing.
    fn standing(&self) -> Standing;
}

/// What [`Steering`] says of a backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing {
    /// Use it normally.
    Use,
    /// Avoid it: only `probe` (0..=1) of requests still try it first, to see whether it has
    /// recovered. `badness` orders avoided backends when no other is left (least bad serves).
    Avoid {
        /// Share of requests still sent to it first.
        probe: f64,
        /// How far it is from its objective (lower is better).
        badness: f64,
    },
}

/// A canary's share of a route's traffic (the SLA engine's canary release), read per request.
pub trait CanaryShare: Send + Sync + std::fmt::Debug {
    /// 0 (none) to 1 (all of it).
    fn share(&self) -> f64;
}

/// How a route sends traffic to its canary backend.
#[derive(Debug, Clone)]
pub struct CanaryRouting {
    /// The canary backend's id.
    pub backend: Arc<str>,
    /// Its share now.
    pub share: Arc<dyn CanaryShare>,
    /// Sticky assignment: a key's hash decides (the same client, the same version, while the
    /// share does not shrink); without one, each request is drawn at random.
    pub sticky: Option<crate::http::HashKey>,
}

/// The outcomes that may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// No connection could be made (always safe: nothing was sent).
    pub connect_failure: bool,
    /// The connection broke after the request was sent.
    pub reset: bool,
    /// The try timed out.
    pub timeout: bool,
    /// The backend throttled the request (a throttle was not processed, so it is safe).
    pub throttled: bool,
    /// Response statuses to retry.
    pub statuses: Vec<u16>,
}

impl Default for RetryOn {
    /// Envoy's `gateway-error` set plus connect failures and throttles.
    fn default() -> Self {
        Self {
            connect_failure: true,
            reset: true,
            timeout: true,
            throttled: true,
            statuses: vec![502, 503, 504],
        }
    }
}

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub retries: u32,
    /// What may be retried.
    pub on: RetryOn,
    /// Whether outcomes where the request may have been processed (reset, timeout, statuses) are
    /// retried for non-idempotent methods (POST, PATCH). Connect failures and throttles always are.
    pub non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 2,
            on: RetryOn::default(),
            non_idempotent: false,
        }
    }
}

/// Backend indices in the order a request tries them: inline for routes of up to four
/// backends, so working the order out allocates nothing per request.
type TryOrder = smallvec::SmallVec<[usize; 4]>;

/// The route-level forwarding service: failover, retries, the retry budget and timeouts.
#[derive(Debug)]
pub struct Failover {
    backends: Vec<RouteBackend>,
    retry: RetryPolicy,
    budget: Arc<RetryBudget>,
    per_try_timeout: Option<Duration>,
    /// The canary backend's index and how it gets traffic.
    canary: Option<(usize, CanaryRouting)>,
}

/// What one forwarded request came to.
#[derive(Debug)]
pub struct Forwarded<'a> {
    /// The final answer, or the last error.
    pub result: Result<GatewayResponse, BackendError>,
    /// The backend that gave the final answer (lent by the route: a handle of its own would
    /// be two more atomic read-modify-writes per request).
    pub backend: Option<&'a Arc<Backend>>,
    /// Tries made (1 when no retry happened).
    pub tries: u32,
    /// Whether a retry was wanted but the budget had no room.
    pub budget_exhausted: bool,
    /// Whether the first try went to a backend other than the one priority and availability
    /// alone would have chosen, because steering said to avoid that one.
    pub steered: bool,
}

/// One try of a forwarded request, as [`TryObserver`]s are told of it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The backend tried.
    pub backend: &'a Arc<Backend>,
    /// How the try ended.
    pub result: TryResult,
    /// Time to the response head, the failure, or the moment it was abandoned.
    pub latency: Duration,
}

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryResult {
    /// The backend answered with this status.
    Answered(http::StatusCode),
    /// The try failed.
    Failed(BackendErrorKind),
    /// The request was dropped while the try was in flight (the client went away): the
    /// upstream call is dropped with it, as nginx does with `proxy_ignore_client_abort off`.
    Cancelled,
}

/// Told about every try when it ends, including a try still in flight when the request is
/// dropped, so that each backend is metered for every try it was sent, whatever the client does.
///
/// Lent to the forwarding exclusively (`&mut`): one request's record, say, keeps what it is
/// told in plain fields, with no lock taken per try.
pub trait TryObserver: Send {
    /// A try ended.
    fn try_ended(&mut self, attempt: Attempt<'_>);
}

/// Observes nothing.
impl TryObserver for () {
    fn try_ended(&mut self, _attempt: Attempt<'_>) {}
}

/// Reports a try as cancelled if it is dropped before it ends.
struct TryInFlight<'a> {
    backend: &'a Arc<Backend>,
    started: Instant,
    observer: &'a mut dyn TryObserver,
    ended: bool,
}

impl TryInFlight<'_> {
    /// The try ended with `result` after `latency` (as its backend counted it).
    fn end(mut self, result: TryResult, latency: Duration) {
        self.ended = true;
        self.observer.try_ended(Attempt {
            backend: self.backend,
            result,
            latency,
        });
    }
}

impl Drop for TryInFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.observer.try_ended(Attempt {
                backend: self.backend,
                result: TryResult::Cancelled,
                latency: clock::since(self.started),
            });
        }
    }
}

impl Failover {
    /// A forwarder over `backends` (in any order: they are sorted by priority here).
    pub fn new(
        mut backends: Vec<RouteBackend>,
        retry: RetryPolicy,
        budget: Arc<RetryBudget>,
        per_try_timeout: Option<Duration>,
    ) -> Self {
        backends.sort_by_key(|b| b.priority);
        Self {
            backends,
            retry,
            budget,
            per_try_timeout,
            canary: None,
        }
    }

    /// Makes one of the backends a canary: it is tried first by its share of requests, and
    /// never otherwise (the other backends, in their usual order, take the rest and serve a
    /// canary request's retries).
    pub fn with_canary(mut self, routing: CanaryRouting) -> Self {
        self.canary = self
            .backends
            .iter()
            .position(|b| **b.backend.id() == *routing.backend)
            .map(|index| (index, routing));
        self
    }

    /// Whether a try reads the request's [`RequestContext`](crate::backend::RequestContext): a
    /// canary sticky by client address does, and so does any backend that says it does.
    pub fn reads_context(&self) -> bool {
        let sticky_by_client = self.canary.as_ref().is_some_and(|(_, canary)| {
            matches!(canary.sticky, Some(crate::http::HashKey::ClientAddress))
        });
        sticky_by_client || self.backends.iter().any(|b| b.backend.reads_context())
    }

    /// The route's backends in priority order.
    pub fn backends(&self) -> &[RouteBackend] {
        &self.backends
    }

    /// Forwards a request, trying backends until one answers acceptably, the retry policy or
    /// budget says stop, or `deadline` passes.
    pub async fn forward(
        &self,
        head: Arc<PreparedHead>,
        body: ReplayBody,
        deadline: Instant,
    ) -> Forwarded<'_> {
        self.forward_preferring(head, body, deadline, None, &mut ())
            .await
    }

    /// Like [`Failover::forward`], with `preferred` (a backend id, e.g. a plugin's reroute)
    /// tried first when it is available, and `observer` told of every try as it ends (also of
    /// a try in flight when this future is dropped).
    pub async fn forward_preferring(
        &self,
        head: Arc<PreparedHead>,
        mut body: ReplayBody,
        deadline: Instant,
        preferred: Option<&str>,
        observer: &mut dyn TryObserver,
    ) -> Forwarded<'_> {
        let _in_flight = self.budget.start_request();
        let (order, steered) = self.try_order_preferring(preferred, &head);
        let idempotent = is_idempotent(&head.parts().method);
        let mut head = Some(head);
        let mut tries = 0u32;
        let mut last: Option<(Result<GatewayResponse, BackendError>, &Arc<Backend>)> = None;
        let mut budget_exhausted = false;
        let mut _retry_guard = None;

        while let Some(index) = order.get(tries as usize % order.len().max(1)).copied() {
            if let Some((result, tried)) = &last {
                if tries > self.retry.retries
                    || !body.can_replay()
                    || !self.should_retry(result, idempotent)
                {
                    break;
                }
                match self.retry_guard(result, tried, index) {
                    Some(guard) => _retry_guard = Some(guard),
                    None => {
                        budget_exhausted = true;
                        break;
                    }
                }
            }
            let Some(try_body) = body.next_try() else {
                break;
            };
            let backend = &self.backends[index].backend;
            // Every try is lent the one head; the last possible one (the retry policy's, or a
            // body that cannot be sent again) is given it, so that an adapter that changes it
            // does not copy it.
            let last_possible = tries >= self.retry.retries || !body.can_replay();
            let Some(lent) = (if last_possible {
                head.take()
            } else {
                head.clone()
            }) else {
                break;
            };
            let request = GatewayRequest::new(lent, try_body);
            tries += 1;
            let result = self
                .try_once(backend, request, deadline, &mut *observer)
                .await;
            let done = match &result {
                Ok(_) => !self.should_retry(&result, idempotent),
                Err(_) => false,
            };
            last = Some((result, backend));
            if done || clock::now() >= deadline {
                break;
            }
        }

        match last {
            Some((result, backend)) => Forwarded {
                result,
                backend: Some(backend),
                tries,
                budget_exhausted,
                steered,
            },
            None => Forwarded {
                result: Err(BackendError::new(
                    BackendErrorKind::NoHealthyEndpoint,
                    "the route has no backend to send the request to",
                )),
                backend: None,
                tries,
                budget_exhausted,
                steered,
            },
        }
    }

    /// Room in the retry budget for another try after `result` from `tried`: a request that
    /// never reached its backend adds no load to it, so moving it to another backend is always
    /// safe and spends nothing.
    fn retry_guard(
        &self,
        result: &Result<GatewayResponse, BackendError>,
        tried: &Arc<Backend>,
        next: usize,
    ) -> Option<RetryGuard> {
        if never_reached_backend(result) && !Arc::ptr_eq(tried, &self.backends[next].backend) {
            Some(self.budget.retry_unbudgeted())
        } else {
            self.budget.try_retry()
        }
    }

    /// One try, under the per-try deadline, reported to `observer` however it ends.
    async fn try_once(
        &self,
        backend: &Arc<Backend>,
        request: GatewayRequest,
        deadline: Instant,
        observer: &mut dyn TryObserver,
    ) -> Result<GatewayResponse, BackendError> {
        let started = clock::now();
        let try_deadline = self
            .per_try_timeout
            .map_or(deadline, |t| deadline.min(started + t));
        let in_flight = TryInFlight {
            backend,
            started,
            observer,
            ended: false,
        };
        let (result, latency) = backend.call(request, started, Some(try_deadline)).await;
        in_flight.end(
            match &result {
                Ok(response) => TryResult::Answered(response.status()),
                Err(error) => TryResult::Failed(error.kind()),
            },
            latency,
        );
        result
    }

    /// [`Failover::try_order`] with `preferred` (a plugin's reroute) moved first when it is a
    /// candidate; a preference is not steering.
    fn try_order_preferring(
        &self,
        preferred: Option<&str>,
        head: &PreparedHead,
    ) -> (TryOrder, bool) {
        let (mut order, steered) = self.try_order();
        self.canary_first(&mut order, head);
        if let Some(id) = preferred
            && let Some(position) = order
                .iter()
                .position(|&i| &**self.backends[i].backend.id() == id)
        {
            order[..=position].rotate_right(1);
            return (order, false);
        }
        (order, steered)
    }

    /// The order in which backends are tried, and whether steering changed the first choice.
    ///
    /// Available backends that steering does not avoid come first, by priority, with a
    /// weighted pick inside the best priority group; then avoided backends, least bad first
    /// (so when every backend is avoided, the least bad one serves). An avoided backend still
    /// goes first for its probe share of requests. When no backend is available at all, all of
    /// them are tried in priority order (better to try than to refuse outright).
    fn try_order(&self) -> (TryOrder, bool) {
        // A route of one backend (a common case): it is the order, whatever its standing.
        if self.backends.len() == 1 && self.canary.is_none() {
            return (TryOrder::from_elem(0, 1), false);
        }
        let canary = self.canary.as_ref().map(|(index, _)| *index);
        let baseline = || (0..self.backends.len()).filter(|&i| Some(i) != canary);
        let available: TryOrder = baseline()
            .filter(|&i| self.backends[i].backend.is_available())
            .collect();
        let candidates = if available.is_empty() {
            baseline().collect()
        } else {
            available
        };
        let nominal_first = candidates.first().copied();
        let mut preferred = TryOrder::new();
        let mut avoided: Vec<(usize, f64)> = Vec::new();
        for i in candidates {
            match self.backends[i].steering.as_ref().map(|s| s.standing()) {
                None | Some(Standing::Use) => preferred.push(i),
                Some(Standing::Avoid { probe, badness }) => {
                    if fastrand::f64() < probe {
                        preferred.push(i);
                    } else {
                        avoided.push((i, badness));
                    }
                }
            }
        }
        self.weighted_first(&mut preferred);
        avoided.sort_by(|a, b| a.1.total_cmp(&b.1));
        preferred.extend(avoided.into_iter().map(|(i, _)| i));
        let steered = preferred.first().copied() != nominal_first
            && nominal_first
                .is_some_and(|n| self.backends[n].priority < self.backends[preferred[0]].priority);
        (preferred, steered)
    }

    /// Puts the canary first for its share of requests (drawn at random, or by the sticky
    /// key's hash); a request it does not draw never goes to it.
    fn canary_first(&self, order: &mut TryOrder, head: &PreparedHead) {
        let Some((index, routing)) = &self.canary else {
            return;
        };
        let share = routing.share.share();
        if share <= 0.0 {
            return;
        }
        let draw = routing
            .sticky
            .as_ref()
            .and_then(|key| {
                let parts = head.parts();
                let client = parts
                    .extensions
                    .get::<crate::backend::RequestContext>()
                    .map(|c| c.client);
                crate::http::hash_key(key, &parts.headers, head.forwarding(), client)
            })
            .map_or_else(fastrand::f64, |hash| {
                (hash >> 11) as f64 / (1u64 << 53) as f64
            });
        if draw < share {
            order.insert(0, *index);
        }
    }

    /// Moves a weighted pick among the leading backends of equal priority to the front.
    fn weighted_first(&self, order: &mut [usize]) {
        let Some(&first) = order.first() else { return };
        let priority = self.backends[first].priority;
        let group = order
            .iter()
            .take_while(|&&i| self.backends[i].priority == priority)
            .count();
        if group < 2 {
            return;
        }
        let total: u64 = order[..group]
            .iter()
            .map(|&i| u64::from(self.backends[i].weight))
            .sum();
        let mut pick = fastrand::u64(0..total.max(1));
        let chosen = order[..group]
            .iter()
            .position(|&i| {
                let weight = u64::from(self.backends[i].weight);
                if pick < weight {
                    true
                } else {
                    pick -= weight;
                    false
                }
            })
            .unwrap_or(0);
        order[..group].rotate_left(chosen);
    }

    fn should_retry(
        &self,
        result: &Result<GatewayResponse, BackendError>,
        idempotent: bool,
    ) -> bool {
        let on = &self.retry.on;
        let may_have_been_processed_ok = idempotent || self.retry.non_idempotent;
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                // A throttled request was not processed, so moving it is always safe.
                (status == 429 && on.throttled)
                    || (may_have_been_processed_ok && on.statuses.contains(&status))
            }
            Err(error) => match error.kind() {
                BackendErrorKind::Connect | BackendErrorKind::NoHealthyEndpoint => {
                    on.connect_failure
                }
                BackendErrorKind::Throttled => on.throttled,
                BackendErrorKind::Reset => on.reset && may_have_been_processed_ok,
                BackendErrorKind::Timeout => on.timeout && may_have_been_processed_ok,
                BackendErrorKind::FunctionError | BackendErrorKind::ServiceError => {
                    may_have_been_processed_ok && on.statuses.contains(&502)
                }
                BackendErrorKind::InvalidResponse
                | BackendErrorKind::Auth
                | BackendErrorKind::ClientBody
                | BackendErrorKind::BodyTooLarge
                | BackendErrorKind::Config => false,
            },
        }
    }
}

/// Whether a try failed before anything was sent to the backend.
fn never_reached_backend(result: &Result<GatewayResponse, BackendError>) -> bool {
    result.as_ref().is_err_and(|e| {
        matches!(
            e.kind(),
            BackendErrorKind::Connect | BackendErrorKind::NoHealthyEndpoint
        )
    })
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{
        AlwaysAvailable, BackendFuture, BackgroundTasks, GatewayRequest, Provider,
    };
    use crate::body::{RequestBody, full_body};
    use crate::retry_budget::RetryBudgetPolicy;
    use crate::stats::BackendStats;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scripted backend answering with a fixed outcome and counting its calls.
    fn scripted(
        id: &str,
        outcome: fn() -> Result<GatewayResponse, BackendError>,
    ) -> (Arc<Backend>, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let service = tower::service_fn(move |_req: GatewayRequest| -> BackendFuture {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { outcome() })
        });
        (backend(id, service), calls)
    }

    /// An always available backend whose adapter is `service`.
    fn backend(id: &str, service: impl crate::backend::Adapter) -> Arc<Backend> {
        Arc::new(Backend::new(
            id,
            Provider::Http,
            service,
            Arc::new(AlwaysAvailable),
            Arc::new(BackendStats::default()),
            BackgroundTasks::default(),
        ))
    }

    fn ok() -> Result<GatewayResponse, BackendError> {
        Ok(http::Response::new(full_body("ok")).into())
    }

    fn refused() -> Result<GatewayResponse, BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Connect,
            "connection refused",
        ))
    }

    fn unavailable() -> Result<GatewayResponse, BackendError> {
        let mut response = http::Response::new(full_body("down"));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok(response.into())
    }

    fn request(method: Method) -> Arc<PreparedHead> {
        Arc::new(
            http::Request::builder()
                .method(method)
                .uri("/x")
                .body(())
                .unwrap()
                .into_parts()
                .0
                .into(),
        )
    }

    fn failover(backends: Vec<(Arc<Backend>, u32)>, retries: u32) -> Failover {
        failover_with_budget(
            backends,
            retries,
            RetryBudget::new(RetryBudgetPolicy::default()),
        )
    }

    fn failover_with_budget(
        backends: Vec<(Arc<Backend>, u32)>,
        retries: u32,
        budget: Arc<RetryBudget>,
    ) -> Failover {
        Failover::new(
            backends
                .into_iter()
                .map(|(backend, priority)| RouteBackend {
                    backend,
                    priority,
                    weight: 1,
                    steering: None,
                })
                .collect(),
            RetryPolicy {
                retries,
                ..RetryPolicy::default()
            },
            budget,
            None,
        )
    }

    fn far_deadline() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Forwards a request without a body, far from its deadline.
    async fn forward_empty(route: &Failover, method: Method) -> Forwarded<'_> {
        route
            .forward(
                request(method),
                ReplayBody::Buffered(Bytes::new()),
                far_deadline(),
            )
            .await
    }

    #[tokio::test]
    async fn a_post_fails_over_when_the_primary_refuses_connections() {
        let (primary, primary_calls) = scripted("primary", refused);
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = failover(vec![(primary, 0), (secondary, 1)], 2);
        let body = ReplayBody::Buffered(Bytes::from_static(b"{}"));
        let forwarded = route
            .forward(request(Method::POST), body, far_deadline())
            .await;
        assert_eq!(forwarded.result.unwrap().status(), 200);
        assert_eq!(forwarded.backend.unwrap().id().as_ref(), "secondary");
        assert_eq!(forwarded.tries, 2);
        assert_eq!(primary_calls.load(Ordering::SeqCst), 1);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 1);
    }

    /// Every try is lent the one prepared head: a try that changes it (a `Host` rewrite, a
    /// credential) changes its own copy, so the next try sees the head as the route prepared
    /// it, and the caller's head is untouched.
    #[tokio::test]
    async fn a_change_one_try_makes_to_the_head_stays_with_that_try() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rewriting = |id: &str, seen: Arc<std::sync::Mutex<Vec<Option<String>>>>| {
            let service = tower::service_fn(move |mut req: GatewayRequest| -> BackendFuture {
                let stamp = req
                    .headers()
                    .get("x-stamp")
                    .map(|v| v.to_str().unwrap().to_owned());
                seen.lock().unwrap().push(stamp);
                req.headers_mut()
                    .insert("x-stamp", http::HeaderValue::from_static("changed"));
                Box::pin(async move { unavailable() })
            });
            backend(id, service)
        };
        let route = failover(
            vec![
                (rewriting("a", seen.clone()), 0),
                (rewriting("b", seen.clone()), 1),
            ],
            2,
        );
        let mut head = request(Method::GET);
        Arc::make_mut(&mut head)
            .parts_mut()
            .headers
            .insert("x-stamp", http::HeaderValue::from_static("prepared"));
        let kept = head.clone();
        let forwarded = route
            .forward(head, ReplayBody::Buffered(Bytes::new()), far_deadline())
            .await;
        assert_eq!(forwarded.tries, 3);
        let prepared = Some("prepared".to_owned());
        assert_eq!(*seen.lock().unwrap(), vec![prepared.clone(); 3]);
        assert_eq!(kept.parts().headers["x-stamp"], "prepared");
    }

    /// With no retry budget at all, a request that never reached the primary still moves to
    /// the secondary, while one that reached it (a reset) is not retried.
    #[tokio::test]
    async fn a_request_that_never_reached_its_backend_fails_over_without_budget() {
        let no_budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 0.0,
            min_concurrent: 0,
            min_per_second: 0.0,
        });
        let (refusing, _) = scripted("refusing", refused);
        let (resetting, _) = scripted("resetting", || {
            Err(BackendError::new(BackendErrorKind::Reset, "reset by peer"))
        });
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = |primary: Arc<Backend>| {
            failover_with_budget(
                vec![(primary, 0), (secondary.clone(), 1)],
                RetryPolicy::default().retries,
                no_budget.clone(),
            )
        };
        let get = || {
            (
                request(Method::GET),
                ReplayBody::Buffered(Bytes::new()),
                far_deadline(),
            )
        };
        let (parts, body, deadline) = get();
        let refusing_route = route(refusing);
        let moved = refusing_route.forward(parts, body, deadline).await;
        assert_eq!(moved.result.unwrap().status(), 200);
        assert!(!moved.budget_exhausted);
        let (parts, body, deadline) = get();
        let resetting_route = route(resetting);
        let refused_retry = resetting_route.forward(parts, body, deadline).await;
        assert_eq!(
            refused_retry.result.unwrap_err().kind(),
            BackendErrorKind::Reset
        );
        assert!(refused_retry.budget_exhausted);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 1);
    }

    /// A try in flight when the request's future is dropped (the client went away) is reported
    /// to the observer as cancelled, once.
    #[tokio::test(start_paused = true)]
    async fn a_try_abandoned_with_its_request_is_observed_as_cancelled() {
        #[derive(Default)]
        struct Seen(Vec<(String, TryResult)>);
        impl TryObserver for Seen {
            fn try_ended(&mut self, attempt: Attempt<'_>) {
                self.0
                    .push((attempt.backend.id().to_string(), attempt.result));
            }
        }
        let stats = Arc::new(BackendStats::default());
        let service = tower::service_fn(|_req: GatewayRequest| -> BackendFuture {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                ok()
            })
        });
        let slow = Arc::new(Backend::new(
            "slow",
            Provider::Http,
            service,
            Arc::new(AlwaysAvailable),
            stats.clone(),
            BackgroundTasks::default(),
        ));
        let route = failover(vec![(slow, 0)], 2);
        let mut seen = Seen::default();
        let forward = route.forward_preferring(
            request(Method::GET),
            ReplayBody::Buffered(Bytes::new()),
            far_deadline(),
            None,
            &mut seen,
        );
        let gave_up = tokio::time::timeout(Duration::from_millis(500), forward).await;
        assert!(gave_up.is_err());
        assert_eq!(seen.0, vec![("slow".to_owned(), TryResult::Cancelled)]);
        assert_eq!(stats.in_flight.load(Ordering::SeqCst), 0, "no gauge leaks");
        assert_eq!(stats.cancelled.load(Ordering::SeqCst), 1);
        assert_eq!(stats.tries.load(Ordering::SeqCst), 1);
    }

    #[derive(Debug)]
    struct Share(std::sync::atomic::AtomicU64);

    impl CanaryShare for Share {
        fn share(&self) -> f64 {
            f64::from_bits(self.0.load(Ordering::SeqCst))
        }
    }

    /// A route of `v1` and `v2`, `v2` a canary answering with `outcome`; the share, and how
    /// often each was called.
    fn with_canary(
        share: f64,
        sticky: Option<crate::http::HashKey>,
        outcome: fn() -> Result<GatewayResponse, BackendError>,
    ) -> (Failover, Arc<Share>, Arc<AtomicU32>, Arc<AtomicU32>) {
        let (stable, stable_calls) = scripted("v1", ok);
        let (canary, canary_calls) = scripted("v2", outcome);
        let share = Arc::new(Share(std::sync::atomic::AtomicU64::new(share.to_bits())));
        let route = failover(vec![(stable, 0), (canary, 1)], 1).with_canary(CanaryRouting {
            backend: Arc::from("v2"),
            share: share.clone(),
            sticky,
        });
        (route, share, stable_calls, canary_calls)
    }

    #[test]
    fn the_request_context_is_read_only_by_backends_that_say_so_and_sticky_canaries() {
        let (plain, _) = scripted("plain", ok);
        assert!(!failover(vec![(plain.clone(), 0)], 1).reads_context());
        let (hashing, _) = scripted("hashing", ok);
        let hashing = Arc::new(Arc::into_inner(hashing).unwrap().reading_context(true));
        assert!(failover(vec![(plain, 0), (hashing, 1)], 1).reads_context());
        assert!(!with_canary(0.2, None, ok).0.reads_context());
        let by_cookie = crate::http::HashKey::Cookie("session".into());
        assert!(!with_canary(0.2, Some(by_cookie), ok).0.reads_context());
        assert!(
            with_canary(0.2, Some(crate::http::HashKey::ClientAddress), ok)
                .0
                .reads_context()
        );
    }

    #[tokio::test]
    async fn a_canary_gets_its_share_and_nothing_more() {
        let (route, share, stable, canary) = with_canary(0.2, None, ok);
        for _ in 0..2000 {
            let forwarded = forward_empty(&route, Method::GET).await;
            assert!(!forwarded.steered, "a canary pick is not steering");
        }
        let picked = f64::from(canary.load(Ordering::SeqCst));
        // 20% of 2,000: 400, with a standard deviation of ~18; 5 sigma either way.
        assert!((310.0..=490.0).contains(&picked), "{picked}");
        assert_eq!(
            stable.load(Ordering::SeqCst) + canary.load(Ordering::SeqCst),
            2000
        );
        // Rolled back: never tried, even though it is a backend of the route.
        share.0.store(0f64.to_bits(), Ordering::SeqCst);
        canary.store(0, Ordering::SeqCst);
        for _ in 0..200 {
            forward_empty(&route, Method::GET).await;
        }
        assert_eq!(canary.load(Ordering::SeqCst), 0);
    }

    /// A canary sticky on `X-Forwarded-For` hashes the list with the client's address in it,
    /// as a backend would see it: each client keeps its version.
    #[tokio::test]
    async fn a_canary_sticky_on_a_forwarding_header_hashes_it_with_the_client_in_it() {
        let key = crate::http::HashKey::Header(crate::forwarding::X_FORWARDED_FOR);
        let (route, _share, _stable, canary) = with_canary(0.5, Some(key), ok);
        let mut canary_clients = 0;
        for client in 0..100u8 {
            let address = http::HeaderValue::from_str(&format!("10.0.0.{client}")).unwrap();
            let head = || {
                let parts = Arc::unwrap_or_clone(request(Method::GET)).parts().clone();
                let forwarding =
                    crate::forwarding::Forwarding::new(address.clone(), "http", &parts.headers);
                Arc::new(PreparedHead::new(parts, Some(forwarding)))
            };
            let picked = sticky_pick(&route, &canary, head, &format!("client {client}")).await;
            canary_clients += usize::from(picked);
        }
        assert!((25..=75).contains(&canary_clients), "{canary_clients}");
    }

    /// Forwards five requests with the head `head` makes; asserts that they all went the same
    /// way (`who` says whose they were) and says whether that was to the canary.
    async fn sticky_pick(
        route: &Failover,
        canary: &AtomicU32,
        head: impl Fn() -> Arc<PreparedHead>,
        who: &str,
    ) -> bool {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = canary.load(Ordering::SeqCst);
            route
                .forward(head(), ReplayBody::Buffered(Bytes::new()), far_deadline())
                .await;
            seen.push(canary.load(Ordering::SeqCst) > before);
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{who}: {seen:?}");
        seen[0]
    }

    #[tokio::test]
    async fn a_sticky_canary_sends_the_same_key_to_the_same_version() {
        let key = crate::http::HashKey::Header(http::HeaderName::from_static("x-user"));
        let (route, _share, _stable, canary) = with_canary(0.5, Some(key), ok);
        let mut canary_users = 0;
        for user in 0..100 {
            let head = || {
                let mut head = request(Method::GET);
                Arc::make_mut(&mut head)
                    .parts_mut()
                    .headers
                    .insert("x-user", http::HeaderValue::from(user));
                head
            };
            let picked = sticky_pick(&route, &canary, head, &format!("user {user}")).await;
            canary_users += usize::from(picked);
        }
        assert!(
            (25..=75).contains(&canary_users),
            "{canary_users} of 100 users"
        );
    }

    #[tokio::test]
    async fn a_failing_canary_request_is_retried_on_the_stable_version() {
        let (route, _share, stable_calls, canary_calls) = with_canary(1.0, None, refused);
        let forwarded = forward_empty(&route, Method::GET).await;
        assert_eq!(forwarded.result.unwrap().status(), 200);
        assert_eq!(canary_calls.load(Ordering::SeqCst), 1);
        assert_eq!(stable_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_post_is_not_retried_on_a_status_but_a_get_is() {
        let (primary, _) = scripted("primary", unavailable);
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = failover(vec![(primary, 0), (secondary, 1)], 2);
        let post = forward_empty(&route, Method::POST).await;
        assert_eq!(post.result.unwrap().status(), 503);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 0);
        let get = forward_empty(&route, Method::GET).await;
        assert_eq!(get.result.unwrap().status(), 200);
    }

    fn throttled() -> Result<GatewayResponse, BackendError> {
        let mut response = http::Response::new(full_body("slow down"));
        *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        Ok(response.into())
    }

    #[tokio::test]
    async fn a_throttled_post_moves_to_the_next_backend() {
        let (primary, _) = scripted("primary", throttled);
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = failover(vec![(primary, 0), (secondary, 1)], 2);
        let forwarded = forward_empty(&route, Method::POST).await;
        assert_eq!(forwarded.result.unwrap().status(), 200);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 1);
    }

    #[derive(Debug)]
    struct Fixed(Standing);

    impl Steering for Fixed {
        fn standing(&self) -> Standing {
            self.0
        }
    }

    fn steered(backends: Vec<(Arc<Backend>, Standing)>) -> Failover {
        Failover::new(
            backends
                .into_iter()
                .enumerate()
                .map(|(i, (backend, verdict))| RouteBackend {
                    backend,
                    priority: i as u32,
                    weight: 1,
                    steering: Some(Arc::new(Fixed(verdict))),
                })
                .collect(),
            RetryPolicy::default(),
            RetryBudget::new(RetryBudgetPolicy::default()),
            None,
        )
    }

    #[tokio::test]
    async fn an_avoided_backend_is_passed_over_and_the_least_bad_serves_when_all_are() {
        let avoid = |badness| Standing::Avoid {
            probe: 0.0,
            badness,
        };
        let (primary, primary_calls) = scripted("primary", ok);
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = steered(vec![
            (primary.clone(), avoid(5.0)),
            (secondary.clone(), Standing::Use),
        ]);
        let forwarded = forward_empty(&route, Method::GET).await;
        assert_eq!(forwarded.backend.unwrap().id().as_ref(), "secondary");
        assert!(forwarded.steered);
        assert_eq!(
            (
                primary_calls.load(Ordering::SeqCst),
                secondary_calls.load(Ordering::SeqCst)
            ),
            (0, 1)
        );

        let route = steered(vec![(primary, avoid(5.0)), (secondary, avoid(2.0))]);
        let forwarded = forward_empty(&route, Method::GET).await;
        assert_eq!(
            forwarded.backend.unwrap().id().as_ref(),
            "secondary",
            "the least bad serves"
        );
    }

    #[tokio::test]
    async fn an_avoided_backend_still_gets_its_probes() {
        let (primary, primary_calls) = scripted("primary", ok);
        let (secondary, _) = scripted("secondary", ok);
        let route = steered(vec![
            (
                primary,
                Standing::Avoid {
                    probe: 0.25,
                    badness: 1.0,
                },
            ),
            (secondary, Standing::Use),
        ]);
        for _ in 0..400 {
            forward_empty(&route, Method::GET).await;
        }
        let probes = primary_calls.load(Ordering::SeqCst);
        assert!(
            (60..=140).contains(&probes),
            "about a quarter probed the primary: {probes}"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_gets_one_try() {
        let (primary, _) = scripted("primary", refused);
        let (secondary, secondary_calls) = scripted("secondary", ok);
        let route = failover(vec![(primary, 0), (secondary, 1)], 2);
        let body = ReplayBody::Streaming(Some(RequestBody::full(Bytes::from_static(b"big"))));
        let forwarded = route
            .forward(request(Method::PUT), body, far_deadline())
            .await;
        assert_eq!(
            forwarded.result.unwrap_err().kind(),
            BackendErrorKind::Connect
        );
        assert_eq!(forwarded.tries, 1);
        assert_eq!(secondary_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn retries_stop_after_the_configured_count() {
        let (only, calls) = scripted("only", unavailable);
        let route = failover(vec![(only, 0)], 3);
        let forwarded = forward_empty(&route, Method::GET).await;
        assert_eq!(forwarded.result.unwrap().status(), 503);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
