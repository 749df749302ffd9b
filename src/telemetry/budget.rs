//! Log budgets: which occurrences of a repeated failure get a log line, and how many did not.
//!
//! A peer can make a listener fail as often as it can open connections (20,000 stalled TLS
//! handshakes are 20,000 timeouts). One line per failure would let it fill the disk and bury
//! every other line, so each kind of failure gets a budget: at most [`FAILURE_LOG_LINES`]
//! lines per [`FAILURE_LOG_WINDOW`]; past it the failures are only counted, and one summary
//! line gives the count once the window ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many lines of one kind of failure a listener logs per [`FAILURE_LOG_WINDOW`]: 10.
pub const FAILURE_LOG_LINES: u64 = 10;

/// The window over which [`FAILURE_LOG_LINES`] lines of one kind of failure are logged: 10 s.
/// Windows follow each other from the moment the logger was made.
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Failures that were counted but not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suppressed {
    /// How many since the last summary.
    pub(crate) count: u64,
    /// How many of this kind in all, logged or not, until now.
    pub(crate) total: u64,
}

/// What to do with one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Log it.
    pub(crate) log: bool,
    /// First log this summary of the failures the last window did not log.
    pub(crate) summary: Option<Suppressed>,
    /// It is the first failure this window does not log: a summary is due when the window
    /// ends, even if no other failure comes.
    pub(crate) first_suppressed: bool,
}

/// The budget of one kind of failure. Lock-free: failures come from every connection task at
/// once. Under a race at the turn of a window a few more lines than the budget may go out;
/// no failure is ever lost from the counts.
#[derive(Debug, Default)]
pub(crate) struct LogBudget {
    /// The window the counts below belong to, numbered from the clock's start.
    window: AtomicU64,
    /// Failures seen in that window (logged while under the budget).
    seen: AtomicU64,
    /// Failures not logged since the last summary.
    suppressed: AtomicU64,
    /// Failures seen in all.
    total: AtomicU64,
}

impl LogBudget {
    /// Counts one failure at `now` (time since the clock's start) and says whether to log it.
    pub(crate) fn take(&self, now: Duration) -> Verdict {
        let window = window_of(now);
        let mut summary = None;
        let current = self.window.load(Ordering::Acquire);
        if window > current
            && self
                .window
                .compare_exchange(current, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.seen.store(0, Ordering::Release);
            summary = self.summary();
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        if self.seen.fetch_add(1, Ordering::AcqRel) < FAILURE_LOG_LINES {
            return Verdict {
                log: true,
                summary,
                first_suppressed: false,
            };
        }
        Verdict {
            log: false,
            summary,
            first_suppressed: self.suppressed.fetch_add(1, Ordering::AcqRel) == 0,
        }
    }

    /// The failures not logged since the last summary, which this call becomes; `None` when
    /// there are none.
    pub(crate) fn summary(&self) -> Option<Suppressed> {
        let count = self.suppressed.swap(0, Ordering::AcqRel);
        (count > 0).then(|| Suppressed {
            count,
            total: self.total.load(Ordering::Acquire),
        })
    }
}

/// When the window holding `now` ends, as time since the clock's start.
pub(crate) fn window_end(now: Duration) -> Duration {
    let next = window_of(now).saturating_add(1);
    Duration::from_millis(next.saturating_mul(FAILURE_LOG_WINDOW.as_millis() as u64))
}

fn window_of(now: Duration) -> u64 {
    (now.as_millis() / FAILURE_LOG_WINDOW.as_millis()) as u64
}

/// The start of a logger's windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(Instant::now())
    }

    pub(crate) fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = FAILURE_LOG_WINDOW;

    #[test]
    fn a_burst_is_logged_up_to_the_budget_then_counted() {
        let budget = LogBudget::default();
        let verdicts: Vec<Verdict> = (0..1000).map(|_| budget.take(W / 2)).collect();
        let logged = verdicts.iter().filter(|v| v.log).count() as u64;
        assert_eq!(logged, FAILURE_LOG_LINES);
        assert!(verdicts[..FAILURE_LOG_LINES as usize].iter().all(|v| v.log));
        let firsts = verdicts.iter().filter(|v| v.first_suppressed).count();
        assert_eq!(firsts, 1, "one summary due");
        assert!(verdicts.iter().all(|v| v.summary.is_none()));
        assert_eq!(
            budget.summary(),
            Some(Suppressed {
                count: 1000 - FAILURE_LOG_LINES,
                total: 1000
            })
        );
        assert_eq!(budget.summary(), None, "given once");
    }

    #[test]
    fn the_next_window_gives_the_summary_and_a_new_budget() {
        let budget = LogBudget::default();
        for _ in 0..25 {
            budget.take(Duration::ZERO);
        }
        // Three windows later: the 15 not logged are summed up, and logging starts again.
        let v = budget.take(W * 3 + Duration::from_millis(1));
        assert_eq!(
            v.summary,
            Some(Suppressed {
                count: 15,
                total: 25
            })
        );
        assert!(v.log);
        // A quiet window: nothing to sum up.
        let v = budget.take(W * 5);
        assert_eq!(v.summary, None);
        assert!(v.log);
    }

    #[test]
    fn under_the_budget_nothing_is_suppressed() {
        let budget = LogBudget::default();
        for i in 0..100 {
            // One failure per window.
            let v = budget.take(W * i);
            assert!(v.log && v.summary.is_none() && !v.first_suppressed);
        }
        assert_eq!(budget.summary(), None);
    }

    #[test]
    fn a_window_ends_on_its_boundary() {
        assert_eq!(window_end(Duration::ZERO), W);
        assert_eq!(window_end(W - Duration::from_millis(1)), W);
        assert_eq!(window_end(W), W * 2);
    }

    #[test]
    fn counts_survive_racing_threads() {
        let budget = std::sync::Arc::new(LogBudget::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..500).filter(|_| budget.take(Duration::ZERO).log).count() as u64
                })
            })
            .collect();
        let logged: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(logged, FAILURE_LOG_LINES);
        assert_eq!(
            budget.summary().map(|s| (s.count, s.total)),
            Some((1990, 2000))
        );
    }
}
