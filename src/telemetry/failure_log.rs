//! The budgets of the log lines a peer can trigger outside the telemetry events: one per kind
//! of line, per owner (a listener), made at the first line of that kind.

use std::sync::{Arc, Mutex};

use super::budget::{Clock, FailureLogBudget, LogBudget, Suppressed};

/// The log budgets of one owner's failures, each kind of line (named by its message) with its
/// own. Past a budget, failures are counted, and one line sums them up under the target
/// `atoll` when the window ends (if a tokio runtime is at hand, else with the next failure of
/// that kind), or at the latest at [`flush`](Self::flush) (a listener's stop) or the drop:
///
/// ```text
/// WARN atoll: mounted service failed: listener=web suppressed=47 total=50 limit="3 lines per 10s"
/// ```
#[derive(Debug)]
pub(crate) struct FailureLogs {
    /// Named in the summary lines.
    owner: String,
    limit: FailureLogBudget,
    clock: Clock,
    /// Few kinds, looked up only on a failure: a short list under a lock held for the lookup
    /// alone.
    kinds: Mutex<Vec<(&'static str, Arc<LogBudget>)>>,
}

impl FailureLogs {
    /// The budgets of `owner` (a listener's name), each `limit`.
    pub(crate) fn new(owner: impl Into<String>, limit: FailureLogBudget) -> Arc<FailureLogs> {
        Arc::new(FailureLogs {
            owner: owner.into(),
            limit,
            clock: Clock::new(),
            kinds: Mutex::new(Vec::new()),
        })
    }

    /// Counts one failure of the kind `what` (the message of its line); `line` logs it when
    /// the budget allows.
    #[cold]
    pub(crate) fn record(self: &Arc<Self>, what: &'static str, line: impl FnOnce()) {
        let budget = self.budget_of(what);
        let now = self.clock.now();
        let verdict = budget.take(now);
        if let Some(s) = verdict.summary {
            self.summarize(what, s);
        }
        if verdict.log {
            line();
        }
        if verdict.first_suppressed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Weak: the owner's drop, not the end of a long window, gives the last summary.
                let logs = Arc::downgrade(self);
                let wait = budget.window_end(now).saturating_sub(now);
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let (Some(logs), Some(s)) = (logs.upgrade(), budget.summary()) {
                        logs.summarize(what, s);
                    }
                });
            }
        }
    }

    /// Logs the summaries due now: the failures held back and not summed up yet.
    pub(crate) fn flush(&self) {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (what, budget) in kinds {
            if let Some(s) = budget.summary() {
                self.summarize(what, s);
            }
        }
    }

    fn budget_of(&self, what: &'static str) -> Arc<LogBudget> {
        // A poisoned lock only means a panic elsewhere while looking up: the list is whole.
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, budget)) = kinds.iter().find(|(w, _)| *w == what) {
            return budget.clone();
        }
        let budget = Arc::new(LogBudget::new(self.limit));
        kinds.push((what, budget.clone()));
        budget
    }

    fn summarize(&self, what: &str, s: Suppressed) {
        tracing::warn!(
            target: "atoll",
            "{what}: listener={} suppressed={} total={} limit=\"{}\"",
            self.owner,
            s.count,
            s.total,
            self.limit
        );
    }
}

impl Drop for FailureLogs {
    /// The summaries still due: the owner is gone (a listener stopped), no later failure will
    /// bring them.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::Captured;
    use super::*;
    use std::time::Duration;

    fn fail(logs: &Arc<FailureLogs>, what: &'static str, n: usize) {
        for i in 0..n {
            logs.record(
                what,
                || tracing::warn!(target: "atoll::http", "{what} #{i}"),
            );
        }
    }

    #[test]
    fn each_kind_is_bounded_and_summed_up_when_dropped() {
        let captured = Captured::default();
        let _guard = captured.install();
        let limit = FailureLogBudget::new(3, Duration::from_secs(3600)).unwrap();
        let logs = FailureLogs::new("web", limit);
        fail(&logs, "mounted service failed", 50);
        fail(&logs, "broadcast dropped", 2);
        let lines = captured.lines();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[2].ends_with("mounted service failed #2"),
            "{lines:#?}"
        );
        drop(logs);
        let lines = captured.lines();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines[5].ends_with(
                "WARN atoll: mounted service failed: listener=web suppressed=47 total=50 limit=\"3 lines per 3600s\""
            ),
            "{}",
            lines[5]
        );
    }

    // Paused: the wait for the end of the window passes at once.
    #[tokio::test(start_paused = true)]
    async fn the_summary_follows_the_window() {
        let captured = Captured::default();
        let _guard = captured.install();
        let logs = FailureLogs::new("kv", FailureLogBudget::default());
        fail(&logs, "the service panicked in terminate", 12);
        assert_eq!(captured.lines().len(), 10);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let lines = captured.lines();
        assert_eq!(lines.len(), 11, "{lines:#?}");
        assert!(
            lines[10].contains("listener=kv suppressed=2 total=12"),
            "{}",
            lines[10]
        );
        drop(logs);
        assert_eq!(captured.lines().len(), 11, "summed up once");
    }
}
