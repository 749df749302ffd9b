//! The framed connection: tungstenite's `WebSocketContext` (the protocol: frames, fragments,
//! control frames, masking, UTF-8, limits, the close handshake) driven over the gate with
//! the session's own task context.
//!
//! tungstenite reads and writes through `std::io::Read` and `Write`. Each call here lends it
//! the gate together with the context of the poll under way ([`InContext`]): a read or write
//! the socket cannot do yet registers the session's own waker and tells tungstenite
//! `WouldBlock`, which it leaves for the next poll. A session is one task that alone reads
//! and writes its connection, so one waker is all there is to register; nothing stands
//! between the socket's readiness and the task (tokio-tungstenite, made for a stream and a
//! sink polled by two tasks, keeps two shared wakers that it registers on every call).

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::either::Either;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::gate::Gate;
use super::io::WsIo;

/// A server's framed WebSocket connection.
pub(crate) struct Framed {
    ctx: WebSocketContext,
    io: Gate<WsIo>,
    /// A read returned the end or a fault: nothing more will come.
    ended: bool,
    /// tungstenite holds nothing: it has just returned a data message or a pong (the gate
    /// hands it no byte past a frame's end, so it keeps none) and owes the peer nothing.
    /// Until the socket has something to read, asking it would find nothing.
    drained: bool,
    /// tungstenite returned a ping, so it owes the peer a pong, sent at its next read or
    /// write: until a send has gone through whole, a read must go to it.
    owed: bool,
}

impl Framed {
    pub(crate) fn new(io: Gate<WsIo>, config: WebSocketConfig) -> Framed {
        Framed {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            io,
            ended: false,
            drained: false,
            owed: false,
        }
    }

    /// What the framing reads through.
    pub(crate) fn get_ref(&self) -> &Gate<WsIo> {
        &self.io
    }

    pub(crate) fn get_mut(&mut self) -> &mut Gate<WsIo> {
        &mut self.io
    }

    /// The next message; `None` once the connection is over (its close handshake done, or
    /// the socket ended after an error returned). Pongs to pings and the echo of the peer's
    /// close are queued and sent by tungstenite as it reads.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, WsError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.drained && !self.io.has_unread() {
            // Half the reads of a busy connection come here right after a message and find
            // nothing: the socket's readiness says so without going through tungstenite.
            if let Either::Left(socket) = &self.io.inner {
                if socket.poll_readable(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        self.drained = false;
        let read = self.ctx.read(&mut InContext {
            io: &mut self.io,
            cx,
        });
        match read {
            Ok(message) => {
                match message {
                    Message::Text(_) | Message::Binary(_) | Message::Pong(_) => {
                        self.drained = !self.owed
                    }
                    Message::Ping(_) => self.owed = true,
                    Message::Close(_) | Message::Frame(_) => {}
                }
                Poll::Ready(Some(Ok(message)))
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(WsError::AlreadyClosed | WsError::ConnectionClosed) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Err(e) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Option<Result<Message, WsError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Writes `message` (taken once tungstenite has it) and flushes everything queued; ready
    /// once the socket took all of it.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        message: &mut Option<Message>,
    ) -> Poll<Result<(), WsError>> {
        // Set once a flush has emptied the write buffer for the message: refused again, it
        // never fits (a bound below its size; atoll's routes set none), and that is an error.
        let mut flushed = false;
        loop {
            let mut io = InContext {
                io: &mut self.io,
                cx,
            };
            if let Some(m) = message.take() {
                match self.ctx.write(&mut io, m) {
                    Ok(()) => {}
                    // Queued: the flush below goes on with it.
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // Over the write buffer's bound: it waits for the flush, then goes again.
                    Err(WsError::WriteBufferFull(m)) if !flushed => *message = Some(*m),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            match self.ctx.flush(&mut io) {
                Ok(()) if message.is_some() => flushed = true,
                Ok(()) => {
                    // The flush sent whatever tungstenite owed (a pong) too.
                    self.owed = false;
                    return Poll::Ready(Ok(()));
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Poll::Pending;
                }
                // The close handshake has just completed with this write: not a fault.
                Err(WsError::ConnectionClosed) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends `message` and waits until the socket took it.
    pub(crate) async fn send(&mut self, message: Message) -> Result<(), WsError> {
        let mut message = Some(message);
        poll_fn(|cx| self.poll_send(cx, &mut message)).await
    }

    /// Sends what tungstenite queued (a pong, the echo of a close).
    pub(crate) async fn flush(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_send(cx, &mut None)).await
    }

    /// Starts the close handshake: sends the close frame.
    pub(crate) async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), WsError> {
        self.send(Message::Close(frame)).await
    }
}

/// The gate lent to tungstenite for one call, with the context of the poll under way: what
/// would wait registers the task's waker and is `WouldBlock` to tungstenite.
struct InContext<'a, 'b> {
    io: &'a mut Gate<WsIo>,
    cx: &'a mut Context<'b>,
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl Read for InContext<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(would_block()),
        }
    }
}

impl Write for InContext<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(would_block()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(would_block()),
        }
    }
}
