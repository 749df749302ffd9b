//! Connections moving from one process to another at a zero-downtime upgrade: what travels
//! ([`Moved`]), where a stopping listener sends it ([`MoveTo`]), and how the receiving
//! listener rebuilds the handler and goes on ([`Resume`]). The transport between the two
//! processes is the app layer's business; this module knows only the socket server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::BoxError;
use crate::socket::Conn;

/// A connection on its way out of one process and into another: the socket, the bytes read
/// from it that no one has handled yet, and the handler's state (see
/// [`Handler::handle_move`](crate::Handler::handle_move)).
pub struct Moved {
    /// The connection's socket, in non-blocking mode.
    pub tcp: std::net::TcpStream,
    /// Bytes already read from the socket and not handled yet: they come before the
    /// socket's own in the new process.
    pub unread: Bytes,
    /// The handler's state, as [`Move::Now`](crate::Move::Now) gave it.
    pub state: Vec<u8>,
    /// The client's address from the connection's PROXY header, on a listener that reads
    /// one: the new process shows it as the peer, as this one did.
    pub client: Option<std::net::SocketAddr>,
}

impl fmt::Debug for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moved")
            .field("peer", &self.tcp.peer_addr().ok())
            .field("unread", &self.unread.len())
            .field("state", &self.state.len())
            .field("client", &self.client)
            .finish()
    }
}

/// Where a stopping listener sends the connections that move (see
/// [`ServerHandle::move_connections`](crate::ServerHandle::move_connections)). Called on the
/// connection's task: it must not block (queue the connection for a thread of its own, as
/// the upgrade's relay does).
pub type MoveTo = Arc<dyn Fn(Moved) + Send + Sync>;

/// A moved connection's future, ready to spawn: the restored handler's callback loop on the
/// socket, with the connection's entry, after the unread bytes.
pub(crate) type Resumed = Box<dyn FnOnce(tokio::net::TcpStream, Conn, Bytes) -> BoxedRun + Send>;

/// The callback loop of a moved connection, boxed: adopted connections are rare, and the
/// listener's handle does not know the handler's type.
pub(crate) type BoxedRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rebuilds a listener's handler from a moved connection's state (the listener's
/// [`Handler::restore`](crate::Handler::restore)).
pub(crate) type Resume = Box<dyn Fn(&[u8]) -> Result<Resumed, BoxError> + Send + Sync>;

/// A listener's [`MoveTo`], once it has one.
#[derive(Default)]
pub(crate) struct Destination(std::sync::Mutex<Option<MoveTo>>);

impl Destination {
    pub(crate) fn set(&self, to: MoveTo) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
    }

    /// A clone, so that no lock is held while the connection moves.
    pub(crate) fn get(&self) -> Option<MoveTo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.get() {
            Some(_) => "Destination(set)",
            None => "Destination(none)",
        })
    }
}
