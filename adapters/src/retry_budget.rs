//! A retry budget: retries in flight may be at most a percentage of the requests in flight
//! (Envoy's `retry_budget`), and beyond that a steady floor of retries per second is always
//! allowed (linkerd2-proxy's `min_retries_per_second`). The ratio keeps retries from
//! multiplying load on a backend that is already failing; the rate floor keeps a burst of
//! simultaneous failures — every keep-alive connection to an upstream that just died breaks at
//! once — from exhausting a small concurrency allowance while a healthy backend waits.
//!
//! A request that never reached its backend (no connection could be made, no endpoint was
//! available) is moved to another backend without spending the budget: it adds no load to the
//! one that failed (the route's failover decides that).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// The budget's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetPolicy {
    /// Retries in flight as a fraction of requests in flight (0.2 = 20%).
    pub ratio: f64,
    /// Retries that are always allowed in flight, whatever the load.
    pub min_concurrent: usize,
    /// Retries per second allowed beyond the concurrency allowance (a token bucket holding at
    /// most one second's worth).
    pub min_per_second: f64,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_concurrent: 3,
            min_per_second: 10.0,
        }
    }
}

/// The live budget of one route.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    active_requests: AtomicUsize,
    active_retries: AtomicUsize,
    /// Tokens of the rate floor, and when they were last topped up. Only touched when the
    /// concurrency allowance is spent, so never on the ordinary request path.
    floor: Mutex<(f64, Instant)>,
}

/// Held while a request is in flight; counts it toward the budget.
#[derive(Debug)]
pub struct RequestGuard<'a>(&'a RetryBudget);

/// Held while a retry is in flight.
#[derive(Debug)]
pub struct RetryGuard(Arc<RetryBudget>);

impl RetryBudget {
    /// A budget with no traffic yet (its rate floor full).
    pub fn new(policy: RetryBudgetPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            active_requests: AtomicUsize::new(0),
            active_retries: AtomicUsize::new(0),
            floor: Mutex::new((policy.min_per_second, Instant::now())),
        })
    }

    /// Counts a request as in flight until the guard drops. The guard borrows the budget: a
    /// handle of its own would be two more atomic read-modify-writes per request.
    pub fn start_request(&self) -> RequestGuard<'_> {
        self.active_requests.fetch_add(1, Relaxed);
        RequestGuard(self)
    }

    /// Takes room for one retry, or `None` when the budget is spent.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let allowed = ((self.active_requests.load(Relaxed) as f64 * self.policy.ratio) as usize)
            .max(self.policy.min_concurrent);
        let mut current = self.active_retries.load(Relaxed);
        loop {
            if current >= allowed {
                return self.take_from_floor().then(|| self.retry_unbudgeted());
            }
            match self
                .active_retries
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(RetryGuard(self.clone())),
                Err(seen) => current = seen,
            }
        }
    }

    /// Counts a retry in flight that the budget does not limit (a request that never reached
    /// its backend, moved to another one).
    pub fn retry_unbudgeted(self: &Arc<Self>) -> RetryGuard {
        self.active_retries.fetch_add(1, Relaxed);
        RetryGuard(self.clone())
    }

    /// Takes one token of the rate floor, if there is one.
    fn take_from_floor(&self) -> bool {
        let rate = self.policy.min_per_second;
        if rate <= 0.0 {
            return false;
        }
        let mut floor = self.floor.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = &mut *floor;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Relaxed);
    }
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_fraction_of_active_requests_with_a_floor() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 0.25,
            min_concurrent: 2,
            min_per_second: 0.0,
        });
        let requests: Vec<_> = (0..20).map(|_| budget.start_request()).collect();
        let retries: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(retries.len(), 5);
        drop(retries);
        drop(requests);
        let _one = budget.start_request();
        let floor: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(floor.len(), 2);
    }

    /// Eight requests fail at once (an upstream died under eight keep-alive connections): the
    /// concurrency allowance alone would refuse five of their retries; the rate floor lets all
    /// eight through, and refills at its rate.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_is_retried_within_the_rate_floor() {
        let budget = RetryBudget::new(RetryBudgetPolicy::default());
        let _requests: Vec<_> = (0..8).map(|_| budget.start_request()).collect();
        let burst: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(burst.len(), 3 + 10, "3 concurrent plus 10 per second");
        assert!(budget.try_retry().is_none(), "the floor is spent");
        tokio::time::advance(Duration::from_millis(500)).await;
        let refilled: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(refilled.len(), 5, "half a second refills five tokens");
    }
}
