//! The epoch ticker: the thread that advances the engine's epoch, which is how a plugin call's
//! deadline is enforced (each call may run for so many ticks).
//!
//! It ticks only while plugin code may run. Each call holds a [`Running`] guard; once no call has
//! run for [`IDLE_AFTER`], the thread parks, and the next call wakes it. An idle gateway with
//! plugins therefore costs no wake-ups (at a 1 ms tick it cost 2.4% of a core). The park is
//! race-free: a call counts itself before it looks whether the thread is parked, and the thread
//! says it is parked before it looks at the count again (both sequentially consistent), so one
//! of the two sees the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

/// The epoch's period: a call's time limit is counted in these.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker goes on without calls before it parks.
pub(super) const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Owns the ticker thread; dropping it stops the thread.
pub(super) struct EpochTicker {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Calls begun since the start.
    begun: AtomicU64,
    /// Calls under way.
    running: AtomicUsize,
    /// True while the thread is parked or about to park.
    parked: AtomicBool,
    /// Ticks so far.
    ticks: AtomicU64,
}

/// Held while plugin code may run: the ticker keeps ticking.
pub(super) struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl EpochTicker {
    /// Starts the thread; `tick` runs every [`EPOCH_TICK`] while calls run (the engine's
    /// `increment_epoch`).
    pub(super) fn start(
        idle_after: Duration,
        tick: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let ticking = shared.clone();
        let idle_ticks = (idle_after.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        let handle = std::thread::Builder::new()
            .name("accord-plugin-epoch".into())
            .spawn(move || ticking.run(idle_ticks, tick))?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Marks a call under way until the guard is dropped, waking the thread if it is parked.
    pub(super) fn running(&self) -> Running<'_> {
        self.shared.begun.fetch_add(1, SeqCst);
        self.shared.running.fetch_add(1, SeqCst);
        if self.shared.parked.load(SeqCst) {
            self.thread.unpark();
        }
        Running(&self.shared)
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

impl Shared {
    fn run(&self, idle_ticks: u64, tick: impl Fn()) {
        let mut seen = self.begun.load(SeqCst);
        let mut quiet = 0;
        while !self.stop.load(Relaxed) {
            std::thread::sleep(EPOCH_TICK);
            tick();
            self.ticks.fetch_add(1, Relaxed);
            let begun = self.begun.load(SeqCst);
            if begun != seen || self.running.load(SeqCst) > 0 {
                seen = begun;
                quiet = 0;
                continue;
            }
            quiet += 1;
            if quiet < idle_ticks {
                continue;
            }
            self.parked.store(true, SeqCst);
            if self.begun.load(SeqCst) == seen && !self.stop.load(SeqCst) {
                std::thread::park();
            }
            self.parked.store(false, SeqCst);
            quiet = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `done` every millisecond, 10,000 times at most: the ticker is a real thread on the
    /// real clock.
    fn eventually(done: impl Fn() -> bool) -> bool {
        (0..10_000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            done()
        })
    }

    #[test]
    fn an_idle_ticker_parks_and_a_call_wakes_it() {
        let ticker = EpochTicker::start(Duration::from_millis(20), || {}).unwrap();
        assert!(eventually(|| ticker.is_parked()), "parks without calls");
        let parked_at = ticker.ticks();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ticker.ticks(), parked_at, "no ticks while parked");

        let call = ticker.running();
        assert!(
            eventually(|| ticker.ticks() > parked_at + 50),
            "a call wakes it, and it ticks for as long as the call runs"
        );
        assert!(!ticker.is_parked());
        drop(call);
        assert!(eventually(|| ticker.is_parked()), "parks again after it");
    }

    #[test]
    fn dropping_it_ends_a_parked_thread() {
        let held = Arc::new(());
        let in_thread = held.clone();
        let ticker = EpochTicker::start(Duration::from_millis(1), move || {
            let _ = &in_thread;
        })
        .unwrap();
        assert!(eventually(|| ticker.is_parked()));
        drop(ticker);
        assert!(
            eventually(|| Arc::strong_count(&held) == 1),
            "the thread woke, saw the stop and ended"
        );
    }
}
