//! [`RpcError`]: what can go wrong with a call, a cast, a push or a connection, on either side.

use std::fmt;
use std::io;
use std::time::Duration;

/// The error of an RPC operation. Match on the variant to react to a class of failure; the
/// `Display` names the fault on one line.
#[derive(Debug)]
#[non_exhaustive]
pub enum RpcError {
    /// No connection: the call timed out waiting for a reconnection (or was made while
    /// disconnected by a client without [`reconnect`](super::ClientBuilder::reconnect)), and
    /// was never sent; or the connection broke after the call was written, without the
    /// server saying `going away`, so the server may have run it. On the server side: the
    /// client is gone.
    Disconnected,
    /// The call got no answer within its timeout.
    Timeout(Duration),
    /// The server answered the call with an `error` frame.
    Remote {
        /// The error code (see [`wire::codes`](super::wire::codes)).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The hello was refused because the peer names another service.
    WrongIdentifier(String),
    /// The hello was refused because the peer's version is not accepted.
    IncompatibleVersion(String),
    /// Connecting failed: refused, unreachable, or not within the connect timeout.
    Connect(io::Error),
    /// The TLS set-up or handshake failed: bad certificate file, unknown CA, refused client
    /// certificate.
    Tls(String),
    /// A message could not be encoded (a value serde refuses, or over the maximum frame size).
    Encode(String),
    /// A payload from the peer could not be decoded as the expected type.
    Decode(String),
    /// The peer broke the protocol: bad frame, out-of-turn frame, frame too large.
    Protocol(String),
    /// An option of the client is invalid (its version, its accepted versions, its address).
    Config(String),
    /// The client was closed with [`Client::close`](super::Client::close).
    Closed,
    /// On the server side: the push was refused because this many bytes of pushes already
    /// wait for the client, which reads too slowly or not at all
    /// ([`RpcOptions::max_push_backlog`](super::RpcOptions::max_push_backlog)). The
    /// connection goes on; a later push is taken once the client has caught up.
    Backlog(usize),
    /// On the server side: the push was refused because this many bytes of pushes already
    /// wait for the daemon's clients together
    /// ([`RpcOptions::max_push_total`](super::RpcOptions::max_push_total)). The connection
    /// goes on; a later push is taken once the clients have caught up.
    DaemonBacklog(usize),
}

impl RpcError {
    /// Whether this is [`RpcError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RpcError::Disconnected)
    }

    /// Whether this is [`RpcError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RpcError::Timeout(_))
    }

    /// Whether a push was refused because too many bytes already wait:
    /// [`RpcError::Backlog`] or [`RpcError::DaemonBacklog`].
    pub fn is_backlog(&self) -> bool {
        matches!(self, RpcError::Backlog(_) | RpcError::DaemonBacklog(_))
    }

    /// The error code when the server answered with an `error` frame.
    pub fn remote_code(&self) -> Option<&str> {
        match self {
            RpcError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Disconnected => f.write_str("rpc: not connected to the server"),
            RpcError::Timeout(t) => write!(f, "rpc: call timed out after {t:?}"),
            RpcError::Remote { code, message } => {
                write!(f, "rpc: the server answered `{code}`: {message}")
            }
            RpcError::WrongIdentifier(m) => write!(f, "rpc: hello refused: {m}"),
            RpcError::IncompatibleVersion(m) => write!(f, "rpc: hello refused: {m}"),
            RpcError::Connect(e) => write!(f, "rpc: cannot connect: {e}"),
            RpcError::Tls(m) => write!(f, "rpc: TLS failed: {m}"),
            RpcError::Encode(m) => write!(f, "rpc: cannot encode message: {m}"),
            RpcError::Decode(m) => write!(f, "rpc: cannot decode message: {m}"),
            RpcError::Protocol(m) => write!(f, "rpc: protocol error: {m}"),
            RpcError::Config(m) => write!(f, "rpc: invalid client option: {m}"),
            RpcError::Closed => f.write_str("rpc: the client is closed"),
            RpcError::Backlog(n) => write!(
                f,
                "rpc: push refused: {n} bytes of pushes already wait for this client \
                 (max_push_backlog)"
            ),
            RpcError::DaemonBacklog(n) => write!(
                f,
                "rpc: push refused: {n} bytes of pushes already wait for this daemon's clients \
                 (max_push_total)"
            ),
        }
    }
}

impl std::error::Error for RpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RpcError::Connect(e) => Some(e),
            _ => None,
        }
    }
}

impl Clone for RpcError {
    /// A copy; an [`RpcError::Connect`] keeps the I/O error's kind and message.
    fn clone(&self) -> RpcError {
        match self {
            RpcError::Disconnected => RpcError::Disconnected,
            RpcError::Timeout(t) => RpcError::Timeout(*t),
            RpcError::Remote { code, message } => RpcError::Remote {
                code: code.clone(),
                message: message.clone(),
            },
            RpcError::WrongIdentifier(m) => RpcError::WrongIdentifier(m.clone()),
            RpcError::IncompatibleVersion(m) => RpcError::IncompatibleVersion(m.clone()),
            RpcError::Connect(e) => RpcError::Connect(io::Error::new(e.kind(), e.to_string())),
            RpcError::Tls(m) => RpcError::Tls(m.clone()),
            RpcError::Encode(m) => RpcError::Encode(m.clone()),
            RpcError::Decode(m) => RpcError::Decode(m.clone()),
            RpcError::Protocol(m) => RpcError::Protocol(m.clone()),
            RpcError::Config(m) => RpcError::Config(m.clone()),
            RpcError::Closed => RpcError::Closed,
            RpcError::Backlog(n) => RpcError::Backlog(*n),
            RpcError::DaemonBacklog(n) => RpcError::DaemonBacklog(*n),
        }
    }
}

impl From<super::wire::WireError> for RpcError {
    fn from(e: super::wire::WireError) -> RpcError {
        match e {
            super::wire::WireError::Encode(m) => RpcError::Encode(m),
            other => RpcError::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_fault() {
        let e = RpcError::Remote {
            code: "bad request".into(),
            message: "missing field `key`".into(),
        };
        assert_eq!(
            e.to_string(),
            "rpc: the server answered `bad request`: missing field `key`"
        );
        assert_eq!(e.remote_code(), Some("bad request"));
        let c = RpcError::Connect(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        match c.clone() {
            RpcError::Connect(io) => assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
        assert!(RpcError::Timeout(Duration::from_secs(5))
            .to_string()
            .contains("5s"));
    }
}
