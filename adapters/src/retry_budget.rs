//! A retry budget: retries in flight may be at most a percentage of the requests in flight, with
//! a small floor so that a quiet route can still retry (Envoy's `retry_budget`). It keeps retries
//! from multiplying load on a backend that is already failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The budget's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetPolicy {
    /// Retries in flight as a fraction of requests in flight (0.2 = 20%).
    pub ratio: f64,
    /// Retries that are always allowed in flight, whatever the load.
    pub min_concurrent: usize,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_concurrent: 3,
        }
    }
}

/// The live budget of one route.
#[derive(Debug)]
pub struct RetryBudget {
    policy: RetryBudgetPolicy,
    active_requests: AtomicUsize,
    active_retries: AtomicUsize,
}

/// Held while a request is in flight; counts it toward the budget.
#[derive(Debug)]
pub struct RequestGuard(Arc<RetryBudget>);

/// Held while a retry is in flight.
#[derive(Debug)]
pub struct RetryGuard(Arc<RetryBudget>);

impl RetryBudget {
    /// A budget with no traffic yet.
    pub fn new(policy: RetryBudgetPolicy) -> Arc<Self> {
        Arc::new(Self {
            policy,
            active_requests: AtomicUsize::new(0),
            active_retries: AtomicUsize::new(0),
        })
    }

    /// Counts a request as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.active_requests.fetch_add(1, Relaxed);
        RequestGuard(self.clone())
    }

    /// Takes room for one retry, or `None` when the budget is spent.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let allowed = ((self.active_requests.load(Relaxed) as f64 * self.policy.ratio) as usize)
            .max(self.policy.min_concurrent);
        let mut current = self.active_retries.load(Relaxed);
        loop {
            if current >= allowed {
                return None;
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
}

impl Drop for RequestGuard {
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

    #[test]
    fn retries_are_a_fraction_of_active_requests_with_a_floor() {
        let budget = RetryBudget::new(RetryBudgetPolicy {
            ratio: 0.25,
            min_concurrent: 2,
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
}
