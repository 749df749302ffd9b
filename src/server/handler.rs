//! The handler trait: the callbacks a connection runs, the actions they answer with, and the
//! contract for connections that move to another process at an upgrade.

use std::future::Future;
use std::time::Duration;

use crate::error::{BoxError, Error};
use crate::socket::Socket;
use crate::tls::TlsConfig;

/// What the connection does after a callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Go on reading, with the current read timeout.
    Continue,
    /// Go on reading; if nothing arrives within this duration, call
    /// [`handle_timeout`](Handler::handle_timeout). Applies to the next wait only.
    ContinueWithTimeout(Duration),
    /// Go on reading with this read timeout from now on.
    SetReadTimeout(Duration),
    /// Close the connection. The close callback is not called: the handler chose to close.
    Close,
    /// Fail the connection: the error is reported through telemetry, passed to
    /// [`handle_error`](Handler::handle_error), and the connection closed.
    Error(BoxError),
    /// Upgrade this plain TCP connection to TLS with these settings (STARTTLS), then go on
    /// reading, now decrypted. A failed or timed-out handshake ends the connection through
    /// [`handle_error`](Handler::handle_error).
    StartTls(TlsConfig),
    /// Hand the socket to [`take_over`](Handler::take_over), which drives it from then on.
    TakeOver,
    /// Close once the peer has been quiet for this long: bytes that arrive meanwhile go to
    /// [`handle_data`](Handler::handle_data) first, and each one starts the wait again. What
    /// the default [`handle_shutdown`](Handler::handle_shutdown) answers, so that a client
    /// whose request is on its way when the server stops gets its answer, not a closed socket.
    /// A peer that never goes quiet keeps the connection until the shutdown timeout.
    CloseWhenQuiet(Duration),
}

/// How long the default [`handle_shutdown`](Handler::handle_shutdown) waits for the peer to
/// be quiet before it closes: 1 s, far longer than bytes already sent take to arrive, and the
/// same grace an HTTP connection between requests gets when its listener stops.
pub const SHUTDOWN_QUIET: Duration = Duration::from_secs(1);

/// A handler's answer when its listener stops with somewhere to move connections (at a
/// zero-downtime upgrade, the new process): see [`Handler::handle_move`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Move {
    /// Move now, carrying this state: the new process gives it to
    /// [`Handler::restore`] and goes on with the connection there. Empty for a handler
    /// that keeps nothing between messages.
    Now(Vec<u8>),
    /// Not now (a message is half done): ask again after the next callback.
    Later,
    /// Never: the connection stays and drains here, told by
    /// [`handle_shutdown`](Handler::handle_shutdown).
    Never,
}

/// A connection handler: per-connection state plus the callbacks that run on its events.
///
/// The value given to the server is the initial state: each connection starts with a clone of
/// it. Every callback is optional. Callbacks run one at a time on the connection's task;
/// an error or a panic in one ends only this connection.
///
/// # When the server stops: move or drain
///
/// A listener stops for good ([`ServerHandle::stop`](crate::ServerHandle::stop)), or hands
/// its connections to another process at a zero-downtime upgrade
/// ([`ServerHandle::move_connections`](crate::ServerHandle::move_connections), which
/// `atoll upgrade` sets up). Either way every connection hears it between two callbacks,
/// never in the middle of one:
///
/// - When there is somewhere to move to and the connection can move (plain TCP: TLS session
///   state is not portable, and Unix socket connections stay), [`handle_move`](Self::handle_move)
///   is asked. [`Move::Now`] with the handler's state sends the socket, with whatever the
///   peer sent that was not read yet, to the new process; there [`restore`](Self::restore)
///   rebuilds the handler from the state, and the callback loop goes on where it stopped:
///   the peer sees one connection that never closed. [`Move::Later`] asks again after the
///   next callback (say once a message is complete). [`Move::Never`] drains.
/// - Otherwise the connection drains: [`handle_shutdown`](Self::handle_shutdown) runs with the
///   socket still open, and decides. The default closes once the peer has been quiet for
///   [`SHUTDOWN_QUIET`] ([`Action::CloseWhenQuiet`]): it never closes a connection with bytes
///   from the peer that the handler has not seen.
///
/// The default [`handle_move`](Self::handle_move) answers [`Move::Never`], so a handler that
/// says nothing drains, as before moves existed. The state is the handler's own format:
/// the new process may run a newer version, so give it a version byte, and make
/// [`restore`](Self::restore) refuse what it cannot read (the connection then closes).
///
/// A handler that moves with its state (a line counter):
///
/// ```
/// use atoll::{Action, BoxError, Handler, Move, Socket};
///
/// /// Numbers the lines it is sent: `1 hello`, `2 again`...
/// #[derive(Clone, Default)]
/// struct Numbered {
///     lines: u64,
///     /// A line not complete yet.
///     partial: Vec<u8>,
/// }
///
/// impl Handler for Numbered {
///     async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
///         self.partial.extend_from_slice(data);
///         while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
///             let line: Vec<u8> = self.partial.drain(..=end).collect();
///             self.lines += 1;
///             let reply = [format!("{} ", self.lines).as_bytes(), &line].concat();
///             if let Err(e) = socket.send(&reply).await {
///                 return Action::Error(e.into());
///             }
///         }
///         Action::Continue
///     }
///
///     /// Moves between lines, carrying the count: version 1, then 8 bytes.
///     async fn handle_move(&mut self, _socket: &mut Socket) -> Move {
///         match self.partial.is_empty() {
///             true => Move::Now([&[1u8][..], &self.lines.to_be_bytes()].concat()),
///             false => Move::Later,
///         }
///     }
///
///     fn restore(&self, state: &[u8]) -> Result<Self, BoxError> {
///         match state {
///             [1, count @ ..] => Ok(Numbered {
///                 lines: u64::from_be_bytes(count.try_into()?),
///                 partial: Vec::new(),
///             }),
///             _ => Err("unknown state version".into()),
///         }
///     }
/// }
/// ```
///
/// A handler that cannot move (it holds a database transaction, say) drains: it finishes
/// what is under way and says goodbye.
///
/// ```
/// use atoll::{Action, Handler, Socket, SHUTDOWN_QUIET};
///
/// #[derive(Clone, Default)]
/// struct Session {
///     in_transaction: bool,
/// }
///
/// impl Handler for Session {
///     async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
///         self.in_transaction = data != b"COMMIT\n";
///         match socket.send(b"OK\n").await {
///             Ok(()) => Action::Continue,
///             Err(e) => Action::Error(e.into()),
///         }
///     }
///
///     // No `handle_move`: it answers `Move::Never`.
///
///     async fn handle_shutdown(&mut self, socket: &mut Socket) -> Action {
///         let _ = socket.send(b"BYE server stopping\n").await;
///         match self.in_transaction {
///             // Let the client finish; the shutdown timeout bounds the wait.
///             true => Action::Continue,
///             // Whatever the client sent already is answered before the close.
///             false => Action::CloseWhenQuiet(SHUTDOWN_QUIET),
///         }
///     }
/// }
/// ```
///
/// # Example
///
/// ```
/// use atoll::{Action, Handler, Socket};
///
/// /// Replies with every byte it receives and counts them.
/// #[derive(Clone, Default)]
/// struct Echo {
///     echoed: u64,
/// }
///
/// impl Handler for Echo {
///     async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
///         self.echoed += data.len() as u64;
///         match socket.send(data).await {
///             Ok(()) => Action::Continue,
///             Err(e) => Action::Error(e.into()),
///         }
///     }
/// }
/// ```
pub trait Handler: Clone + Send + 'static {
    /// The connection is ready (accepted, and its TLS handshake done).
    /// Default is [`Action::Continue`].
    fn handle_connection(&mut self, socket: &mut Socket) -> impl Future<Output = Action> + Send {
        let _ = socket;
        async { Action::Continue }
    }

    /// Bytes arrived. `data` is only borrowed: the connection's read buffer goes back to a pool
    /// after the callback, so an idle connection holds none.
    /// Default is [`Action::Continue`] (the bytes are dropped).
    fn handle_data(
        &mut self,
        data: &[u8],
        socket: &mut Socket,
    ) -> impl Future<Output = Action> + Send {
        let _ = (data, socket);
        async { Action::Continue }
    }

    /// The peer closed the connection. Default does nothing.
    fn handle_close(&mut self, socket: &mut Socket) -> impl Future<Output = ()> + Send {
        let _ = socket;
        async {}
    }

    /// The connection failed: a socket error, a failed TLS handshake, or [`Action::Error`].
    /// The connection closes afterwards. Default does nothing.
    fn handle_error(
        &mut self,
        error: &Error,
        socket: &mut Socket,
    ) -> impl Future<Output = ()> + Send {
        let _ = (error, socket);
        async {}
    }

    /// The server is stopping and this connection stays here (it cannot move, or the handler
    /// answered [`Move::Never`]); the socket is still open, so the handler can say goodbye.
    /// Default is [`Action::CloseWhenQuiet`]`(`[`SHUTDOWN_QUIET`]`)`: bytes on their way from
    /// the peer are answered before the close. [`Action::Close`] closes at once;
    /// [`Action::Continue`] keeps the connection until the peer closes it or the shutdown
    /// timeout forces it.
    fn handle_shutdown(&mut self, socket: &mut Socket) -> impl Future<Output = Action> + Send {
        let _ = socket;
        async { Action::CloseWhenQuiet(SHUTDOWN_QUIET) }
    }

    /// The server is stopping and this connection may move to another process (see
    /// [When the server stops](Handler#when-the-server-stops-move-or-drain)). Asked between
    /// callbacks, never during one; after [`Move::Later`], asked again after the next callback.
    /// Default is [`Move::Never`]: the connection drains through
    /// [`handle_shutdown`](Self::handle_shutdown).
    fn handle_move(&mut self, socket: &mut Socket) -> impl Future<Output = Move> + Send {
        let _ = socket;
        async { Move::Never }
    }

    /// In the process a connection moved to: rebuilds the handler from the state
    /// [`handle_move`](Self::handle_move) gave. Called on the listener's initial handler (the
    /// value given to the server); the connection then goes on with the result, without
    /// [`handle_connection`](Self::handle_connection) (it ran in the first process). An error
    /// closes the connection and is logged.
    /// Default is a clone of the initial handler when the state is empty, an error otherwise.
    fn restore(&self, state: &[u8]) -> Result<Self, BoxError> {
        restore_unless_state(self, state)
    }

    /// Nothing arrived within the read timeout. Default is [`Action::Close`].
    fn handle_timeout(&mut self, socket: &mut Socket) -> impl Future<Output = Action> + Send {
        let _ = socket;
        async { Action::Close }
    }

    /// Drives the connection after a callback answered [`Action::TakeOver`]. The socket is an
    /// `AsyncRead + AsyncWrite`; watch [`Socket::stopping`] to wind down when the server stops.
    /// Default returns an error: a handler that asks to take over must implement this.
    fn take_over(self, socket: Socket) -> impl Future<Output = Result<(), BoxError>> + Send {
        drop(socket);
        async { Err("this handler answered TakeOver but does not implement take_over".into()) }
    }
}

/// The default `restore` of the handler traits: a clone of the initial handler when the
/// state is empty, an error otherwise.
pub(crate) fn restore_unless_state<H: Clone>(initial: &H, state: &[u8]) -> Result<H, BoxError> {
    match state.is_empty() {
        true => Ok(initial.clone()),
        false => {
            Err("this handler does not implement `restore`, and the state is not empty".into())
        }
    }
}
