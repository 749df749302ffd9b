//! One WebSocket connection's life after the 101: the framed stream on the socket hyper gave
//! back, its callbacks, keepalive pings, the read deadline, the close handshake, and the stop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, timeout_at, Instant};
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::conn::{ConnState, Outgoing, Sent, WsConn, WsStream};
use super::deflate::{self, InflateError};
use super::framed::Framed;
use super::gate::{Arrival, Gate};
use super::handler::{close_code, WebSocketHandler, WsAction};
use super::io::{Link, WsIo};
use super::message::WsMessage;
use super::moving::{self, Arrived, Opened};
use super::route::WsOptions;
use crate::connections::Signal;
use crate::http::activity::Watched;
use crate::socket::Socket;
use crate::Move;

/// A session to run once hyper has handed the connection back: carried from the route to
/// the connection's task in the 101 response's extensions (which must be `Clone`, hence the
/// shared slot; only the first taker gets it).
#[derive(Clone)]
pub(crate) struct Upgrade(pub(crate) Arc<Mutex<Option<Box<dyn Session>>>>);

impl Upgrade {
    pub(crate) fn take(&self) -> Option<Box<dyn Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A WebSocket connection to run on the connection's task.
pub(crate) trait Session: Send {
    /// Spawns the connection's task: the future inside the task itself, not boxed apart
    /// (one allocation, and one pointer fewer to follow on every wake).
    fn spawn(self: Box<Self>) -> tokio::task::AbortHandle;
}

impl std::fmt::Debug for dyn Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

/// A route's accepted upgrade: the handler clone that admitted it, waiting for the socket.
pub(crate) struct Live<H> {
    pub(crate) on_upgrade: hyper::upgrade::OnUpgrade,
    pub(crate) handler: H,
    pub(crate) opts: Arc<WsOptions>,
    pub(crate) opened: Opened,
    /// The HTTP/2 connection of an extended CONNECT; `None` for an HTTP/1.1 upgrade, whose
    /// socket says it all.
    pub(crate) stream_of: Option<Link>,
}

impl<H: WebSocketHandler> Session for Live<H> {
    fn spawn(self: Box<Self>) -> tokio::task::AbortHandle {
        let task = tokio::spawn(async move {
            let Live {
                on_upgrade,
                handler,
                opts,
                opened,
                stream_of,
            } = *self;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            if let Some(link) = stream_of {
                // One stream of an HTTP/2 connection.
                let io = WsIo::Right(TokioIo::new(upgraded));
                let ws = Framed::new(gate(io, &opened, &opts), opts.config());
                return drive(ws, handler, &opts, opened, link, None).await;
            }
            let Some((socket, unread)) = socket_of(upgraded) else {
                tracing::debug!(target: "atoll::http", "upgraded connection of an unknown kind");
                return;
            };
            let (link, ws) = framed(socket, unread, &opts, &opened);
            drive(ws, handler, &opts, opened, link, None).await;
        });
        task.abort_handle()
    }
}

/// The socket itself under an HTTP/1.1 upgrade, not hyper's box around it (reads and writes
/// go straight to it, and the listener's stop reaches the connection through it), and the
/// bytes to read before it: frames the client sent right behind its request, which hyper
/// read already, then any the connection brought from another process. `None` for an
/// upgrade of another kind of connection.
///
/// A plain function: in the session's future, hyper's `Parts`, once partly moved out of,
/// would keep their room for the connection's whole life.
fn socket_of(upgraded: hyper::upgrade::Upgraded) -> Option<(Socket, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<Watched<Socket>>>().ok()?;
    // The HTTP connection's wrapper (its activity, for HTTP's timers) goes: the session
    // reads the socket itself.
    let Watched {
        inner: socket,
        prefix,
        ..
    } = parts.io.into_inner();
    // Copied out of `parts`: hyper's whole read buffer stays allocated while anything
    // refers to it.
    let read_buf = parts.read_buf;
    let unread = match (read_buf.is_empty(), prefix.is_empty()) {
        (true, _) => prefix,
        (false, true) => Bytes::copy_from_slice(&read_buf),
        (false, false) => Bytes::from([&read_buf[..], &prefix[..]].concat()),
    };
    Some((socket, unread))
}

/// A connection moved here from another process, with its handler restored and the groups
/// it had joined.
pub(crate) struct Resumed<H> {
    pub(crate) handler: H,
    pub(crate) opts: Arc<WsOptions>,
    pub(crate) opened: Opened,
    pub(crate) groups: Vec<String>,
}

impl<H: WebSocketHandler> Arrived for Resumed<H> {
    fn run(
        self: Box<Self>,
        socket: Socket,
        unread: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Resumed {
            handler,
            opts,
            opened,
            groups,
        } = *self;
        let (link, ws) = framed(socket, unread, &opts, &opened);
        Box::pin(async move {
            drive(ws, handler, &opts, opened, link, Some(groups)).await;
        })
    }
}

/// The framed stream on a socket that is the connection's own, reading `unread` first, and
/// the connection it belongs to.
fn framed(socket: Socket, unread: Bytes, opts: &WsOptions, opened: &Opened) -> (Link, WsStream) {
    let link = Link::of(&socket);
    let io = gate(WsIo::Left(socket), opened, opts).with_unread(unread);
    (link, Framed::new(io, opts.config()))
}

/// How long the end of the connection waits to shut its write side down (TLS's close_notify
/// on a peer that stopped reading): 1 s.
const SHUTDOWN_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

/// How one turn of the loop ended.
enum Turn {
    Go,
    /// Close with this code and reason: send the close frame, wait for the peer's.
    Close(u16, String),
    /// The connection is over: the peer's close (answered), or the socket is gone.
    Ended(u16, String),
}

impl From<WsAction> for Turn {
    fn from(action: WsAction) -> Turn {
        match action {
            WsAction::Continue => Turn::Go,
            WsAction::Close(code, reason) => Turn::Close(code, reason),
        }
    }
}

/// Runs the connection to its end: callbacks for what arrives, what other tasks queue,
/// keepalive pings, the read deadline, the stop, and the move to another process at an
/// upgrade. `resumed`: the groups of a connection that moved here (it had its
/// `handle_connection` in the process it came from); `None` for a new connection.
///
/// Not an `async fn`: one moves its arguments into locals and keeps the arguments' room
/// too, for the connection's whole life (over 600 bytes here); an `async move` block uses
/// what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn drive<'o, H: WebSocketHandler>(
    mut ws: WsStream,
    mut handler: H,
    opts: &'o WsOptions,
    opened: Opened,
    link: Link,
    resumed: Option<Vec<String>>,
) -> impl Future<Output = ()> + 'o {
    async move {
        let shutdown_timeout = link.shared.opts.shutdown_timeout;
        // Where the connection goes when the listener stops, if it can move: read only then.
        let shared = link.movable.then(|| link.shared.clone());
        let mut state = ConnState {
            queue: None,
            queue_len: opts.send_queue,
            groups: opts.groups.clone(),
            joined: Vec::new(),
            id: link.id(),
            peer: link.peer().clone(),
            secure: link.secure,
            send_timeout: link.shared.opts.send_timeout,
            stalled: false,
            compress_from: opened.deflate.then_some(opts.compress_min_size),
        };
        let send_timeout = state.send_timeout;
        macro_rules! cx {
            () => {
                &mut WsConn {
                    ws: &mut ws,
                    state: &mut state,
                    received: None,
                }
            };
            ($received:expr) => {
                &mut WsConn {
                    ws: &mut ws,
                    state: &mut state,
                    received: Some($received),
                }
            };
        }
        // The listener stops and the connection stays: boxed, as it runs once (see below).
        macro_rules! drain_now {
            () => {
                Box::pin(drain(&mut ws, &mut handler, &mut state, shutdown_timeout)).await
            };
        }
        // The streams of an HTTP/2 connection wait on the slot's `Notify` (boxed: a session
        // with a socket of its own never does, and should not carry its room).
        let mut stopping = (!link.exclusive).then(|| Box::pin(link.stopping()));
        let mut stopped = false;
        // A connection with a socket of its own hears the stop through its slot's loop waker:
        // after the first poll, a look is two atomic loads (`Notify`'s takes a lock). The
        // streams of an HTTP/2 connection share its slot, so they wait on `Notify`.
        let mut registered = false;
        // Once the listener stopped with somewhere to move connections: where, and until when
        // the connection may wait to be between messages.
        let mut moving: Option<(crate::MoveTo, Instant)> = None;
        // The handler said `Later`: asked again after the next message.
        let mut asked = false;
        let mut last_heard = Heard::now();
        let mut last_ping = Instant::now();
        // One alarm for the read deadline, the keepalive ping and the end of the wait to move,
        // set for the soonest. A message moves the first two later without touching it: it
        // goes off early, finds nothing due, and is set again (an alarm set per message would
        // cost more than the message). So what is due is worked out only when the alarm has
        // gone off or the wait to move begins, the one thing that can come sooner.
        //
        // A connection with a socket of its own has no timer: it sets its slot's deadline, and
        // the listener's sweeper wakes it through the slot's loop waker, as it wakes the socket
        // server's connections. The streams of an HTTP/2 connection share its slot, so each
        // has a timer.
        let first = last_ping + opts.ping_interval.min(opts.read_timeout);
        let mut timer = match link.exclusive {
            true => {
                link.shared.timeouts.arm_at(&link.slot, first);
                None
            }
            false => Some(Box::pin(sleep_until(first))),
        };
        let mut rearm = false;
        let mut turn: Turn = match resumed {
            None => handler.handle_connection(cx!()).await.into(),
            Some(groups) => {
                for group in &groups {
                    cx!().join(group);
                }
                Turn::Go
            }
        };
        // What runs once in a connection's life (closing, draining, moving away) is boxed
        // where it is awaited: the future of this block is as big as the biggest thing it
        // awaits, for every connection, all its life.
        let (code, reason) = 'run: loop {
            if state.stalled {
                break (close_code::ABNORMAL, "send timeout".to_owned());
            }
            match turn {
                Turn::Go => {}
                Turn::Close(code, reason) => {
                    let until = Instant::now() + opts.read_timeout;
                    break Box::pin(close(&mut ws, code, reason, until)).await;
                }
                Turn::Ended(code, reason) => break (code, reason),
            }
            if let Some((to, _)) = &moving {
                if !asked && ws.get_ref().between_messages() {
                    asked = true;
                    match handler.handle_move(cx!()).await {
                        Move::Now(moved) => {
                            match Box::pin(moving::leave(&mut ws, &mut state, &opened, moved, to))
                                .await
                            {
                                // It goes on in the other process: nothing closes here.
                                Ok(()) => return,
                                Err(why) => {
                                    tracing::debug!(target: "atoll::http", why, "a WebSocket connection cannot move; it drains");
                                    break 'run drain_now!();
                                }
                            }
                        }
                        Move::Later => {}
                        Move::Never => {
                            break 'run drain_now!();
                        }
                    }
                }
            }
            let due = |last_heard: Heard, last_ping: Instant| {
                let last_heard = last_heard.instant();
                let deadline = last_heard + opts.read_timeout;
                let ping_at = last_heard.max(last_ping) + opts.ping_interval;
                let move_until = moving.as_ref().map(|(_, until)| *until);
                (deadline, ping_at, move_until)
            };
            if rearm {
                rearm = false;
                let (deadline, ping_at, move_until) = due(last_heard, last_ping);
                let at = deadline.min(ping_at).min(move_until.unwrap_or(deadline));
                match &mut timer {
                    Some(timer) => timer.as_mut().reset(at),
                    None => link.shared.timeouts.arm_at(&link.slot, at),
                }
            }
            // The stop and the alarm first, then the peer, then what other tasks queued.
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(tick) = poll_tick(
                    cx,
                    &link,
                    &mut registered,
                    stopped,
                    &mut stopping,
                    &mut timer,
                ) {
                    return Poll::Ready(Event::Tick(tick));
                }
                if let Poll::Ready(next) = ws.poll_next(cx) {
                    return Poll::Ready(Event::Next(next));
                }
                state.poll_queued(cx).map(Event::Queued)
            })
            .await;
            turn = match event {
                Event::Tick(Tick::Stop) => {
                    stopped = true;
                    match shared.as_ref().and_then(|s| s.move_to.get()) {
                        Some(to) => {
                            moving = Some((to, Instant::now() + shutdown_timeout));
                            rearm = true;
                            Turn::Go
                        }
                        None => break 'run drain_now!(),
                    }
                }
                Event::Tick(Tick::Time) => {
                    let now = Instant::now();
                    let (deadline, ping_at, move_until) = due(last_heard, last_ping);
                    rearm = true;
                    if move_until.is_some_and(|until| now >= until) {
                        // Never between messages within the shutdown timeout (or always `Later`).
                        break 'run drain_now!();
                    } else if now >= deadline {
                        last_heard = Heard::now();
                        handler.handle_timeout(cx!()).await.into()
                    } else if now >= ping_at {
                        last_ping = now;
                        send_within(&mut ws, Message::Ping(Bytes::new()), send_timeout).await
                    } else {
                        // Set for a deadline a message has since moved on.
                        Turn::Go
                    }
                }
                Event::Next(next) => {
                    last_heard = Heard::now();
                    asked = false;
                    // What came, taken out of tungstenite's item by a plain function: the
                    // item itself (56 bytes) is not kept while a callback runs.
                    match incoming(next, ws.get_mut(), opts.max_message_size) {
                        In::Data(m) => match m.as_text() {
                            Some(t) => handler.handle_text(t, cx!(&m)).await.into(),
                            None => handler.handle_binary(m.as_bytes(), cx!(&m)).await.into(),
                        },
                        In::Ping(data) => handler.handle_ping(&data, cx!()).await.into(),
                        In::Pong(data) => handler.handle_pong(&data, cx!()).await.into(),
                        In::Close(frame) => {
                            // tungstenite queued the echo of the peer's close: send it, and let
                            // the peer close the socket (bounded by the read timeout).
                            let until = Instant::now() + opts.read_timeout;
                            let _ = Box::pin(timeout_at(until, finish(&mut ws))).await;
                            frame
                        }
                        In::Turn(turn) => turn,
                    }
                }
                Event::Queued(Outgoing::Send(message)) => {
                    send_within(&mut ws, state.frame(message), send_timeout).await
                }
                Event::Queued(Outgoing::Close(code, reason)) => Turn::Close(code, reason),
            };
        };
        // The write side ends cleanly: over TLS the peer gets close_notify, not a bare EOF.
        let _ = tokio::time::timeout(SHUTDOWN_WRITE, ws.get_mut().shutdown()).await;
        for group in &state.joined {
            state.groups.leave(group, state.id);
        }
        handler.handle_close(code, &reason).await;
    }
}

/// When the peer was last heard, on the kernel's coarse monotonic clock: stamped at every
/// message, it reads no time stamp counter (tokio's clock does), and its resolution, a few
/// milliseconds, is nothing against deadlines of seconds.
#[derive(Clone, Copy)]
struct Heard(Duration);

impl Heard {
    fn now() -> Heard {
        Heard(coarse_now())
    }

    /// The same moment on tokio's clock, which alarms are set on.
    fn instant(self) -> Instant {
        let ago = coarse_now().saturating_sub(self.0);
        let now = Instant::now();
        now.checked_sub(ago).unwrap_or(now)
    }
}

fn coarse_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        .unwrap_or_default()
}

/// What woke the session.
enum Event {
    Tick(Tick),
    /// What the framing read (`None`: the connection is over).
    Next(Option<Result<Message, WsError>>),
    /// What another task queued.
    Queued(Outgoing),
}

/// What woke the session, apart from its socket and its queue.
enum Tick {
    /// The listener stops.
    Stop,
    /// Its alarm went off: something may be due (the read deadline, a ping, the end of the
    /// wait to move).
    Time,
}

/// Polls for the stop (until it has been seen) and the alarm: through the slot for a
/// connection with a socket of its own (no `timer`), or through the stream's `stopping` and
/// `timer`.
fn poll_tick<F: Future<Output = ()>>(
    cx: &mut Context<'_>,
    link: &Link,
    registered: &mut bool,
    stopped: bool,
    stopping: &mut Option<Pin<Box<F>>>,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) -> Poll<Tick> {
    let Some(timer) = timer else {
        return match link.slot.poll_signal(cx, registered, stopped) {
            Poll::Ready(Signal::Stop) => Poll::Ready(Tick::Stop),
            Poll::Ready(Signal::Expired) => Poll::Ready(Tick::Time),
            Poll::Pending => Poll::Pending,
        };
    };
    if let (false, Some(stopping)) = (stopped, stopping) {
        if stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Tick::Stop);
        }
    }
    timer.as_mut().poll(cx).map(|()| Tick::Time)
}

/// The listener stops and the connection stays: the handler's last word, then 1001 and the
/// wait for the peer's close frame, up to the shutdown timeout.
async fn drain<H: WebSocketHandler>(
    ws: &mut WsStream,
    handler: &mut H,
    state: &mut ConnState,
    shutdown_timeout: std::time::Duration,
) -> (u16, String) {
    handler
        .handle_shutdown(&mut WsConn {
            ws,
            state,
            received: None,
        })
        .await;
    let until = Instant::now() + shutdown_timeout;
    close(
        ws,
        close_code::GOING_AWAY,
        "server stopping".to_owned(),
        until,
    )
    .await
}

/// What tungstenite reads through: the socket cut at frame ends, taking compressed messages
/// in when the connection negotiated permessage-deflate.
fn gate(io: WsIo, opened: &Opened, opts: &WsOptions) -> Gate<WsIo> {
    let gate = Gate::new(io).holding_up_to(opts.max_frame_size);
    match opened.deflate {
        true => gate.inflate(),
        false => gate,
    }
}

/// What the framing returned, as the session acts on it.
enum In {
    /// A text or binary message, inflated if it came compressed.
    Data(WsMessage),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close frame: how the connection ends once it is answered.
    Close(Turn),
    /// Nothing for a callback: go on, close for a fault, or the end of the socket.
    Turn(Turn),
}

/// Takes what the framing returned apart (with permessage-deflate, `gate` says whether a data
/// message came compressed; `limit` bounds it inflated).
fn incoming(next: Option<Result<Message, WsError>>, gate: &mut Gate<WsIo>, limit: usize) -> In {
    match next {
        Some(Ok(Message::Text(text))) => {
            // A plain message, compression negotiated or not.
            let _ = gate.arrived();
            In::Data(WsMessage::from_text(text))
        }
        Some(Ok(Message::Binary(data))) => match gate.arrived() {
            Some(Arrival::Deflated { text }) => match inflated(&data, text, limit) {
                Ok(m) => In::Data(m),
                Err(turn) => In::Turn(turn),
            },
            _ => In::Data(WsMessage::binary(data)),
        },
        Some(Ok(Message::Ping(data))) => In::Ping(data),
        Some(Ok(Message::Pong(data))) => In::Pong(data),
        Some(Ok(Message::Close(frame))) => In::Close(match frame {
            Some(f) => Turn::Ended(f.code.into(), f.reason.to_string()),
            None => Turn::Ended(close_code::NO_STATUS, String::new()),
        }),
        Some(Ok(Message::Frame(_))) => In::Turn(Turn::Go),
        Some(Err(e)) => In::Turn(failed(e)),
        None => In::Turn(Turn::Ended(close_code::ABNORMAL, String::new())),
    }
}

/// A compressed message, inflated (a text one is checked as UTF-8), or the close its fault
/// calls for.
fn inflated(data: &[u8], text: bool, limit: usize) -> Result<WsMessage, Turn> {
    let bytes = match deflate::inflate(data, limit) {
        Ok(bytes) => bytes,
        Err(InflateError::TooBig) => {
            let reason = format!("message over {limit} bytes inflated");
            return Err(Turn::Close(close_code::TOO_BIG, reason));
        }
        Err(InflateError::Corrupt) => {
            let reason = "invalid compressed data".to_owned();
            return Err(Turn::Close(close_code::INVALID_DATA, reason));
        }
    };
    match text {
        false => Ok(WsMessage::binary(bytes)),
        true => String::from_utf8(bytes)
            .map(WsMessage::text)
            .map_err(|_| Turn::Close(close_code::INVALID_DATA, "invalid UTF-8".into())),
    }
}

/// Sends `message`, within the listener's `send_timeout`: a peer that takes none of it for
/// that long reads nothing, so the connection ends without a close frame.
async fn send_within(ws: &mut WsStream, message: Message, within: std::time::Duration) -> Turn {
    match super::conn::send_within(ws, message, within).await {
        Sent::Done => Turn::Go,
        Sent::Failed(e) => failed(e),
        Sent::Stalled => Turn::Ended(close_code::ABNORMAL, "send timeout".to_owned()),
    }
}

/// What a failed read or write means: a broken rule of the peer's is answered with its close
/// code; a socket that failed ends the connection.
fn failed(e: WsError) -> Turn {
    match e {
        WsError::Capacity(e) => Turn::Close(close_code::TOO_BIG, e.to_string()),
        WsError::Utf8(_) => Turn::Close(close_code::INVALID_DATA, "invalid UTF-8".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Turn::Ended(close_code::ABNORMAL, String::new())
        }
        WsError::Protocol(e) => Turn::Close(close_code::PROTOCOL, e.to_string()),
        WsError::AttackAttempt => Turn::Close(close_code::POLICY, "attack attempt".into()),
        _ => Turn::Ended(close_code::ABNORMAL, String::new()),
    }
}

/// This side closes: sends the close frame, then reads (and drops) until the peer's close
/// frame arrives or the socket ends, up to `until`. Returns the code and reason sent. The
/// reads past the close go through the gate alone ([`Gate::skip_to_close`]): after a frame
/// over the limit, tungstenite would wait to hold all of it, and after a message over the
/// limit it would stop at the next fragment, leaving the peer's close unread (and a socket
/// closed with unread bytes sends a reset).
async fn close(ws: &mut WsStream, code: u16, mut reason: String, until: Instant) -> (u16, String) {
    // A close frame's payload is at most 125 bytes: the code and 123 of reason.
    if reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.clone().into(),
    };
    let _ = timeout_at(until, async {
        if ws.close(Some(frame)).await.is_ok() {
            let _ = ws.get_mut().skip_to_close().await;
        }
    })
    .await;
    (code, reason)
}

/// Reads until the stream ends: the close handshake completes (or the socket fails).
async fn finish(ws: &mut WsStream) {
    while let Some(Ok(_)) = ws.next().await {}
}
