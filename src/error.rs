//! atoll's error type: one pointer wide, with a [`ErrorKind`] callers can match on and a
//! message that names the thing at fault.

use std::fmt;
use std::io;

/// A boxed error from a handler or another layer, as carried inside [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, for callers that want to react to a class of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The address is already taken by another socket.
    AddressInUse,
    /// Binding or listening on an address failed for another reason.
    Bind,
    /// A certificate, key or CA file is missing, unreadable or invalid.
    Certificate,
    /// A TLS handshake failed or did not finish within the handshake timeout.
    Handshake,
    /// A socket operation failed.
    Io,
    /// An operation did not finish within its timeout.
    Timeout,
    /// The socket is closed (by the peer, or by the handler).
    Closed,
    /// No listener by that name is running.
    NotFound,
    /// A listener by that name is already running.
    AlreadyRunning,
    /// A configuration value is invalid.
    Config,
    /// A connection handler returned an error.
    Handler,
    /// A listener's data store (the `rpc` kind's key-value file) cannot be opened, read or
    /// written: missing folder, no permission, a corrupt file.
    Store,
    /// A connection handler panicked.
    Panic,
    /// A listener refused a connection that moved from another process: it serves TLS, is
    /// full, no longer runs, or its handler could not restore the connection's state.
    Refused,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::AddressInUse => "address in use",
            ErrorKind::Bind => "cannot listen",
            ErrorKind::Certificate => "bad certificate",
            ErrorKind::Handshake => "TLS handshake failed",
            ErrorKind::Io => "socket error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Closed => "socket closed",
            ErrorKind::NotFound => "no such listener",
            ErrorKind::AlreadyRunning => "listener already running",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Store => "store error",
            ErrorKind::Handler => "handler error",
            ErrorKind::Panic => "handler panicked",
            ErrorKind::Refused => "connection refused",
        }
    }
}

/// The error type of every fallible atoll operation.
///
/// Its [`kind`](Error::kind) says what class of failure it is; its `Display` names the thing at
/// fault (listener, address, file) and the cause, on one line.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    context: Option<String>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`, without detail.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                context: None,
                source: None,
            }),
        }
    }

    /// A new error of `kind` caused by `source`.
    pub fn with_source(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        let mut e = Error::new(kind);
        e.inner.source = Some(source.into());
        e
    }

    /// Names the thing at fault (a file, an address, a listener); shown before the cause, and
    /// before any context given earlier (`listener `web`: cannot listen on ...: address in use`).
    #[must_use]
    pub fn context(mut self, context: impl Into<String>) -> Self {
        let outer = context.into();
        self.inner.context = Some(match self.inner.context.take() {
            Some(inner) => format!("{outer}: {inner}"),
            None => outer,
        });
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// True when the address was already in use.
    pub fn is_address_in_use(&self) -> bool {
        self.kind() == ErrorKind::AddressInUse
    }

    /// True when no listener had the requested name.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True when an operation ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// True when the socket was closed.
    pub fn is_closed(&self) -> bool {
        self.kind() == ErrorKind::Closed
    }

    pub(crate) fn io(err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::AddrInUse => ErrorKind::AddressInUse,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected => ErrorKind::Closed,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, err)
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::io(err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(c) = &self.inner.context {
            d.field("context", c);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.inner.context {
            write!(f, "{c}: ")?;
        }
        let io = self
            .inner
            .source
            .as_ref()
            .and_then(|s| s.downcast_ref::<io::Error>());
        match (self.inner.kind, io) {
            // The kind says it all; the OS's "Address already in use" would say it twice.
            (ErrorKind::AddressInUse, Some(e)) if e.kind() == io::ErrorKind::AddrInUse => {
                f.write_str(self.inner.kind.describe())
            }
            // A certificate, key or CA file that is not there is not a bad certificate.
            (ErrorKind::Certificate, Some(e)) if e.kind() == io::ErrorKind::NotFound => {
                f.write_str("file not found")
            }
            (ErrorKind::Certificate, Some(e)) => write!(f, "cannot read the file: {e}"),
            _ => {
                f.write_str(self.inner.kind.describe())?;
                if let Some(s) = &self.inner.source {
                    write!(f, ": {s}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// A `Result` whose error is atoll's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Joins the lines of a message (a TOML parser's, say), so every error and warning printed
/// stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for part in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_names_context_kind_and_cause() {
        let e = Error::io(io::Error::from(io::ErrorKind::AddrInUse)).context("listener `web`");
        assert!(e.is_address_in_use());
        let text = e.to_string();
        assert!(text.starts_with("listener `web`: address in use"), "{text}");
    }
}
