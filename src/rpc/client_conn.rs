//! The client's connection task: it owns the socket, writes the frames callers queue, matches
//! replies to calls by id, hands pushes to the callback, sends keepalives, and reconnects.
//!
//! One task per [`Client`](super::Client). Callers encode their frames themselves and hand
//! them over an mpsc channel; the task writes everything queued in one write and answers each
//! call through its oneshot.
//!
//! While it reconnects, the task holds the calls and casts it is given and sends them on the
//! next connection (a caller gives up at its own timeout). When a connection is lost, what
//! was not written whole is sent again on the next one, as are calls the server answered
//! `shutting down` (read, not run); a call written whole and unanswered fails with
//! [`RpcError::Disconnected`], as the server may have run it. When the server says `going
//! away`, the task answers it, hands the connection to a drain task that collects the
//! answers of the calls already sent, and connects again at once.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use super::client_tls::{dial, tls_error, Io, Tls};
use super::protocol::Identity;
use super::wire::{self, codes, features, Decoder, ErrorBody, Frame, Hello, Kind};
use super::{Protocol, RpcError};

/// What a caller hands to the connection task.
pub(super) enum Command {
    /// A call frame, encoded; the task answers through `reply` with the reply's payload.
    /// `room` is what the frame took of [`Shared::room`].
    Call {
        id: u64,
        frame: Bytes,
        room: u32,
        reply: oneshot::Sender<Result<Bytes, RpcError>>,
    },
    /// A cast frame, encoded, and what it took of [`Shared::room`].
    Cast(Bytes, u32),
    /// The call with this id timed out: forget it.
    Cancel(u64),
    /// [`Client::close`](super::Client::close): end the task, then answer.
    Close(oneshot::Sender<()>),
}

/// What the clients and their task share.
#[derive(Debug)]
pub(super) struct Shared {
    /// Whether the task has a connection whose hello succeeded.
    pub(super) connected: AtomicBool,
    /// Whether [`Client::close`](super::Client::close) was called.
    pub(super) closed: AtomicBool,
    /// The version in the server's last hello.
    pub(super) server_version: Mutex<Option<String>>,
    /// Room for frames not yet written to the server, in bytes (`max_unsent` in all): a
    /// caller takes a frame's size before queueing it, the task gives it back as it writes.
    /// Closed when the task ends.
    pub(super) room: Semaphore,
}

impl Shared {
    pub(super) fn new(max_unsent: usize) -> Shared {
        Shared {
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            server_version: Mutex::new(None),
            room: Semaphore::new(max_unsent.min(Semaphore::MAX_PERMITS)),
        }
    }

    /// Gives back room taken by frames written or dropped.
    fn give_back(&self, room: usize) {
        if room > 0 {
            self.room.add_permits(room);
        }
    }

    fn set_connected(&self, hello: &Hello) {
        if let Ok(mut v) = self.server_version.lock() {
            *v = Some(hello.version.clone());
        }
        self.connected.store(true, Ordering::Release);
    }
}

/// A callback of the user's.
pub(super) type Callback<T> = Arc<dyn Fn(T) + Send + Sync>;

// ===== impl Connector =====

/// Makes connections: dial, TLS handshake, hello exchange, all within the connect timeout.
pub(super) struct Connector {
    pub(super) addr: String,
    pub(super) tls: Option<Tls>,
    pub(super) identity: Identity,
    pub(super) connect_timeout: Duration,
    /// The largest frame taken before the server's hello is accepted.
    pub(super) max_hello_size: usize,
}

/// A connection whose hello exchange succeeded.
pub(super) struct Conn {
    io: Io,
    /// Bytes read after the server's hello (pushes may follow it in the same segment).
    rbuf: BytesMut,
    pub(super) hello: Hello,
}

impl Conn {
    /// Whether the server agreed to `going away`.
    fn going_away(&self) -> bool {
        self.hello.has(features::GOING_AWAY)
    }
}

impl Connector {
    /// Connects and exchanges hellos.
    pub(super) async fn connect(&self) -> Result<Conn, RpcError> {
        match tokio::time::timeout(self.connect_timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: no connection and hello within {:?}",
                    self.addr, self.connect_timeout
                ),
            ))),
        }
    }

    async fn attempt(&self) -> Result<Conn, RpcError> {
        let mut io = dial(&self.addr, self.tls.as_ref()).await?;
        let mut out = BytesMut::new();
        let hello = Hello {
            features: vec![features::GOING_AWAY.to_owned()],
            ..self.identity.hello()
        };
        wire::encode(Kind::Hello, 0, &hello, self.max_hello_size, &mut out)
            .map_err(|e| RpcError::Encode(e.to_string()))?;
        let tls = io.is_tls();
        let during_hello = |e: io::Error| hello_io_error(e, tls);
        io.write_all(&out).await.map_err(during_hello)?;
        io.flush().await.map_err(during_hello)?;
        let decoder = Decoder::new(self.max_hello_size);
        let mut rbuf = BytesMut::with_capacity(8 * 1024);
        let frame = loop {
            match decoder.decode(&mut rbuf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e @ wire::WireError::TooLarge { .. }) => {
                    return Err(RpcError::Protocol(format!(
                        "the server's hello: {e} (max_hello_size)"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
            let n = io.read_buf(&mut rbuf).await.map_err(during_hello)?;
            if n == 0 {
                return Err(hello_io_error(
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before its hello",
                    ),
                    tls,
                ));
            }
        };
        let hello = match frame.kind {
            Kind::Hello => wire::decode::<Hello>(&frame.payload)
                .map_err(|e| RpcError::Protocol(format!("the server's hello: {e}")))?,
            Kind::Error => {
                let body = wire::decode::<ErrorBody>(&frame.payload)
                    .map_err(|e| RpcError::Protocol(format!("the server's error frame: {e}")))?;
                return Err(refusal(body));
            }
            other => {
                return Err(RpcError::Protocol(format!(
                    "expected the server's hello, got a {} frame",
                    other.name()
                )))
            }
        };
        self.identity.check(&hello).map_err(refusal)?;
        Ok(Conn { io, rbuf, hello })
    }
}

/// The typed error of a refused hello (the server's refusal, or ours of its hello).
fn refusal(body: ErrorBody) -> RpcError {
    match body.code.as_str() {
        codes::WRONG_IDENTIFIER => RpcError::WrongIdentifier(body.message),
        codes::INCOMPATIBLE_VERSION => RpcError::IncompatibleVersion(body.message),
        _ => RpcError::Remote {
            code: body.code,
            message: body.message,
        },
    }
}

/// An I/O failure before the server's hello arrived. Over TLS it is most likely the server
/// refusing the client's certificate (with TLS 1.3 the client learns it only now).
fn hello_io_error(e: io::Error, tls: bool) -> RpcError {
    if let Some(t) = tls_error(&e) {
        return t;
    }
    if tls {
        return RpcError::Tls(format!(
            "the server closed the connection after the handshake, before its hello \
             (client certificate refused?): {e}"
        ));
    }
    RpcError::Connect(e)
}

// ===== impl Task =====

/// The connection task's settings.
pub(super) struct Settings<P: Protocol> {
    pub(super) keepalive: Duration,
    pub(super) reconnect: bool,
    pub(super) backoff: (Duration, Duration),
    pub(super) max_frame_size: usize,
    pub(super) frame_timeout: Duration,
    pub(super) on_push: Option<Callback<P::Push>>,
    pub(super) on_connect: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// A call sent, or about to be, on the current connection, until its answer.
struct Pending {
    reply: oneshot::Sender<Result<Bytes, RpcError>>,
    /// The frame, to send again if it turns out the server never took it.
    frame: Bytes,
    /// Where the frame ends among the bytes queued on the connection: it was written whole
    /// once that many were.
    end: u64,
}

impl Pending {
    /// The command that sends the call again (its room was given back with its connection).
    fn again(self, id: u64) -> Command {
        Command::Call {
            id,
            frame: self.frame,
            room: 0,
            reply: self.reply,
        }
    }
}

/// The connection task.
pub(super) struct Task<P: Protocol> {
    rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    connector: Connector,
    settings: Settings<P>,
    /// The calls in flight on the current connection, by id.
    pending: HashMap<u64, Pending>,
    /// Calls and casts waiting for a connection: taken while reconnecting, or to be sent
    /// again.
    queue: VecDeque<Command>,
    /// The casts of the current connection not yet written whole, with where each ends.
    unsent_casts: VecDeque<(u64, Bytes)>,
    /// Bytes queued on, and written to, the current connection.
    queued: u64,
    written: u64,
    /// The room taken by the frames in the connection's write buffer.
    held: usize,
    /// Calls that drain tasks give back to be sent again (answered `shutting down`).
    retry_tx: mpsc::UnboundedSender<Command>,
    retry_rx: mpsc::UnboundedReceiver<Command>,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> Drop for Task<P> {
    /// Callers waiting for room are told the task is gone.
    fn drop(&mut self) {
        self.shared.room.close();
    }
}

/// Why a connection ended.
enum Ended {
    /// Closed by the user, or every client is gone: the task ends.
    Closed,
    /// Lost; the reason is logged.
    Dropped(String),
    /// The server is going away: the connection was handed to a drain task.
    Away,
}

impl<P: Protocol> Task<P> {
    pub(super) fn new(
        rx: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
        connector: Connector,
        settings: Settings<P>,
    ) -> Self {
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        Task {
            rx,
            shared,
            connector,
            settings,
            pending: HashMap::new(),
            queue: VecDeque::new(),
            unsent_casts: VecDeque::new(),
            queued: 0,
            written: 0,
            held: 0,
            retry_tx,
            retry_rx,
            _protocol: PhantomData,
        }
    }

    /// Runs `conn`, and the connections after it, until the client is closed or dropped (or,
    /// without reconnection, until the connection is lost).
    pub(super) async fn run(mut self, conn: Conn) {
        let mut conn = conn;
        loop {
            let ended = self.serve(conn).await;
            // The connection's unwritten frames are gone with it (or sent again, taking no
            // room).
            self.shared.give_back(std::mem::take(&mut self.held));
            let delay = match ended {
                Ended::Closed => {
                    self.shared.connected.store(false, Ordering::Release);
                    self.fail_pending(|| RpcError::Closed);
                    return;
                }
                Ended::Dropped(why) => {
                    // Flag first, so a caller that calls again waits for the reconnection
                    // (or, without one, is told `Disconnected` at once).
                    self.shared.connected.store(false, Ordering::Release);
                    self.salvage();
                    tracing::warn!(addr = %self.connector.addr, "rpc client disconnected: {why}");
                    self.settings.backoff.0
                }
                Ended::Away => {
                    self.shared.connected.store(false, Ordering::Release);
                    tracing::debug!(addr = %self.connector.addr, "rpc server going away");
                    // The server is handing over: connect again at once.
                    Duration::ZERO
                }
            };
            if !self.settings.reconnect {
                self.fail_pending(|| RpcError::Disconnected);
                return;
            }
            match self.reconnect(delay).await {
                Some(next) => conn = next,
                None => return,
            }
        }
    }

    /// Fails the calls in flight and those waiting for a connection.
    fn fail_pending(&mut self, error: impl Fn() -> RpcError) {
        for (_, call) in self.pending.drain() {
            let _ = call.reply.send(Err(error()));
        }
        for command in self.queue.drain(..) {
            if let Command::Call { reply, .. } = command {
                let _ = reply.send(Err(error()));
            }
        }
    }

    /// After a connection is lost: what was not written whole waits for the next one, in
    /// the order it was queued; a call written whole and unanswered fails, as the server may
    /// have run it.
    fn salvage(&mut self) {
        let written = self.written;
        let mut again: Vec<(u64, Command)> = Vec::new();
        for (id, call) in self.pending.drain() {
            if call.end > written {
                again.push((call.end, call.again(id)));
            } else {
                let _ = call.reply.send(Err(RpcError::Disconnected));
            }
        }
        for (end, frame) in self.unsent_casts.drain(..) {
            if end > written {
                again.push((end, Command::Cast(frame, 0)));
            }
        }
        again.sort_by_key(|(end, _)| *end);
        for (_, command) in again.into_iter().rev() {
            self.queue.push_front(command);
        }
    }

    /// Reconnects, first after `delay` (none: at once), then with exponential backoff,
    /// holding calls and casts meanwhile. `None`: the client was closed or dropped.
    async fn reconnect(&mut self, mut delay: Duration) -> Option<Conn> {
        let (initial, max) = self.settings.backoff;
        loop {
            let wait = tokio::time::sleep(jitter(delay));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    command = self.rx.recv() => if !hold(&mut self.queue, command) { return None },
                    Some(command) = self.retry_rx.recv() => { hold(&mut self.queue, Some(command)); }
                    () = &mut wait => break,
                }
            }
            let attempt = self.connector.connect();
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    command = self.rx.recv() => if !hold(&mut self.queue, command) { return None },
                    Some(command) = self.retry_rx.recv() => { hold(&mut self.queue, Some(command)); }
                    result = &mut attempt => break result,
                }
            };
            match result {
                Ok(conn) => {
                    tracing::info!(addr = %self.connector.addr, "rpc client reconnected");
                    self.shared.set_connected(&conn.hello);
                    if let Some(on_connect) = &self.settings.on_connect {
                        on_connect();
                    }
                    return Some(conn);
                }
                Err(e) => {
                    tracing::debug!(addr = %self.connector.addr, "rpc client reconnect failed: {e}");
                    delay = if delay.is_zero() {
                        initial
                    } else {
                        (delay * 2).min(max)
                    };
                }
            }
        }
    }

    /// Runs one connection until it is lost, handed to a drain task, or the client is
    /// closed.
    async fn serve(&mut self, conn: Conn) -> Ended {
        let going_away = conn.going_away();
        let Conn { io, mut rbuf, .. } = conn;
        let (mut rd, mut wr) = tokio::io::split(io);
        let decoder = Decoder::new(self.settings.max_frame_size);
        let mut wbuf = BytesMut::with_capacity(8 * 1024);
        self.queued = 0;
        self.written = 0;
        while let Some(command) = self.queue.pop_front() {
            self.take(command, &mut wbuf);
        }
        let keepalive = self.settings.keepalive;
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        // A keepalive sent because the server has been silent for `keepalive`; cleared by any
        // frame from it.
        let mut probed = false;
        let mut need_flush = false;
        let frame_timeout = self.settings.frame_timeout;
        let timer = tokio::time::sleep_until(last_sent + keepalive);
        tokio::pin!(timer);

        // When the frame at the front of `rbuf`, not yet whole, began.
        let mut partial_since = match self.frames(&decoder, &mut rbuf, &mut wbuf, going_away) {
            Ok(_) => (!rbuf.is_empty()).then(Instant::now),
            Err(Goodbye::Away) => return self.hand_over(rd, wr, rbuf, wbuf, decoder),
            Err(why) => return self.goodbye(&mut wr, wbuf, why).await,
        };
        if let Some(since) = partial_since {
            timer
                .as_mut()
                .reset((since + frame_timeout).min(last_sent + keepalive));
        }
        loop {
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(8 * 1024);
            }
            tokio::select! {
                command = self.rx.recv() => {
                    let mut command = command;
                    loop {
                        match command {
                            None => return self.finish(&mut wr, wbuf, None).await,
                            Some(Command::Close(done)) => {
                                return self.finish(&mut wr, wbuf, Some(done)).await
                            }
                            Some(other) => self.take(other, &mut wbuf),
                        }
                        command = match self.rx.try_recv() {
                            Ok(c) => Some(c),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                        };
                    }
                }
                Some(command) = self.retry_rx.recv() => self.take(command, &mut wbuf),
                read = rd.read_buf(&mut rbuf) => {
                    match read {
                        Ok(0) => return Ended::Dropped("the server closed the connection".into()),
                        Ok(_) => {
                            last_received = Instant::now();
                            probed = false;
                            let got = match self.frames(&decoder, &mut rbuf, &mut wbuf, going_away) {
                                Ok(got) => got,
                                Err(Goodbye::Away) => {
                                    return self.hand_over(rd, wr, rbuf, wbuf, decoder)
                                }
                                Err(why) => return self.goodbye(&mut wr, wbuf, why).await,
                            };
                            if rbuf.is_empty() {
                                partial_since = None;
                            } else if got || partial_since.is_none() {
                                let now = Instant::now();
                                partial_since = Some(now);
                                if now + frame_timeout < timer.deadline() {
                                    timer.as_mut().reset(now + frame_timeout);
                                }
                            }
                        }
                        Err(e) => return Ended::Dropped(format!("read failed: {e}")),
                    }
                }
                // One branch for both, as both need the writer.
                written = write_or_flush(&mut wr, &wbuf), if !wbuf.is_empty() || need_flush => {
                    match written {
                        Ok(Some(0)) => {
                            return Ended::Dropped("the connection is closed for writing".into())
                        }
                        Ok(Some(n)) => {
                            wbuf.advance(n);
                            self.wrote(n);
                            last_sent = Instant::now();
                            need_flush = wbuf.is_empty();
                        }
                        Ok(None) => need_flush = false,
                        Err(e) => return Ended::Dropped(format!("write failed: {e}")),
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if partial_since.is_some_and(|since| now >= since + frame_timeout) {
                        let why = format!(
                            "frame timeout: a frame from the server did not complete within \
                             {frame_timeout:?}"
                        );
                        let body = ErrorBody::new(codes::FRAME_TIMEOUT, why.clone());
                        let _ = wire::encode(Kind::Error, 0, &body, usize::MAX, &mut wbuf);
                        return self.goodbye(&mut wr, wbuf, Goodbye::Protocol(why)).await;
                    }
                    if now >= last_received + 2 * keepalive {
                        return Ended::Dropped(format!(
                            "nothing received from the server for {:?}",
                            2 * keepalive
                        ));
                    }
                    let idle = now >= last_sent + keepalive;
                    let silent = now >= last_received + keepalive && !probed;
                    if (idle || silent) && wbuf.is_empty() {
                        wire::keepalive(&mut wbuf);
                        self.queued += wire::HEADER_LEN as u64;
                        probed |= silent;
                        last_sent = now;
                    }
                    let mut next = (last_sent + keepalive).min(last_received + 2 * keepalive);
                    if !probed {
                        next = next.min(last_received + keepalive);
                    }
                    if let Some(since) = partial_since {
                        next = next.min(since + frame_timeout);
                    }
                    // A deadline already past means a write is stuck (the keepalive waits
                    // behind it): look again a little later rather than spin.
                    if next <= now {
                        next = now + (keepalive / 10).max(Duration::from_millis(1));
                    }
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// `n` more bytes are written: that much room is free again (keepalives and the like
    /// took none, so this may run a little ahead), and the casts written whole are done.
    fn wrote(&mut self, n: usize) {
        let freed = n.min(self.held);
        self.held -= freed;
        self.shared.give_back(freed);
        self.written += n as u64;
        while self
            .unsent_casts
            .front()
            .is_some_and(|(end, _)| *end <= self.written)
        {
            self.unsent_casts.pop_front();
        }
    }

    /// Queues a caller's frame.
    fn take(&mut self, command: Command, wbuf: &mut BytesMut) {
        match command {
            Command::Call {
                id,
                frame,
                room,
                reply,
            } => {
                if reply.is_closed() {
                    self.shared.give_back(room as usize);
                    return;
                }
                wbuf.extend_from_slice(&frame);
                self.held += room as usize;
                self.queued += frame.len() as u64;
                let end = self.queued;
                self.pending.insert(id, Pending { reply, frame, end });
            }
            Command::Cast(frame, room) => {
                wbuf.extend_from_slice(&frame);
                self.held += room as usize;
                self.queued += frame.len() as u64;
                self.unsent_casts.push_back((self.queued, frame));
            }
            Command::Cancel(id) => {
                self.pending.remove(&id);
            }
            Command::Close(_) => {}
        }
    }

    /// The server is going away: our answer goes after what is queued, and a drain task
    /// collects the answers of the calls sent (the server runs every one of them); the calls
    /// and casts made from now on wait for the next connection.
    fn hand_over(
        &mut self,
        rd: ReadHalf<Io>,
        wr: WriteHalf<Io>,
        rbuf: BytesMut,
        mut wbuf: BytesMut,
        decoder: Decoder,
    ) -> Ended {
        wire::going_away(&mut wbuf);
        self.unsent_casts.clear();
        let drain = Drain::<P> {
            rd,
            wr,
            rbuf,
            wbuf,
            decoder,
            pending: std::mem::take(&mut self.pending),
            on_push: self.settings.on_push.clone(),
            addr: self.connector.addr.clone(),
            retry: self.retry_tx.clone(),
            silence: 2 * self.settings.keepalive,
        };
        tokio::spawn(drain.run());
        Ended::Away
    }

    /// Handles every whole frame in `rbuf`, and says whether there was one. `Err`: the
    /// connection must end, for this reason.
    fn frames(
        &mut self,
        decoder: &Decoder,
        rbuf: &mut BytesMut,
        wbuf: &mut BytesMut,
        going_away: bool,
    ) -> Result<bool, Goodbye> {
        let mut got = false;
        loop {
            match decoder.decode(rbuf) {
                Ok(Some(frame)) => {
                    got = true;
                    let heard = heard(
                        frame,
                        &mut self.pending,
                        self.settings.on_push.as_ref(),
                        &self.connector.addr,
                    )?;
                    match heard {
                        Heard::Nothing => {}
                        Heard::Retry(command) => self.queue.push_back(command),
                        Heard::GoingAway if going_away => return Err(Goodbye::Away),
                        Heard::GoingAway => {
                            return Err(Goodbye::Protocol(
                                "bad frame: a going away frame, but the hellos did not agree \
                                 on it"
                                    .into(),
                            ))
                        }
                    }
                }
                Ok(None) => return Ok(got),
                Err(e) => {
                    // Tell the server why, as it would tell us.
                    let body = ErrorBody::new(e.code(), e.to_string());
                    let _ = wire::encode(Kind::Error, 0, &body, usize::MAX, wbuf);
                    return Err(Goodbye::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Ends a connection the server broke or ended: writes what is queued (an error frame
    /// telling why, for a protocol fault), briefly, and reports why.
    async fn goodbye<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        mut wbuf: BytesMut,
        why: Goodbye,
    ) -> Ended {
        let reason = match why {
            Goodbye::Protocol(m) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    // Nothing queued is counted as written: what was unsent stays so.
                    wr.write_all_buf(&mut wbuf).await?;
                    wr.shutdown().await
                })
                .await;
                format!("protocol error: {m}")
            }
            Goodbye::Server(body) => {
                format!(
                    "the server ended the connection: {}: {}",
                    body.code, body.message
                )
            }
            Goodbye::Away => "the server is going away".to_owned(),
        };
        Ended::Dropped(reason)
    }

    /// Ends the task: writes what is queued (casts sent before `close`), briefly, then closes.
    async fn finish<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        mut wbuf: BytesMut,
        done: Option<oneshot::Sender<()>>,
    ) -> Ended {
        self.shared.connected.store(false, Ordering::Release);
        self.fail_pending(|| RpcError::Closed);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            wr.write_all_buf(&mut wbuf).await?;
            wr.shutdown().await
        })
        .await;
        if let Some(done) = done {
            let _ = done.send(());
        }
        Ended::Closed
    }
}

/// Takes a command while there is no connection. `false`: end the task.
fn hold(queue: &mut VecDeque<Command>, command: Option<Command>) -> bool {
    match command {
        None => false,
        Some(Command::Close(done)) => {
            for command in queue.drain(..) {
                if let Command::Call { reply, .. } = command {
                    let _ = reply.send(Err(RpcError::Closed));
                }
            }
            let _ = done.send(());
            false
        }
        Some(Command::Cancel(id)) => {
            queue.retain(|c| !matches!(c, Command::Call { id: queued, .. } if *queued == id));
            true
        }
        Some(command) => {
            queue.push_back(command);
            true
        }
    }
}

/// What a frame from the server asks of the connection.
enum Heard {
    Nothing,
    /// A call the server answered `shutting down`: it read it and did not run it, so it is
    /// sent again on the next connection.
    Retry(Command),
    /// The server is going away.
    GoingAway,
}

/// Handles one frame from the server: answers a call, hands a push to the callback.
fn heard<T: serde::de::DeserializeOwned>(
    frame: Frame,
    pending: &mut HashMap<u64, Pending>,
    on_push: Option<&Callback<T>>,
    addr: &str,
) -> Result<Heard, Goodbye> {
    match frame.kind {
        Kind::Reply => {
            if let Some(call) = pending.remove(&frame.id) {
                let _ = call.reply.send(Ok(frame.payload));
            }
        }
        Kind::Error => {
            let body = wire::decode::<ErrorBody>(&frame.payload).unwrap_or_else(|e| {
                ErrorBody::new(codes::BAD_FRAME, format!("undecodable error frame: {e}"))
            });
            if frame.id == 0 {
                return Err(Goodbye::Server(body));
            }
            if let Some(call) = pending.remove(&frame.id) {
                if body.code == codes::SHUTTING_DOWN {
                    return Ok(Heard::Retry(call.again(frame.id)));
                }
                let _ = call.reply.send(Err(RpcError::Remote {
                    code: body.code,
                    message: body.message,
                }));
            }
        }
        Kind::Push => {
            if let Some(on_push) = on_push {
                match wire::decode::<T>(&frame.payload) {
                    Ok(msg) => on_push(msg),
                    Err(e) => tracing::warn!(
                        addr = %addr,
                        "rpc client skipped a push it cannot decode: {e}"
                    ),
                }
            }
        }
        Kind::Keepalive => {}
        Kind::GoingAway => return Ok(Heard::GoingAway),
        Kind::Hello | Kind::Call | Kind::Cast => {
            return Err(Goodbye::Protocol(format!(
                "bad frame: a {} frame from the server",
                frame.kind.name()
            )))
        }
    }
    Ok(Heard::Nothing)
}

// ===== impl Drain =====

/// A connection whose server is going away, after the client's answer: it writes what was
/// queued before the answer, then reads until the server closes, answering the calls sent and
/// handing on pushes. Calls the server answers `shutting down` go back to the task.
struct Drain<P: Protocol> {
    rd: ReadHalf<Io>,
    wr: WriteHalf<Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    pending: HashMap<u64, Pending>,
    on_push: Option<Callback<P::Push>>,
    addr: String,
    retry: mpsc::UnboundedSender<Command>,
    /// The drain gives up when no whole frame came for this long (twice the keepalive
    /// interval, as for a live connection).
    silence: Duration,
}

impl<P: Protocol> Drain<P> {
    /// Handles the whole frames read, and says whether there was one; `Err`: the drain ends,
    /// for this reason.
    fn frames(&mut self) -> Result<bool, String> {
        let mut got = false;
        loop {
            let frame = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(got),
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            got = true;
            match heard(frame, &mut self.pending, self.on_push.as_ref(), &self.addr) {
                Ok(Heard::Retry(command)) => {
                    // The task is gone: so is the caller.
                    if let Err(mpsc::error::SendError(Command::Call { reply, .. })) =
                        self.retry.send(command)
                    {
                        let _ = reply.send(Err(RpcError::Disconnected));
                    }
                }
                Ok(Heard::Nothing | Heard::GoingAway) | Err(Goodbye::Away) => {}
                Err(Goodbye::Server(body)) => {
                    return Err(format!("{}: {}", body.code, body.message))
                }
                Err(Goodbye::Protocol(m)) => return Err(format!("protocol error: {m}")),
            }
        }
    }

    async fn run(mut self) {
        let why = self.drain().await;
        if !self.pending.is_empty() {
            tracing::warn!(
                addr = %self.addr,
                calls = self.pending.len(),
                "rpc client lost calls sent to a server going away: {why}"
            );
        }
        for (_, call) in self.pending.drain() {
            let _ = call.reply.send(Err(RpcError::Disconnected));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
    }

    /// Runs until the server closes; the error says why it ended otherwise.
    async fn drain(&mut self) -> String {
        let deadline = tokio::time::sleep(self.silence);
        tokio::pin!(deadline);
        // Answers may have come in the same read as the `going away`.
        if let Err(why) = self.frames() {
            return why;
        }
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(8 * 1024);
            }
            tokio::select! {
                read = self.rd.read_buf(&mut self.rbuf) => match read {
                    Ok(0) => return "the server closed the connection".into(),
                    Ok(_) => match self.frames() {
                        Ok(true) => deadline.as_mut().reset(Instant::now() + self.silence),
                        Ok(false) => {}
                        Err(why) => return why,
                    },
                    Err(e) => return format!("read failed: {e}"),
                },
                written = write_or_flush(&mut self.wr, &self.wbuf), if !self.wbuf.is_empty() => {
                    match written {
                        Ok(Some(n)) if n > 0 => self.wbuf.advance(n),
                        Ok(_) => return "the connection is closed for writing".into(),
                        Err(e) => return format!("write failed: {e}"),
                    }
                    if self.wbuf.is_empty() {
                        if let Err(e) = self.wr.flush().await {
                            return format!("write failed: {e}");
                        }
                    }
                }
                () = &mut deadline => {
                    return format!("nothing received for {:?}", self.silence)
                }
            }
        }
    }
}

/// Writes some of `wbuf` (`Some(bytes written)`), or flushes when it is empty (`None`): a TLS
/// stream may hold back what it could not write at once until flushed.
async fn write_or_flush<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    wbuf: &[u8],
) -> io::Result<Option<usize>> {
    if wbuf.is_empty() {
        wr.flush().await.map(|()| None)
    } else {
        wr.write(wbuf).await.map(Some)
    }
}

/// Why a connection must end, found while reading frames.
enum Goodbye {
    /// The server broke the protocol.
    Protocol(String),
    /// The server sent an error frame with id 0: it is closing the connection.
    Server(ErrorBody),
    /// The server said `going away`.
    Away,
}

/// `delay` plus up to 10% more, so clients cut off together do not all come back at once.
fn jitter(delay: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    delay + delay.mul_f64((random % 1000) as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let d = Duration::from_millis(100);
        for _ in 0..100 {
            let j = jitter(d);
            assert!(j >= d && j <= d + d / 10, "{j:?}");
        }
    }

    #[test]
    fn refusals_are_typed() {
        let e = refusal(ErrorBody::new(
            codes::WRONG_IDENTIFIER,
            "expected `a`, got `b`",
        ));
        assert!(matches!(e, RpcError::WrongIdentifier(m) if m.contains("expected `a`")));
        let e = refusal(ErrorBody::new(codes::INCOMPATIBLE_VERSION, "2.0.0"));
        assert!(matches!(e, RpcError::IncompatibleVersion(_)));
        let e = refusal(ErrorBody::new(codes::SERVER_ERROR, "no"));
        assert_eq!(e.remote_code(), Some(codes::SERVER_ERROR));
    }
}
