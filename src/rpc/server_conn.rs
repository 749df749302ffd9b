//! The loop of one daemon-side connection: the hello exchange, then frames read, calls and
//! casts run on the instance, answers written, until the client leaves, a timeout or a
//! failure closes the connection, or the daemon stops.
//!
//! The loop reads into one buffer and handles every whole frame in it before it writes: the
//! answers of a batch of pipelined calls go out in one write. Pushes and deferred answers
//! come from other tasks through the connection's channel, already encoded, and join the next
//! write. Timeouts (the hello's, a frame's, the idle one) use the listener's read-timeout
//! sweeper, so a connection carries no timer of its own.

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc::UnboundedReceiver;

use super::guard::{Guarded, Panicked};
use super::protocol::Identity;
use super::service::{error_frame, Backlog, Ctx, Outgoing, Reply, Request, Service};
use super::state::DaemonState;
use super::supervisor::Exit;
use super::wire::{self, codes, ErrorBody, Frame, Hello, Kind, WireError};
use crate::connections::{Signal, Slot};
use crate::error::BoxError;
use crate::shared::Shared;
use crate::socket::Socket;
use crate::telemetry::{Event, EventKind};

/// Above this many bytes waiting to be written, the loop reads no more until the client
/// reads: a client that only writes cannot make the daemon buffer without end.
const HIGH_WATER: usize = 1 << 20;
/// While a callback waits, the loop reads what the client sends (to answer its keepalives)
/// until this many bytes wait in the read buffer.
const READ_WHILE_BUSY: usize = 64 * 1024;
/// A buffer left larger than this by a burst is given back once empty.
const KEEP_BUFFER: usize = 256 * 1024;
/// After a close, how long the daemon reads and discards what the client still sends, so the
/// last frames (an error, say) reach it rather than being lost to a reset.
const LINGER: Duration = Duration::from_millis(500);
/// ... and how many bytes at most.
const LINGER_BYTES: usize = 1 << 20;

/// How the loop ended, and what the connection reports.
pub(super) struct End {
    pub(super) exit: Exit,
    /// The failure take_over returns, for the socket server to report.
    pub(super) error: Option<BoxError>,
    /// Whether the client may still be sending (read and discard it before closing).
    pub(super) linger: bool,
}

impl End {
    fn new(exit: Exit, linger: bool) -> End {
        End {
            exit,
            error: None,
            linger,
        }
    }
}

/// The `error` of an `rpc.failure` event.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// What woke the loop.
enum Wake {
    /// Bytes were read.
    Read,
    /// The client closed its end.
    Eof,
    /// Reading or writing failed.
    Failed,
    /// The daemon is stopping.
    Stop,
    /// The connection's deadline passed.
    Expired,
    /// The supervisor asked the instance to end.
    Terminate,
    /// Stopping, and every deferred call is answered and written.
    Drained,
}

/// One connection's socket, buffers and channel.
pub(super) struct Conn {
    pub(super) socket: Socket,
    pub(super) shared: Arc<Shared>,
    pub(super) slot: Arc<Slot>,
    rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    /// Bytes were written since the last flush (a TLS session may hold some).
    unflushed: bool,
    rx: UnboundedReceiver<Outgoing>,
    /// The pushes waiting for the client, which this connection keeps up to date.
    backlog: Arc<Backlog>,
    /// Deferred calls not answered yet, with when each arrived (when someone listens).
    pending: HashMap<u64, Option<Instant>>,
    /// The call being run (0 for none), when it arrived, and whether its answer already came
    /// from a `Deferred` answered during the call.
    current: u64,
    current_started: Option<Instant>,
    current_answered: bool,
    /// The supervisor asked the instance to end.
    terminate: bool,
    /// A write failed while a callback ran.
    write_failed: bool,
    /// The waker is registered with the slot.
    registered: bool,
    /// No more frames are read: the daemon is stopping (and the client does not speak `going
    /// away`, or did not answer it in time), or the client answered `going away`.
    stopping: bool,
    /// Both hellos named `going away`: a stop is announced with a `going away` frame, and
    /// calls are still taken until the client answers it.
    pub(super) going_away: bool,
    /// When this side sent its `going away` (the client's answer is due within the frame
    /// timeout).
    away_since: Option<Instant>,
    /// When the incomplete frame at the front of `rbuf` began.
    partial_since: Option<Instant>,
    max: usize,
    read_chunk: usize,
}

impl Conn {
    pub(super) fn new(
        socket: Socket,
        rx: UnboundedReceiver<Outgoing>,
        max: usize,
        backlog: Arc<Backlog>,
    ) -> Conn {
        let shared = socket.conn.shared.clone();
        let slot = socket.conn.slot.clone();
        let read_chunk = shared.opts.read_buffer_size.max(1024);
        Conn {
            socket,
            shared,
            slot,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            unflushed: false,
            rx,
            backlog,
            pending: HashMap::new(),
            current: 0,
            current_started: None,
            current_answered: false,
            terminate: false,
            write_failed: false,
            registered: false,
            stopping: false,
            going_away: false,
            away_since: None,
            partial_since: None,
            max,
            read_chunk,
        }
    }

    // ===== the hello =====

    /// Reads the client's hello (within the frame timeout of the connect) and checks it.
    /// `Err(None)`: the client left, or the daemon stopped; `Err(Some(..))`: refused, with
    /// this error.
    pub(super) async fn hello<S: Service>(
        &mut self,
        daemon: &DaemonState<S>,
    ) -> Result<Hello, Option<ErrorBody>> {
        self.arm(daemon.frame_timeout);
        let frame = loop {
            match daemon.hello_decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(WireError::TooLarge { len, max }) => {
                    let why = format!(
                        "frame too large: {len} bytes of payload before the hello is \
                         accepted, the maximum is {max} (max_hello_size)"
                    );
                    return Err(Some(ErrorBody::new(codes::FRAME_TOO_LARGE, why)));
                }
                Err(e) => return Err(Some(ErrorBody::new(e.code(), e.to_string()))),
            }
            match self.wait().await {
                Wake::Read => {}
                Wake::Expired => {
                    let why = format!(
                        "frame timeout: no hello within {:?} of the connect",
                        daemon.frame_timeout
                    );
                    return Err(Some(ErrorBody::new(codes::FRAME_TIMEOUT, why)));
                }
                _ => return Err(None),
            }
        };
        check_hello(&daemon.identity, &frame).map_err(Some)
    }

    // ===== the frame loop =====

    /// Handles frames until the connection ends.
    pub(super) async fn run<S: Service>(
        &mut self,
        daemon: &DaemonState<S>,
        instance: &mut S,
        ctx: &mut Ctx<S>,
    ) -> End {
        let mut idle_armed = false;
        loop {
            let mut got_frame = false;
            loop {
                let frame = match daemon.decoder.decode(&mut self.rbuf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return self.protocol_error(e.code(), e.to_string()),
                };
                got_frame = true;
                if let Some(end) = self.handle(frame, instance, ctx).await {
                    return end;
                }
                if ctx.disconnect {
                    return End::new(Exit::Normal, true);
                }
                if self.terminate {
                    return End::new(Exit::Stopped, true);
                }
                if self.write_failed {
                    return End::new(Exit::Disconnected, false);
                }
            }
            self.shrink();
            if self.rbuf.is_empty() {
                self.partial_since = None;
            } else if got_frame || self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
            if self.stopping {
                // The socket server's shutdown timeout bounds the drain.
                self.arm(Duration::MAX);
            } else if let Some(since) = self.partial_since {
                self.arm(daemon.frame_timeout.saturating_sub(since.elapsed()));
            } else if let Some(since) = self.away_since {
                // The client's answer to our `going away` is due.
                self.arm(daemon.frame_timeout.saturating_sub(since.elapsed()));
            } else if got_frame || !idle_armed {
                self.arm(daemon.idle_timeout);
                idle_armed = true;
            }

            match self.wait().await {
                Wake::Read => {}
                Wake::Eof if self.rbuf.is_empty() => return End::new(Exit::Normal, false),
                Wake::Eof | Wake::Failed => return End::new(Exit::Disconnected, false),
                Wake::Stop => self.notice_stop(),
                Wake::Expired if self.partial_since.is_some() => {
                    let why = format!(
                        "frame timeout: a frame did not complete within {:?}",
                        daemon.frame_timeout
                    );
                    return self.protocol_error(codes::FRAME_TIMEOUT, why);
                }
                // No answer to our `going away`: what was read is answered `shutting down`
                // (not run), and nothing more is read.
                Wake::Expired if self.away_since.is_some() => self.stopping = true,
                Wake::Expired => return End::new(Exit::Disconnected, true),
                Wake::Terminate | Wake::Drained => return End::new(Exit::Stopped, true),
            }
        }
    }

    /// Handles one frame; `Some` when the connection ends.
    async fn handle<S: Service>(
        &mut self,
        frame: Frame,
        instance: &mut S,
        ctx: &mut Ctx<S>,
    ) -> Option<End> {
        match frame.kind {
            Kind::Keepalive => {
                wire::keepalive(&mut self.wbuf);
                None
            }
            Kind::Call if frame.id == 0 => Some(
                self.protocol_error(codes::BAD_FRAME, "bad frame: a call with id 0".to_owned()),
            ),
            Kind::Call => self.call(frame, instance, ctx).await,
            Kind::Cast => self.cast(frame, instance, ctx).await,
            // The client reports its own failure and goes.
            Kind::Error => Some(End::new(Exit::Disconnected, true)),
            // The client sends nothing more: finish what it sent, then close.
            Kind::GoingAway if self.going_away => {
                self.stopping = true;
                None
            }
            Kind::GoingAway => Some(self.protocol_error(
                codes::BAD_FRAME,
                "bad frame: a going away frame, but the hellos did not agree on it".to_owned(),
            )),
            Kind::Hello | Kind::Reply | Kind::Push => Some(self.protocol_error(
                codes::BAD_FRAME,
                format!("bad frame: a {} frame from the client", frame.kind.name()),
            )),
        }
    }

    /// True once no more calls are run: they are then answered `shutting down`. A client
    /// that speaks `going away` is told of a stop instead, and its calls are run until it
    /// answers.
    fn check_stopping(&mut self) -> bool {
        if !self.stopping && self.away_since.is_none() && self.slot.is_stopping() {
            self.notice_stop();
        }
        self.stopping
    }

    /// The daemon is stopping: say `going away` to a client that speaks it, else stop reading.
    fn notice_stop(&mut self) {
        if self.going_away {
            if self.away_since.is_none() {
                wire::going_away(&mut self.wbuf);
                self.away_since = Some(Instant::now());
            }
        } else {
            self.stopping = true;
        }
    }

    async fn call<S: Service>(
        &mut self,
        frame: Frame,
        instance: &mut S,
        ctx: &mut Ctx<S>,
    ) -> Option<End> {
        let id = frame.id;
        let started = self.shared.telemetry.is_active().then(Instant::now);
        if self.check_stopping() {
            let why = "shutting down: the daemon is stopping";
            self.answer_error(id, codes::SHUTTING_DOWN, why, started);
            return None;
        }
        let request = match wire::decode::<Request<S>>(&frame.payload) {
            Ok(request) => request,
            Err(e) => {
                let why = format!("bad request: {e}");
                self.answer_error(id, codes::BAD_REQUEST, &why, started);
                return None;
            }
        };
        drop(frame);

        ctx.begin_call(id);
        self.current = id;
        self.current_started = started;
        self.current_answered = false;
        let result = {
            let call = pin!(Guarded::new(instance.call(request, ctx)));
            self.run_callback(call).await
        };
        let deferred = ctx.end_call();
        if ctx.take_pushed() || deferred {
            // The call's pushes go before its reply; an answer it already gave is its answer.
            self.drain_now();
        }
        self.current = 0;
        let answered = std::mem::take(&mut self.current_answered);
        match result {
            Ok(Ok(Reply::Now(reply))) => {
                // A `Deferred` answered during the call was first: the call has its answer.
                if !answered {
                    self.answer(id, &reply, started);
                }
                None
            }
            Ok(Ok(Reply::Later)) => {
                if answered {
                } else if deferred {
                    self.pending.insert(id, started);
                } else {
                    let why = "no reply: the call returned Later without taking a Deferred";
                    self.answer_error(id, codes::NO_REPLY, why, started);
                }
                None
            }
            // A call already answered (by its `Deferred`) reports the failure on id 0.
            Ok(Err(e)) => {
                let why = e.to_string();
                if !answered {
                    self.report_call(started, Some(codes::SERVER_ERROR));
                }
                let id = if answered { 0 } else { id };
                Some(self.fail(id, codes::SERVER_ERROR, why, e))
            }
            Err(panicked) => {
                if !answered {
                    self.report_call(started, Some(codes::SERVER_PANIC));
                }
                Some(self.panicked(if answered { 0 } else { id }, panicked))
            }
        }
    }

    async fn cast<S: Service>(
        &mut self,
        frame: Frame,
        instance: &mut S,
        ctx: &mut Ctx<S>,
    ) -> Option<End> {
        if self.check_stopping() {
            return None;
        }
        let request = match wire::decode::<Request<S>>(&frame.payload) {
            Ok(request) => request,
            Err(e) => {
                // A cast has no one to answer; the connection goes on.
                tracing::debug!(
                    target: "atoll::rpc",
                    listener = %self.shared.name,
                    connection = self.slot.id,
                    error = %e,
                    "bad cast dropped"
                );
                return None;
            }
        };
        drop(frame);
        let result = {
            let cast = pin!(Guarded::new(instance.cast(request, ctx)));
            self.run_callback(cast).await
        };
        if ctx.take_pushed() {
            self.drain_now();
        }
        match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(self.fail(0, codes::SERVER_ERROR, e.to_string(), e)),
            Err(panicked) => Some(self.panicked(0, panicked)),
        }
    }

    /// Runs a callback. While it waits, pushes and deferred answers are still written, and
    /// the client's keepalives are answered at once, as the wire protocol promises: a call
    /// longer than the client's patience for silence (twice its keepalive interval) does not
    /// cost the connection. A callback that waits is activity: the idle timeout rests
    /// meanwhile (the loop sets it again once the frames at hand are handled).
    async fn run_callback<F: Future>(&mut self, mut callback: Pin<&mut F>) -> F::Output {
        let mut waited = false;
        poll_fn(|cx| {
            if let Poll::Ready(out) = callback.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if !waited {
                waited = true;
                self.arm(Duration::MAX);
            }
            self.answer_keepalives(cx);
            self.pump(cx);
            Poll::Pending
        })
        .await
    }

    /// Reads what the client sends while a callback waits (up to [`READ_WHILE_BUSY`]
    /// buffered) and answers the keepalives at the front of it. Other frames wait for the
    /// callback, as do a read's end or error, which the loop's next read meets again.
    fn answer_keepalives(&mut self, cx: &mut Context<'_>) {
        loop {
            for _ in 0..wire::take_keepalives(&mut self.rbuf, self.max) {
                wire::keepalive(&mut self.wbuf);
            }
            if self.rbuf.len() >= READ_WHILE_BUSY {
                return;
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    // ===== answers and failures =====

    fn answer<T: serde::Serialize>(&mut self, id: u64, reply: &T, started: Option<Instant>) {
        match wire::encode(Kind::Reply, id, reply, self.max, &mut self.wbuf) {
            Ok(()) => self.report_call(started, None),
            Err(e) => {
                let why = format!("reply not sent: {e}");
                self.answer_error(id, codes::SERVER_ERROR, &why, started);
            }
        }
    }

    fn answer_error(&mut self, id: u64, code: &'static str, why: &str, started: Option<Instant>) {
        self.put_error(id, code, why);
        self.report_call(started, Some(code));
    }

    pub(super) fn put_error(&mut self, id: u64, code: &str, why: &str) {
        error_frame(id, code, why, self.max, &mut self.wbuf);
    }

    /// The client broke the protocol: an error frame (id 0), then the connection ends.
    fn protocol_error(&mut self, code: &'static str, why: String) -> End {
        self.put_error(0, code, &why);
        self.report_failure(code, &why);
        End::new(
            Exit::Failed {
                code: code.to_owned(),
                message: why,
            },
            true,
        )
    }

    /// The instance failed while handling call `id` (0: a cast, or `init`).
    pub(super) fn fail(
        &mut self,
        id: u64,
        code: &'static str,
        why: String,
        error: BoxError,
    ) -> End {
        self.put_error(id, code, &why);
        self.report_failure(code, &why);
        End {
            exit: Exit::Failed {
                code: code.to_owned(),
                message: why,
            },
            error: Some(error),
            linger: true,
        }
    }

    pub(super) fn panicked(&mut self, id: u64, panicked: Panicked) -> End {
        // The panic's message stays on this side: the client learns only that it happened.
        self.put_error(
            id,
            codes::SERVER_PANIC,
            "server panic: the service panicked",
        );
        let why = panicked.to_string();
        self.report_failure(codes::SERVER_PANIC, &why);
        End {
            exit: Exit::Failed {
                code: codes::SERVER_PANIC.to_owned(),
                message: why,
            },
            error: Some(Box::new(panicked)),
            linger: true,
        }
    }

    fn report_call(&self, started: Option<Instant>, code: Option<&str>) {
        let (shared, slot) = (&self.shared, &self.slot);
        shared.telemetry.emit(|| {
            let mut e =
                Event::new(EventKind::RpcCall, &shared.name).connection(slot.id, slot.peer());
            if let Some(started) = started {
                e = e.duration(started.elapsed());
            }
            if let Some(code) = code {
                e = e.code(code);
            }
            e
        });
    }

    pub(super) fn report_failure(&self, code: &str, why: &str) {
        let (shared, slot) = (&self.shared, &self.slot);
        if shared.telemetry.is_active() {
            let failure = Failure(why.to_owned());
            shared.telemetry.emit(|| {
                Event::new(EventKind::RpcFailure, &shared.name)
                    .connection(slot.id, slot.peer())
                    .code(code)
                    .error(&failure)
            });
        }
    }

    // ===== the channel =====

    /// Takes one message of the channel.
    fn take(&mut self, msg: Outgoing) {
        match msg {
            Outgoing::Frame(frame) => {
                self.wbuf.extend_from_slice(&frame);
                self.backlog.taken(frame.len());
            }
            Outgoing::Answer { id, frame, code } => {
                let started = if id != 0 && id == self.current && !self.current_answered {
                    self.current_answered = true;
                    self.current_started
                } else if let Some(started) = self.pending.remove(&id) {
                    started
                } else {
                    // Answered already (a call that also returned its reply).
                    return;
                };
                self.wbuf.extend_from_slice(&frame);
                self.report_call(started, code);
            }
            Outgoing::Terminate => self.terminate = true,
        }
    }

    /// Takes what the channel holds now, without waiting.
    fn drain_now(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.take(msg);
        }
        self.backlog.buffered(self.wbuf.len());
    }

    /// Takes what the channel holds and writes what it can; a write error is kept in
    /// `write_failed`.
    fn pump(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(msg)) = self.rx.poll_recv(cx) {
            self.take(msg);
        }
        if !self.write_failed {
            if let Poll::Ready(Err(e)) = self.poll_write(cx) {
                tracing::debug!(target: "atoll::rpc", error = %e, "write failed");
                self.write_failed = true;
            }
        }
        self.backlog.buffered(self.wbuf.len());
    }

    // ===== the socket =====

    /// Reads what the socket has into `rbuf`, making room for a chunk first.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 2 {
            self.rbuf.reserve(self.read_chunk);
        }
        pin!(self.socket.read_buf(&mut self.rbuf)).poll(cx)
    }

    /// Writes all of `wbuf` and flushes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.socket).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for bytes (unless stopping, or too much is waiting to be written), a stop
    /// request, the deadline, or the end of the drain; meanwhile writes what there is to write.
    async fn wait(&mut self) -> Wake {
        poll_fn(|cx| {
            let stop_seen = self.stopping || self.away_since.is_some();
            match self.slot.poll_signal(cx, &mut self.registered, stop_seen) {
                Poll::Ready(Signal::Stop) => return Poll::Ready(Wake::Stop),
                // A later read may have moved the deadline since the sweeper looked.
                Poll::Ready(Signal::Expired) if self.shared.timeouts.is_due(&self.slot) => {
                    return Poll::Ready(Wake::Expired)
                }
                _ => {}
            }
            self.pump(cx);
            if self.write_failed {
                return Poll::Ready(Wake::Failed);
            }
            if self.terminate {
                return Poll::Ready(Wake::Terminate);
            }
            if self.stopping {
                if self.pending.is_empty() && self.wbuf.is_empty() && !self.unflushed {
                    return Poll::Ready(Wake::Drained);
                }
                return Poll::Pending;
            }
            if self.wbuf.len() >= HIGH_WATER {
                return Poll::Pending;
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(0)) => Poll::Ready(Wake::Eof),
                Poll::Ready(Ok(_)) => Poll::Ready(Wake::Read),
                Poll::Ready(Err(e)) => {
                    tracing::debug!(target: "atoll::rpc", error = %e, "read failed");
                    Poll::Ready(Wake::Failed)
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sets the connection's deadline `after` from now (the listener's sweeper watches it).
    fn arm(&self, after: Duration) {
        self.shared.timeouts.arm(&self.slot, after);
    }

    /// Gives back buffers a burst left large.
    fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_BUFFER {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_BUFFER {
            self.wbuf = BytesMut::new();
        }
    }

    /// Writes what is left (within the send timeout), closes the write side, and, when the
    /// client may still be sending, reads and discards for a moment so the last frames are
    /// not lost to a reset.
    pub(super) async fn close(&mut self, linger: bool) {
        let limit = self.shared.opts.send_timeout;
        if !self.write_failed {
            let flushed = tokio::time::timeout(limit, poll_fn(|cx| self.poll_write(cx))).await;
            if !matches!(flushed, Ok(Ok(()))) {
                return;
            }
        }
        if tokio::time::timeout(limit, self.socket.shutdown(Shutdown::Write))
            .await
            .is_err()
            || !linger
        {
            return;
        }
        let discard = async {
            let mut seen = 0;
            while seen < LINGER_BYTES {
                self.rbuf.clear();
                self.rbuf.reserve(self.read_chunk);
                match self.socket.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}

impl Drop for Conn {
    /// Whatever still waits for the client leaves the daemon's push budget with it: the
    /// pushes in the channel (later ones fail, as the channel is closed) and the write buffer.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            if let Outgoing::Frame(frame) = msg {
                self.backlog.taken(frame.len());
            }
        }
        self.backlog.buffered(0);
    }
}

/// Checks that the first frame is a hello this daemon accepts, and returns it.
fn check_hello(identity: &Identity, frame: &Frame) -> Result<Hello, ErrorBody> {
    if frame.kind != Kind::Hello {
        return Err(ErrorBody::new(
            codes::BAD_FRAME,
            format!(
                "bad frame: expected a hello first, got a {} frame",
                frame.kind.name()
            ),
        ));
    }
    let hello: Hello = wire::decode(&frame.payload)
        .map_err(|e| ErrorBody::new(codes::BAD_FRAME, format!("bad frame: hello payload: {e}")))?;
    identity.check(&hello)?;
    Ok(hello)
}
