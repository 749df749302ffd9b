//! A subscriber that logs every event through `tracing`.

use tracing::Level;

use super::{Event, Subscriber};

/// Logs each event as one `tracing` event at a chosen level (failures at `WARN` or above), under
/// the target `atoll`.
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
#[derive(Debug, Clone, Copy)]
pub struct TracingLogger {
    level: Level,
}

impl TracingLogger {
    /// Logs events at `level`; failure events are logged at `WARN` when `level` is lower.
    pub fn new(level: Level) -> Self {
        TracingLogger { level }
    }
}

macro_rules! log_at {
    ($level:expr, $e:expr) => {{
        let e = $e;
        let peer = e.peer.map(tracing::field::display);
        let error = e.error.map(tracing::field::display);
        match $level {
            Level::ERROR => tracing::error!(target: "atoll", event = e.kind.name(), listener = e.listener, acceptor = e.acceptor, connection = e.connection, peer, duration = ?e.duration, bytes = e.bytes, stats = ?e.stats, error),
            Level::WARN => tracing::warn!(target: "atoll", event = e.kind.name(), listener = e.listener, acceptor = e.acceptor, connection = e.connection, peer, duration = ?e.duration, bytes = e.bytes, stats = ?e.stats, error),
            Level::INFO => tracing::info!(target: "atoll", event = e.kind.name(), listener = e.listener, acceptor = e.acceptor, connection = e.connection, peer, duration = ?e.duration, bytes = e.bytes, stats = ?e.stats, error),
            Level::DEBUG => tracing::debug!(target: "atoll", event = e.kind.name(), listener = e.listener, acceptor = e.acceptor, connection = e.connection, peer, duration = ?e.duration, bytes = e.bytes, stats = ?e.stats, error),
            _ => tracing::trace!(target: "atoll", event = e.kind.name(), listener = e.listener, acceptor = e.acceptor, connection = e.connection, peer, duration = ?e.duration, bytes = e.bytes, stats = ?e.stats, error),
        }
    }};
}

impl Subscriber for TracingLogger {
    fn on_event(&self, event: &Event<'_>) {
        let level = if event.kind.is_error() && self.level > Level::WARN {
            Level::WARN
        } else {
            self.level
        };
        log_at!(level, event);
    }
}
