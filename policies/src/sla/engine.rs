//! Per-route SLA state and what the engine does with it.
//!
//! The request path calls [`RouteSla::admit`] (shed or reject under budget protection) and
//! [`RouteSla::record`] (meter the outcome), and failover consults each [`BackendSla`] through
//! the [`Steering`] trait. Everything else happens in [`SlaEngine::tick`], which the gateway
//! runs every few seconds: it seals finished minutes, re-evaluates every backend's breach state
//! (with hysteresis), every alert tier and every budget, and opens or closes breach events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accord_adapters::{Standing, Steering};
use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

use super::canary::{Canary, CanarySpec, CanaryState, Command, OnBreach, Transition};
use super::clock::{Clock, UnixMillis, minute_of};
use super::meter::{Aggregate, Meter, Minute};
use super::objective::{Indicator, Objective, Severity, budget, burn_rate};
use crate::Class;

/// What the engine may do for a route, beyond metering it.
#[derive(Debug, Clone, PartialEq)]
pub struct Enforcement {
    /// Window over which a backend's compliance is judged.
    pub breach_window: Duration,
    /// Requests a backend must have served in that window before it can be judged.
    pub min_requests: u64,
    /// Share of requests still sent first to a breaching backend, to see it recover.
    pub probe: f64,
    /// How long a breaching backend must stay compliant before it gets traffic back.
    pub recovery: Duration,
    /// Shedding of low-priority traffic while a page alert fires and no backend complies.
    pub shedding: Option<Shedding>,
    /// Reject all but critical traffic while the error budget is exhausted.
    pub strict: bool,
}

impl Default for Enforcement {
    fn default() -> Self {
        Self {
            breach_window: Duration::from_secs(120),
            min_requests: 20,
            probe: 0.05,
            recovery: Duration::from_secs(120),
            shedding: None,
            strict: false,
        }
    }
}

/// Shedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Shedding {
    /// Share of low-priority requests shed.
    pub fraction: f64,
    /// `Retry-After` sent with a shed request.
    pub retry_after: Duration,
}

/// A request's priority, from a header or the tenant's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Shed first.
    Low,
    /// The default.
    Normal,
    /// Never shed or rejected by budget protection.
    Critical,
}

/// What budget protection decided for a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Serve it.
    Admit,
    /// Shed it: 503 with `Retry-After`.
    Shed {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// Reject it: the budget is exhausted and the route is strict.
    Reject,
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A backend breached the route's objective.
    BackendBreach,
    /// A burn-rate alert tier fired.
    BurnRateAlert,
    /// The error budget ran out.
    BudgetExhausted,
    /// A canary breached the route's objective or its baseline.
    CanaryBreach,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 4] = [
        EventKind::BackendBreach,
        EventKind::BurnRateAlert,
        EventKind::BudgetExhausted,
        EventKind::CanaryBreach,
    ];

    /// As reports, storage and notifications name it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BackendBreach => "backend_breach",
            EventKind::BurnRateAlert => "burn_rate_alert",
            EventKind::BudgetExhausted => "budget_exhausted",
            EventKind::CanaryBreach => "canary_breach",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What the gateway did about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Traffic moved to other backends.
    Reroute,
    /// Low-priority traffic is being shed.
    Shed,
    /// Non-critical traffic is being rejected.
    Reject,
    /// Only reported (no enforcement configured for it).
    Alert,
    /// A canary's share went to 0.
    Rollback,
    /// A canary stopped advancing.
    Pause,
}

/// The measurement that opened an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    /// Which SLI.
    pub indicator: Indicator,
    /// What was measured: an error ratio, a within-threshold ratio, or a burn rate.
    pub measured: f64,
    /// The limit it crossed.
    pub limit: f64,
    /// Over which window, in seconds.
    pub window_seconds: u64,
}

/// One entry of the breach event log.
#[derive(Debug, Serialize)]
pub struct BreachEvent {
    /// Increasing id.
    pub id: u64,
    /// Route id.
    pub route: Arc<str>,
    /// Backend id, for backend breaches.
    pub backend: Option<Arc<str>>,
    /// What it is about.
    pub kind: EventKind,
    /// Severity, for alerts.
    pub severity: Option<Severity>,
    /// What was done.
    pub action: Action,
    /// What triggered it.
    pub trigger: Trigger,
    /// When it started (ms since the epoch).
    pub started_ms: UnixMillis,
    /// When it ended, if it has.
    #[serde(serialize_with = "serialize_end")]
    pub ended_ms: AtomicU64,
    /// Requests rerouted, shed or rejected because of it.
    #[serde(serialize_with = "serialize_counter")]
    pub requests_affected: AtomicU64,
    /// In cluster mode, the replicas that acted on it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Arc<str>>,
}

fn serialize_end<S: serde::Serializer>(end: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    match end.load(Relaxed) {
        0 => s.serialize_none(),
        ms => s.serialize_some(&ms),
    }
}

fn serialize_counter<S: serde::Serializer>(n: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(n.load(Relaxed))
}

impl BreachEvent {
    /// An event read back from storage or from the cluster, acted on by `replicas`.
    pub fn restored(r: RestoredEvent, replicas: Vec<Arc<str>>) -> Self {
        BreachEvent {
            id: r.id,
            route: Arc::from(r.route),
            backend: r.backend.map(Arc::from),
            kind: r.kind,
            severity: r.severity,
            action: r.action,
            trigger: r.trigger,
            started_ms: r.started_ms,
            ended_ms: AtomicU64::new(r.ended_ms.max(0) as u64),
            requests_affected: AtomicU64::new(r.requests_affected),
            replicas,
        }
    }

    fn end(&self, at: UnixMillis) {
        self.ended_ms.store(at.max(1) as u64, Relaxed);
    }

    /// Whether the event is still going on.
    pub fn is_open(&self) -> bool {
        self.ended_ms.load(Relaxed) == 0
    }
}

/// The breach event log shared by all routes: the most recent events, newest last.
///
/// In cluster mode the log also holds the cluster's events (one per breach, alert or budget
/// exhaustion, whichever replicas acted on it), and [`EventLog::list`] reports those.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<VecDeque<Arc<BreachEvent>>>,
    next_id: AtomicU64,
    cluster: ArcSwapOption<Vec<Arc<BreachEvent>>>,
}

/// Tolerance of burn-rate comparisons.
const BURN_EPSILON: f64 = 1e-9;

/// Events kept in memory.
const EVENTS_KEPT: usize = 1000;

impl EventLog {
    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        route: &Arc<str>,
        backend: Option<&Arc<str>>,
        kind: EventKind,
        severity: Option<Severity>,
        action: Action,
        trigger: Trigger,
        at: UnixMillis,
    ) -> Arc<BreachEvent> {
        let event = Arc::new(BreachEvent {
            id: self.next_id.fetch_add(1, Relaxed) + 1,
            route: route.clone(),
            backend: backend.cloned(),
            kind,
            severity,
            action,
            trigger,
            started_ms: at,
            ended_ms: AtomicU64::new(0),
            requests_affected: AtomicU64::new(0),
            replicas: Vec::new(),
        });
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push_back(event.clone());
        while events.len() > EVENTS_KEPT {
            events.pop_front();
        }
        event
    }

    /// Puts events read back from storage into the log (oldest first); new events continue
    /// the numbering.
    pub fn restore(&self, restored: Vec<RestoredEvent>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for r in restored {
            self.next_id.fetch_max(r.id, Relaxed);
            let ended_ms = r.ended_ms.max(1);
            events.push_back(Arc::new(BreachEvent::restored(
                RestoredEvent { ended_ms, ..r },
                Vec::new(),
            )));
        }
        while events.len() > EVENTS_KEPT {
            events.pop_front();
        }
    }

    /// Events, oldest first, optionally of one route: the cluster's in cluster mode.
    pub fn list(&self, route: Option<&str>) -> Vec<Arc<BreachEvent>> {
        if let Some(cluster) = self.cluster.load().as_ref() {
            return cluster
                .iter()
                .filter(|e| route.is_none_or(|r| &*e.route == r))
                .cloned()
                .collect();
        }
        self.local(route)
    }

    /// Events this process opened (and restored), oldest first, optionally of one route.
    pub fn local(&self, route: Option<&str>) -> Vec<Arc<BreachEvent>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| route.is_none_or(|r| &*e.route == r))
            .cloned()
            .collect()
    }
}

impl EventLog {
    /// Replaces the cluster's events (oldest first), which [`EventLog::list`] reports from now on.
    pub fn set_cluster_view(&self, events: Vec<Arc<BreachEvent>>) {
        self.cluster.store(Some(Arc::new(events)));
    }
}

/// An event as read back from storage.
#[derive(Debug)]
pub struct RestoredEvent {
    /// Its id.
    pub id: u64,
    /// Route id.
    pub route: String,
    /// Backend id.
    pub backend: Option<String>,
    /// Kind.
    pub kind: EventKind,
    /// Severity.
    pub severity: Option<Severity>,
    /// Action.
    pub action: Action,
    /// Trigger.
    pub trigger: Trigger,
    /// Start.
    pub started_ms: UnixMillis,
    /// End.
    pub ended_ms: UnixMillis,
    /// Requests affected.
    pub requests_affected: u64,
}

/// Counts of what enforcement did on a route.
#[derive(Debug, Default)]
pub struct ActionCounts {
    /// Requests whose first try went to a lower-priority backend because a higher one breached.
    pub rerouted: AtomicU64,
    /// Requests shed.
    pub shed: AtomicU64,
    /// Requests rejected by strict budget protection.
    pub rejected: AtomicU64,
}

// === BackendSla ===

/// One backend as seen by a route's objective.
#[derive(Debug)]
pub struct BackendSla {
    id: Arc<str>,
    meter: Meter,
    breaching: AtomicBool,
    /// `f64` bits of how far the backend is from the objective (its burn rate).
    badness: AtomicU64,
    probe: f64,
    state: Mutex<BreachState>,
    event: ArcSwapOption<BreachEvent>,
    view: arc_swap::ArcSwap<BackendView>,
}

/// A backend's standing over the breach window, as of the last evaluation: what plugins read
/// on the request path without recomputing windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendView {
    /// Requests in the breach window.
    pub requests: f64,
    /// Bad ÷ valid availability events in the breach window.
    pub error_ratio: f64,
    /// p99 latency in the breach window, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// A route's SLA state as of the last evaluation: what plugins read on the request path
/// (`sla.route()`) without recomputing windows per call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteView {
    /// When it was evaluated (the engine's clock); 0 before the first evaluation.
    pub at_ms: UnixMillis,
    /// Per SLI of the objective.
    pub indicators: Vec<IndicatorView>,
    /// Traffic over each standard window (`5m` … `3d`).
    pub windows: Vec<WindowView>,
}

/// One SLI in a [`RouteView`].
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorView {
    /// Which SLI.
    pub indicator: Indicator,
    /// The objective, as a ratio.
    pub target: f64,
    /// Good ÷ valid over the SLO window.
    pub attainment: f64,
    /// Share of the error budget left (negative when overspent).
    pub budget_remaining: f64,
    /// Burn rate per standard window (`5m` … `3d`).
    pub burn_rates: Vec<(&'static str, f64)>,
}

/// Traffic over one window in a [`RouteView`].
#[derive(Debug, Clone, PartialEq)]
pub struct WindowView {
    /// `5m` … `3d`.
    pub window: &'static str,
    /// Requests per class, indexed by [`Class::index`].
    pub by_class: [f64; Class::ALL.len()],
    /// The requests the availability objective counts (good and bad; throttled, rejected,
    /// client errors and early cancellations are not valid events).
    pub valid: f64,
    /// Median latency, in milliseconds (windows up to 1h).
    pub p50_ms: Option<f64>,
    /// p99 latency, in milliseconds (windows up to 1h).
    pub p99_ms: Option<f64>,
}

impl WindowView {
    /// Requests of every class.
    pub fn total(&self) -> f64 {
        self.by_class.iter().sum()
    }
}

/// The longest window (seconds) a [`RouteView`] gives latency quantiles for.
const VIEW_LATENCY_UP_TO: u64 = 3600;

#[derive(Debug, Default)]
struct BreachState {
    /// When the backend last failed an evaluation.
    last_breach_ms: UnixMillis,
    /// Start of the current run of compliant evaluations (with enough volume).
    compliant_since_ms: Option<UnixMillis>,
}

impl BackendSla {
    /// The backend's id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The backend's meter (for this route).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The backend's standing as of the last evaluation.
    pub fn view(&self) -> Arc<BackendView> {
        self.view.load_full()
    }

    /// Whether the backend currently breaches the route's objective.
    pub fn is_breaching(&self) -> bool {
        self.breaching.load(Relaxed)
    }

    /// How far the backend is from the objective (burn rate over the breach window).
    pub fn badness(&self) -> f64 {
        f64::from_bits(self.badness.load(Relaxed))
    }

    /// Evaluates the backend and returns a trigger if it breaches now.
    fn judge(
        &self,
        objective: &Objective,
        enforcement: &Enforcement,
        now: Minute,
    ) -> (Option<Trigger>, bool, f64) {
        let window = self.meter.window_counts(now, enforcement.breach_window);
        let mut worst: Option<Trigger> = None;
        let mut enough = false;
        let mut max_burn = 0.0f64;
        for (indicator, target) in objective.indicators() {
            let events = objective.events(indicator, &window);
            if events.valid < enforcement.min_requests as f64 {
                continue;
            }
            enough = true;
            let burn = burn_rate(events, target);
            max_burn = max_burn.max(burn);
            if burn > 1.0
                && worst
                    .as_ref()
                    .is_none_or(|w| burn > w.measured / w.limit.max(f64::MIN_POSITIVE))
            {
                let (measured, limit) = match indicator {
                    Indicator::Availability => (events.bad() / events.valid, 1.0 - target),
                    Indicator::Latency => (events.ratio(), target),
                };
                worst = Some(Trigger {
                    indicator,
                    measured,
                    limit,
                    window_seconds: enforcement.breach_window.as_secs(),
                });
            }
        }
        (worst, enough, max_burn)
    }
}

impl Steering for BackendSla {
    fn standing(&self) -> Standing {
        if self.breaching.load(Relaxed) {
            Standing::Avoid {
                probe: self.probe,
                badness: self.badness(),
            }
        } else {
            Standing::Use
        }
    }
}

// === RouteSla ===

/// A route's objective, meters, enforcement state and counters.
#[derive(Debug)]
pub struct RouteSla {
    id: Arc<str>,
    clock: Clock,
    objective: Objective,
    enforcement: Enforcement,
    meter: Meter,
    backends: Vec<Arc<BackendSla>>,
    actions: ActionCounts,
    page_firing: AtomicBool,
    budget_exhausted: AtomicBool,
    alerts: Mutex<HashMap<(Indicator, usize), Arc<BreachEvent>>>,
    budget_event: ArcSwapOption<BreachEvent>,
    events: Arc<EventLog>,
    view: arc_swap::ArcSwap<RouteView>,
    canary: ArcSwapOption<Canary>,
}

impl RouteSla {
    /// The event log this route writes to.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The route's canary, if one of its backends is released as one.
    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary.load_full()
    }

    /// Makes the backend at `backend` (an index in the route's order) the route's canary, or
    /// removes the canary (`None`). A canary of the same backend keeps its state (its step and
    /// timeline) across reloads, unless its steps changed so that its step no longer exists.
    pub fn set_canary(&self, canary: Option<(usize, CanarySpec)>) -> Option<Arc<Canary>> {
        let Some((backend, spec)) = canary else {
            self.canary.store(None);
            return None;
        };
        let Some(id) = self.backends.get(backend).map(|b| b.id.clone()) else {
            self.canary.store(None);
            return None;
        };
        if let Some(existing) = self.canary.load_full()
            && existing.backend() == backend
            && *existing.spec() == spec
        {
            return Some(existing);
        }
        let fresh = Arc::new(Canary::new(spec, backend, &id, self.clock.now_ms()));
        if let Some(existing) = self.canary.load_full()
            && existing.backend() == backend
        {
            fresh.restore(existing.state());
        }
        self.canary.store(Some(fresh.clone()));
        Some(fresh)
    }

    /// An operator's command to the route's canary (through the admin API).
    pub fn command_canary(&self, command: Command) -> Result<CanaryState, String> {
        let canary = self
            .canary()
            .ok_or_else(|| format!("route {} has no canary", self.id))?;
        canary.command(command, self.clock.now_ms())
    }

    /// One canary evaluation: its counts over the step so far against the other backends'.
    fn evaluate_canary(&self, now: Minute, now_ms: UnixMillis) {
        let Some(canary) = self.canary() else { return };
        let window = canary.step_window(now_ms);
        let mut candidate = Aggregate::default();
        let mut baseline = Aggregate::default();
        for (i, backend) in self.backends.iter().enumerate() {
            let counts = backend.meter.window_counts(now, window);
            if i == canary.backend() {
                candidate = counts;
            } else {
                baseline.add_aggregate(&counts);
            }
        }
        if let Some(Transition::Breached(comparison, on_breach)) =
            canary.evaluate(&self.objective, &candidate, &baseline, now_ms)
        {
            let backend = &self.backends[canary.backend()].id;
            let event = self.events.open(
                &self.id,
                Some(backend),
                EventKind::CanaryBreach,
                None,
                match on_breach {
                    OnBreach::Rollback => Action::Rollback,
                    OnBreach::Pause => Action::Pause,
                },
                Trigger {
                    indicator: comparison.indicator,
                    measured: comparison.canary_bad_ratio,
                    limit: comparison.limit,
                    window_seconds: window.as_secs(),
                },
                now_ms,
            );
            event.end(now_ms);
        }
    }

    /// The route's SLA state as of the last evaluation (every few seconds; empty before the
    /// first one).
    pub fn view(&self) -> Arc<RouteView> {
        self.view.load_full()
    }

    /// The route id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The engine's clock (what "now" is for this route's windows).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// Enforcement settings.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// The route's meter.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The route's backends, in the route's order.
    pub fn backends(&self) -> &[Arc<BackendSla>] {
        &self.backends
    }

    /// Every meter of the route: the route's own (keyed `""`), then each backend's.
    pub fn meters(&self) -> impl Iterator<Item = (&str, &Meter)> {
        std::iter::once(("", &self.meter))
            .chain(self.backends.iter().map(|b| (b.id.as_ref(), &b.meter)))
    }

    /// What enforcement has done.
    pub fn actions(&self) -> &ActionCounts {
        &self.actions
    }

    /// Whether a page-severity alert is firing.
    pub fn is_paging(&self) -> bool {
        self.page_firing.load(Relaxed)
    }

    /// Whether the error budget is spent.
    pub fn is_budget_exhausted(&self) -> bool {
        self.budget_exhausted.load(Relaxed)
    }

    /// Budget protection for one request of the priority `priority` tells. Lock-free; the
    /// priority is asked for only while the route protects its budget (a spent budget on a
    /// strict route, or a page alert firing where shedding is on), not for every request.
    pub fn admit(&self, priority: impl FnOnce() -> Priority) -> Admission {
        let strict = self.enforcement.strict && self.budget_exhausted.load(Relaxed);
        let may_shed = self.enforcement.shedding.is_some() && self.page_firing.load(Relaxed);
        if !strict && !may_shed {
            return Admission::Admit;
        }
        let priority = priority();
        if priority == Priority::Critical {
            return Admission::Admit;
        }
        if strict {
            self.actions.rejected.fetch_add(1, Relaxed);
            if let Some(event) = self.budget_event.load().as_ref() {
                event.requests_affected.fetch_add(1, Relaxed);
            }
            return Admission::Reject;
        }
        if let Some(shedding) = &self.enforcement.shedding
            && priority == Priority::Low
            && self.page_firing.load(Relaxed)
            && self.backends.iter().all(|b| b.is_breaching())
            && fastrand::f64() < shedding.fraction
        {
            self.actions.shed.fetch_add(1, Relaxed);
            // Attributed to the fastest-burning page tier that fires (the first in the list).
            let alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
            let page = alerts
                .iter()
                .filter(|(_, e)| e.severity == Some(Severity::Page))
                .min_by_key(|((_, tier), _)| *tier)
                .map(|(_, e)| e);
            if let Some(event) = page {
                event.requests_affected.fetch_add(1, Relaxed);
            }
            return Admission::Shed {
                retry_after: shedding.retry_after,
            };
        }
        Admission::Admit
    }

    /// Meters one try against the backend at `backend` (its index in the route's order).
    pub fn record_try(&self, backend: usize, class: Class, latency: Duration) {
        if let Some(b) = self.backends.get(backend) {
            b.meter.record(class, latency);
        }
    }

    /// Meters a finished request against the route. `steered` says it was moved off a
    /// breaching backend.
    pub fn record(&self, class: Class, latency: Duration, steered: bool) {
        self.meter.record(class, latency);
        if steered {
            self.actions.rerouted.fetch_add(1, Relaxed);
            if let Some(event) = self.backends.iter().find_map(|b| b.event.load_full()) {
                event.requests_affected.fetch_add(1, Relaxed);
            }
        }
    }

    fn seal(&self, minute: Minute) {
        self.meter.seal(minute);
        for backend in &self.backends {
            backend.meter.seal(minute);
        }
    }

    /// One evaluation (every [`EVALUATION_INTERVAL`]): each backend's breach or recovery,
    /// the alert tiers, the error budget, then the view plugins and reports read.
    fn evaluate(&self, now_ms: UnixMillis) {
        let now = minute_of(now_ms);
        for backend in &self.backends {
            self.judge_backend(backend, now, now_ms);
        }
        self.evaluate_canary(now, now_ms);
        self.evaluate_alerts(now, now_ms);
        self.evaluate_budget(now, now_ms);
        self.view.store(Arc::new(self.compute_view(now, now_ms)));
    }

    /// A backend breaches when it burns above its objective over the breach window (once it
    /// has served enough requests), and recovers after `recovery` of sustained compliance:
    /// hysteresis, so a backend does not flap.
    fn judge_backend(&self, backend: &BackendSla, now: Minute, now_ms: UnixMillis) {
        let (trigger, enough, burn) = backend.judge(&self.objective, &self.enforcement, now);
        backend.badness.store(burn.to_bits(), Relaxed);
        let window = backend.meter.window(now, self.enforcement.breach_window);
        let events = self.objective.events(Indicator::Availability, &window);
        backend.view.store(Arc::new(BackendView {
            requests: window.total(),
            error_ratio: if events.valid > 0.0 {
                events.bad() / events.valid
            } else {
                0.0
            },
            p99_ms: window
                .latency
                .quantile(0.99)
                .map(|d| d.as_secs_f64() * 1000.0),
        }));
        let mut state = backend.state.lock().unwrap_or_else(|p| p.into_inner());
        match trigger {
            Some(trigger) => {
                state.last_breach_ms = now_ms;
                state.compliant_since_ms = None;
                if !backend.breaching.swap(true, Relaxed) {
                    let event = self.events.open(
                        &self.id,
                        Some(&backend.id),
                        EventKind::BackendBreach,
                        None,
                        Action::Reroute,
                        trigger,
                        now_ms,
                    );
                    backend.event.store(Some(event));
                }
            }
            None if enough => {
                let since = *state.compliant_since_ms.get_or_insert(now_ms);
                if backend.is_breaching()
                    && now_ms - since >= self.enforcement.recovery.as_millis() as i64
                {
                    backend.breaching.store(false, Relaxed);
                    if let Some(event) = backend.event.swap(None) {
                        event.end(now_ms);
                    }
                }
            }
            None => {}
        }
    }

    /// Each SLI's alert tiers: a tier fires while both its windows burn at or above its factor.
    fn evaluate_alerts(&self, now: Minute, now_ms: UnixMillis) {
        let mut paging = false;
        let mut alerts = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        for (indicator, target) in self.objective.indicators() {
            for (t, tier) in self.objective.tiers.iter().enumerate() {
                let long = burn_rate(
                    self.objective
                        .events(indicator, &self.meter.window_counts(now, tier.long)),
                    target,
                );
                let short = burn_rate(
                    self.objective
                        .events(indicator, &self.meter.window_counts(now, tier.short)),
                    target,
                );
                // Compare with a tolerance: 0.0144 / 0.001 is 14.399999999999999 in binary.
                let firing =
                    long + BURN_EPSILON >= tier.burn_rate && short + BURN_EPSILON >= tier.burn_rate;
                let key = (indicator, t);
                match (firing, alerts.contains_key(&key)) {
                    (true, false) => {
                        let action = if tier.severity == Severity::Page
                            && self.enforcement.shedding.is_some()
                        {
                            Action::Shed
                        } else {
                            Action::Alert
                        };
                        let trigger = Trigger {
                            indicator,
                            measured: long,
                            limit: tier.burn_rate,
                            window_seconds: tier.long.as_secs(),
                        };
                        let event = self.events.open(
                            &self.id,
                            None,
                            EventKind::BurnRateAlert,
                            Some(tier.severity),
                            action,
                            trigger,
                            now_ms,
                        );
                        alerts.insert(key, event);
                    }
                    (false, true) => {
                        if let Some(event) = alerts.remove(&key) {
                            event.end(now_ms);
                        }
                    }
                    _ => {}
                }
                paging |= firing && tier.severity == Severity::Page;
            }
        }
        self.page_firing.store(paging, Relaxed);
        drop(alerts);
    }

    /// The error budget over the SLO window: exhausted while any SLI has spent it.
    fn evaluate_budget(&self, now: Minute, now_ms: UnixMillis) {
        let window = self
            .meter
            .window_counts(now, self.objective.window.covered(now_ms));
        let mut exhausted: Option<Trigger> = None;
        for (indicator, target) in self.objective.indicators() {
            let events = self.objective.events(indicator, &window);
            let b = budget(events, target);
            if events.valid > 0.0 && b.remaining_ratio <= 0.0 {
                exhausted = Some(Trigger {
                    indicator,
                    measured: b.consumed_ratio,
                    limit: 1.0,
                    window_seconds: self.objective.window.covered(now_ms).as_secs(),
                });
            }
        }
        match exhausted {
            Some(trigger) if !self.budget_exhausted.swap(true, Relaxed) => {
                let action = if self.enforcement.strict {
                    Action::Reject
                } else {
                    Action::Alert
                };
                let event = self.events.open(
                    &self.id,
                    None,
                    EventKind::BudgetExhausted,
                    None,
                    action,
                    trigger,
                    now_ms,
                );
                self.budget_event.store(Some(event));
            }
            None if self.budget_exhausted.swap(false, Relaxed) => {
                if let Some(event) = self.budget_event.swap(None) {
                    event.end(now_ms);
                }
            }
            _ => {}
        }
    }

    fn compute_view(&self, now: i64, now_ms: UnixMillis) -> RouteView {
        let slo_counts = self
            .meter
            .window_counts(now, self.objective.window.covered(now_ms));
        // Each standard window once: its counts serve every SLI's burn rate and the traffic
        // view; latency quantiles only up to `VIEW_LATENCY_UP_TO` (merging days of histograms
        // every evaluation would cost more than it tells).
        let aggregates: Vec<(&'static str, u64, Aggregate)> = super::objective::WINDOWS
            .iter()
            .map(|(name, secs)| {
                let length = Duration::from_secs(*secs);
                let aggregate = if *secs <= VIEW_LATENCY_UP_TO {
                    self.meter.window(now, length)
                } else {
                    self.meter.window_counts(now, length)
                };
                (*name, *secs, aggregate)
            })
            .collect();
        let indicators = self
            .objective
            .indicators()
            .into_iter()
            .map(|(indicator, target)| {
                let events = self.objective.events(indicator, &slo_counts);
                IndicatorView {
                    indicator,
                    target,
                    attainment: events.ratio(),
                    budget_remaining: budget(events, target).remaining_ratio,
                    burn_rates: aggregates
                        .iter()
                        .map(|(name, _, counts)| {
                            (
                                *name,
                                burn_rate(self.objective.events(indicator, counts), target),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        let windows = aggregates
            .iter()
            .map(|(name, secs, w)| {
                let ms = |q| {
                    (*secs <= VIEW_LATENCY_UP_TO)
                        .then(|| w.latency.quantile(q).map(|d| d.as_secs_f64() * 1000.0))
                        .flatten()
                };
                WindowView {
                    window: name,
                    by_class: Class::ALL.map(|class| w.count(class)),
                    valid: self.objective.events(Indicator::Availability, w).valid,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                }
            })
            .collect();
        RouteView {
            at_ms: now_ms,
            indicators,
            windows,
        }
    }
}

// === SlaEngine ===

/// How often [`SlaEngine::tick`] should run: it seals minutes and re-evaluates breaches, alerts
/// and budgets, so this is the longest a backend that starts breaching keeps its traffic (once
/// it has served the minimum volume), and the granularity of shedding decisions.
pub const EVALUATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// All routes' SLA state, kept across reloads.
#[derive(Debug)]
pub struct SlaEngine {
    clock: Clock,
    routes: Mutex<HashMap<Arc<str>, Arc<RouteSla>>>,
    events: Arc<EventLog>,
    /// The last minute sealed: everything before the current minute.
    sealed_through: Mutex<Minute>,
}

impl SlaEngine {
    /// An engine reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        // Nothing recorded yet belongs to a past minute.
        let sealed_through = Mutex::new(clock.minute() - 1);
        Self {
            clock,
            routes: Mutex::new(HashMap::new()),
            events: Arc::new(EventLog::default()),
            sealed_through,
        }
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The breach event log.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The SLA state for a route, reused when the route's objective, enforcement and backends
    /// are unchanged (so a reload keeps its meters, history and breach state). When they
    /// change, the new state adopts the old meters' history.
    pub fn route(
        &self,
        id: &Arc<str>,
        objective: Objective,
        enforcement: Enforcement,
        backends: &[Arc<str>],
    ) -> Arc<RouteSla> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let previous = routes.get(id).cloned();
        if let Some(existing) = &previous
            && existing.objective == objective
            && existing.enforcement == enforcement
            && existing.backends.iter().map(|b| &b.id).eq(backends.iter())
        {
            return existing.clone();
        }
        let keep_hours = (objective.window.length().as_secs() / 3600) as usize + 1;
        let threshold = objective.latency.map(|l| l.threshold);
        let meter = Meter::new(threshold, keep_hours);
        if let Some(old) = &previous {
            meter.adopt(&old.meter);
        }
        let backend_slas = backends
            .iter()
            .map(|b| {
                let meter = Meter::new(threshold, keep_hours);
                if let Some(old) = previous
                    .as_ref()
                    .and_then(|p| p.backends.iter().find(|o| &o.id == b))
                {
                    meter.adopt(&old.meter);
                }
                Arc::new(BackendSla {
                    id: b.clone(),
                    meter,
                    breaching: AtomicBool::new(false),
                    badness: AtomicU64::new(0f64.to_bits()),
                    probe: enforcement.probe,
                    state: Mutex::new(BreachState::default()),
                    event: ArcSwapOption::empty(),
                    view: arc_swap::ArcSwap::from_pointee(BackendView::default()),
                })
            })
            .collect();
        let route = Arc::new(RouteSla {
            id: id.clone(),
            clock: self.clock.clone(),
            objective,
            enforcement,
            meter,
            backends: backend_slas,
            actions: ActionCounts::default(),
            page_firing: AtomicBool::new(false),
            budget_exhausted: AtomicBool::new(false),
            alerts: Mutex::new(HashMap::new()),
            budget_event: ArcSwapOption::empty(),
            view: arc_swap::ArcSwap::from_pointee(RouteView::default()),
            events: self.events.clone(),
            canary: ArcSwapOption::empty(),
        });
        // The canary belongs to the backends: a new state for changed settings keeps it.
        if let Some(old) = previous.as_ref().and_then(|p| p.canary())
            && let Some(index) = route
                .backends
                .iter()
                .position(|b| *b.id == *old.state().backend)
        {
            route.set_canary(Some((index, old.spec().clone())));
            if let Some(canary) = route.canary() {
                canary.restore(old.state());
            }
        }
        routes.insert(id.clone(), route.clone());
        route
    }

    /// Forgets routes that are no longer configured.
    pub fn retain(&self, ids: &[Arc<str>]) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.retain(|id, _| ids.contains(id));
    }

    /// The SLA state of every configured route.
    pub fn routes(&self) -> Vec<Arc<RouteSla>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = routes.values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// One route's SLA state.
    pub fn get(&self, id: &str) -> Option<Arc<RouteSla>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.get(id).cloned()
    }

    /// Runs `f` with the last minute sealed and every route, while no minute can be sealed: a
    /// consistent view of each meter's sealed history and live counters (what the cluster sync
    /// publishes).
    pub fn with_sealed<R>(&self, f: impl FnOnce(Minute, &[Arc<RouteSla>]) -> R) -> R {
        let through = self
            .sealed_through
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(*through, &self.routes())
    }

    /// Seals the minute that ended since the last tick (if one did), then re-evaluates every
    /// route. Returns the minutes sealed.
    pub fn tick(&self) -> Vec<Minute> {
        let now_ms = self.clock.now_ms();
        let current = minute_of(now_ms);
        let mut sealed = Vec::new();
        {
            let mut through = self
                .sealed_through
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if current - 1 > *through {
                // Everything recorded since the last seal belongs to the minute that just ended
                // (when ticks were late, to the latest of the minutes missed).
                let minute = current - 1;
                for route in self.routes() {
                    route.seal(minute);
                }
                sealed.push(minute);
                *through = minute;
            }
        }
        for route in self.routes() {
            route.evaluate(now_ms);
        }
        sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn objective() -> Objective {
        Objective::availability(0.999, Duration::from_secs(30 * DAY))
    }

    fn engine_with(enforcement: Enforcement) -> (SlaEngine, Arc<RouteSla>) {
        // 2026-01-01T00:00:00Z, on a minute boundary.
        let engine = SlaEngine::new(Clock::starting_at(1_767_225_600_000));
        let route = engine.route(
            &Arc::from("orders"),
            objective(),
            enforcement,
            &[Arc::from("primary"), Arc::from("secondary")],
        );
        (engine, route)
    }

    async fn minute_of_traffic(
        engine: &SlaEngine,
        route: &RouteSla,
        good: u64,
        bad: u64,
        backend: usize,
    ) {
        for _ in 0..good {
            route.record(Class::Good, Duration::from_millis(20), false);
            route.record_try(backend, Class::Good, Duration::from_millis(20));
        }
        for _ in 0..bad {
            route.record(Class::Bad, Duration::from_millis(20), false);
            route.record_try(backend, Class::Bad, Duration::from_millis(20));
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        engine.tick();
    }

    #[tokio::test(start_paused = true)]
    async fn a_999_slo_pages_at_a_1_44_percent_error_rate_over_1h_and_5m() {
        let (engine, route) = engine_with(Enforcement::default());
        engine.tick();
        // An hour at 1.44% errors: 10,000 requests a minute, 144 bad.
        for _ in 0..60 {
            minute_of_traffic(&engine, &route, 9_856, 144, 0).await;
        }
        assert!(route.is_paging(), "14.4x over both 1h and 5m pages");
        let page = engine
            .events()
            .list(Some("orders"))
            .into_iter()
            .find(|e| e.kind == EventKind::BurnRateAlert)
            .unwrap();
        assert_eq!(page.severity, Some(Severity::Page));
        assert!(
            (page.trigger.measured - 14.4).abs() < 1e-6,
            "{}",
            page.trigger.measured
        );
        assert_eq!(page.trigger.limit, 14.4);

        // Five clean minutes: the 1h burn stays high but the 5m burn drops, so the 14.4x page
        // resolves. (With no traffic before this hour, the 6h window's ratio equals the 1h one,
        // so the 6x page, whose 30m short window still burns, rightly goes on.)
        for _ in 0..5 {
            minute_of_traffic(&engine, &route, 10_000, 0, 0).await;
        }
        assert!(
            !page.is_open(),
            "the short window confirms the fast burn has stopped"
        );
        let six = open_alert(&engine, 6.0).expect("the 6x page is still open");
        assert_eq!(six.severity, Some(Severity::Page));
        assert!(route.is_paging());
    }

    fn open_alert(engine: &SlaEngine, factor: f64) -> Option<Arc<BreachEvent>> {
        engine.events().list(None).into_iter().find(|e| {
            e.kind == EventKind::BurnRateAlert && e.trigger.limit == factor && e.is_open()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_plugins_view_has_its_time_and_every_window_with_valid_events() {
        let (engine, route) = engine_with(Enforcement::default());
        engine.tick();
        minute_of_traffic(&engine, &route, 90, 10, 0).await;
        for _ in 0..20 {
            route.record(Class::Rejected, Duration::from_millis(1), false);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        engine.tick();
        let view = route.view();
        assert_eq!(view.at_ms, engine.clock().now_ms());
        let names: Vec<&str> = view.windows.iter().map(|w| w.window).collect();
        assert_eq!(names, ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]);
        for w in &view.windows {
            assert_eq!(w.total(), 120.0, "{}", w.window);
            assert_eq!(
                w.valid, 100.0,
                "{}: rejections are not valid events",
                w.window
            );
        }
        assert!(view.windows[0].p99_ms.is_some());
        assert!(view.windows[4].p99_ms.is_none(), "no quantiles past 1h");
    }

    fn canary_spec() -> CanarySpec {
        CanarySpec {
            steps: vec![0.1, 0.5, 1.0],
            step_for: Duration::from_secs(120),
            min_requests: 50,
            compare: super::super::canary::Compare::Objective,
            on_breach: OnBreach::Rollback,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_canary_advances_on_its_own_traffic_and_a_reload_keeps_its_step() {
        let (engine, route) = engine_with(Enforcement::default());
        let canary = route.set_canary(Some((1, canary_spec()))).unwrap();
        engine.tick();
        assert_eq!(canary.share(), 0.1);
        // Two minutes of compliant canary traffic: the next step.
        minute_of_traffic(&engine, &route, 100, 0, 1).await;
        assert_eq!(canary.share(), 0.1, "one minute is not step_for");
        minute_of_traffic(&engine, &route, 100, 0, 1).await;
        assert_eq!(canary.share(), 0.5);
        // Traffic on the stable backend only: the canary holds (too little traffic).
        for _ in 0..3 {
            minute_of_traffic(&engine, &route, 1000, 0, 0).await;
        }
        assert_eq!(canary.share(), 0.5);
        assert_eq!(
            canary.state().last[0].verdict,
            super::super::canary::Verdict::TooLittleTraffic
        );

        // A reload with the same canary keeps it; one whose objective changed carries it over.
        let same = route.set_canary(Some((1, canary_spec()))).unwrap();
        assert!(Arc::ptr_eq(&same, &canary));
        let reloaded = engine.route(
            &Arc::from("orders"),
            Objective::availability(0.99, Duration::from_secs(30 * 86_400)),
            Enforcement::default(),
            &[Arc::from("primary"), Arc::from("secondary")],
        );
        let carried = reloaded.set_canary(Some((1, canary_spec()))).unwrap();
        assert_eq!(carried.share(), 0.5);
        assert_eq!(carried.state().step, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_canary_is_rolled_back_within_one_evaluation_and_the_event_says_why() {
        let (engine, route) = engine_with(Enforcement::default());
        let canary = route.set_canary(Some((1, canary_spec()))).unwrap();
        engine.tick();
        for _ in 0..95 {
            route.record_try(1, Class::Good, Duration::from_millis(20));
        }
        for _ in 0..5 {
            route.record_try(1, Class::Bad, Duration::from_millis(20));
        }
        tokio::time::advance(EVALUATION_INTERVAL).await;
        engine.tick();
        assert_eq!(canary.share(), 0.0);
        let event = engine
            .events()
            .list(Some("orders"))
            .into_iter()
            .find(|e| e.kind == EventKind::CanaryBreach)
            .unwrap();
        assert_eq!(event.action, Action::Rollback);
        assert_eq!(event.backend.as_deref(), Some("secondary"));
        assert!((event.trigger.measured - 0.05).abs() < 1e-9);
        assert!((event.trigger.limit - 0.001).abs() < 1e-9);
        assert!(
            route.command_canary(Command::Abort).is_err(),
            "already rolled back"
        );
        route.command_canary(Command::Resume).unwrap();
        assert_eq!(canary.share(), 0.1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slightly_lower_error_rate_does_not_page() {
        let (engine, route) = engine_with(Enforcement::default());
        engine.tick();
        for _ in 0..60 {
            minute_of_traffic(&engine, &route, 9_857, 143, 0).await;
        }
        assert!(
            open_alert(&engine, 14.4).is_none(),
            "1.43% burns at 14.3x, under the 14.4x threshold"
        );
        assert!(
            open_alert(&engine, 6.0).is_some(),
            "while the 6x tier fires"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaching_backend_is_avoided_and_returns_after_sustained_compliance() {
        let enforcement = Enforcement {
            breach_window: Duration::from_secs(120),
            min_requests: 20,
            probe: 0.05,
            recovery: Duration::from_secs(180),
            ..Enforcement::default()
        };
        let (engine, route) = engine_with(enforcement);
        engine.tick();
        let primary = route.backends()[0].clone();
        minute_of_traffic(&engine, &route, 100, 0, 0).await;
        assert!(!primary.is_breaching());
        // 5% errors against a 0.1% allowance: breaching at the next evaluation.
        minute_of_traffic(&engine, &route, 95, 5, 0).await;
        assert!(primary.is_breaching());
        assert!(matches!(primary.standing(), Standing::Avoid { probe, .. } if probe == 0.05));
        let event = engine
            .events()
            .list(None)
            .into_iter()
            .find(|e| e.kind == EventKind::BackendBreach)
            .unwrap();
        assert_eq!(event.backend.as_deref(), Some("primary"));
        assert_eq!(event.trigger.indicator, Indicator::Availability);
        // The 2-minute window holds the bad minute (5 of 100) and the live, empty one.
        assert!(
            (event.trigger.measured - 0.05).abs() < 1e-9,
            "{}",
            event.trigger.measured
        );

        // Probes come back clean. The bad minute leaves the window at the next evaluation,
        // which starts the compliant run; 3 minutes of it are needed: avoided for three more
        // evaluations…
        for _ in 0..3 {
            minute_of_traffic(&engine, &route, 30, 0, 0).await;
            assert!(primary.is_breaching());
        }
        // …and restored at the fourth, 180s after the first compliant one.
        minute_of_traffic(&engine, &route, 30, 0, 0).await;
        assert!(!primary.is_breaching());
        assert_eq!(primary.standing(), Standing::Use);
        assert!(!event.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn too_little_traffic_neither_breaches_nor_recovers() {
        let (engine, route) = engine_with(Enforcement::default());
        engine.tick();
        minute_of_traffic(&engine, &route, 5, 5, 0).await;
        assert!(
            !route.backends()[0].is_breaching(),
            "10 requests are under the minimum volume"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn low_priority_traffic_is_shed_only_while_paging_with_no_compliant_backend() {
        let enforcement = Enforcement {
            shedding: Some(Shedding {
                fraction: 1.0,
                retry_after: Duration::from_secs(30),
            }),
            ..Enforcement::default()
        };
        let (engine, route) = engine_with(enforcement);
        engine.tick();
        let not_asked = || -> Priority { panic!("the priority is asked only while paging") };
        assert_eq!(route.admit(not_asked), Admission::Admit);
        for _ in 0..6 {
            // Both backends failing half their requests.
            for backend in 0..2 {
                for _ in 0..50 {
                    for class in [Class::Good, Class::Bad] {
                        route.record(class, Duration::from_millis(5), false);
                        route.record_try(backend, class, Duration::from_millis(5));
                    }
                }
            }
            tokio::time::advance(Duration::from_secs(60)).await;
            engine.tick();
        }
        assert!(route.is_paging());
        assert!(route.backends().iter().all(|b| b.is_breaching()));
        assert_eq!(
            route.admit(|| Priority::Low),
            Admission::Shed {
                retry_after: Duration::from_secs(30)
            }
        );
        assert_eq!(route.admit(|| Priority::Normal), Admission::Admit);
        assert_eq!(route.admit(|| Priority::Critical), Admission::Admit);
        assert_eq!(route.actions().shed.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_strict_route_rejects_non_critical_traffic_once_the_budget_is_spent() {
        let (engine, route) = engine_with(Enforcement {
            strict: true,
            ..Enforcement::default()
        });
        engine.tick();
        minute_of_traffic(&engine, &route, 990, 10, 0).await;
        assert!(route.is_budget_exhausted(), "1% bad against a 0.1% budget");
        assert_eq!(route.admit(|| Priority::Normal), Admission::Reject);
        assert_eq!(route.admit(|| Priority::Critical), Admission::Admit);
        let event = engine
            .events()
            .list(None)
            .into_iter()
            .find(|e| e.kind == EventKind::BudgetExhausted)
            .unwrap();
        assert_eq!(event.action, Action::Reject);
        assert_eq!(event.requests_affected.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_with_the_same_objective_keeps_the_state_and_a_changed_one_keeps_history() {
        let (engine, route) = engine_with(Enforcement::default());
        engine.tick();
        minute_of_traffic(&engine, &route, 100, 1, 0).await;
        let backends = [Arc::from("primary"), Arc::from("secondary")];
        let same = engine.route(
            &Arc::from("orders"),
            objective(),
            Enforcement::default(),
            &backends,
        );
        assert!(Arc::ptr_eq(&route, &same));
        let changed = Objective {
            availability: Some(0.99),
            ..objective()
        };
        let new = engine.route(
            &Arc::from("orders"),
            changed,
            Enforcement::default(),
            &backends,
        );
        assert!(!Arc::ptr_eq(&route, &new));
        let now = engine.clock().minute();
        assert_eq!(
            new.meter().window(now, Duration::from_secs(3600)).total(),
            101.0
        );
        assert_eq!(
            new.backends()[0]
                .meter()
                .window(now, Duration::from_secs(3600))
                .total(),
            101.0
        );
    }
}
