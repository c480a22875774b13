//! A log-linear latency histogram: 16 linear sub-buckets per power of two, so every bucket is at
//! most 1/16 of its value wide and a reported percentile (the bucket's midpoint) is within ±3.2%
//! of the true value. Histograms of different minutes merge by adding bins, which is what lets
//! one window's percentiles be computed from its minutes.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Highest power of two tracked: 2^30 µs ≈ 18 minutes; slower requests land in the last bin.
const MAX_EXP: usize = 30;
/// Number of bins.
pub const BINS: usize = SUB + (MAX_EXP - SUB_BITS as usize + 1) * SUB;

/// The bin of a latency in microseconds.
pub fn bin_of(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros() as usize;
    if exp > MAX_EXP {
        return BINS - 1;
    }
    let sub = ((micros >> (exp - SUB_BITS as usize)) as usize) & (SUB - 1);
    SUB + (exp - SUB_BITS as usize) * SUB + sub
}

/// The range `[low, high)` of latencies (µs) a bin holds.
pub fn bin_range(bin: usize) -> (u64, u64) {
    if bin < SUB {
        return (bin as u64, bin as u64 + 1);
    }
    let exp = (bin - SUB) / SUB + SUB_BITS as usize;
    let sub = ((bin - SUB) % SUB) as u64;
    let shift = exp - SUB_BITS as usize;
    (
        ((SUB as u64) + sub) << shift,
        ((SUB as u64) + sub + 1) << shift,
    )
}

/// A histogram being recorded into concurrently.
#[derive(Debug)]
pub struct LiveHistogram {
    bins: Box<[AtomicU32]>,
}

impl Default for LiveHistogram {
    fn default() -> Self {
        Self {
            bins: (0..BINS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl LiveHistogram {
    /// Records one latency.
    #[inline]
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.bins[bin_of(micros)].fetch_add(1, Relaxed);
    }

    /// Takes the counts recorded so far, leaving zeros: what a minute's seal does.
    pub fn drain(&self) -> Histogram {
        let mut out = Histogram::default();
        for (i, bin) in self.bins.iter().enumerate() {
            if bin.load(Relaxed) != 0 {
                let n = bin.swap(0, Relaxed);
                if n != 0 {
                    out.bins.push((i as u16, u64::from(n)));
                }
            }
        }
        out
    }

    /// The counts recorded so far, without taking them.
    pub fn snapshot(&self) -> Histogram {
        let bins = self
            .bins
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Relaxed);
                (n != 0).then_some((i as u16, u64::from(n)))
            })
            .collect();
        Histogram { bins }
    }
}

/// A sealed histogram: the non-empty bins only, sorted by bin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `(bin, count)` pairs, ascending by bin.
    pub bins: Vec<(u16, u64)>,
}

impl Histogram {
    /// Adds `other` into this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        if other.bins.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len().max(other.bins.len()));
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    merged.push((x.0, x.1 + y.1));
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    merged.push(**x);
                    a.next();
                }
                (Some(_), Some(y)) => {
                    merged.push(**y);
                    b.next();
                }
                (Some(x), None) => {
                    merged.push(**x);
                    a.next();
                }
                (None, Some(y)) => {
                    merged.push(**y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.bins = merged;
    }

    /// A sparse histogram from dense bin counts.
    pub fn from_dense(dense: &[u64]) -> Histogram {
        let bins = dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 0)
            .map(|(i, n)| (i as u16, *n))
            .collect();
        Histogram { bins }
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|(_, n)| n).sum()
    }

    /// The latency at quantile `q` (0..=1), as the midpoint of its bin; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bin, n) in &self.bins {
            seen += n;
            if seen >= rank {
                let (low, high) = bin_range(usize::from(*bin));
                return Some(Duration::from_micros(low + (high - low) / 2));
            }
        }
        None
    }

    /// Latencies at or under `threshold` (bins entirely under it; a bin straddling the
    /// threshold counts as over, so the latency objective is never flattered).
    pub fn count_at_or_under(&self, threshold: Duration) -> u64 {
        let limit = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX);
        self.bins
            .iter()
            .filter(|(bin, _)| bin_range(usize::from(*bin)).1 <= limit + 1)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bin_that_holds_it() {
        for micros in (0..5000).chain([65_535, 65_536, 1_000_000, 123_456_789]) {
            let (low, high) = bin_range(bin_of(micros));
            assert!(
                low <= micros && micros < high,
                "{micros} not in [{low}, {high})"
            );
            assert!((high - low) as f64 <= (low.max(16) as f64) / 16.0 + 1.0);
        }
    }

    #[test]
    fn quantiles_have_bounded_relative_error() {
        let live = LiveHistogram::default();
        for ms in 1..=1000u64 {
            live.record(Duration::from_millis(ms));
        }
        let h = live.drain();
        assert_eq!(h.count(), 1000);
        for (q, exact_ms) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1000.0;
            let error = (got - exact_ms).abs() / exact_ms;
            assert!(error <= 0.033, "p{q}: {got} vs {exact_ms} ({error})");
        }
        assert_eq!(live.drain().count(), 0, "drain leaves zeros");
    }

    #[test]
    fn histograms_merge_by_adding_bins() {
        let (a, b) = (LiveHistogram::default(), LiveHistogram::default());
        a.record(Duration::from_millis(1));
        a.record(Duration::from_millis(100));
        b.record(Duration::from_millis(100));
        b.record(Duration::from_millis(5));
        let mut merged = a.drain();
        merged.merge(&b.drain());
        assert_eq!(merged.count(), 4);
        assert_eq!(merged.bins.len(), 3);
        assert!(merged.bins.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(merged.count_at_or_under(Duration::from_millis(10)), 2);
    }
}
