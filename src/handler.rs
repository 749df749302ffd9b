//! The handler trait: the callbacks a connection runs, and the actions they answer with.

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
}

/// A connection handler: per-connection state plus the callbacks that run on its events.
///
/// The value given to the server is the initial state: each connection starts with a clone of
/// it. Every callback is optional. Callbacks run one at a time on the connection's task;
/// an error or a panic in one ends only this connection.
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

    /// The server is stopping; the socket is still open, so the handler can say goodbye.
    /// Default is [`Action::Close`]; [`Action::Continue`] keeps the connection until the peer
    /// closes it or the shutdown timeout forces it.
    fn handle_shutdown(&mut self, socket: &mut Socket) -> impl Future<Output = Action> + Send {
        let _ = socket;
        async { Action::Close }
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
