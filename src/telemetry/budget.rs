//! Log budgets: which occurrences of a repeated failure get a log line, and how many did not.
//!
//! A peer can make a listener fail as often as it can open connections (20,000 stalled TLS
//! handshakes are 20,000 timeouts). One line per failure would let it fill the disk and bury
//! every other line, so each kind of failure gets a budget ([`FailureLogBudget`]): at most
//! so many lines per window, [`FAILURE_LOG_LINES`] per [`FAILURE_LOG_WINDOW`] by default;
//! past it the failures are only counted, and one summary line gives the count once the
//! window ends.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many lines of one kind of failure a listener logs per window, by default: 10.
pub const FAILURE_LOG_LINES: u64 = 10;

/// The window over which the lines of one kind of failure are counted, by default: 10 s.
/// Windows follow each other from the moment the logger was made.
pub const FAILURE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// How many lines of one kind of failure may be logged per window: the config keys
/// `failure_log_lines` and `failure_log_window`.
///
/// Default is [`FAILURE_LOG_LINES`] (10) lines per [`FAILURE_LOG_WINDOW`] (10 s). `lines` may
/// be 0: failures are then only counted, and each window that had some ends with one summary
/// line. The window is from [`MIN_WINDOW`](Self::MIN_WINDOW) (1 s) to
/// [`MAX_WINDOW`](Self::MAX_WINDOW) (24 h).
///
/// ```
/// use std::time::Duration;
/// use atoll::telemetry::FailureLogBudget;
///
/// let budget = FailureLogBudget::new(3, Duration::from_secs(60)).unwrap();
/// assert_eq!(budget.to_string(), "3 lines per 60s");
/// assert!(FailureLogBudget::new(3, Duration::ZERO).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureLogBudget {
    lines: u64,
    window: Duration,
}

impl Default for FailureLogBudget {
    fn default() -> Self {
        FailureLogBudget {
            lines: FAILURE_LOG_LINES,
            window: FAILURE_LOG_WINDOW,
        }
    }
}

impl FailureLogBudget {
    /// The shortest window: 1 s. A shorter one would hardly bound anything, and would wake a
    /// task for each summary that often.
    pub const MIN_WINDOW: Duration = Duration::from_secs(1);
    /// The longest window: 24 h.
    pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

    /// At most `lines` lines (0: none, only the summaries) of each kind of failure per
    /// `window`.
    ///
    /// # Errors
    ///
    /// [`InvalidFailureLogWindow`] when `window` is not from [`MIN_WINDOW`](Self::MIN_WINDOW)
    /// to [`MAX_WINDOW`](Self::MAX_WINDOW).
    pub fn new(lines: u64, window: Duration) -> Result<Self, InvalidFailureLogWindow> {
        if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&window) {
            return Err(InvalidFailureLogWindow { window });
        }
        Ok(FailureLogBudget { lines, window })
    }

    /// How many lines of one kind of failure are logged per window.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// How long a window lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The window holding `now` (time since the clock's start), numbered from 0.
    fn window_of(&self, now: Duration) -> u64 {
        (now.as_millis() / self.window.as_millis()) as u64
    }

    /// When the window holding `now` ends, as time since the clock's start.
    pub(crate) fn window_end(&self, now: Duration) -> Duration {
        let next = self.window_of(now).saturating_add(1);
        Duration::from_millis(next.saturating_mul(self.window.as_millis() as u64))
    }
}

impl fmt::Display for FailureLogBudget {
    /// `10 lines per 10s`, as the summary lines say it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lines per {:?}", self.lines, self.window)
    }
}

/// A [`FailureLogBudget`] window out of bounds; its message gives the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFailureLogWindow {
    window: Duration,
}

impl InvalidFailureLogWindow {
    /// The window refused.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl fmt::Display for InvalidFailureLogWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a failure log window must be from {:?} to {:?}, not {:?}",
            FailureLogBudget::MIN_WINDOW,
            FailureLogBudget::MAX_WINDOW,
            self.window
        )
    }
}

impl std::error::Error for InvalidFailureLogWindow {}

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
    /// How many lines per how long.
    limit: FailureLogBudget,
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
    /// A budget of `limit`.
    pub(crate) fn new(limit: FailureLogBudget) -> Self {
        LogBudget {
            limit,
            ..LogBudget::default()
        }
    }

    /// The limit it keeps.
    pub(crate) fn limit(&self) -> FailureLogBudget {
        self.limit
    }

    /// When the window holding `now` ends, as time since the clock's start.
    pub(crate) fn window_end(&self, now: Duration) -> Duration {
        self.limit.window_end(now)
    }

    /// Counts one failure at `now` (time since the clock's start) and says whether to log it.
    pub(crate) fn take(&self, now: Duration) -> Verdict {
        let window = self.limit.window_of(now);
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
        if self.seen.fetch_add(1, Ordering::AcqRel) < self.limit.lines {
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
        let budget = FailureLogBudget::default();
        assert_eq!(budget.window_end(Duration::ZERO), W);
        assert_eq!(budget.window_end(W - Duration::from_millis(1)), W);
        assert_eq!(budget.window_end(W), W * 2);
    }

    #[test]
    fn a_budget_of_its_own_is_kept() {
        let minute = Duration::from_secs(60);
        let budget = LogBudget::new(FailureLogBudget::new(3, minute).unwrap());
        let logged = (0..50).filter(|_| budget.take(minute / 2).log).count();
        assert_eq!(logged, 3);
        // Still the same window at 59 s; a new one at 60 s.
        assert!(!budget.take(minute - Duration::from_secs(1)).log);
        let v = budget.take(minute);
        assert!(v.log);
        assert_eq!(v.summary.map(|s| (s.count, s.total)), Some((48, 51)));
        assert_eq!(budget.window_end(minute), minute * 2);
    }

    #[test]
    fn zero_lines_only_count() {
        let budget = LogBudget::new(FailureLogBudget::new(0, W).unwrap());
        let verdicts: Vec<Verdict> = (0..5).map(|_| budget.take(Duration::ZERO)).collect();
        assert!(verdicts.iter().all(|v| !v.log));
        assert_eq!(verdicts.iter().filter(|v| v.first_suppressed).count(), 1);
        assert_eq!(budget.summary().map(|s| (s.count, s.total)), Some((5, 5)));
    }

    #[test]
    fn a_window_out_of_bounds_is_refused() {
        for bad in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_secs(86_401),
        ] {
            let e = FailureLogBudget::new(1, bad).unwrap_err();
            assert_eq!(e.window(), bad);
            assert!(e.to_string().contains("from 1s to 86400s"), "{e}");
        }
        assert!(FailureLogBudget::new(u64::MAX, FailureLogBudget::MAX_WINDOW).is_ok());
        assert_eq!(FailureLogBudget::default().to_string(), "10 lines per 10s");
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
