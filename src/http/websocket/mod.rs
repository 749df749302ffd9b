//! WebSocket (RFC 6455) on HTTP and HTTPS listeners: a [`WebSocket`] route accepts the
//! upgrade after its checks and serves each connection with a clone of a
//! [`WebSocketHandler`], whose callbacks run in the manner of the socket server's
//! [`Handler`](crate::Handler).
//!
//! The framing is tungstenite's protocol, driven on the session's own task (the `framed`
//! module): it joins fragmented messages (control frames may come between fragments),
//! answers pings, requires masked client frames, checks text as UTF-8 (across fragments),
//! and enforces the size limits from each frame's header before its
//! payload is read. The route adds the codes of a peer at fault (1002 protocol, 1007 invalid
//! UTF-8, 1009 over a limit), keepalive pings, a read deadline, and 1001 at a stop.
//!
//! # Over HTTP/2
//!
//! HTTP listeners announce extended CONNECT (RFC 8441), so a client that already speaks
//! HTTP/2 to the listener (browsers do over TLS) opens its WebSockets as streams of that
//! connection: `CONNECT` with `:protocol websocket` is answered 200, and the stream carries
//! the frames. Such a WebSocket runs on a task of its own beside the connection's other
//! streams, with the same callbacks, limits and compression; at a stop it hears 1001 like any
//! other. It cannot move at an upgrade (the stream belongs to an HTTP/2 connection, which
//! drains): it gets 1001.
//!
//! # Compression
//!
//! permessage-deflate (RFC 7692) is taken when the client offers it (browsers do), unless
//! the route says [`compression(false)`](WebSocket::compression). tungstenite has no
//! extensions, so atoll does it around the framing (the `deflate` and `gate` modules): every
//! message is compressed on its own (`server_no_context_takeover` and
//! `client_no_context_takeover`), messages under
//! [`compress_min_size`](WebSocket::compress_min_size) (256 bytes) go plain, and the client's
//! are inflated up to `max_message_size` (1009 past it, 1007 for data that is not DEFLATE).
//! With no context between messages, an idle connection holds no compressor, and a
//! compressed connection moves at an upgrade like any other.
//!
//! # At a zero-downtime upgrade
//!
//! On a plain `http` listener, a connection whose handler answers
//! [`handle_move`](WebSocketHandler::handle_move) with [`Move::Now`](crate::Move::Now) moves
//! to the new process between two messages: its socket, the frames the peer sent that were
//! read and not handled yet, the handler's state (rebuilt there by
//! [`restore`](WebSocketHandler::restore)) and the groups it joined. The new process routes
//! the opening request's host and path again, to the route of its own version. The client
//! sees nothing: no close, no message lost or doubled. Reads stop at each frame's end, so
//! that no frame is half in one process and half in the other.
//!
//! Over TLS (`wss`) nothing moves: a TLS session's state cannot leave the process. Those
//! connections, and those whose handler answers [`Move::Never`](crate::Move::Never) (the
//! default), drain like at a stop: [`handle_shutdown`](WebSocketHandler::handle_shutdown),
//! then 1001, then the peer's close frame, up to the listener's shutdown timeout. Browsers
//! and most clients reconnect on 1001, and the new process answers. A connection the new
//! process cannot take in (its version has no WebSocket route there, or `restore` failed)
//! gets 1001 with the reason.
//!
//! ```
//! use atoll::http::websocket::{WebSocket, WebSocketHandler, WsAction, WsConn};
//! use atoll::http::{Handlers, HttpListener};
//!
//! #[derive(Clone)]
//! struct Echo;
//!
//! impl WebSocketHandler for Echo {
//!     async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
//!         let _ = ws.send(text).await;
//!         WsAction::Continue
//!     }
//! }
//!
//! let listener = HttpListener::new(Handlers::new().websocket(WebSocket::new("/ws", Echo)));
//! # let _ = listener;
//! ```
//!
//! # What is not there
//!
//! - A mounted service's (an axum `Router`'s) own WebSocket routes work, but their
//!   connections run on the service's tasks: the listener's stop does not send them 1001.
//!
//! # Layout
//!
//! - `route`: [`WebSocket`], the route: handshake checks, `Origin`, limits and timers.
//! - `handler`: [`WebSocketHandler`], [`WsAction`] and the [`close_code`]s.
//! - `conn`: [`WsConn`], what a callback sends through, and [`WsSender`] for other tasks.
//! - `groups`: [`Groups`], named groups to broadcast to.
//! - `message`: [`WsMessage`], a message to send.
//! - `session`: one connection after the 101: its loop, pings, deadline, close handshake.
//! - `io`: what a session reads and writes (its own socket, or an HTTP/2 stream), and the
//!   connection it runs on.
//! - `framed`: the framing (tungstenite's protocol) driven on the session's task.
//! - `gate`: what tungstenite reads through: the socket, cut at frame ends.
//! - `moving`: a connection leaving for another process at an upgrade, and arriving.
//! - `deflate`: permessage-deflate's negotiation, and messages inflated and deflated.

mod conn;
mod deflate;
mod framed;
mod gate;
mod groups;
mod handler;
pub(crate) mod io;
mod message;
pub(crate) mod moving;
mod route;
pub(crate) mod session;

pub use conn::{WsConn, WsSender};
pub use deflate::DEFAULT_COMPRESS_MIN_SIZE;
pub use groups::Groups;
pub use handler::{close_code, WebSocketHandler, WsAction};
pub use message::WsMessage;
pub use route::{
    WebSocket, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PING_INTERVAL,
    DEFAULT_SEND_QUEUE, DEFAULT_WS_READ_TIMEOUT,
};
