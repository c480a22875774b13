//! The deadline watcher: the thread that advances the engine's epoch when a plugin call is past
//! its deadline, which is how a call's time limit is enforced.
//!
//! Each call is [watched](EpochTicker::watch) with its deadline on the wall clock, which its
//! store also holds. The store's epoch deadline is the next increment of the epoch, and its
//! epoch callback traps the call when the deadline has passed (and lets it go on otherwise).
//! The thread increments the epoch only when a watched call is past its deadline, and sleeps in
//! between until the earliest deadline of the calls under way, or for the shortest time limit
//! seen when none is: a call that begins meanwhile cannot be due before then. So a busy gateway
//! wakes the thread about once per time limit (10 ms by default) instead of on every tick of a
//! fixed 1 ms clock (0.95× the CPU per request of a route with a plugin, over 32 and over 256
//! connections), and a call is stopped at its deadline rather than at the next tick after it.
//!
//! Without calls for [`IDLE_AFTER`], the thread parks, and the next call wakes it. The park is
//! race-free: a call takes its slot before it looks whether the thread is parked, and the thread
//! says it is parked before it looks at the slots again (both sequentially consistent), so one
//! of the two sees the other.

// Deadlines are on the real clock, not tokio's: Wasm runs in real time, and under a paused
// tokio clock (tests) an endless loop would never reach its deadline.
#![allow(clippy::disallowed_types)]

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// How often the epoch is incremented while a call is past its deadline and has not stopped
/// yet (it is in host code, or suspended, and traps when it runs Wasm again).
const OVERDUE_TICK: Duration = Duration::from_millis(1);

/// How long the thread goes on without calls before it parks.
pub(super) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Calls watched at once in slots; more than that (a gateway with hundreds of calls suspended
/// in WASI at once) are watched by ticking every [`OVERDUE_TICK`] while any of them runs.
const SLOTS: usize = 256;

/// A slot's value when no call holds it.
const FREE: u64 = 0;

thread_local! {
    /// The slot this thread's last call held: a thread's calls usually find it free again.
    static SLOT_HINT: Cell<usize> = const { Cell::new(0) };
}

/// Owns the watcher thread; dropping it stops the thread.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

struct Shared {
    stop: AtomicBool,
    /// Calls begun since the start.
    begun: AtomicU64,
    /// True while the thread is parked or about to park.
    parked: AtomicBool,
    /// Epoch increments so far.
    ticks: AtomicU64,
    /// What deadlines are measured from.
    base: Instant,
    /// The shortest time limit of any call so far, in microseconds.
    shortest: AtomicU64,
    /// The deadlines of the calls under way, in microseconds after `base` plus one ([`FREE`]
    /// when no call holds the slot).
    slots: Box<[AtomicU64]>,
    /// Calls under way that found no free slot.
    unslotted: AtomicUsize,
}

/// A call under way: its deadline is watched until this is dropped.
pub(super) struct Watch<'a> {
    shared: &'a Shared,
    slot: Option<usize>,
    started: Instant,
    deadline: Deadline,
}

impl Watch<'_> {
    /// How long the call has run, on the real clock (its time in the plugin's statistics).
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the call is due: its store's epoch callback traps it from then on.
    pub(super) fn deadline(&self) -> Deadline {
        self.deadline
    }
}

/// When a call is due, on the real clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline(Instant);

impl Deadline {
    /// Already passed: the deadline of a store between calls.
    pub(super) fn passed() -> Self {
        Self(Instant::now())
    }

    /// Whether it has passed.
    pub(super) fn has_passed(self) -> bool {
        Instant::now() >= self.0
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        match self.slot {
            Some(slot) => self.shared.slots[slot].store(FREE, SeqCst),
            None => {
                self.shared.unslotted.fetch_sub(1, SeqCst);
            }
        }
    }
}

impl EpochTicker {
    /// Starts the thread; `tick` is the engine's `increment_epoch`, run when a call is past
    /// its deadline.
    pub(super) fn start(
        idle_after: Duration,
        tick: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            begun: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            base: Instant::now(),
            shortest: AtomicU64::new(u64::MAX),
            slots: (0..SLOTS).map(|_| AtomicU64::new(FREE)).collect(),
            unslotted: AtomicUsize::new(0),
        });
        let watching = shared.clone();
        let handle = std::thread::Builder::new()
            .name("accord-plugin-epoch".into())
            .spawn(move || watching.run(idle_after, tick))?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Watches a call that may run for `limit` from now, until the guard is dropped; wakes the
    /// thread when it is parked, or when it may sleep past this call's deadline.
    pub(super) fn watch(&self, limit: Duration) -> Watch<'_> {
        let shared = &*self.shared;
        let now = Instant::now();
        let deadline = now + limit;
        let limit_us = limit.as_micros() as u64;
        shared.begun.fetch_add(1, Relaxed);
        let mut wake = false;
        if limit_us < shared.shortest.load(Relaxed) {
            // The thread may be asleep for a longer limit: it must see this one.
            shared.shortest.fetch_min(limit_us, SeqCst);
            wake = true;
        }
        let value = shared.slot_value(deadline);
        let slot = SLOT_HINT.with(|hint| {
            let start = hint.get();
            let slot = (0..SLOTS).map(|i| (start + i) % SLOTS).find(|&slot| {
                shared.slots[slot]
                    .compare_exchange(FREE, value, SeqCst, Relaxed)
                    .is_ok()
            })?;
            hint.set(slot);
            Some(slot)
        });
        if slot.is_none() {
            shared.unslotted.fetch_add(1, SeqCst);
            wake = true;
        }
        if wake || shared.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Watch {
            shared,
            slot,
            started: now,
            deadline: Deadline(deadline),
        }
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(SeqCst)
    }

    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.shared.parked.load(SeqCst)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        self.thread.unpark();
    }
}

/// What the thread saw of the calls under way.
struct Scan {
    /// Whether any call is under way.
    any: bool,
    /// Whether one is past its deadline, or one is unslotted.
    due: bool,
    /// The earliest deadline not yet passed, in microseconds after `base`.
    earliest: Option<u64>,
}

impl Shared {
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// A slot's value for a call due at `deadline`: its microseconds after `base`, rounded up
    /// (when the thread sees it passed, the store's callback does too), plus one, so that no
    /// deadline is [`FREE`].
    fn slot_value(&self, deadline: Instant) -> u64 {
        let after = deadline.saturating_duration_since(self.base);
        after.as_micros() as u64 + u64::from(!after.subsec_nanos().is_multiple_of(1000)) + 1
    }

    fn scan(&self, now_us: u64) -> Scan {
        // An unslotted call's deadline is unknown: it counts as due.
        let unslotted = self.unslotted.load(SeqCst) > 0;
        let mut scan = Scan {
            any: unslotted,
            due: unslotted,
            earliest: None,
        };
        for slot in &self.slots {
            let value = slot.load(SeqCst);
            if value == FREE {
                continue;
            }
            scan.any = true;
            let deadline = value - 1;
            if deadline <= now_us {
                scan.due = true;
            } else {
                scan.earliest = Some(scan.earliest.map_or(deadline, |e| e.min(deadline)));
            }
        }
        scan
    }

    fn run(&self, idle_after: Duration, tick: impl Fn()) {
        let mut seen = self.begun.load(SeqCst);
        let mut active_at = Instant::now();
        while !self.stop.load(Relaxed) {
            let now = Instant::now();
            let now_us = self.micros(now);
            let scan = self.scan(now_us);
            if scan.due {
                // The due calls' stores trap at their next check; the others go on.
                tick();
                self.ticks.fetch_add(1, Relaxed);
            }
            let begun = self.begun.load(SeqCst);
            if scan.any || begun != seen {
                seen = begun;
                active_at = now;
            } else if now.duration_since(active_at) >= idle_after {
                self.parked.store(true, SeqCst);
                let scan = self.scan(self.micros(Instant::now()));
                if !scan.any && self.begun.load(SeqCst) == seen && !self.stop.load(SeqCst) {
                    std::thread::park();
                }
                self.parked.store(false, SeqCst);
                active_at = Instant::now();
                continue;
            }
            // A call that begins after this scan is due no sooner than the shortest limit
            // from now.
            let shortest = Duration::from_micros(self.shortest.load(SeqCst));
            let wait = if scan.due {
                OVERDUE_TICK
            } else {
                let until_earliest = scan
                    .earliest
                    .map_or(Duration::MAX, |e| Duration::from_micros(e - now_us));
                until_earliest.min(shortest).min(idle_after)
            };
            std::thread::park_timeout(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `done` every millisecond for at most `within`: the watcher is a real thread on
    /// the real clock.
    fn eventually(within: Duration, done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        done()
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn an_idle_watcher_parks_and_a_call_wakes_it() {
        let ticker = EpochTicker::start(Duration::from_millis(20), || {}).unwrap();
        assert!(
            eventually(LONG, || ticker.is_parked()),
            "parks without calls"
        );
        let call = ticker.watch(LONG);
        assert!(eventually(LONG, || !ticker.is_parked()), "a call wakes it");
        drop(call);
        assert!(
            eventually(LONG, || ticker.is_parked()),
            "parks again after it"
        );
        assert_eq!(ticker.ticks(), 0, "no call was ever due");
    }

    #[test]
    fn the_epoch_moves_only_while_a_call_is_past_its_deadline() {
        let ticker = EpochTicker::start(IDLE_AFTER, || {}).unwrap();
        let on_time = ticker.watch(LONG);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            ticker.ticks(),
            0,
            "a call within its deadline is left alone"
        );

        let late = ticker.watch(Duration::from_millis(5));
        assert!(
            eventually(LONG, || ticker.ticks() > 10),
            "a call past its deadline gets ticks, every millisecond, until it stops"
        );
        drop(late);
        let ended_at = ticker.ticks();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            ticker.ticks() <= ended_at + 1,
            "no more ticks once the late call stopped"
        );
        drop(on_time);
    }

    #[test]
    fn a_call_with_a_shorter_limit_wakes_a_watcher_asleep_for_a_longer_one() {
        let ticker = EpochTicker::start(Duration::from_secs(3600), || {}).unwrap();
        let _long = ticker.watch(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        let _short = ticker.watch(Duration::from_millis(5));
        assert!(
            eventually(LONG, || ticker.ticks() > 0),
            "due within seconds, not at the long call's deadline in an hour"
        );
    }

    #[test]
    fn calls_past_the_slots_are_still_watched() {
        let ticker = EpochTicker::start(IDLE_AFTER, || {}).unwrap();
        let slotted: Vec<_> = (0..SLOTS).map(|_| ticker.watch(LONG)).collect();
        assert!(slotted.iter().all(|w| w.slot.is_some()));
        let unslotted = ticker.watch(LONG);
        assert!(unslotted.slot.is_none());
        assert!(eventually(LONG, || ticker.ticks() > 0));
        drop(unslotted);
        drop(slotted);
        let free = ticker.watch(LONG);
        assert!(free.slot.is_some(), "dropped calls free their slots");
    }

    #[test]
    fn dropping_it_ends_a_parked_thread() {
        let held = Arc::new(());
        let in_thread = held.clone();
        let ticker = EpochTicker::start(Duration::from_millis(1), move || {
            let _ = &in_thread;
        })
        .unwrap();
        assert!(eventually(LONG, || ticker.is_parked()));
        drop(ticker);
        assert!(
            eventually(LONG, || Arc::strong_count(&held) == 1),
            "the thread woke, saw the stop and ended"
        );
    }
}
