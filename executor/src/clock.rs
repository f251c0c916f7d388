//! Time, as the saga sees it.
//!
//! The saga stamps events with wall time, measures its steps and bounds its
//! waits. Behind a trait, a test can freeze time, jump past a deadline on
//! purpose and see what the saga does there, instead of sleeping for it (no
//! test here asserts on how long something took on the real clock).

use std::future::Future;
use std::time::{Duration, Instant};

/// Where the saga reads time and waits.
pub trait Clock: Send + Sync + 'static {
    /// Wall time in unix milliseconds: for timestamps that travel in events
    /// and for deadlines kept in the journal across restarts.
    fn now_ms(&self) -> i64;

    /// Monotonic time since an arbitrary origin: for step durations, which a
    /// wall-clock jump must not distort.
    fn monotonic(&self) -> Duration;

    /// Waits `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// A wait that ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {0:?}")]
pub struct Elapsed(pub Duration);

/// Runs `work` for at most `limit` on `clock`: every wait of the saga goes
/// through here, so none can last forever. `work` is polled first, so work
/// that is ready never loses to a deadline that is also due.
///
/// # Errors
/// [`Elapsed`] when `limit` passed first (`work` is dropped, i.e. cancelled).
pub async fn within<C: Clock, F: Future>(
    clock: &C,
    limit: Duration,
    work: F,
) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        out = work => Ok(out),
        () = clock.sleep(limit) => Err(Elapsed(limit)),
    }
}

/// Milliseconds with two decimals, as timings are reported.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_wins_over_a_zero_deadline() {
        let clock = SystemClock::default();
        assert_eq!(within(&clock, Duration::ZERO, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn work_that_never_ends_is_cut_at_its_deadline() {
        let clock = SystemClock::default();
        let out = within(
            &clock,
            Duration::from_millis(1),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(out, Err(Elapsed(Duration::from_millis(1))));
    }

    #[test]
    fn timings_keep_two_decimals() {
        assert_eq!(ms(Duration::from_micros(1_234_567)), 1234.57);
    }
}
