//! The request path's clock: one reading of the monotonic clock per poll of a connection's task.
//!
//! A proxied request read the clock seven times: when its head arrived, for the next head's
//! deadline, when the try started and when the pooled connection was taken and given back, when
//! the upstream answered and when the response was written. Most of those readings fall in the
//! same poll of the connection's task (the head and the try's start in one, the answer, the
//! response and the next head's deadline in the next), and a poll takes microseconds. Inside a
//! future wrapped by [`read_once_per_poll`] (each client connection's task), [`now`] reads the
//! clock once per poll and answers the same instant for the rest of that poll; anywhere else it
//! reads the clock every time. Work that runs long inside a poll (a Wasm plugin's call) ends with
//! [`mark_stale`], so that what follows it is timed from after it.
//!
//! Readings are [`tokio::time::Instant`]s, so a paused test clock still drives them.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

/// This thread's reading, for the poll it is in.
#[derive(Clone, Copy)]
enum Reading {
    /// Not inside a wrapped poll: every [`now`] reads the clock.
    Uncached,
    /// Inside a wrapped poll, before its first [`now`] (or after [`mark_stale`]).
    Unread,
    /// Inside a wrapped poll: the instant it read.
    Read(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Uncached) };
}

/// The current instant: the poll's reading inside a wrapped future, the clock's anywhere else.
pub fn now() -> Instant {
    READING.with(|reading| match reading.get() {
        Reading::Read(at) => at,
        Reading::Uncached => Instant::now(),
        Reading::Unread => {
            let at = Instant::now();
            reading.set(Reading::Read(at));
            at
        }
    })
}

/// The time since `earlier`, by [`now`] (zero if `earlier` is later).
pub fn since(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

/// Forgets this poll's reading, after work that may have taken long: the next [`now`] reads the
/// clock again. Outside a wrapped poll it does nothing.
pub fn mark_stale() {
    READING.with(|reading| {
        if let Reading::Read(_) = reading.get() {
            reading.set(Reading::Unread);
        }
    });
}

/// `future`, with [`now`] reading the clock once per poll of it.
pub fn read_once_per_poll<F: Future>(future: F) -> ReadOncePerPoll<F> {
    ReadOncePerPoll { future }
}

pin_project_lite::pin_project! {
    /// A future whose polls each read the clock at most once: see [`read_once_per_poll`].
    pub struct ReadOncePerPoll<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for ReadOncePerPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        /// Puts the reading of the enclosing poll back, however this one ends (a panicking
        /// task's thread serves other tasks after it).
        struct Restore(Reading);
        impl Drop for Restore {
            fn drop(&mut self) {
                READING.with(|reading| reading.set(self.0));
            }
        }
        let _restore = Restore(READING.with(|reading| reading.replace(Reading::Unread)));
        self.project().future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::time::Duration;

    const PAUSE: Duration = Duration::from_millis(2);

    #[test]
    fn a_wrapped_poll_reads_the_clock_once_until_marked_stale() {
        let (first, same_poll, after_stale) = read_once_per_poll(async {
            let first = now();
            std::thread::sleep(PAUSE);
            let same_poll = now();
            mark_stale();
            (first, same_poll, now())
        })
        .now_or_never()
        .unwrap();
        assert_eq!(first, same_poll);
        assert!(after_stale - first >= PAUSE);
    }

    #[test]
    fn outside_a_wrapped_poll_every_reading_is_the_clock_s() {
        let first = now();
        std::thread::sleep(PAUSE);
        assert!(since(first) >= PAUSE);

        // Nor does a wrapped future leave its reading behind, though it panics.
        let panicked = std::panic::catch_unwind(|| {
            read_once_per_poll(async {
                now();
                panic!("the task fails");
            })
            .now_or_never()
        });
        assert!(panicked.is_err());
        let first = now();
        std::thread::sleep(PAUSE);
        assert!(since(first) >= PAUSE);
    }

    #[test]
    fn a_nested_wrapped_poll_reads_its_own_and_the_enclosing_poll_keeps_its_own() {
        let (outer, inner, outer_again) = read_once_per_poll(async {
            let outer = now();
            std::thread::sleep(PAUSE);
            let inner = read_once_per_poll(async { now() }).await;
            (outer, inner, now())
        })
        .now_or_never()
        .unwrap();
        assert!(inner - outer >= PAUSE);
        assert_eq!(outer, outer_again);
    }

    #[tokio::test(start_paused = true)]
    async fn each_poll_reads_the_clock_again() {
        let (first, next_poll) = read_once_per_poll(async {
            let first = now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            (first, now())
        })
        .await;
        assert_eq!(next_poll - first, Duration::from_millis(10));
    }
}
