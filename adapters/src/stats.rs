//! Lock-free counters kept per backend, read by the admin API's `/metrics`.
//!
//! Every field is an atomic updated with relaxed ordering: recording never takes a lock, and a
//! reader sees each counter at some recent value, which is all Prometheus asks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::BackendErrorKind;

/// Upper bounds (seconds) of the latency histogram buckets, Prometheus-style.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket latency histogram, Prometheus-style: [`LATENCY_BUCKETS`] by default, or
/// other bounds ([`LatencyHistogram::with_bounds`], e.g. microsecond buckets for plugin calls).
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::with_bounds(&LATENCY_BUCKETS)
    }
}

impl LatencyHistogram {
    /// A histogram with these upper bounds (seconds, ascending) and `+Inf`.
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn record(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|upper| secs <= *upper)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Cumulative bucket counts paired with their upper bound (`None` is `+Inf`).
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut running = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                running += bucket.load(Relaxed);
                (self.bounds.get(i).copied(), running)
            })
            .collect()
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Relaxed) as f64 / 1e9
    }

    /// Number of observations: the buckets' sum, so that it always equals the `+Inf` bucket's
    /// cumulative count (and a record is one atomic add fewer).
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Relaxed)).sum()
    }

    /// The upper bound (seconds) of the bucket holding the `q` quantile; `None` without
    /// observations or above the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let cumulative = self.cumulative();
        let total = cumulative.last().map_or(0, |(_, n)| *n);
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        cumulative
            .into_iter()
            .find(|(_, n)| *n >= rank)
            .and_then(|(bound, _)| bound)
    }
}

/// All error kinds, in the order [`BackendStats`] stores them.
pub const ERROR_KINDS: [BackendErrorKind; 12] = [
    BackendErrorKind::Connect,
    BackendErrorKind::Timeout,
    BackendErrorKind::Reset,
    BackendErrorKind::InvalidResponse,
    BackendErrorKind::Auth,
    BackendErrorKind::Throttled,
    BackendErrorKind::FunctionError,
    BackendErrorKind::ServiceError,
    BackendErrorKind::NoHealthyEndpoint,
    BackendErrorKind::ClientBody,
    BackendErrorKind::BodyTooLarge,
    BackendErrorKind::Config,
];

/// What happened to the tries sent to one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Tries started.
    pub tries: AtomicU64,
    /// Tries in flight now.
    pub in_flight: AtomicU64,
    /// Responses by status class: index 0 is 1xx … index 4 is 5xx.
    pub responses_by_class: [AtomicU64; 5],
    /// Failed tries by [`BackendErrorKind`], in [`ERROR_KINDS`] order.
    pub errors_by_kind: [AtomicU64; ERROR_KINDS.len()],
    /// Latency of every try that produced a response head.
    pub latency: LatencyHistogram,
    /// Endpoints ejected by outlier detection.
    pub ejections: AtomicU64,
    /// Active health checks that failed.
    pub health_check_failures: AtomicU64,
    /// Tries abandoned in flight because the client went away.
    pub cancelled: AtomicU64,
}

/// Counts a try as in flight until dropped; a try dropped before [`InFlight::finish`] is
/// counted as cancelled. The gauge cannot leak, whatever drops the try's future. It borrows
/// the backend's counters: a handle of its own would be two more atomic read-modify-writes
/// per try.
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a BackendStats,
    finished: bool,
}

impl<'a> InFlight<'a> {
    /// Starts counting a try of the backend whose counters are `stats`.
    pub fn start(stats: &'a BackendStats) -> Self {
        stats.tries.fetch_add(1, Relaxed);
        stats.in_flight.fetch_add(1, Relaxed);
        Self {
            stats,
            finished: false,
        }
    }

    /// The try ended with an answer or an error, which the caller records in the counters
    /// returned. The try stops counting as in flight when this is dropped.
    pub fn finish(&mut self) -> &'a BackendStats {
        self.finished = true;
        self.stats
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Relaxed);
        }
    }
}

impl BackendStats {
    /// Records a try that got a response with `status` after `latency`.
    pub fn record_response(&self, status: http::StatusCode, latency: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses_by_class[class].fetch_add(1, Relaxed);
        self.latency.record(latency);
    }

    /// Records a try that failed with `kind`.
    pub fn record_error(&self, kind: BackendErrorKind) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors_by_kind[i].fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_sums() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(20));
        h.record(Duration::from_secs(60));
        let cumulative = h.cumulative();
        assert_eq!(cumulative[0], (Some(0.0005), 1));
        assert_eq!(cumulative[5], (Some(0.025), 2));
        assert_eq!(cumulative.last().unwrap(), &(None, 3));
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.0203).abs() < 1e-9);
    }
}
