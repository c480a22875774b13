//! SLO-guarded canary releases: a route's canary backend gets a growing share of its traffic,
//! step by step, while it complies with the route's objective, and loses it at once when it
//! breaches.
//!
//! Each evaluation of the route (every [`EVALUATION_INTERVAL`](super::EVALUATION_INTERVAL))
//! judges the canary on the route's SLIs over the current step so far, against the objective
//! or against the other backends (the baseline) over the same minutes:
//!
//! * **Breach** — the canary is *significantly* worse than allowed, not merely worse by a few
//!   requests: with `compare: objective`, the lower bound of its bad ratio (Wilson score, one
//!   sided, 99%) is above the objective's allowance; with `compare: baseline`, a one-sided
//!   two-proportion z-test says its bad ratio is above the baseline's (z > 2.326, p < 0.01) by
//!   more than half the allowance. Latency counts the same way, as the share of requests over
//!   the threshold. A breach rolls back (share 0) or pauses, as configured; an event records
//!   the values that triggered it.
//! * **Advance** — `step_for` has passed at the step, with at least `min_requests` canary
//!   requests, no breach, and the canary's bad ratio itself at or under what it is compared
//!   with. Too little traffic, or a ratio that is worse but not yet significantly so, holds the
//!   step: a 1% canary is never promoted on noise.
//! * After the last step (100%) has run `step_for` compliantly, the canary is **promoted**: it
//!   keeps all the traffic until the operator makes it the route's backend in the
//!   configuration.
//!
//! The state (phase, step, when it started, the timeline) is saved with the SLA history, kept
//! across reloads, and shared by a cluster's replicas; operators promote, pause, resume and
//! abort through the admin API.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::clock::UnixMillis;
use super::meter::Aggregate;
use super::objective::{Indicator, Objective};

/// One-sided 99% normal quantile.
const Z_99: f64 = 2.326;
/// Timeline entries kept.
const TIMELINE: usize = 200;

/// How a canary is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// Against the other backends of the route over the same minutes.
    Baseline,
    /// Against the route's objective.
    Objective,
}

/// What a breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBreach {
    /// Share 0 at once.
    Rollback,
    /// Keep the step's share; advance no more until resumed.
    Pause,
}

/// A canary's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    /// Shares of the route's traffic, one per step, increasing, the last 1.0.
    pub steps: Vec<f64>,
    /// Compliant time needed at a step before the next.
    pub step_for: Duration,
    /// Canary requests needed at a step before it can be judged compliant.
    pub min_requests: u64,
    /// What it is judged against.
    pub compare: Compare,
    /// What a breach does.
    pub on_breach: OnBreach,
}

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Taking its step's share and advancing while it complies.
    Progressing,
    /// Taking its step's share, not advancing (a breach with `on_breach: pause`, or the
    /// operator).
    Paused,
    /// No traffic: it breached, or the operator aborted it.
    RolledBack,
    /// It passed the last step: all the traffic.
    Promoted,
}

/// One SLI's comparison at an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Which SLI.
    pub indicator: Indicator,
    /// The canary's valid events over the step so far.
    pub canary_requests: f64,
    /// Its bad ÷ valid.
    pub canary_bad_ratio: f64,
    /// The baseline's valid events over the same minutes (`compare: baseline`).
    pub baseline_requests: f64,
    /// The baseline's bad ÷ valid.
    pub baseline_bad_ratio: f64,
    /// What the canary's ratio is held to: the objective's allowance, or the baseline's ratio.
    pub limit: f64,
    /// The test statistic: the Wilson lower bound (objective) or z (baseline).
    pub statistic: f64,
    /// `ok`, `worse` (not significantly: holds the step), `breach`, `too_little_traffic`.
    pub verdict: Verdict,
}

/// A comparison's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within what it is compared with.
    Ok,
    /// Worse, but not significantly: the step holds.
    Worse,
    /// Significantly worse.
    Breach,
    /// Fewer than `min_requests`: no judgement yet.
    TooLittleTraffic,
}

/// What happened, in the canary's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When.
    pub at_ms: UnixMillis,
    /// `started`, `advanced`, `paused`, `resumed`, `rolled_back`, `promoted`, `aborted`.
    pub what: String,
    /// The step after it (index into `steps`).
    pub step: usize,
    /// The canary's share after it.
    pub share: f64,
    /// `gateway` (a verdict) or `operator`.
    pub by: String,
    /// The comparisons that decided it (for verdicts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Comparison>,
}

/// A canary's state: what is saved, restored and shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryState {
    /// The canary backend.
    pub backend: String,
    /// Bumped by every change: the higher wins when replicas share it.
    pub version: u64,
    /// Where it stands.
    pub phase: Phase,
    /// The current step (index into `steps`).
    pub step: usize,
    /// When the current step started.
    pub step_started_ms: UnixMillis,
    /// The last evaluation's comparisons.
    #[serde(default)]
    pub last: Vec<Comparison>,
    /// What happened, oldest first.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

/// What an evaluation changed, for the event log.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// It moved to the next step.
    Advanced,
    /// It passed the last step.
    Promoted,
    /// It breached: the comparison that did it and what was done.
    Breached(Comparison, OnBreach),
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// To the next step now (from paused too).
    Promote,
    /// Hold the current step.
    Pause,
    /// Progress again: a paused canary from its step (restarted), a rolled-back one from the
    /// first step.
    Resume,
    /// Share 0.
    Abort,
}

impl Command {
    /// From its name in the API (`promote`, `pause`, `resume`, `abort`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "promote" => Some(Command::Promote),
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "abort" => Some(Command::Abort),
            _ => None,
        }
    }
}

/// A route's canary: its settings, its state, and its share for the request path.
#[derive(Debug)]
pub struct Canary {
    spec: CanarySpec,
    /// The canary's index among the route's backends.
    backend: usize,
    state: Mutex<CanaryState>,
    /// The share, as f64 bits: read lock-free per request.
    share: AtomicU64,
}

impl Canary {
    /// A canary starting at its first step now.
    pub fn new(spec: CanarySpec, backend: usize, backend_id: &str, now_ms: UnixMillis) -> Self {
        let first = spec.steps.first().copied().unwrap_or(0.0);
        let state = CanaryState {
            backend: backend_id.to_owned(),
            version: 1,
            phase: Phase::Progressing,
            step: 0,
            step_started_ms: now_ms,
            last: Vec::new(),
            timeline: vec![TimelineEntry {
                at_ms: now_ms,
                what: "started".into(),
                step: 0,
                share: first,
                by: "gateway".into(),
                comparisons: Vec::new(),
            }],
        };
        let canary = Self {
            spec,
            backend,
            state: Mutex::new(state),
            share: AtomicU64::new(0),
        };
        canary.publish(&canary.lock());
        canary
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CanaryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings.
    pub fn spec(&self) -> &CanarySpec {
        &self.spec
    }

    /// The canary's index among the route's backends.
    pub fn backend(&self) -> usize {
        self.backend
    }

    /// The canary's share of the route's traffic now (0 to 1). Lock-free.
    pub fn share(&self) -> f64 {
        f64::from_bits(self.share.load(Relaxed))
    }

    /// The state.
    pub fn state(&self) -> CanaryState {
        self.lock().clone()
    }

    /// Adopts a saved or shared state, if it is about the same backend and within the steps
    /// (a configuration with other steps starts afresh). Returns whether it was taken.
    pub fn restore(&self, state: CanaryState) -> bool {
        if state.step >= self.spec.steps.len() {
            return false;
        }
        let mut current = self.lock();
        if state.backend != current.backend {
            return false;
        }
        *current = state;
        self.publish(&current);
        true
    }

    /// Adopts a replica's state when it is newer than this one (cluster mode).
    pub fn merge(&self, state: CanaryState) -> bool {
        let newer = state.version > self.lock().version;
        newer && self.restore(state)
    }

    fn step_share(&self, step: usize) -> f64 {
        self.spec.steps.get(step).copied().unwrap_or(1.0)
    }

    fn publish(&self, state: &CanaryState) {
        let share = match state.phase {
            Phase::RolledBack => 0.0,
            Phase::Promoted => 1.0,
            Phase::Progressing | Phase::Paused => self.step_share(state.step),
        };
        self.share.store(share.to_bits(), Relaxed);
    }

    fn record(
        &self,
        state: &mut CanaryState,
        now_ms: UnixMillis,
        what: &str,
        by: &str,
        comparisons: Vec<Comparison>,
    ) {
        state.version += 1;
        self.publish(state);
        let share = self.share();
        state.timeline.push(TimelineEntry {
            at_ms: now_ms,
            what: what.into(),
            step: state.step,
            share,
            by: by.into(),
            comparisons,
        });
        if state.timeline.len() > TIMELINE {
            let excess = state.timeline.len() - TIMELINE;
            state.timeline.drain(..excess);
        }
    }

    /// One evaluation: `canary` is the canary's counts over the step so far, `baseline` the
    /// other backends' over the same minutes.
    pub fn evaluate(
        &self,
        objective: &Objective,
        canary: &Aggregate,
        baseline: &Aggregate,
        now_ms: UnixMillis,
    ) -> Option<Transition> {
        let mut state = self.lock();
        if state.phase != Phase::Progressing {
            return None;
        }
        let comparisons = judge(&self.spec, objective, canary, baseline);
        state.last = comparisons.clone();
        if let Some(breach) = comparisons.iter().find(|c| c.verdict == Verdict::Breach) {
            let breach = breach.clone();
            match self.spec.on_breach {
                OnBreach::Rollback => {
                    state.phase = Phase::RolledBack;
                    self.record(&mut state, now_ms, "rolled_back", "gateway", comparisons);
                }
                OnBreach::Pause => {
                    state.phase = Phase::Paused;
                    self.record(&mut state, now_ms, "paused", "gateway", comparisons);
                }
            }
            return Some(Transition::Breached(breach, self.spec.on_breach));
        }
        let served = now_ms - state.step_started_ms >= self.spec.step_for.as_millis() as i64;
        let compliant = comparisons.iter().all(|c| c.verdict == Verdict::Ok);
        if !(served && compliant) {
            return None;
        }
        if state.step + 1 >= self.spec.steps.len() {
            state.phase = Phase::Promoted;
            self.record(&mut state, now_ms, "promoted", "gateway", comparisons);
            return Some(Transition::Promoted);
        }
        state.step += 1;
        state.step_started_ms = now_ms;
        self.record(&mut state, now_ms, "advanced", "gateway", comparisons);
        Some(Transition::Advanced)
    }

    /// Carries out an operator's command; an error says why it does not apply.
    pub fn command(&self, command: Command, now_ms: UnixMillis) -> Result<CanaryState, String> {
        let mut state = self.lock();
        let what = match (command, state.phase) {
            (Command::Promote, Phase::Promoted) => {
                return Err("the canary is already promoted".into());
            }
            (Command::Promote, Phase::RolledBack) => {
                return Err("the canary was rolled back: resume it first".into());
            }
            (Command::Promote, _) => {
                state.phase = Phase::Progressing;
                if state.step + 1 >= self.spec.steps.len() {
                    state.phase = Phase::Promoted;
                    "promoted"
                } else {
                    state.step += 1;
                    state.step_started_ms = now_ms;
                    "advanced"
                }
            }
            (Command::Pause, Phase::Progressing) => {
                state.phase = Phase::Paused;
                "paused"
            }
            (Command::Pause, phase) => {
                return Err(format!(
                    "only a progressing canary can be paused (it is {})",
                    phase_name(phase)
                ));
            }
            (Command::Resume, Phase::Paused) => {
                state.phase = Phase::Progressing;
                state.step_started_ms = now_ms;
                "resumed"
            }
            // A rolled-back canary starts over from the first step: its share was 0, and
            // whatever made it breach has to earn its way back up.
            (Command::Resume, Phase::RolledBack) => {
                state.phase = Phase::Progressing;
                state.step = 0;
                state.step_started_ms = now_ms;
                "resumed"
            }
            (Command::Resume, phase) => {
                return Err(format!(
                    "only a paused or rolled-back canary can be resumed (it is {})",
                    phase_name(phase)
                ));
            }
            (Command::Abort, Phase::RolledBack) => {
                return Err("the canary is already rolled back".into());
            }
            (Command::Abort, _) => {
                state.phase = Phase::RolledBack;
                "aborted"
            }
        };
        self.record(&mut state, now_ms, what, "operator", Vec::new());
        Ok(state.clone())
    }

    /// How far the current step reaches back, for the counts [`Canary::evaluate`] needs: the
    /// time since the step started, at least a minute.
    pub fn step_window(&self, now_ms: UnixMillis) -> Duration {
        let started = self.lock().step_started_ms;
        Duration::from_millis((now_ms - started).max(60_000) as u64)
    }
}

/// A canary as reports show it: its settings, where it stands, the last comparison and the
/// timeline.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    /// The canary backend.
    pub backend: String,
    /// `progressing`, `paused`, `rolled_back` or `promoted`.
    pub phase: Phase,
    /// Its share of the route's traffic now.
    pub share: f64,
    /// The current step (0-based) and every step's share.
    pub step: usize,
    /// Every step's share.
    pub steps: Vec<f64>,
    /// When the current step started.
    pub step_started_ms: UnixMillis,
    /// Compliant time needed at a step, in seconds.
    pub step_for_seconds: u64,
    /// Canary requests needed at a step.
    pub min_requests: u64,
    /// `baseline` or `objective`.
    pub compare: Compare,
    /// `rollback` or `pause`.
    pub on_breach: OnBreach,
    /// The last evaluation's comparison, per SLI.
    pub last: Vec<Comparison>,
    /// What happened, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

impl Canary {
    /// The canary as reports show it.
    pub fn report(&self) -> CanaryReport {
        let state = self.state();
        CanaryReport {
            backend: state.backend,
            phase: state.phase,
            share: self.share(),
            step: state.step,
            steps: self.spec.steps.clone(),
            step_started_ms: state.step_started_ms,
            step_for_seconds: self.spec.step_for.as_secs(),
            min_requests: self.spec.min_requests,
            compare: self.spec.compare,
            on_breach: self.spec.on_breach,
            last: state.last,
            timeline: state.timeline,
        }
    }
}

impl accord_adapters::failover::CanaryShare for Canary {
    fn share(&self) -> f64 {
        Canary::share(self)
    }
}

/// As the API writes a phase.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "progressing",
        Phase::Paused => "paused",
        Phase::RolledBack => "rolled_back",
        Phase::Promoted => "promoted",
    }
}

/// Compares the canary with the objective or the baseline, per SLI (see the module doc).
pub fn judge(
    spec: &CanarySpec,
    objective: &Objective,
    canary: &Aggregate,
    baseline: &Aggregate,
) -> Vec<Comparison> {
    objective
        .indicators()
        .into_iter()
        .map(|(indicator, target)| {
            let c = objective.events(indicator, canary);
            let b = objective.events(indicator, baseline);
            let allowance = 1.0 - target;
            let (n1, k1) = (c.valid, c.bad());
            let (n2, k2) = (b.valid, b.bad());
            let ratio = |k: f64, n: f64| if n > 0.0 { k / n } else { 0.0 };
            let (p1, p2) = (ratio(k1, n1), ratio(k2, n2));
            // With no baseline traffic over the step (the canary at 100%), the objective is
            // the reference.
            let against_baseline = spec.compare == Compare::Baseline && n2 > 0.0;
            let (limit, statistic, significant) = if against_baseline {
                let z = two_proportion_z(k1, n1, k2, n2);
                (p2, z, z > Z_99 && p1 - p2 > allowance / 2.0)
            } else {
                let lower = wilson_lower(k1, n1, Z_99);
                (allowance, lower, lower > allowance)
            };
            let verdict = if significant && n1 > 0.0 {
                Verdict::Breach
            } else if n1 < spec.min_requests as f64 {
                Verdict::TooLittleTraffic
            } else if p1
                > limit
                    + if against_baseline {
                        allowance / 2.0
                    } else {
                        0.0
                    }
            {
                Verdict::Worse
            } else {
                Verdict::Ok
            };
            Comparison {
                indicator,
                canary_requests: n1,
                canary_bad_ratio: p1,
                baseline_requests: n2,
                baseline_bad_ratio: p2,
                limit,
                statistic,
                verdict,
            }
        })
        .collect()
}

/// The lower bound of the Wilson score interval for `k` successes in `n` trials.
fn wilson_lower(k: f64, n: f64, z: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    let p = k / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

/// The z statistic of "the first proportion is larger than the second" (pooled variance).
fn two_proportion_z(k1: f64, n1: f64, k2: f64, n2: f64) -> f64 {
    if n1 <= 0.0 || n2 <= 0.0 {
        return 0.0;
    }
    let (p1, p2) = (k1 / n1, k2 / n2);
    let pooled = (k1 + k2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 {
        return if p1 > p2 { f64::INFINITY } else { 0.0 };
    }
    (p1 - p2) / se
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;
    use crate::sla::meter::Meter;

    fn spec(compare: Compare, on_breach: OnBreach) -> CanarySpec {
        CanarySpec {
            steps: vec![0.01, 0.05, 0.25, 0.5, 1.0],
            step_for: Duration::from_secs(300),
            min_requests: 200,
            compare,
            on_breach,
        }
    }

    fn counts(good: u64, bad: u64) -> Aggregate {
        let meter = Meter::new(None, 2);
        for _ in 0..good {
            meter.record(Class::Good, Duration::from_millis(10));
        }
        for _ in 0..bad {
            meter.record(Class::Bad, Duration::from_millis(10));
        }
        meter.window_counts(0, Duration::from_secs(60))
    }

    fn objective() -> Objective {
        Objective::availability(0.999, Duration::from_secs(30 * 86_400))
    }

    #[test]
    fn the_statistics_are_the_textbook_ones() {
        // Wilson 95% for 10/100: [0.0552, 0.1744].
        assert!((wilson_lower(10.0, 100.0, 1.96) - 0.0552).abs() < 1e-3);
        assert!(wilson_lower(0.0, 100.0, Z_99) < 1e-12);
        // 30/200 against 10/200: pooled 0.1, se 0.03, z = 0.1 / 0.03.
        assert!((two_proportion_z(30.0, 200.0, 10.0, 200.0) - 10.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_healthy_canary_advances_after_step_for_and_is_promoted_after_the_last_step() {
        let canary = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 0);
        assert_eq!(canary.share(), 0.01);
        let healthy = counts(500, 0);
        let none = counts(0, 0);
        // Compliant but not for step_for yet: holds.
        assert_eq!(canary.evaluate(&objective(), &healthy, &none, 60_000), None);
        let mut now = 300_000;
        for expected in [0.05, 0.25, 0.5, 1.0] {
            assert_eq!(
                canary.evaluate(&objective(), &healthy, &none, now),
                Some(Transition::Advanced)
            );
            assert_eq!(canary.share(), expected);
            now += 300_000;
        }
        assert_eq!(
            canary.evaluate(&objective(), &healthy, &none, now),
            Some(Transition::Promoted)
        );
        assert_eq!(canary.state().phase, Phase::Promoted);
        assert_eq!(canary.share(), 1.0);
        let whats: Vec<String> = canary
            .state()
            .timeline
            .iter()
            .map(|t| t.what.clone())
            .collect();
        assert_eq!(
            whats,
            [
                "started", "advanced", "advanced", "advanced", "advanced", "promoted"
            ]
        );
    }

    #[test]
    fn too_little_traffic_or_an_insignificant_excess_holds_the_step() {
        let canary = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 0);
        let few = counts(150, 0);
        assert_eq!(
            canary.evaluate(&objective(), &few, &counts(0, 0), 600_000),
            None
        );
        assert_eq!(canary.state().last[0].verdict, Verdict::TooLittleTraffic);
        // 1 bad in 300 is 0.33%, above 0.1%, but not significantly: neither breach nor advance.
        let noisy = counts(299, 1);
        assert_eq!(
            canary.evaluate(&objective(), &noisy, &counts(0, 0), 600_000),
            None
        );
        assert_eq!(canary.state().last[0].verdict, Verdict::Worse);
        assert_eq!(canary.share(), 0.01);
    }

    #[test]
    fn a_breach_rolls_back_at_once_with_the_values_that_triggered_it() {
        let canary = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 0);
        // 5% errors: significant with far fewer requests than min_requests.
        let failing = counts(95, 5);
        match canary.evaluate(&objective(), &failing, &counts(0, 0), 30_000) {
            Some(Transition::Breached(c, OnBreach::Rollback)) => {
                assert_eq!(c.verdict, Verdict::Breach);
                assert!((c.canary_bad_ratio - 0.05).abs() < 1e-9);
                assert!((c.limit - 0.001).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(canary.share(), 0.0);
        assert_eq!(canary.state().phase, Phase::RolledBack);
        assert_eq!(
            canary.evaluate(&objective(), &failing, &counts(0, 0), 60_000),
            None,
            "judged no more"
        );
    }

    #[test]
    fn against_the_baseline_only_a_significant_and_material_difference_breaches() {
        let canary = Canary::new(spec(Compare::Baseline, OnBreach::Pause), 1, "v2", 0);
        // Both at 2%: the canary is no worse than what runs today.
        assert_eq!(
            canary.evaluate(
                &objective(),
                &counts(490, 10),
                &counts(49_000, 1_000),
                10_000
            ),
            None
        );
        assert_eq!(canary.state().last[0].verdict, Verdict::Ok);
        // 6% against 2%: breach, and `on_breach: pause` keeps the step's share.
        let transition = canary.evaluate(
            &objective(),
            &counts(470, 30),
            &counts(49_000, 1_000),
            20_000,
        );
        assert!(matches!(
            transition,
            Some(Transition::Breached(_, OnBreach::Pause))
        ));
        assert_eq!(canary.state().phase, Phase::Paused);
        assert_eq!(canary.share(), 0.01);
    }

    #[test]
    fn operators_promote_pause_resume_and_abort() {
        let canary = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 0);
        canary.command(Command::Pause, 1).unwrap();
        assert_eq!(
            canary.evaluate(&objective(), &counts(500, 0), &counts(0, 0), 900_000),
            None,
            "a paused canary does not advance"
        );
        assert!(canary.command(Command::Pause, 2).is_err());
        canary.command(Command::Resume, 3).unwrap();
        assert_eq!(canary.state().step_started_ms, 3, "the step restarts");
        canary.command(Command::Promote, 4).unwrap();
        assert_eq!(canary.share(), 0.05);
        canary.command(Command::Abort, 5).unwrap();
        assert_eq!(canary.share(), 0.0);
        assert!(
            canary
                .command(Command::Promote, 6)
                .unwrap_err()
                .contains("resume it first")
        );
        canary.command(Command::Resume, 7).unwrap();
        assert_eq!(canary.share(), 0.01, "a rolled-back canary starts over");
        let by: Vec<String> = canary
            .state()
            .timeline
            .iter()
            .map(|t| t.by.clone())
            .collect();
        assert_eq!(by[1..], ["operator"; 5]);
    }

    #[test]
    fn a_restored_state_resumes_mid_step_and_a_newer_shared_one_wins() {
        let canary = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 0);
        canary.command(Command::Promote, 10).unwrap();
        canary.command(Command::Promote, 20).unwrap();
        let saved = canary.state();

        // A restart: a fresh canary restores the saved state, mid-step, and goes on from it.
        let restarted = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v2", 1_000);
        assert!(restarted.restore(saved.clone()));
        assert_eq!(restarted.share(), 0.25);
        assert_eq!(
            restarted.evaluate(&objective(), &counts(500, 0), &counts(0, 0), 20 + 299_000),
            None,
            "the step's time counts from before the restart"
        );
        assert_eq!(
            restarted.evaluate(&objective(), &counts(500, 0), &counts(0, 0), 20 + 300_000),
            Some(Transition::Advanced)
        );
        // Another backend's state, or an older one, is not taken.
        let other = Canary::new(spec(Compare::Objective, OnBreach::Rollback), 1, "v3", 0);
        assert!(!other.restore(saved.clone()));
        assert!(!restarted.merge(saved), "older than what it has");
    }
}
