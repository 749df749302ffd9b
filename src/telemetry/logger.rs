//! A subscriber that logs every event through `tracing`, failures at a bounded rate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::Level;

use super::budget::{Clock, FailureLogBudget, LogBudget, Suppressed};
use super::event::FAILURE_KINDS;
use super::{Event, EventKind, Subscriber};

/// Logs each event as one `tracing` event at a chosen level (failures at `WARN` or above), under
/// the target `atoll`, as one line: the event's name, then each metadata and measurement it
/// carries as `key=value`.
///
/// # Failures are logged at a bounded rate
///
/// A peer can make a listener fail as often as it connects, so each kind of failure
/// ([`EventKind::is_error`]) has a budget of lines per window ([`FailureLogBudget`]; default
/// is [`FAILURE_LOG_LINES`](super::FAILURE_LOG_LINES) (10) lines per
/// [`FAILURE_LOG_WINDOW`](super::FAILURE_LOG_WINDOW) (10 s), see
/// [`with_budget`](Self::with_budget)). Past it, failures of that kind are counted and not
/// logged, and once the window ends one line sums them up:
///
/// ```text
/// connection.handshake_error listener=web suppressed=19990 total=20000 limit="10 lines per 10s"
/// ```
///
/// `suppressed` is how many were not logged since the last such line, `total` how many of
/// that kind the listener had in all. The summary comes when the window ends if a tokio
/// runtime is at hand, else with the next failure of that kind, and at the latest with
/// `listener.stop`. The budget is per logger: attach one to each listener (a clone starts
/// with budgets of its own, and the same limits). [`MetricsRecorder`](super::MetricsRecorder)
/// counts every event, logged or not. Other events are never held back: at `INFO` and
/// below, every connection is logged, as asked.
///
/// ```
/// # let server_handle: Option<atoll::ServerHandle> = None;
/// use atoll::telemetry::TracingLogger;
/// # if let Some(handle) = server_handle {
/// let id = handle.telemetry().attach(TracingLogger::new(tracing::Level::DEBUG));
/// // ... later, on the running server:
/// handle.telemetry().detach(id);
/// # }
/// ```
#[derive(Debug)]
pub struct TracingLogger {
    level: Level,
    /// Shared with the tasks that write a summary when a window ends.
    failures: Arc<Failures>,
}

/// The log budget of each kind of failure.
#[derive(Debug)]
struct Failures {
    clock: Clock,
    budgets: [LogBudget; FAILURE_KINDS],
}

impl TracingLogger {
    /// Logs events at `level`; failure events are logged at `WARN` when `level` is lower, at
    /// most [`FAILURE_LOG_LINES`](super::FAILURE_LOG_LINES) (10) of each kind per
    /// [`FAILURE_LOG_WINDOW`](super::FAILURE_LOG_WINDOW) (10 s).
    pub fn new(level: Level) -> Self {
        TracingLogger::with_budget(level, FailureLogBudget::default())
    }

    /// Logs events at `level`; failure events at `WARN` when `level` is lower, at most as
    /// many of each kind per window as `budget` says. Default is
    /// [`FailureLogBudget::default()`], 10 lines per 10 s (the config keys
    /// `failure_log_lines` and `failure_log_window`).
    pub fn with_budget(level: Level, budget: FailureLogBudget) -> Self {
        TracingLogger {
            level,
            failures: Arc::new(Failures {
                clock: Clock::new(),
                budgets: std::array::from_fn(|_| LogBudget::new(budget)),
            }),
        }
    }

    /// The limits of its budgets.
    pub fn budget(&self) -> FailureLogBudget {
        self.failures.budgets[0].limit()
    }

    /// The level failure events are logged at.
    fn failure_level(&self) -> Level {
        if self.level > Level::WARN {
            Level::WARN
        } else {
            self.level
        }
    }

    /// Logs, for each kind of failure, the summary of those not logged yet. Called when the
    /// listener stops, whether or not `listener.stop` itself is logged.
    pub(crate) fn flush(&self, listener: &str) {
        for kind in FAILURE_KIND_LIST {
            if let Some(index) = kind.failure_index() {
                if let Some(s) = self.failures.budgets[index].summary() {
                    log(
                        self.failure_level(),
                        &Summary(kind, listener, s, self.budget()),
                    );
                }
            }
        }
    }

    /// Logs the failure `event` if its budget allows, with the summary of the last window
    /// first when one is due.
    fn on_failure(&self, event: &Event<'_>, index: usize) {
        let level = self.failure_level();
        let now = self.failures.clock.now();
        let verdict = self.failures.budgets[index].take(now);
        if let Some(s) = verdict.summary {
            log(
                level,
                &Summary(event.kind, event.listener, s, self.budget()),
            );
        }
        if verdict.log {
            log(level, &Line(event));
        }
        if verdict.first_suppressed {
            self.summarize_later(event.kind, index, event.listener, now);
        }
    }

    /// Logs the summary of the failures of `kind` when the window holding `now` ends, if a
    /// tokio runtime is at hand to wait for it (the summary comes with the next failure or
    /// the stop otherwise). At most once per window and kind, so never on a hot path.
    fn summarize_later(&self, kind: EventKind, index: usize, listener: &str, now: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let failures = self.failures.clone();
        let level = self.failure_level();
        let listener = listener.to_owned();
        let wait = failures.budgets[index].window_end(now).saturating_sub(now);
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let budget = &failures.budgets[index];
            if let Some(s) = budget.summary() {
                log(level, &Summary(kind, &listener, s, budget.limit()));
            }
        });
    }
}

impl Clone for TracingLogger {
    /// The same level and limits, with budgets of its own: a clone attached to another
    /// listener does not share this one's counts.
    fn clone(&self) -> Self {
        TracingLogger::with_budget(self.level, self.budget())
    }
}

/// Every kind of failure, to flush each budget.
const FAILURE_KIND_LIST: [EventKind; FAILURE_KINDS] = [
    EventKind::AcceptError,
    EventKind::Emfile,
    EventKind::MaxConnectionsExceeded,
    EventKind::HandshakeError,
    EventKind::RecvError,
    EventKind::SendError,
    EventKind::SendfileError,
    EventKind::HandlerError,
    EventKind::HandlerPanic,
    EventKind::ConnectionForced,
    EventKind::RpcFailure,
    EventKind::MaxConnectionsPerIpExceeded,
    EventKind::ProxyHeaderError,
    EventKind::ListenerError,
];

/// The line that sums up the failures of one kind a listener did not log:
/// `connection.handshake_error listener=web suppressed=990 total=1000 limit="10 lines per 10s"`.
struct Summary<'a>(EventKind, &'a str, Suppressed, FailureLogBudget);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Summary(kind, listener, s, limit) = self;
        write!(
            f,
            "{kind} listener={listener} suppressed={} total={} limit=\"{limit}\"",
            s.count, s.total
        )
    }
}

/// Logs `line` at `level` under the target `atoll`.
fn log(level: Level, line: &dyn fmt::Display) {
    match level {
        Level::ERROR => tracing::error!(target: "atoll", "{line}"),
        Level::WARN => tracing::warn!(target: "atoll", "{line}"),
        Level::INFO => tracing::info!(target: "atoll", "{line}"),
        Level::DEBUG => tracing::debug!(target: "atoll", "{line}"),
        Level::TRACE => tracing::trace!(target: "atoll", "{line}"),
    }
}

/// An event on one line, with only the measurements it has:
/// `connection.stop listener=web connection=7 peer=127.0.0.1:50312 duration=1.2s recv_bytes=10 ...`.
struct Line<'a, 'e>(&'a Event<'e>);

impl fmt::Display for Line<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{} listener={}", e.kind.name(), e.listener)?;
        if let Some(a) = e.acceptor {
            write!(f, " acceptor={a}")?;
        }
        if let Some(c) = e.connection {
            write!(f, " connection={c}")?;
        }
        if let Some(p) = e.peer {
            write!(f, " peer={p}")?;
        }
        if let (Some(m), Some(p), Some(s)) = (e.method, e.path, e.status) {
            write!(f, " method={m} path={p} status={s}")?;
        }
        if let Some(code) = e.code {
            write!(f, " code=\"{code}\"")?;
        }
        if let Some(d) = e.duration {
            write!(f, " duration={d:?}")?;
        }
        if let Some(b) = e.bytes {
            write!(f, " bytes={b}")?;
        }
        if let Some(s) = e.stats {
            write!(
                f,
                " recv_bytes={} recv_packets={} send_bytes={} send_packets={}",
                s.recv_bytes, s.recv_packets, s.send_bytes, s.send_packets
            )?;
        }
        if let Some(err) = e.error {
            write!(f, " error=\"{err}\"")?;
        }
        Ok(())
    }
}

impl Subscriber for TracingLogger {
    fn on_event(&self, event: &Event<'_>) {
        if let Some(index) = event.kind.failure_index() {
            return self.on_failure(event, index);
        }
        if event.kind == EventKind::ListenerStop {
            self.flush(event.listener);
        }
        log(self.level, &Line(event));
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::Captured;
    use super::super::FAILURE_LOG_WINDOW;
    use super::*;

    fn failures(logger: &TracingLogger, kind: EventKind, n: usize) {
        for _ in 0..n {
            logger.on_event(&Event::new(kind, "web"));
        }
    }

    // Paused: the summary's wait for the end of the window passes at once.
    #[tokio::test(start_paused = true)]
    async fn a_summary_follows_the_window_without_another_failure() {
        let captured = Captured::default();
        let _guard = captured.install();
        let logger = TracingLogger::new(Level::INFO);
        failures(&logger, EventKind::HandshakeError, 50);
        // Another kind has a budget of its own.
        failures(&logger, EventKind::MaxConnectionsExceeded, 3);
        assert_eq!(captured.lines().len(), 13);
        tokio::time::sleep(FAILURE_LOG_WINDOW * 2).await;
        let lines = captured.lines();
        assert_eq!(lines.len(), 14, "{lines:#?}");
        assert!(
            lines[13].ends_with(
                "WARN atoll: connection.handshake_error listener=web suppressed=40 total=50 limit=\"10 lines per 10s\""
            ),
            "{}",
            lines[13]
        );
        // Nothing more to sum up at the stop; the stop itself is logged at INFO.
        logger.on_event(&Event::new(EventKind::ListenerStop, "web"));
        let lines = captured.lines();
        assert_eq!(lines.len(), 15, "{lines:#?}");
        assert!(lines[14].contains("INFO atoll: listener.stop listener=web"));
    }

    #[test]
    fn without_a_runtime_the_stop_gives_the_summary() {
        let captured = Captured::default();
        let _guard = captured.install();
        let logger = TracingLogger::new(Level::WARN);
        failures(&logger, EventKind::HandlerPanic, 12);
        assert_eq!(captured.lines().len(), 10);
        logger.flush("web");
        let lines = captured.lines();
        assert!(
            lines[10].contains("connection.handler_panic listener=web suppressed=2 total=12"),
            "{lines:#?}"
        );
        logger.flush("web");
        assert_eq!(captured.lines().len(), 11, "summed up once");
        // A clone has its budgets of its own.
        let other = logger.clone();
        failures(&other, EventKind::HandlerPanic, 1);
        assert_eq!(captured.lines().len(), 12);
    }

    #[test]
    fn a_budget_of_its_own_bounds_the_lines() {
        let captured = Captured::default();
        let _guard = captured.install();
        let budget = FailureLogBudget::new(3, Duration::from_secs(3600)).unwrap();
        let logger = TracingLogger::with_budget(Level::WARN, budget);
        failures(&logger, EventKind::HandshakeError, 50);
        assert_eq!(captured.lines().len(), 3);
        // A clone keeps the limits, with counts of its own.
        let other = logger.clone();
        assert_eq!(other.budget(), budget);
        logger.flush("web");
        let lines = captured.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[3].ends_with("suppressed=47 total=50 limit=\"3 lines per 3600s\""),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn other_events_are_never_held_back() {
        let captured = Captured::default();
        let _guard = captured.install();
        let logger = TracingLogger::new(Level::INFO);
        failures(&logger, EventKind::ConnectionStart, 100);
        assert_eq!(captured.lines().len(), 100);
    }
}
