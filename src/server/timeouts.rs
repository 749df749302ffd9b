//! Read timeouts for all of a listener's connections, kept by one sweeper task instead of a
//! timer per connection.
//!
//! A connection only stores its deadline (an atomic store per read); the sweeper sleeps until
//! the earliest deadline, marks the connections whose deadline has passed and wakes them. So a
//! connection costs no timer registration, and its task carries no timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connections::{Slot, Table};

/// Shortest pause between two sweeps, which is also how late a timeout may fire.
const MIN_SWEEP: Duration = Duration::from_millis(10);

/// A listener's timeout clock and its sweeper's schedule.
#[derive(Debug)]
pub(crate) struct Timeouts {
    epoch: Instant,
    /// When the sweeper will next look, in nanoseconds since `epoch`. A deadline set earlier
    /// than this pokes the sweeper.
    next_sweep: AtomicU64,
    poke: Notify,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            epoch: Instant::now(),
            next_sweep: AtomicU64::new(u64::MAX),
            poke: Notify::new(),
        }
    }
}

impl Timeouts {
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Sets the connection's deadline to `after` from now.
    #[inline]
    pub(crate) fn arm(&self, slot: &Slot, after: Duration) {
        let deadline = self
            .since_epoch(Instant::now())
            .saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
        self.set(slot, deadline);
    }

    /// Sets the connection's deadline to `at`.
    pub(crate) fn arm_at(&self, slot: &Slot, at: Instant) {
        self.set(slot, self.since_epoch(at));
    }

    #[inline]
    fn set(&self, slot: &Slot, deadline: u64) {
        slot.deadline.store(deadline, Ordering::Release);
        if deadline < self.next_sweep.load(Ordering::Acquire) {
            self.poke.notify_one();
        }
    }

    /// True when the connection's deadline has passed.
    pub(crate) fn is_due(&self, slot: &Slot) -> bool {
        slot.deadline.load(Ordering::Acquire) <= self.since_epoch(Instant::now())
    }

    /// Sweeps `table` for passed deadlines, for ever (the listener aborts it when it stops).
    pub(crate) async fn sweep(&self, table: &Table) {
        loop {
            // Any deadline set from here on pokes, so none is missed while we scan.
            self.next_sweep.store(0, Ordering::Release);
            let now = self.since_epoch(Instant::now());
            let mut next = u64::MAX;
            table.for_each(|slot| {
                let deadline = slot.deadline.load(Ordering::Acquire);
                if deadline <= now {
                    slot.expire();
                } else {
                    next = next.min(deadline);
                }
            });
            let floor = now.saturating_add(MIN_SWEEP.as_nanos() as u64);
            let next = next.max(floor);
            self.next_sweep.store(next, Ordering::Release);
            if next == u64::MAX {
                self.poke.notified().await;
            } else {
                let at = self.epoch + Duration::from_nanos(next);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.poke.notified() => {
                        // Poked for an earlier deadline: still no faster than MIN_SWEEP.
                        tokio::time::sleep_until(self.epoch + Duration::from_nanos(floor)).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::addr::Addr;
    use crate::connections::Signal;

    /// Polls the slot's signal once, as the connection loop does.
    fn signal(slot: &Slot) -> Option<Signal> {
        let mut cx = Context::from_waker(Waker::noop());
        match slot.poll_signal(&mut cx, &mut false, false) {
            Poll::Ready(s) => Some(s),
            Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_deadlines_that_passed_expire() {
        let table = Arc::new(Table::default());
        let timeouts = Arc::new(Timeouts::default());
        let quiet = Arc::new(Slot::new(1, Addr::Unix(None)));
        let busy = Arc::new(Slot::new(2, Addr::Unix(None)));
        for slot in [&quiet, &busy] {
            table.insert_with(slot.clone(), || tokio::spawn(async {}).abort_handle());
            timeouts.arm(slot, Duration::from_millis(100));
        }
        let (t, tt) = (timeouts.clone(), table.clone());
        let sweeper = tokio::spawn(async move { t.sweep(&tt).await });

        // The busy one reads every 50 ms, moving its deadline; the quiet one never does.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            timeouts.arm(&busy, Duration::from_millis(100));
        }
        assert_eq!(signal(&quiet), Some(Signal::Expired));
        assert_eq!(signal(&quiet), None, "an expiry is reported once");
        assert_eq!(signal(&busy), None);

        // A shorter one-shot timeout pokes the sweeper, which honours it within MIN_SWEEP.
        timeouts.arm(&busy, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(5) + MIN_SWEEP * 2).await;
        assert_eq!(signal(&busy), Some(Signal::Expired));
        assert!(timeouts.is_due(&busy));
        sweeper.abort();
    }
}
