//! The events a listener emits, with their measurements and metadata.

use std::fmt;
use std::time::Duration;

use crate::addr::Addr;
use crate::stats::SocketStats;

/// What happened. The names follow ThousandIsland's events, as `span.event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// The listener is bound and accepting.
    ListenerStart,
    /// The listener has stopped; `duration` is its uptime.
    ListenerStop,
    /// Accepting paused; existing connections go on.
    ListenerSuspend,
    /// Accepting resumed after a suspend.
    ListenerResume,
    /// An acceptor task started.
    AcceptorStart,
    /// An acceptor task ended; `duration` is its lifetime.
    AcceptorStop,
    /// The connection was aborted by the peer before it could be accepted.
    Econnaborted,
    /// `accept` failed for another reason; the acceptor backs off and goes on.
    AcceptError,
    /// `accept` failed because the process is out of file descriptors; the acceptor backs off
    /// (`duration` is the pause) and goes on.
    Emfile,
    /// A connection could not get a slot within the `max_connections` retry budget and was
    /// closed.
    MaxConnectionsExceeded,
    /// A connection was closed at once because its client (its IP address, after any PROXY
    /// header) already had `max_connections_per_ip` connections open.
    MaxConnectionsPerIpExceeded,
    /// A connection of a listener with `proxy_protocol = "required"` was closed because its
    /// PROXY header was missing, malformed, late, or came from an untrusted source; `error`
    /// says which, `peer` is the socket's peer.
    ProxyHeaderError,
    /// A connection was accepted; its task is starting. On a listener with
    /// `proxy_protocol = "required"`, reported once the PROXY header is read, with the
    /// client's address.
    ConnectionStart,
    /// A connection ended; `duration` is its lifetime and `stats` its byte and packet counts.
    ConnectionStop,
    /// The TLS handshake finished; `duration` is how long it took.
    Handshake,
    /// The TLS handshake failed or timed out.
    HandshakeError,
    /// The connection is ready and the handler's connection callback is about to run.
    Ready,
    /// Bytes were received; `bytes` says how many.
    Recv,
    /// Receiving failed.
    RecvError,
    /// Bytes were sent; `bytes` says how many.
    Send,
    /// Sending failed.
    SendError,
    /// A file was sent; `bytes` says how many bytes.
    Sendfile,
    /// Sending a file failed.
    SendfileError,
    /// The socket was shut down in one or both directions.
    SocketShutdown,
    /// The connection was silent for its read timeout.
    Timeout,
    /// The handler returned an error; the connection is closed.
    HandlerError,
    /// The handler panicked; the connection is closed, the listener goes on.
    HandlerPanic,
    /// The connection was closed by `stop` when the shutdown timeout ran out.
    ConnectionForced,
    /// An HTTP request was answered; `method`, `path` and `status` say which and how, and
    /// `duration` how long the response head took.
    HttpRequest,
    /// An RPC call was answered; `duration` is the time from its frame to its reply, and
    /// `code` the error code when it failed (see `rpc::wire::codes`).
    RpcCall,
    /// An RPC server instance failed: it returned an error or panicked, its client sent bytes
    /// that are not the protocol, or a hello was refused. `code` says which, `error` why;
    /// only that connection ends.
    RpcFailure,
    /// The listener could not start: binding its address failed (in use, not permitted...),
    /// a TLS file is missing or bad, or its kind refused its settings; `error` says why.
    /// Emitted on the hub of the spec that failed, at a start or at a reload that starts or
    /// replaces it (ThousandIsland's `[:listener, :error]`); the caller gets the same error.
    ListenerError,
}

impl EventKind {
    /// The event's name, such as `"connection.stop"`.
    pub fn name(self) -> &'static str {
        use EventKind::*;
        match self {
            ListenerStart => "listener.start",
            ListenerStop => "listener.stop",
            ListenerSuspend => "listener.suspend",
            ListenerResume => "listener.resume",
            AcceptorStart => "acceptor.start",
            AcceptorStop => "acceptor.stop",
            Econnaborted => "acceptor.econnaborted",
            HttpRequest => "http.request",
            RpcCall => "rpc.call",
            RpcFailure => "rpc.failure",
            AcceptError => "acceptor.accept_error",
            Emfile => "acceptor.emfile",
            MaxConnectionsExceeded => "acceptor.max_connections_exceeded",
            MaxConnectionsPerIpExceeded => "connection.max_per_ip_exceeded",
            ProxyHeaderError => "connection.proxy_header_error",
            ConnectionStart => "connection.start",
            ConnectionStop => "connection.stop",
            Handshake => "connection.handshake",
            HandshakeError => "connection.handshake_error",
            Ready => "connection.ready",
            Recv => "connection.recv",
            RecvError => "connection.recv_error",
            Send => "connection.send",
            SendError => "connection.send_error",
            Sendfile => "connection.sendfile",
            SendfileError => "connection.sendfile_error",
            SocketShutdown => "connection.socket_shutdown",
            Timeout => "connection.timeout",
            HandlerError => "connection.handler_error",
            HandlerPanic => "connection.handler_panic",
            ConnectionForced => "connection.forced",
            ListenerError => "listener.error",
        }
    }

    /// True for events that report a failure.
    pub fn is_error(self) -> bool {
        self.failure_index().is_some()
    }

    /// For a failure, its place among the [`FAILURE_KINDS`] kinds of failure; `None` for the
    /// other events. [`TracingLogger`](super::TracingLogger) keeps one log budget per place.
    pub(crate) fn failure_index(self) -> Option<usize> {
        use EventKind::*;
        Some(match self {
            AcceptError => 0,
            Emfile => 1,
            MaxConnectionsExceeded => 2,
            HandshakeError => 3,
            RecvError => 4,
            SendError => 5,
            SendfileError => 6,
            HandlerError => 7,
            HandlerPanic => 8,
            ConnectionForced => 9,
            RpcFailure => 10,
            MaxConnectionsPerIpExceeded => 11,
            ProxyHeaderError => 12,
            ListenerError => 13,
            _ => return None,
        })
    }
}

/// How many kinds of event report a failure.
pub(crate) const FAILURE_KINDS: usize = 14;

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event: what happened, where, and what was measured.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The listener's name.
    pub listener: &'a str,
    /// The acceptor's index, for acceptor events.
    pub acceptor: Option<usize>,
    /// The connection's id, unique within its listener, for connection events.
    pub connection: Option<u64>,
    /// The peer's address, for connection events.
    pub peer: Option<&'a Addr>,
    /// A duration: a lifetime, a handshake's length, a back-off pause.
    pub duration: Option<Duration>,
    /// A byte count: received, sent, or sent from a file.
    pub bytes: Option<u64>,
    /// Byte and packet counts of a connection, on `connection.stop`.
    pub stats: Option<SocketStats>,
    /// The error, for failure events.
    pub error: Option<&'a (dyn std::error::Error + 'static)>,
    /// The request method, for HTTP events.
    pub method: Option<&'a str>,
    /// The request path, for HTTP events.
    pub path: Option<&'a str>,
    /// The response status, for HTTP events.
    pub status: Option<u16>,
    /// The error code, for RPC events that report a failure.
    pub code: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// An event of `kind` on `listener`, with no measurement yet.
    pub fn new(kind: EventKind, listener: &'a str) -> Self {
        Event {
            kind,
            listener,
            acceptor: None,
            connection: None,
            peer: None,
            duration: None,
            bytes: None,
            stats: None,
            error: None,
            method: None,
            path: None,
            status: None,
            code: None,
        }
    }

    pub(crate) fn acceptor(mut self, index: usize) -> Self {
        self.acceptor = Some(index);
        self
    }

    pub(crate) fn connection(mut self, id: u64, peer: &'a Addr) -> Self {
        self.connection = Some(id);
        self.peer = Some(peer);
        self
    }

    pub(crate) fn duration(mut self, d: Duration) -> Self {
        self.duration = Some(d);
        self
    }

    pub(crate) fn bytes(mut self, n: u64) -> Self {
        self.bytes = Some(n);
        self
    }

    pub(crate) fn stats(mut self, s: SocketStats) -> Self {
        self.stats = Some(s);
        self
    }

    pub(crate) fn error(mut self, e: &'a (dyn std::error::Error + 'static)) -> Self {
        self.error = Some(e);
        self
    }

    pub(crate) fn code(mut self, code: &'a str) -> Self {
        self.code = Some(code);
        self
    }

    pub(crate) fn request(mut self, method: &'a str, path: &'a str, status: u16) -> Self {
        self.method = Some(method);
        self.path = Some(path);
        self.status = Some(status);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_a_place_of_its_own() {
        use EventKind::*;
        let failures = [
            AcceptError,
            Emfile,
            MaxConnectionsExceeded,
            HandshakeError,
            RecvError,
            SendError,
            SendfileError,
            HandlerError,
            HandlerPanic,
            ConnectionForced,
            RpcFailure,
            MaxConnectionsPerIpExceeded,
            ProxyHeaderError,
            ListenerError,
        ];
        let mut places: Vec<usize> = failures
            .iter()
            .map(|k| k.failure_index().expect("a failure"))
            .collect();
        places.sort();
        assert_eq!(places, (0..FAILURE_KINDS).collect::<Vec<_>>());
        for other in [
            ListenerStart,
            ConnectionStop,
            Timeout,
            Econnaborted,
            HttpRequest,
        ] {
            assert!(!other.is_error(), "{other}");
        }
    }
}
