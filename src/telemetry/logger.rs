//! A subscriber that logs every event through `tracing`, failures at a bounded rate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::Level;

use super::budget::{self, Clock, LogBudget, Suppressed, FAILURE_LOG_LINES, FAILURE_LOG_WINDOW};
use super::event::FAILURE_KINDS;
use super::{Event, EventKind, Subscriber};

/// Logs each event as one `tracing` event at a chosen level (failures at `WARN` or above), under
/// the target `atoll`, as one line: the event's name, then each metadata and measurement it
/// carries as `key=value`.
///
/// # Failures are logged at a bounded rate
///
/// A peer can make a listener fail as often as it connects, so each kind of failure
/// ([`EventKind::is_error`]) has a budget of [`FAILURE_LOG_LINES`] (10) lines per
/// [`FAILURE_LOG_WINDOW`] (10 s). Past it, failures of that kind are counted and not
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
/// with budgets of its own). The limits are fixed. [`MetricsRecorder`](super::MetricsRecorder)
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
    /// most [`FAILURE_LOG_LINES`] of each kind per [`FAILURE_LOG_WINDOW`].
    pub fn new(level: Level) -> Self {
        TracingLogger {
            level,
            failures: Arc::new(Failures {
                clock: Clock::new(),
                budgets: Default::default(),
            }),
        }
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
                    log(self.failure_level(), &Summary(kind, listener, s));
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
            log(level, &Summary(event.kind, event.listener, s));
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
        let wait = budget::window_end(now).saturating_sub(now);
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(s) = failures.budgets[index].summary() {
                log(level, &Summary(kind, &listener, s));
            }
        });
    }
}

impl Clone for TracingLogger {
    /// The same level, with budgets of its own: a clone attached to another listener does
    /// not share this one's.
    fn clone(&self) -> Self {
        TracingLogger::new(self.level)
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
];

/// The line that sums up the failures of one kind a listener did not log:
/// `connection.handshake_error listener=web suppressed=990 total=1000 limit="10 lines per 10s"`.
struct Summary<'a>(EventKind, &'a str, Suppressed);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Summary(kind, listener, s) = self;
        write!(
            f,
            "{kind} listener={listener} suppressed={} total={} limit=\"{FAILURE_LOG_LINES} lines per {FAILURE_LOG_WINDOW:?}\"",
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
    fn other_events_are_never_held_back() {
        let captured = Captured::default();
        let _guard = captured.install();
        let logger = TracingLogger::new(Level::INFO);
        failures(&logger, EventKind::ConnectionStart, 100);
        assert_eq!(captured.lines().len(), 100);
    }
}
