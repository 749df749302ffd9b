//! [`WebSocketHandler`]: the callbacks one WebSocket connection runs, in the manner of the
//! socket server's [`Handler`](crate::Handler), and the [`WsAction`] they answer with.

use std::future::Future;

use super::conn::WsConn;
use crate::error::BoxError;
use crate::http::{Request, Unauthorized};
use crate::Move;

/// Close codes of RFC 6455 section 7.4.1 that atoll sends or reports.
pub mod close_code {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is stopping (or the peer navigates away).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol (an unmasked client frame, a fragmented control
    /// frame, reserved bits set, a continuation with nothing to continue...).
    pub const PROTOCOL: u16 = 1002;
    /// 1005: the peer's close frame carried no code (never sent).
    pub const NO_STATUS: u16 = 1005;
    /// 1006: the connection ended without a close frame (never sent).
    pub const ABNORMAL: u16 = 1006;
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// 1008: the message broke a policy of the application.
    pub const POLICY: u16 = 1008;
    /// 1009: a message or frame over the route's limit.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: the server failed.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// What the connection does after a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsAction {
    /// Go on.
    Continue,
    /// Start the close handshake with this code and reason (at most 123 bytes; longer is cut
    /// at a character boundary), then wait for the peer's close frame, within the route's
    /// read timeout.
    Close(u16, String),
}

/// A WebSocket connection handler: per-connection state plus the callbacks that run on its
/// events.
///
/// The value given to [`WebSocket::new`](super::WebSocket::new) is the initial state: each
/// upgrade request gets a clone, which runs the admission hooks
/// ([`is_authenticated`](Self::is_authenticated), [`has_permission`](Self::has_permission)) and,
/// once the upgrade is accepted, serves that connection. Callbacks run one at a time on the
/// connection's task, between messages; every one is optional.
///
/// Pings are answered with pongs by the protocol itself; [`handle_ping`](Self::handle_ping)
/// only hears of them. The connection ends once: [`handle_close`](Self::handle_close) then
/// tells the code that closed it, whoever sent it.
///
/// ```
/// use atoll::http::websocket::{WebSocketHandler, WsAction, WsConn};
///
/// /// Echoes every message and counts them.
/// #[derive(Clone, Default)]
/// struct Echo {
///     echoed: u64,
/// }
///
/// impl WebSocketHandler for Echo {
///     async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
///         self.echoed += 1;
///         match ws.send(text).await {
///             Ok(()) => WsAction::Continue,
///             Err(_) => WsAction::Close(1011, "send failed".into()),
///         }
///     }
///
///     async fn handle_binary(&mut self, data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
///         self.echoed += 1;
///         let _ = ws.send(data).await;
///         WsAction::Continue
///     }
/// }
/// ```
pub trait WebSocketHandler: Clone + Send + Sync + 'static {
    /// Whether the client of the upgrade request is who it says. `Err` answers 401 with the
    /// challenge, and no upgrade. Default lets everyone in.
    fn is_authenticated(
        &mut self,
        req: &mut Request,
    ) -> impl Future<Output = Result<(), Unauthorized>> + Send {
        let _ = req;
        async { Ok(()) }
    }

    /// Whether the (authenticated) client may open this WebSocket; `false` answers 403.
    /// Default is `true`.
    fn has_permission(&mut self, req: &Request) -> impl Future<Output = bool> + Send {
        let _ = req;
        async { true }
    }

    /// The upgrade is done: the connection is open. Default is [`WsAction::Continue`].
    fn handle_connection(&mut self, ws: &mut WsConn<'_>) -> impl Future<Output = WsAction> + Send {
        let _ = ws;
        async { WsAction::Continue }
    }

    /// A complete text message arrived (its fragments joined, checked as UTF-8).
    /// Default is [`WsAction::Continue`].
    fn handle_text(
        &mut self,
        text: &str,
        ws: &mut WsConn<'_>,
    ) -> impl Future<Output = WsAction> + Send {
        let _ = (text, ws);
        async { WsAction::Continue }
    }

    /// A complete binary message arrived. Default is [`WsAction::Continue`].
    fn handle_binary(
        &mut self,
        data: &[u8],
        ws: &mut WsConn<'_>,
    ) -> impl Future<Output = WsAction> + Send {
        let _ = (data, ws);
        async { WsAction::Continue }
    }

    /// The peer sent a ping (already answered with a pong). Default is [`WsAction::Continue`].
    fn handle_ping(
        &mut self,
        data: &[u8],
        ws: &mut WsConn<'_>,
    ) -> impl Future<Output = WsAction> + Send {
        let _ = (data, ws);
        async { WsAction::Continue }
    }

    /// The peer sent a pong (to a keepalive ping, say). Default is [`WsAction::Continue`].
    fn handle_pong(
        &mut self,
        data: &[u8],
        ws: &mut WsConn<'_>,
    ) -> impl Future<Output = WsAction> + Send {
        let _ = (data, ws);
        async { WsAction::Continue }
    }

    /// Nothing at all (no message, no pong) arrived within the route's read timeout, although
    /// keepalive pings went out. Default closes with 1000 and the reason `read timeout`;
    /// [`WsAction::Continue`] waits one more read timeout.
    fn handle_timeout(&mut self, ws: &mut WsConn<'_>) -> impl Future<Output = WsAction> + Send {
        let _ = ws;
        async { WsAction::Close(close_code::NORMAL, "read timeout".into()) }
    }

    /// The listener is stopping. The connection is still open, so the handler can send a
    /// last message; then the server sends close 1001 (going away) and waits for the peer's
    /// close frame, up to the listener's shutdown timeout. Default does nothing.
    fn handle_shutdown(&mut self, ws: &mut WsConn<'_>) -> impl Future<Output = ()> + Send {
        let _ = ws;
        async {}
    }

    /// The listener is stopping with somewhere to move its connections (an `atoll upgrade`'s
    /// new process), and this connection runs on plain TCP and is between messages: nothing
    /// of a message, nor of a frame, has been read that the handler has not had.
    /// [`Move::Now`] carries the handler's state to the new process, which rebuilds the
    /// handler with [`restore`](Self::restore) and goes on with the connection; the client
    /// sees no close. Before it leaves, the connection sends what its
    /// [`WsSender`](super::WsSender)s queued; from then on they fail with
    /// [`Closed`](crate::ErrorKind::Closed). The groups it joined are joined again in the new
    /// process. [`Move::Later`] asks again after the next message; [`Move::Never`] drains:
    /// [`handle_shutdown`](Self::handle_shutdown), then 1001.
    ///
    /// A connection that moves ends here without [`handle_close`](Self::handle_close): it
    /// has not closed. One that is not between messages within the listener's shutdown
    /// timeout drains. Over TLS nothing moves (a TLS session's state cannot leave the
    /// process): connections drain.
    ///
    /// Default is [`Move::Never`]: a handler with state of its own says how it travels.
    fn handle_move(&mut self, ws: &mut WsConn<'_>) -> impl Future<Output = Move> + Send {
        let _ = ws;
        async { Move::Never }
    }

    /// In the process a connection moved to: rebuilds the handler from the state
    /// [`handle_move`](Self::handle_move) gave. Called on the route's initial handler (the
    /// value given to [`WebSocket::new`](super::WebSocket::new)); the connection then goes on
    /// with the result, without [`handle_connection`](Self::handle_connection) (it ran in the
    /// first process). An error closes the connection with 1001 and is logged.
    /// Default is a clone of the initial handler when the state is empty, an error otherwise.
    fn restore(&self, state: &[u8]) -> Result<Self, BoxError> {
        crate::handler::restore_unless_state(self, state)
    }

    /// The connection ended, with the code that closed it: the peer's (1005 when its close
    /// frame had none), the one this side sent (a [`WsAction::Close`], 1001 at a stop, 1002,
    /// 1007 or 1009 for a peer that broke the protocol or a limit), or 1006 when the socket
    /// ended without a close frame (reason `send timeout` when the peer read nothing for the
    /// listener's `send_timeout`). Called once, last. Default does nothing.
    fn handle_close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send {
        let _ = (code, reason);
        async {}
    }
}
