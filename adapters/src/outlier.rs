//! Passive outlier detection: a target that fails several times in a row is ejected for a while,
//! and each further ejection lasts longer (Envoy's consecutive-failure detector).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// When to eject and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject the target.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// The longest an ejection may last.
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// The outlier state of one target (an endpoint, or a whole backend).
#[derive(Debug, Default)]
pub struct OutlierDetector {
    consecutive_failures: AtomicU32,
    /// Whether an ejection may be in force: set with it, cleared once it is seen to have
    /// passed (both under the lock). A target that is not ejected, the usual case, is told so
    /// without taking the lock on every request.
    ejected: AtomicBool,
    state: Mutex<Ejection>,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    times: u32,
}

/// What a recorded failure did.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureEffect {
    /// Still below the threshold.
    Counted,
    /// This failure ejected the target for the given time.
    Ejected(Duration),
}

impl OutlierDetector {
    /// Records a success: the run of failures is broken.
    pub fn record_success(&self) {
        // Only touch the cache line when there is something to reset.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Records a failure, ejecting the target if it reaches the policy's threshold.
    pub fn record_failure(&self, policy: &OutlierPolicy) -> FailureEffect {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if failures < policy.consecutive_failures.max(1) {
            return FailureEffect::Counted;
        }
        self.consecutive_failures.store(0, Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if state.until.is_some_and(|until| until > now) {
            return FailureEffect::Counted;
        }
        state.times = state.times.saturating_add(1);
        let duration = policy
            .base_ejection
            .saturating_mul(state.times)
            .min(policy.max_ejection);
        state.until = Some(now + duration);
        self.ejected.store(true, Relaxed);
        FailureEffect::Ejected(duration)
    }

    /// Whether the target is ejected now.
    pub fn is_ejected(&self) -> bool {
        if !self.ejected.load(Relaxed) {
            return false;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ejected = state.until.is_some_and(|until| until > Instant::now());
        if !ejected {
            self.ejected.store(false, Relaxed);
        }
        ejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_for_growing_times() {
        let detector = OutlierDetector::default();
        let policy = policy();
        assert_eq!(detector.record_failure(&policy), FailureEffect::Counted);
        detector.record_success();
        assert_eq!(detector.record_failure(&policy), FailureEffect::Counted);
        assert_eq!(detector.record_failure(&policy), FailureEffect::Counted);
        assert_eq!(
            detector.record_failure(&policy),
            FailureEffect::Ejected(Duration::from_secs(10))
        );
        assert!(detector.is_ejected());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!detector.is_ejected());
        for _ in 0..2 {
            detector.record_failure(&policy);
        }
        assert_eq!(
            detector.record_failure(&policy),
            FailureEffect::Ejected(Duration::from_secs(20))
        );
        assert!(
            detector.is_ejected(),
            "ejected again once the first has passed"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        for _ in 0..2 {
            detector.record_failure(&policy);
        }
        // Third ejection would be 30s; capped at 25s.
        assert_eq!(
            detector.record_failure(&policy),
            FailureEffect::Ejected(Duration::from_secs(25))
        );
    }
}
