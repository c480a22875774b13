//! Metering: what a route (or one backend of a route) did, minute by minute.
//!
//! The request path only touches [`Meter::record`]: a few relaxed atomic adds on the meter's own
//! counters, no lock. Once a minute the engine *seals* the live counters into a [`Rollup`] and
//! files it in the meter's [`History`], which keeps minute rollups for the short windows and
//! hour rollups for the long ones, so memory stays fixed whatever the traffic.
//!
//! In cluster mode a meter also holds what the *other* replicas metered for the same route
//! or backend ([`Meter::add_peer_minute`], [`Meter::set_peer_live`]): every window and chart
//! then covers the whole cluster, while [`Meter::export`] and the request path stay local.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::histogram::{Histogram, LiveHistogram};
use crate::Class;

/// Minutes since the Unix epoch: the engine's unit of time.
pub type Minute = i64;

/// What a meter gives storage: minute rollups and hour rollups (hours since the epoch).
pub type Export = (Vec<(Minute, Rollup)>, Vec<(i64, Rollup)>);

/// Minute rollups kept (6 hours): windows up to 6h are exact to the minute.
pub const MINUTES_KEPT: usize = 6 * 60;

/// What happened during some span of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Requests by [`Class`], in [`Class::ALL`] order.
    pub by_class: [u64; Class::COUNT],
    /// Good requests that finished within the route's latency threshold.
    pub within_threshold: u64,
    /// Cancelled requests whose client had waited longer than the latency threshold: the
    /// user did not get an answer in time, so they are bad events of the latency objective.
    pub cancelled_slow: u64,
    /// Latencies.
    pub latency: Histogram,
}

impl Rollup {
    /// Adds `other` into this rollup.
    pub fn merge(&mut self, other: &Rollup) {
        for (mine, theirs) in self.by_class.iter_mut().zip(other.by_class) {
            *mine += theirs;
        }
        self.within_threshold += other.within_threshold;
        self.cancelled_slow += other.cancelled_slow;
        self.latency.merge(&other.latency);
    }

    /// Requests of every class.
    pub fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Requests of one class.
    pub fn count(&self, class: Class) -> u64 {
        self.by_class[class.index()]
    }
}

/// Sums of a rollup scaled by a fraction (a window's partial first hour), as reals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    /// Requests by class.
    pub by_class: [f64; Class::COUNT],
    /// Requests within the latency threshold.
    pub within_threshold: f64,
    /// Cancelled requests that had waited longer than the latency threshold.
    pub cancelled_slow: f64,
    /// Latencies (unscaled: percentiles need whole counts).
    pub latency: Histogram,
}

impl Aggregate {
    fn add_counts(&mut self, rollup: &Rollup, fraction: f64) {
        for (mine, theirs) in self.by_class.iter_mut().zip(rollup.by_class) {
            *mine += theirs as f64 * fraction;
        }
        self.within_threshold += rollup.within_threshold as f64 * fraction;
        self.cancelled_slow += rollup.cancelled_slow as f64 * fraction;
    }

    /// Adds another aggregate's counts (not its latencies).
    pub fn add_aggregate(&mut self, other: &Aggregate) {
        for (mine, theirs) in self.by_class.iter_mut().zip(other.by_class) {
            *mine += theirs;
        }
        self.within_threshold += other.within_threshold;
        self.cancelled_slow += other.cancelled_slow;
    }

    /// Requests of one class.
    pub fn count(&self, class: Class) -> f64 {
        self.by_class[class.index()]
    }

    /// Requests of every class.
    pub fn total(&self) -> f64 {
        self.by_class.iter().sum()
    }
}

/// The live counters of the current minute.
#[derive(Debug, Default)]
struct Live {
    by_class: [AtomicU64; Class::COUNT],
    within_threshold: AtomicU64,
    cancelled_slow: AtomicU64,
    latency: LiveHistogram,
}

/// One meter: live counters plus sealed history.
#[derive(Debug)]
pub struct Meter {
    threshold: Option<Duration>,
    live: Live,
    history: Mutex<History>,
    peers: Mutex<Peers>,
    /// Everything this meter sealed since it was made (never trimmed): with the live counters,
    /// the monotonic totals Prometheus' `rate()` needs.
    sealed_totals: Mutex<Rollup>,
}

/// What the other replicas of a cluster metered: their sealed minutes (summed), and their
/// latest unsealed counters, each in the minute it belongs to.
#[derive(Debug)]
struct Peers {
    history: History,
    live: Vec<(Minute, Rollup)>,
}

impl Meter {
    /// A meter judging latency against `threshold` (the route's latency objective, if any).
    pub fn new(threshold: Option<Duration>, keep_hours: usize) -> Self {
        Self {
            threshold,
            live: Live::default(),
            history: Mutex::new(History::new(keep_hours)),
            peers: Mutex::new(Peers {
                history: History::new(keep_hours),
                live: Vec::new(),
            }),
            sealed_totals: Mutex::new(Rollup::default()),
        }
    }

    /// This replica's counts since the meter was made, sealed and live, without latencies:
    /// monotonic (counters for Prometheus; a reload that changes the objective starts a new
    /// meter, which `rate()` reads as a counter reset).
    pub fn totals(&self) -> Aggregate {
        let sealed = self.sealed_totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals = Aggregate::default();
        totals.add_counts(&sealed, 1.0);
        for (total, live) in totals.by_class.iter_mut().zip(&self.live.by_class) {
            *total += live.load(Relaxed) as f64;
        }
        totals.within_threshold += self.live.within_threshold.load(Relaxed) as f64;
        totals.cancelled_slow += self.live.cancelled_slow.load(Relaxed) as f64;
        totals
    }

    /// Records one finished request. Lock-free.
    #[inline]
    pub fn record(&self, class: Class, latency: Duration) {
        self.live.by_class[class.index()].fetch_add(1, Relaxed);
        // The latency objective judges served requests; failures count against availability.
        if let Some(threshold) = self.threshold {
            match class {
                Class::Good if latency <= threshold => {
                    self.live.within_threshold.fetch_add(1, Relaxed);
                }
                // The client left after waiting longer than the objective allows.
                Class::Cancelled if latency > threshold => {
                    self.live.cancelled_slow.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
        self.live.latency.record(latency);
    }

    /// Moves the live counters into the history as minute `minute`. Requests recorded while
    /// sealing land in this minute or the next, never nowhere.
    pub fn seal(&self, minute: Minute) -> Rollup {
        // Held while the live counters move, so that `totals` never sees them in neither place.
        let mut totals = self.sealed_totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut rollup = Rollup::default();
        for (out, live) in rollup.by_class.iter_mut().zip(&self.live.by_class) {
            *out = live.swap(0, Relaxed);
        }
        rollup.within_threshold = self.live.within_threshold.swap(0, Relaxed);
        rollup.cancelled_slow = self.live.cancelled_slow.swap(0, Relaxed);
        rollup.latency = self.live.latency.drain();
        for (total, count) in totals.by_class.iter_mut().zip(rollup.by_class) {
            *total += count;
        }
        totals.within_threshold += rollup.within_threshold;
        totals.cancelled_slow += rollup.cancelled_slow;
        drop(totals);
        self.history().add(minute, &rollup);
        rollup
    }

    /// Takes over another meter's sealed history (a route whose objective changed on reload).
    pub fn adopt(&self, other: &Meter) {
        let theirs = other.history();
        let mut mine = self.history();
        for (minute, rollup) in &theirs.minutes {
            insert_merged(&mut mine.minutes, *minute, rollup);
        }
        for (hour, rollup) in &theirs.hours {
            insert_merged(&mut mine.hours, *hour, rollup);
        }
    }

    /// Files a minute rollup read back from storage (minutes only: hours are restored apart).
    pub fn restore_minute(&self, minute: Minute, rollup: &Rollup) {
        let mut history = self.history();
        insert_merged(&mut history.minutes, minute, rollup);
        history.trim();
    }

    /// Files an hour rollup read back from storage.
    pub fn restore_hour(&self, hour: i64, rollup: &Rollup) {
        let mut history = self.history();
        insert_merged(&mut history.hours, hour, rollup);
        history.trim();
    }

    /// Adds a minute another replica sealed (cluster mode). Each peer minute must be added
    /// once: the cluster sync tracks which it has added.
    pub fn add_peer_minute(&self, minute: Minute, rollup: &Rollup) {
        self.peers().history.add(minute, rollup);
    }

    /// Files a peer's minute rollup read back at load (minutes only, like
    /// [`Meter::restore_minute`]).
    pub fn restore_peer_minute(&self, minute: Minute, rollup: &Rollup) {
        let mut peers = self.peers();
        insert_merged(&mut peers.history.minutes, minute, rollup);
        peers.history.trim();
    }

    /// Files a peer's hour rollup read back at load.
    pub fn restore_peer_hour(&self, hour: i64, rollup: &Rollup) {
        let mut peers = self.peers();
        insert_merged(&mut peers.history.hours, hour, rollup);
        peers.history.trim();
    }

    /// Replaces the other replicas' unsealed counters, each with the minute it belongs to.
    pub fn set_peer_live(&self, live: Vec<(Minute, Rollup)>) {
        self.peers().live = live;
    }

    /// Forgets everything the other replicas reported (before a full reload from the cluster).
    pub fn clear_peers(&self) {
        let mut peers = self.peers();
        let keep_hours = peers.history.keep_hours;
        peers.history = History::new(keep_hours);
        peers.live.clear();
    }

    /// This replica's sealed minutes from `since` (inclusive) and the rollups of the hours they
    /// fall in, oldest first, without the live counters.
    pub fn sealed_since(&self, since: Minute) -> Export {
        let history = self.history();
        let minutes = history
            .minutes
            .iter()
            .filter(|(m, _)| *m >= since)
            .cloned()
            .collect();
        let hours = history
            .hours
            .iter()
            .filter(|(h, _)| *h >= since.div_euclid(60))
            .cloned()
            .collect();
        (minutes, hours)
    }

    /// This replica's counters of the current (unsealed) minute.
    pub fn live(&self) -> Rollup {
        self.live_rollup()
    }

    /// Like [`Meter::window_counts`], this replica's traffic only.
    pub fn local_window_counts(&self, now: Minute, length: Duration) -> Aggregate {
        let mut aggregate = self.history().aggregate(now, length, None);
        aggregate.add_counts(&self.live_rollup(), 1.0);
        aggregate
    }

    /// What storage must hold for minutes from `since` on: each minute's rollup and the rollup
    /// of each hour those minutes touch, with the live counters counted in minute `now` (and its
    /// hour), so that a crash loses only what was recorded since this call.
    pub fn export(&self, since: Minute, now: Minute) -> Export {
        let live = self.live_rollup();
        let (mut minutes, mut hours) = self.sealed_since(since);
        if live.total() > 0 {
            match minutes.iter_mut().find(|(m, _)| *m == now) {
                Some((_, rollup)) => rollup.merge(&live),
                None => minutes.push((now, live.clone())),
            }
            let hour = now.div_euclid(60);
            match hours.iter_mut().find(|(h, _)| *h == hour) {
                Some((_, rollup)) => rollup.merge(&live),
                None => hours.push((hour, live)),
            }
        }
        (minutes, hours)
    }

    /// What happened in the `length` before the end of minute `now`, including the live
    /// (not yet sealed) counters, which belong to minute `now`; with latency percentiles.
    pub fn window(&self, now: Minute, length: Duration) -> Aggregate {
        self.aggregate(now, length, true)
    }

    /// Like [`Meter::window`], counts only (no latency histogram): what burn rates, alerts and
    /// breach checks need, at a fraction of the cost.
    pub fn window_counts(&self, now: Minute, length: Duration) -> Aggregate {
        self.aggregate(now, length, false)
    }

    /// Counts of a window ending at a past minute, from sealed history only (the cluster's,
    /// in cluster mode).
    pub fn sealed_window_counts(&self, end: Minute, length: Duration) -> Aggregate {
        let mut aggregate = self.history().aggregate(end, length, None);
        let peers = self.peers().history.aggregate(end, length, None);
        aggregate.add_aggregate(&peers);
        aggregate
    }

    fn aggregate(&self, now: Minute, length: Duration, latency: bool) -> Aggregate {
        let mut dense = latency.then(|| vec![0u64; super::histogram::BINS]);
        let mut aggregate = self.history().aggregate(now, length, dense.as_deref_mut());
        let mut live = vec![self.live_rollup()];
        {
            let peers = self.peers();
            let theirs = peers.history.aggregate(now, length, dense.as_deref_mut());
            aggregate.add_aggregate(&theirs);
            let start = now + 1 - (length.as_secs() / 60).max(1) as i64;
            live.extend(
                peers
                    .live
                    .iter()
                    .filter(|(minute, _)| (start..=now).contains(minute))
                    .map(|(_, rollup)| rollup.clone()),
            );
        }
        for rollup in &live {
            aggregate.add_counts(rollup, 1.0);
        }
        if let Some(mut dense) = dense {
            for rollup in &live {
                for (bin, count) in &rollup.latency.bins {
                    dense[usize::from(*bin)] += count;
                }
            }
            aggregate.latency = Histogram::from_dense(&dense);
        }
        aggregate
    }

    /// Sealed minute rollups from `since` (inclusive), oldest first, for charts: the cluster's
    /// in cluster mode.
    pub fn minutes_since(&self, since: Minute) -> Vec<(Minute, Rollup)> {
        let mut minutes: VecDeque<(Minute, Rollup)> = self
            .history()
            .minutes
            .iter()
            .filter(|(m, _)| *m >= since)
            .cloned()
            .collect();
        for (minute, rollup) in self.peers().history.minutes.iter() {
            if *minute >= since {
                insert_merged(&mut minutes, *minute, rollup);
            }
        }
        minutes.into()
    }

    /// Sealed hour rollups from `since` (inclusive, in hours since the epoch), oldest first.
    pub fn hours_since(&self, since_hour: i64) -> Vec<(i64, Rollup)> {
        self.history()
            .hours
            .iter()
            .filter(|(h, _)| *h >= since_hour)
            .cloned()
            .collect()
    }

    fn live_rollup(&self) -> Rollup {
        let mut rollup = Rollup::default();
        for (out, live) in rollup.by_class.iter_mut().zip(&self.live.by_class) {
            *out = live.load(Relaxed);
        }
        rollup.within_threshold = self.live.within_threshold.load(Relaxed);
        rollup.cancelled_slow = self.live.cancelled_slow.load(Relaxed);
        rollup.latency = self.live.latency.snapshot();
        rollup
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sealed rollups: the last [`MINUTES_KEPT`] minutes, and hours back to the longest window.
#[derive(Debug)]
pub struct History {
    minutes: VecDeque<(Minute, Rollup)>,
    hours: VecDeque<(i64, Rollup)>,
    keep_hours: usize,
}

impl History {
    fn new(keep_hours: usize) -> Self {
        Self {
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            keep_hours: keep_hours.max(7),
        }
    }

    fn add(&mut self, minute: Minute, rollup: &Rollup) {
        if rollup.total() == 0 {
            return;
        }
        insert_merged(&mut self.minutes, minute, rollup);
        insert_merged(&mut self.hours, minute.div_euclid(60), rollup);
        self.trim();
    }

    /// Drops what is older than the minutes and hours kept.
    fn trim(&mut self) {
        if let Some(&(newest, _)) = self.minutes.back() {
            while self
                .minutes
                .front()
                .is_some_and(|(m, _)| *m <= newest - MINUTES_KEPT as i64)
            {
                self.minutes.pop_front();
            }
        }
        if let Some(&(newest, _)) = self.hours.back() {
            while self
                .hours
                .front()
                .is_some_and(|(h, _)| *h <= newest - self.keep_hours as i64)
            {
                self.hours.pop_front();
            }
        }
    }

    /// Sums the window `(now + 1 - length, now]` in minutes. Windows of up to 6 hours use
    /// minute rollups and are exact; longer ones use hour rollups, with the hour at the window's
    /// start counted in proportion to the part of it inside the window (its latencies count
    /// when at least half of it is inside). Latencies are added into `dense` when given.
    fn aggregate(&self, now: Minute, length: Duration, mut dense: Option<&mut [u64]>) -> Aggregate {
        let minutes = (length.as_secs() / 60).max(1) as i64;
        let start = now + 1 - minutes;
        let mut aggregate = Aggregate::default();
        let mut add = |rollup: &Rollup, fraction: f64| {
            aggregate.add_counts(rollup, fraction);
            if let Some(dense) = dense.as_deref_mut()
                && fraction >= 0.5
            {
                for (bin, count) in &rollup.latency.bins {
                    dense[usize::from(*bin)] += count;
                }
            }
        };
        if minutes <= MINUTES_KEPT as i64 {
            for (minute, rollup) in self.minutes.iter().rev() {
                if *minute < start {
                    break;
                }
                if *minute <= now {
                    add(rollup, 1.0);
                }
            }
            return aggregate;
        }
        let start_hour = start.div_euclid(60);
        let first_fraction = 1.0 - start.rem_euclid(60) as f64 / 60.0;
        // The hour `now` falls in may hold minutes after `now` (a window ending in the past, as
        // the history charts ask for): take its minutes up to `now` from the minute rollups
        // while they are kept, or else the elapsed share of the hour. Counting the whole hour
        // drew a budget drop up to 59 minutes before the traffic that caused it.
        let end_hour = now.div_euclid(60);
        let minutes_cover_end_hour = self
            .minutes
            .back()
            .is_some_and(|(newest, _)| end_hour * 60 > newest - MINUTES_KEPT as i64);
        for (hour, rollup) in self.hours.iter().rev() {
            if *hour < start_hour {
                break;
            }
            if *hour * 60 > now {
                continue;
            }
            if *hour == end_hour && end_hour != start_hour {
                if minutes_cover_end_hour {
                    for (minute, rollup) in self.minutes.iter().rev() {
                        if *minute < end_hour * 60 {
                            break;
                        }
                        if *minute <= now {
                            add(rollup, 1.0);
                        }
                    }
                } else {
                    add(rollup, (now - end_hour * 60 + 1) as f64 / 60.0);
                }
                continue;
            }
            add(
                rollup,
                if *hour == start_hour {
                    first_fraction
                } else {
                    1.0
                },
            );
        }
        aggregate
    }
}

fn insert_merged<K: Ord + Copy>(deque: &mut VecDeque<(K, Rollup)>, key: K, rollup: &Rollup) {
    match deque.iter().rposition(|(k, _)| *k <= key) {
        Some(i) if deque[i].0 == key => deque[i].1.merge(rollup),
        Some(i) => deque.insert(i + 1, (key, rollup.clone())),
        None => deque.push_front((key, rollup.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn live_counts_are_sealed_into_minutes_and_windows_sum_them() {
        let meter = Meter::new(Some(ms(300)), 24);
        for minute in 0..10 {
            for _ in 0..10 {
                meter.record(Class::Good, ms(100));
            }
            meter.record(Class::Bad, ms(500));
            meter.seal(minute);
        }
        let last5 = meter.window(9, Duration::from_secs(300));
        assert_eq!(last5.count(Class::Good), 50.0);
        assert_eq!(last5.count(Class::Bad), 5.0);
        assert_eq!(last5.within_threshold, 50.0);
        let all = meter.window(9, Duration::from_secs(3600));
        assert_eq!(all.total(), 110.0);
        // Live counters belong to the current minute.
        meter.record(Class::Throttled, ms(1));
        assert_eq!(
            meter
                .window(9, Duration::from_secs(60))
                .count(Class::Throttled),
            1.0
        );
    }

    #[test]
    fn long_windows_use_hours_with_a_partial_first_hour() {
        let meter = Meter::new(None, 48);
        // One bad request in each of 30 hours, at minute 30 of the hour.
        for hour in 0..30i64 {
            meter.record(Class::Bad, ms(1));
            meter.seal(hour * 60 + 30);
        }
        let now = 29 * 60 + 59;
        // A 1-day window starts at minute 6*60: hours 6..=29 are whole, 24 requests.
        assert_eq!(
            meter
                .window(now, Duration::from_secs(86_400))
                .count(Class::Bad),
            24.0
        );
        // Shift "now" by half an hour: the first hour counts half.
        let now = 30 * 60 + 29;
        let day = meter.window(now, Duration::from_secs(86_400));
        assert!(
            (day.count(Class::Bad) - 23.5).abs() < 1e-9,
            "{}",
            day.count(Class::Bad)
        );
    }

    /// A long window ending in the past counts only the minutes up to its end, not the whole
    /// hour it ends in: a chart of the budget must not drop before the traffic that spent it.
    #[test]
    fn a_long_window_ending_in_the_past_stops_at_its_end_minute() {
        let meter = Meter::new(None, 48);
        // Good traffic at minute 10:30, bad at 10:34 (hours since the epoch: 10).
        meter.record(Class::Good, ms(1));
        meter.seal(10 * 60 + 30);
        meter.record(Class::Bad, ms(1));
        meter.seal(10 * 60 + 34);
        let month = Duration::from_secs(30 * 86_400);
        let at = |minute: Minute| meter.sealed_window_counts(minute, month);
        assert_eq!(at(10 * 60 + 20).total(), 0.0, "before any traffic");
        assert_eq!(
            at(10 * 60 + 33).count(Class::Bad),
            0.0,
            "before the failure"
        );
        assert_eq!(at(10 * 60 + 33).count(Class::Good), 1.0);
        assert_eq!(
            at(10 * 60 + 34).count(Class::Bad),
            1.0,
            "from the failure on"
        );
        assert_eq!(at(11 * 60 + 5).total(), 2.0, "in a later hour");
    }

    /// In cluster mode, windows and charts cover the other replicas' minutes and live
    /// counters; the local view and what storage gets stay this replica's.
    #[test]
    fn peers_count_in_windows_but_not_in_the_local_view() {
        let meter = Meter::new(Some(ms(300)), 24);
        meter.record(Class::Good, ms(10));
        meter.seal(100);
        let theirs = Rollup {
            by_class: [5, 2, 0, 0, 0, 0],
            within_threshold: 5,
            ..Rollup::default()
        };
        meter.add_peer_minute(100, &theirs);
        meter.set_peer_live(vec![(101, theirs.clone()), (50, theirs.clone())]);
        let window = meter.window(101, Duration::from_secs(300));
        // Ours (1) + their sealed minute (7) + their live minute 101 (7); minute 50 is outside.
        assert_eq!(window.total(), 15.0);
        assert_eq!(window.within_threshold, 11.0);
        assert_eq!(window.latency.bins.iter().map(|(_, n)| n).sum::<u64>(), 1);
        assert_eq!(
            meter
                .local_window_counts(101, Duration::from_secs(300))
                .total(),
            1.0
        );
        assert_eq!(
            meter
                .sealed_window_counts(100, Duration::from_secs(3600))
                .total(),
            8.0
        );
        assert_eq!(meter.minutes_since(0)[0].1.total(), 8);
        assert_eq!(
            meter.export(0, 101).0[0].1.total(),
            1,
            "storage gets ours only"
        );
        meter.clear_peers();
        assert_eq!(meter.window(101, Duration::from_secs(300)).total(), 1.0);
    }

    #[test]
    fn history_is_bounded() {
        let meter = Meter::new(None, 10);
        for minute in 0..2000 {
            meter.record(Class::Good, ms(1));
            meter.seal(minute);
        }
        let history = meter.history();
        assert_eq!(history.minutes.len(), MINUTES_KEPT);
        assert_eq!(history.hours.len(), 10);
    }
}
