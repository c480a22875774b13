//! Wall-clock time for the SLA engine, driven by tokio's clock so that tests can pause and
//! advance it: `now = wall time at start + tokio time elapsed since start`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::meter::Minute;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// The engine's clock.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    start_unix_ms: UnixMillis,
    /// Added to every reading; only [`Clock::advance`] changes it (tests that drive a real
    /// gateway over sockets, where tokio's clock cannot be paused).
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// A clock reading the system's wall time now.
    pub fn system() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self::starting_at(unix.as_millis() as UnixMillis)
    }

    /// A clock that reads `unix_ms` now (tests).
    pub fn starting_at(unix_ms: UnixMillis) -> Self {
        Self {
            start: Instant::now(),
            start_unix_ms: unix_ms,
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Moves this clock (and its clones) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Relaxed);
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> UnixMillis {
        self.start_unix_ms
            + self.start.elapsed().as_millis() as UnixMillis
            + self.offset_ms.load(Relaxed)
    }

    /// The current minute.
    pub fn minute(&self) -> Minute {
        minute_of(self.now_ms())
    }
}

/// The minute a timestamp falls in.
pub fn minute_of(unix_ms: UnixMillis) -> Minute {
    unix_ms.div_euclid(60_000)
}
