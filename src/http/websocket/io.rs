//! What a WebSocket session reads and writes through: the connection's own socket (after an
//! HTTP/1.1 upgrade), or one stream of an HTTP/2 connection (after an extended CONNECT,
//! RFC 8441), and what it needs to know of the connection it runs on ([`Link`]).

use std::future::Future;
use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_util::either::Either;

use crate::addr::Addr;
use crate::connections::Slot;
use crate::shared::Shared;
use crate::socket::Socket;

/// The bytes under the framing: `Left`, the socket itself, which can move to another
/// process; `Right`, an HTTP/2 stream, on a connection that goes on serving other streams.
/// `Either` passes every read and write (vectored ones too) to the side it holds.
pub(crate) type WsIo = Either<Socket, TokioIo<Upgraded>>;

/// The connection a session runs on: its entry, its listener, and how it is carried.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) slot: Arc<Slot>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) secure: bool,
    /// Whether the connection can move to another process (plain TCP, the socket its own).
    pub(crate) movable: bool,
    /// Whether the session has the connection to itself (not a stream among others).
    pub(crate) exclusive: bool,
}

impl Link {
    pub(crate) fn of(socket: &Socket) -> Link {
        Link {
            slot: socket.conn.slot.clone(),
            shared: socket.conn.shared.clone(),
            secure: socket.is_secure(),
            movable: socket.can_move(),
            exclusive: true,
        }
    }

    /// An HTTP/2 connection's, for a stream on it: it never moves.
    pub(crate) fn of_stream(slot: Arc<Slot>, shared: Arc<Shared>) -> Link {
        Link {
            secure: shared.tls.is_some(),
            slot,
            shared,
            movable: false,
            exclusive: false,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.slot.id
    }

    pub(crate) fn peer(&self) -> &Addr {
        self.slot.peer()
    }

    /// Resolves once the listener asks the connection to stop.
    pub(crate) fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let slot = self.slot.clone();
        async move { slot.stopped().await }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.slot.id)
            .field("secure", &self.secure)
            .field("movable", &self.movable)
            .finish()
    }
}
