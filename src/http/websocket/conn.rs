//! What a callback gets: [`WsConn`], the connection it runs on, and [`WsSender`], a handle
//! other tasks send through.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tungstenite::error::Error as WsError;
use tungstenite::Message;

use super::framed::Framed;
use super::groups::Groups;
use super::message::WsMessage;
use crate::addr::Addr;
use crate::error::{Error, ErrorKind, Result};

/// The framed connection.
pub(crate) type WsStream = Framed;

/// What other tasks (a [`WsSender`], a broadcast) ask a connection to do.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Send(WsMessage),
    Close(u16, String),
}

/// The connection's own state, apart from the framed stream.
pub(crate) struct ConnState {
    /// The queue other tasks send through, made at the first [`WsConn::sender`] or
    /// [`WsConn::join`]: a connection that never hands one out holds none (its first block
    /// alone is about 1.5 KiB).
    pub(crate) queue: Option<(WsSender, mpsc::Receiver<Outgoing>)>,
    /// The queue's length.
    pub(crate) queue_len: usize,
    pub(crate) groups: Groups,
    pub(crate) joined: Vec<String>,
    pub(crate) id: u64,
    pub(crate) peer: Addr,
    pub(crate) secure: bool,
    /// The listener's `send_timeout`: how long one write may wait for a peer that does not
    /// read.
    pub(crate) send_timeout: Duration,
    /// A write timed out: the peer reads nothing, so no close frame can reach it either.
    pub(crate) stalled: bool,
    /// With permessage-deflate negotiated, the smallest message sent compressed.
    pub(crate) compress_from: Option<usize>,
}

impl ConnState {
    fn sender(&mut self) -> &WsSender {
        let len = self.queue_len;
        &self
            .queue
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(len);
                (WsSender { tx }, rx)
            })
            .0
    }

    /// The frame that carries `message`: compressed when permessage-deflate was negotiated
    /// and it is big enough, and shrinks.
    pub(crate) fn frame(&self, message: WsMessage) -> Message {
        match self.compress_from {
            Some(min) if message.as_bytes().len() >= min => message.into_deflated(),
            _ => message.into_frame(),
        }
    }

    /// The next message other tasks queued; pending while there is no queue (and once it is
    /// closed, as a connection that leaves does).
    pub(crate) fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Outgoing> {
        match &mut self.queue {
            Some((_, rx)) => match rx.poll_recv(cx) {
                Poll::Ready(Some(out)) => Poll::Ready(out),
                _ => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// The connection a callback runs on: send to the peer, hand out a [`WsSender`], join and
/// leave groups.
pub struct WsConn<'a> {
    pub(crate) ws: &'a mut WsStream,
    pub(crate) state: &'a mut ConnState,
    /// The message the callback is handling (text or binary), if it is handling one.
    pub(crate) received: Option<&'a WsMessage>,
}

impl WsConn<'_> {
    /// Sends a message and waits until the socket took it. Fails with
    /// [`Closed`](ErrorKind::Closed) once the connection is closing or gone, and with
    /// [`Timeout`](ErrorKind::Timeout) when the peer took none of it for the listener's
    /// `send_timeout` (the connection then ends, without a close frame).
    pub async fn send(&mut self, message: impl Into<WsMessage>) -> Result<()> {
        let frame = self.state.frame(message.into());
        match send_within(self.ws, frame, self.state.send_timeout).await {
            Sent::Done => Ok(()),
            Sent::Failed(e) => Err(Error::with_source(ErrorKind::Closed, e.to_string())),
            Sent::Stalled => {
                self.state.stalled = true;
                Err(Error::with_source(
                    ErrorKind::Timeout,
                    "the peer took nothing within send_timeout",
                ))
            }
        }
    }

    /// The message being handled, in [`handle_text`](super::WebSocketHandler::handle_text)
    /// and [`handle_binary`](super::WebSocketHandler::handle_binary) (`None` in other
    /// callbacks): the same bytes as the callback's argument, not a copy of them, to send
    /// back, pass on to other connections or a group, or keep.
    ///
    /// ```
    /// use atoll::http::websocket::{WebSocketHandler, WsAction, WsConn};
    ///
    /// #[derive(Clone)]
    /// struct Relay;
    ///
    /// impl WebSocketHandler for Relay {
    ///     async fn handle_binary(&mut self, _data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
    ///         if let Some(message) = ws.received() {
    ///             // Every member of the group gets these bytes; none is copied.
    ///             ws.groups().broadcast("room", message);
    ///         }
    ///         WsAction::Continue
    ///     }
    /// }
    /// ```
    pub fn received(&self) -> Option<WsMessage> {
        self.received.cloned()
    }

    /// A handle to send on this connection from other tasks.
    pub fn sender(&mut self) -> WsSender {
        self.state.sender().clone()
    }

    /// Joins the group `name` of the route's [`Groups`]: what is broadcast to it comes here
    /// too, until the connection ends or [`leave`](Self::leave)s it.
    pub fn join(&mut self, name: &str) {
        if !self.state.joined.iter().any(|g| g == name) {
            let tx = self.state.sender().tx.clone();
            self.state.groups.join(name, self.state.id, tx);
            self.state.joined.push(name.to_owned());
        }
    }

    /// Leaves the group `name`.
    pub fn leave(&mut self, name: &str) {
        self.state.joined.retain(|g| g != name);
        self.state.groups.leave(name, self.state.id);
    }

    /// The groups of the route this connection belongs to.
    pub fn groups(&self) -> &Groups {
        &self.state.groups
    }

    /// The connection's id, unique within its listener.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> &Addr {
        &self.state.peer
    }

    /// Whether it runs over TLS (`wss`).
    pub fn is_secure(&self) -> bool {
        self.state.secure
    }
}

impl fmt::Debug for WsConn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConn")
            .field("id", &self.state.id)
            .field("peer", &self.state.peer)
            .finish()
    }
}

/// Sends on one connection from any task. Messages wait in the connection's queue (the
/// route's [`send_queue`](super::WebSocket::send_queue) long) and go out between callbacks,
/// in order. Clones send on the same connection.
#[derive(Clone)]
pub struct WsSender {
    pub(crate) tx: mpsc::Sender<Outgoing>,
}

impl WsSender {
    /// Queues a message, waiting while the queue is full. Fails with
    /// [`Closed`](ErrorKind::Closed) once the connection has ended.
    pub async fn send(&self, message: impl Into<WsMessage>) -> Result<()> {
        self.tx
            .send(Outgoing::Send(message.into()))
            .await
            .map_err(|_| closed())
    }

    /// Queues a message if there is room now: [`Closed`](ErrorKind::Closed) once the
    /// connection has ended, [`Io`](ErrorKind::Io) when its queue is full (a peer that reads
    /// slower than it is sent to).
    pub fn try_send(&self, message: impl Into<WsMessage>) -> Result<()> {
        self.tx
            .try_send(Outgoing::Send(message.into()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    Error::with_source(ErrorKind::Io, "the connection's send queue is full")
                }
                mpsc::error::TrySendError::Closed(_) => closed(),
            })
    }

    /// Asks the connection to start the close handshake with `code` and `reason`.
    pub async fn close(&self, code: u16, reason: impl Into<String>) -> Result<()> {
        self.tx
            .send(Outgoing::Close(code, reason.into()))
            .await
            .map_err(|_| closed())
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl fmt::Debug for WsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn closed() -> Error {
    Error::with_source(ErrorKind::Closed, "the WebSocket connection has ended")
}

/// How a send ended.
pub(crate) enum Sent {
    /// The socket took all of it.
    Done,
    /// The framing or the socket failed.
    Failed(WsError),
    /// The peer took none of it for the send timeout.
    Stalled,
}

/// Sends `message`, or gives up once the peer has taken none of it for `within`. The timer
/// starts only if the send waits: most sends go through at once, and reading the clock and
/// setting a timer for each would cost more than the send. It lives on the heap for that
/// wait, so that the futures that send (a handler's callbacks, the session's) do not carry
/// its room all the time.
pub(crate) async fn send_within(ws: &mut WsStream, message: Message, within: Duration) -> Sent {
    let mut message = Some(message);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        if let Poll::Ready(sent) = ws.poll_send(cx, &mut message) {
            return Poll::Ready(match sent {
                Ok(()) => Sent::Done,
                Err(e) => Sent::Failed(e),
            });
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
        timer.as_mut().poll(cx).map(|()| Sent::Stalled)
    })
    .await
}
