//! A subscriber that logs every event through `tracing`.

use std::fmt;

use tracing::Level;

use super::{Event, Subscriber};

/// Logs each event as one `tracing` event at a chosen level (failures at `WARN` or above), under
/// the target `atoll`, as one line: the event's name, then each metadata and measurement it
/// carries as `key=value`.
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
        let level = if event.kind.is_error() && self.level > Level::WARN {
            Level::WARN
        } else {
            self.level
        };
        let line = Line(event);
        match level {
            Level::ERROR => tracing::error!(target: "atoll", "{line}"),
            Level::WARN => tracing::warn!(target: "atoll", "{line}"),
            Level::INFO => tracing::info!(target: "atoll", "{line}"),
            Level::DEBUG => tracing::debug!(target: "atoll", "{line}"),
            Level::TRACE => tracing::trace!(target: "atoll", "{line}"),
        }
    }
}
