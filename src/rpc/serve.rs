//! One connection on the daemon side: the hello exchange, the instance's `init`, then the
//! loop that reads frames, runs calls and casts on the instance, and writes the answers, until
//! the client leaves, a timeout or a failure closes the connection, or the daemon stops.
//!
//! The loop reads into one buffer and handles every whole frame in it before it writes: the
//! answers of a batch of pipelined calls go out in one write. Pushes and deferred answers
//! come from other tasks through the connection's channel, already encoded, and join the next
//! write. Timeouts (the hello's, a frame's, the idle one) use the listener's read-timeout
//! sweeper, so a connection carries no timer of its own.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::options::RpcOptions;
use super::protocol::{Identity, Protocol};
use super::service::{
    error_frame, Backlog, Ctx, Outgoing, Peers, PushOf, Pusher, Reply, Request, Service,
};
use super::supervisor::{Exit, InstanceInfo, Supervisor};
use super::wire::{self, codes, Decoder, ErrorBody, Frame, Hello, Kind};
use crate::connections::{Signal, Slot};
use crate::error::BoxError;
use crate::shared::Shared;
use crate::socket::Socket;
use crate::telemetry::{Event, EventKind};

/// Above this many bytes waiting to be written, the loop reads no more until the client
/// reads: a client that only writes cannot make the daemon buffer without end.
const HIGH_WATER: usize = 1 << 20;
/// A buffer left larger than this by a burst is given back once empty.
const KEEP_BUFFER: usize = 256 * 1024;
/// After a close, how long the daemon reads and discards what the client still sends, so the
/// last frames (an error, say) reach it rather than being lost to a reset.
const LINGER: Duration = Duration::from_millis(500);
/// ... and how many bytes at most.
const LINGER_BYTES: usize = 1 << 20;

/// What every connection of one daemon shares.
pub(crate) struct DaemonState<S: Service> {
    /// The data every instance is seeded with.
    pub(crate) init: Arc<S::Init>,
    /// The identifier and version clients must name, and the versions accepted.
    pub(crate) identity: Identity,
    /// The daemon's own hello frame, encoded once.
    pub(crate) hello: Bytes,
    pub(crate) decoder: Decoder,
    pub(crate) frame_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// The table of live instances, maybe shared with other daemons.
    pub(crate) supervisor: Supervisor,
    /// This daemon's name for its instances in the supervisor.
    pub(crate) token: u64,
    /// This daemon's live instances, for broadcasts.
    pub(crate) peers: Arc<Peers<PushOf<S>>>,
    /// The most bytes of pushes that may wait for one client.
    pub(crate) max_push_backlog: usize,
}

impl<S: Service> DaemonState<S> {
    /// The state of a daemon with these options; the error names the option at fault.
    pub(crate) fn new(
        init: S::Init,
        rpc: &RpcOptions,
        supervisor: Supervisor,
    ) -> Result<DaemonState<S>, String> {
        let identity = Identity::new(
            rpc.identifier.as_deref(),
            rpc.version.as_deref(),
            rpc.accept.as_deref(),
            (S::Protocol::IDENTIFIER, S::Protocol::VERSION),
        )?;
        let mut hello = BytesMut::new();
        wire::encode(
            Kind::Hello,
            0,
            &identity.hello(),
            rpc.max_frame_size,
            &mut hello,
        )
        .map_err(|e| format!("the daemon's own hello: {e}"))?;
        Ok(DaemonState {
            init: Arc::new(init),
            identity,
            hello: hello.freeze(),
            decoder: Decoder::new(rpc.max_frame_size),
            frame_timeout: rpc.frame_timeout,
            idle_timeout: rpc.idle_timeout,
            supervisor,
            token: Supervisor::daemon_token(),
            peers: Arc::new(Peers::default()),
            max_push_backlog: rpc.max_push_backlog,
        })
    }

    fn max_frame_size(&self) -> usize {
        self.decoder.max_frame_size()
    }
}

/// Serves one connection to its end. Returns an error when the instance failed (an error or
/// a panic), so the socket server reports it too; a client's fault is no error of the server.
pub(crate) async fn serve<S: Service>(
    daemon: Arc<DaemonState<S>>,
    socket: Socket,
) -> Result<(), BoxError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Backlog::new(daemon.max_push_backlog);
    let mut conn = Conn::new(socket, rx, daemon.max_frame_size(), backlog.clone());

    if let Err(refusal) = conn.hello(&daemon).await {
        if let Some(body) = refusal {
            conn.put_error(0, &body.code, &body.message);
            conn.report_failure(&body.code, &body.message);
        }
        conn.close(true).await;
        return Ok(());
    }

    let certs = conn.socket.peer_certificates().map(<[_]>::to_vec);
    let pusher = Pusher::new(tx.clone(), daemon.max_frame_size(), backlog);
    let mut ctx = Ctx::<S>::new(
        conn.shared.clone(),
        conn.slot.clone(),
        certs,
        pusher.clone(),
        daemon.peers.clone(),
    );
    let mut instance = match Guarded::new(S::init(&daemon.init, &mut ctx)).await {
        Ok(Ok(instance)) => instance,
        Ok(Err(e)) => {
            let end = conn.fail(0, codes::SERVER_ERROR, e.to_string(), e);
            conn.close(true).await;
            return end.error.map_or(Ok(()), Err);
        }
        Err(panicked) => {
            let end = conn.panicked(0, panicked);
            conn.close(true).await;
            return end.error.map_or(Ok(()), Err);
        }
    };
    conn.wbuf.extend_from_slice(&daemon.hello);

    let id = conn.slot.id;
    let info = InstanceInfo {
        listener: conn.shared.name.clone(),
        id,
        peer: conn.slot.peer.clone(),
        started: SystemTime::now(),
    };
    let mut enrolled = Enrolment::new(daemon.clone(), id, pusher, info, tx);

    let end = conn.run(&daemon, &mut instance, &mut ctx).await;

    daemon.peers.remove(id);
    if let Err(panicked) = Guarded::new(instance.terminate(&mut ctx)).await {
        tracing::warn!(
            target: "atoll::rpc",
            listener = %conn.shared.name,
            connection = id,
            panic = %panicked,
            "the service panicked in terminate"
        );
    }
    conn.close(end.linger).await;
    enrolled.exit = end.exit;
    drop(enrolled);
    end.error.map_or(Ok(()), Err)
}

/// An instance's entries in its daemon's tables, removed when it ends, even when the stop's
/// shutdown timeout aborts the connection's task (the exit is then [`Exit::Stopped`]).
struct Enrolment<S: Service> {
    daemon: Arc<DaemonState<S>>,
    id: u64,
    key: u64,
    exit: Exit,
}

impl<S: Service> Enrolment<S> {
    fn new(
        daemon: Arc<DaemonState<S>>,
        id: u64,
        pusher: Pusher<PushOf<S>>,
        info: InstanceInfo,
        control: mpsc::UnboundedSender<Outgoing>,
    ) -> Enrolment<S> {
        daemon.peers.insert(id, pusher);
        let key = daemon.supervisor.enter(daemon.token, info, control);
        Enrolment {
            daemon,
            id,
            key,
            exit: Exit::Stopped,
        }
    }
}

impl<S: Service> Drop for Enrolment<S> {
    fn drop(&mut self) {
        self.daemon.peers.remove(self.id);
        self.daemon.supervisor.leave(self.key, &self.exit);
    }
}

// ===== End =====

/// How the loop ended, and what the connection reports.
struct End {
    exit: Exit,
    /// The failure take_over returns, for the socket server to report.
    error: Option<BoxError>,
    /// Whether the client may still be sending (read and discard it before closing).
    linger: bool,
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

/// A panic caught in a service callback.
#[derive(Debug)]
pub(crate) struct Panicked(String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the service panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl Panicked {
    fn from_payload(payload: Box<dyn Any + Send>) -> Panicked {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_owned()
        };
        Panicked(message)
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

pin_project_lite::pin_project! {
    /// A service callback's future, with a panic in it caught and returned: one bad call fails
    /// its own connection, and the loop still answers it and cleans up.
    pub(crate) struct Guarded<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Guarded<F> {
    pub(crate) fn new(inner: F) -> Guarded<F> {
        Guarded { inner }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // A future that panicked is never polled again: its result is the panic.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload))),
        }
    }
}

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

// ===== Conn =====

/// One connection's socket, buffers and channel.
struct Conn {
    socket: Socket,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    rbuf: BytesMut,
    wbuf: BytesMut,
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
    /// The daemon is stopping: no more frames are read.
    stopping: bool,
    /// When the incomplete frame at the front of `rbuf` began.
    partial_since: Option<Instant>,
    max: usize,
    read_chunk: usize,
}

impl Conn {
    fn new(
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
            partial_since: None,
            max,
            read_chunk,
        }
    }

    // ===== the hello =====

    /// Reads the client's hello (within the frame timeout of the connect) and checks it.
    /// `Err(None)`: the client left, or the daemon stopped; `Err(Some(..))`: refused, with
    /// this error.
    async fn hello<S: Service>(
        &mut self,
        daemon: &DaemonState<S>,
    ) -> Result<(), Option<ErrorBody>> {
        self.arm(daemon.frame_timeout);
        let frame = loop {
            match daemon.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
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
    async fn run<S: Service>(
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
            } else if got_frame || !idle_armed {
                self.arm(daemon.idle_timeout);
                idle_armed = true;
            }

            match self.wait().await {
                Wake::Read => {}
                Wake::Eof if self.rbuf.is_empty() => return End::new(Exit::Normal, false),
                Wake::Eof | Wake::Failed => return End::new(Exit::Disconnected, false),
                Wake::Stop => self.stopping = true,
                Wake::Expired if self.partial_since.is_some() => {
                    let why = format!(
                        "frame timeout: a frame did not complete within {:?}",
                        daemon.frame_timeout
                    );
                    return self.protocol_error(codes::FRAME_TIMEOUT, why);
                }
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
            Kind::Hello | Kind::Reply | Kind::Push => Some(self.protocol_error(
                codes::BAD_FRAME,
                format!("bad frame: a {} frame from the client", frame.kind.name()),
            )),
        }
    }

    /// True once the daemon is stopping: calls are then answered `shutting down`.
    fn check_stopping(&mut self) -> bool {
        if !self.stopping && self.slot.is_stopping() {
            self.stopping = true;
        }
        self.stopping
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

    /// Runs a callback. While it waits, pushes and deferred answers are still written.
    async fn run_callback<F: Future>(&mut self, mut callback: Pin<&mut F>) -> F::Output {
        poll_fn(|cx| {
            if let Poll::Ready(out) = callback.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            self.pump(cx);
            Poll::Pending
        })
        .await
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

    fn put_error(&mut self, id: u64, code: &str, why: &str) {
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
    fn fail(&mut self, id: u64, code: &'static str, why: String, error: BoxError) -> End {
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

    fn panicked(&mut self, id: u64, panicked: Panicked) -> End {
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
                Event::new(EventKind::RpcCall, &shared.name).connection(slot.id, &slot.peer);
            if let Some(started) = started {
                e = e.duration(started.elapsed());
            }
            if let Some(code) = code {
                e = e.code(code);
            }
            e
        });
    }

    fn report_failure(&self, code: &str, why: &str) {
        let (shared, slot) = (&self.shared, &self.slot);
        if shared.telemetry.is_active() {
            let failure = Failure(why.to_owned());
            shared.telemetry.emit(|| {
                Event::new(EventKind::RpcFailure, &shared.name)
                    .connection(slot.id, &slot.peer)
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
            match self
                .slot
                .poll_signal(cx, &mut self.registered, self.stopping)
            {
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
            if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk / 2 {
                self.rbuf.reserve(self.read_chunk);
            }
            match pin!(self.socket.read_buf(&mut self.rbuf)).poll(cx) {
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
    async fn close(&mut self, linger: bool) {
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

/// Checks that the first frame is a hello this daemon accepts.
fn check_hello(identity: &Identity, frame: &Frame) -> Result<(), ErrorBody> {
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
    identity.check(&hello)
}

#[cfg(test)]
mod tests {
    //! The loop over a Unix socket pair: no listener, no network.

    use super::*;
    use crate::addr::Addr;
    use crate::options::ServerOptions;
    use crate::socket::{Conn as SocketConn, Stream};
    use crate::telemetry::Telemetry;
    use serde::{Deserialize, Serialize};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    const WAIT: Duration = Duration::from_secs(10);

    struct Test;

    impl Protocol for Test {
        const IDENTIFIER: &'static str = "test.serve";
        const VERSION: &'static str = "1.0.0";
        type Request = Req;
        type Reply = String;
        type Push = String;
    }

    #[derive(Debug, Serialize, Deserialize)]
    enum Req {
        Echo(String),
        /// Pushes the text, then replies with it.
        PushFirst(String),
        /// Defers and answers before returning `Later`.
        AnswerEarly(String),
        /// Defers, answers, and still returns `Now` (only the first answer counts).
        AnswerTwice,
        /// Returns `Later` without a `Deferred`.
        Forget,
        /// Takes a `Deferred` and drops it.
        Drop,
        Fail,
        Panic,
        Disconnect,
    }

    struct Instance;

    impl Service for Instance {
        type Protocol = Test;
        type Init = ();

        async fn init(_: &Arc<()>, _: &mut Ctx<Self>) -> Result<Self, BoxError> {
            Ok(Instance)
        }

        async fn call(&mut self, req: Req, ctx: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
            Ok(match req {
                Req::Echo(s) => s.into(),
                Req::PushFirst(s) => {
                    ctx.push(&s)?;
                    s.into()
                }
                Req::AnswerEarly(s) => {
                    ctx.defer().reply(s)?;
                    // Let the loop see the answer while the call is still running.
                    tokio::task::yield_now().await;
                    Reply::Later
                }
                Req::AnswerTwice => {
                    ctx.defer().reply("deferred".into())?;
                    "now".to_owned().into()
                }
                Req::Forget => Reply::Later,
                Req::Drop => {
                    drop(ctx.defer());
                    Reply::Later
                }
                Req::Fail => return Err("it failed".into()),
                Req::Panic => panic!("on purpose"),
                Req::Disconnect => {
                    ctx.disconnect();
                    "bye".to_owned().into()
                }
            })
        }

        async fn cast(&mut self, req: Req, _: &mut Ctx<Self>) -> Result<(), BoxError> {
            match req {
                Req::Fail => Err("the cast failed".into()),
                _ => Ok(()),
            }
        }
    }

    struct Client {
        stream: UnixStream,
        buf: BytesMut,
    }

    impl Client {
        async fn send<T: Serialize>(&mut self, kind: Kind, id: u64, value: &T) {
            let mut out = BytesMut::new();
            wire::encode(kind, id, value, usize::MAX, &mut out).unwrap();
            self.stream.write_all(&out).await.unwrap();
        }

        /// The next frame, or `None` at the end of the stream.
        async fn next(&mut self) -> Option<Frame> {
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(f) = Decoder::default().decode(&mut self.buf).unwrap() {
                        return Some(f);
                    }
                    if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                        return None;
                    }
                }
            })
            .await
            .expect("a frame or the end within the wait")
        }

        async fn frame(&mut self) -> Frame {
            self.next().await.expect("a frame")
        }

        async fn reply(&mut self, id: u64) -> String {
            let f = self.frame().await;
            assert_eq!((f.kind, f.id), (Kind::Reply, id), "{f:?}");
            wire::decode(&f.payload).unwrap()
        }

        async fn error(&mut self, id: u64) -> ErrorBody {
            let f = self.frame().await;
            assert_eq!((f.kind, f.id), (Kind::Error, id), "{f:?}");
            wire::decode(&f.payload).unwrap()
        }
    }

    /// A socket as the socket server would hand it over, and the client's end.
    fn socket_pair() -> (Socket, UnixStream) {
        let shared = Arc::new(Shared::new(
            "unit".into(),
            ServerOptions::default(),
            Arc::new(Telemetry::default()),
            None,
        ));
        let (server, client) = UnixStream::pair().unwrap();
        let slot = Arc::new(Slot::new(shared.next_connection_id(), Addr::Unix(None)));
        let permit = shared.limiter.clone().try_acquire_owned().unwrap();
        let socket = Socket::new(Stream::Unix(server), SocketConn::new(shared, slot, permit));
        (socket, client)
    }

    /// A connection served by `serve` over a socket pair, with the hello done.
    async fn connect() -> (Client, tokio::task::JoinHandle<Result<(), BoxError>>) {
        let (socket, client) = socket_pair();
        let daemon = Arc::new(
            DaemonState::<Instance>::new((), &RpcOptions::default(), Supervisor::new()).unwrap(),
        );
        let task = tokio::spawn(serve(daemon, socket));
        let mut client = Client {
            stream: client,
            buf: BytesMut::new(),
        };
        let hello = Hello {
            identifier: "test.serve".into(),
            version: "1.3.0".into(),
        };
        client.send(Kind::Hello, 0, &hello).await;
        let f = client.frame().await;
        assert_eq!(f.kind, Kind::Hello);
        let theirs: Hello = wire::decode(&f.payload).unwrap();
        assert_eq!(theirs.version, "1.0.0");
        (client, task)
    }

    #[tokio::test]
    async fn calls_are_answered_in_order_and_keepalives_echoed() {
        let (mut c, task) = connect().await;
        let mut batch = BytesMut::new();
        for id in 1..=50u64 {
            wire::encode(
                Kind::Call,
                id,
                &Req::Echo(id.to_string()),
                1 << 20,
                &mut batch,
            )
            .unwrap();
        }
        wire::keepalive(&mut batch);
        c.stream.write_all(&batch).await.unwrap();
        for id in 1..=50u64 {
            assert_eq!(c.reply(id).await, id.to_string());
        }
        assert_eq!(c.frame().await.kind, Kind::Keepalive);
        drop(c);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_push_made_during_a_call_goes_before_its_reply() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 7, &Req::PushFirst("news".into())).await;
        let push = c.frame().await;
        assert_eq!((push.kind, push.id), (Kind::Push, 0));
        assert_eq!(wire::decode::<String>(&push.payload).unwrap(), "news");
        assert_eq!(c.reply(7).await, "news");
    }

    #[tokio::test]
    async fn every_call_gets_exactly_one_answer() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 1, &Req::AnswerEarly("early".into()))
            .await;
        c.send(Kind::Call, 2, &Req::AnswerTwice).await;
        c.send(Kind::Call, 3, &Req::Forget).await;
        c.send(Kind::Call, 4, &Req::Drop).await;
        c.send(Kind::Call, 5, &Req::Echo("last".into())).await;
        assert_eq!(c.reply(1).await, "early");
        assert_eq!(c.reply(2).await, "deferred");
        assert_eq!(c.error(3).await.code, codes::NO_REPLY);
        assert_eq!(c.error(4).await.code, codes::NO_REPLY);
        assert_eq!(c.reply(5).await, "last");
    }

    #[tokio::test]
    async fn a_bad_request_is_answered_and_the_connection_goes_on() {
        let (mut c, _task) = connect().await;
        c.send(Kind::Call, 9, &42u32).await;
        let err = c.error(9).await;
        assert_eq!(err.code, codes::BAD_REQUEST);
        assert!(err.message.starts_with("bad request"), "{}", err.message);
        c.send(Kind::Cast, 0, &"not a request").await;
        c.send(Kind::Call, 10, &Req::Echo("still here".into()))
            .await;
        assert_eq!(c.reply(10).await, "still here");
    }

    #[tokio::test]
    async fn a_failing_call_is_answered_then_the_connection_ends_with_an_error() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 3, &Req::Fail).await;
        let err = c.error(3).await;
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            (codes::SERVER_ERROR, "it failed")
        );
        assert!(c.next().await.is_none());
        drop(c);
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.to_string(), "it failed");
    }

    #[tokio::test]
    async fn a_panicking_call_is_answered_server_panic() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 4, &Req::Panic).await;
        let err = c.error(4).await;
        assert_eq!(err.code, codes::SERVER_PANIC);
        assert!(
            !err.message.contains("on purpose"),
            "the panic stays on the server"
        );
        assert!(c.next().await.is_none());
        drop(c);
        let e = task.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("on purpose"), "{e}");
    }

    #[tokio::test]
    async fn a_failing_cast_ends_the_connection() {
        let (mut c, task) = connect().await;
        c.send(Kind::Cast, 0, &Req::Fail).await;
        assert_eq!(c.error(0).await.code, codes::SERVER_ERROR);
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn disconnect_sends_the_reply_then_closes() {
        let (mut c, task) = connect().await;
        c.send(Kind::Call, 1, &Req::Disconnect).await;
        assert_eq!(c.reply(1).await, "bye");
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn out_of_turn_frames_are_bad_frames() {
        for (kind, id) in [
            (Kind::Hello, 0),
            (Kind::Reply, 1),
            (Kind::Push, 0),
            (Kind::Call, 0),
        ] {
            let (mut c, task) = connect().await;
            c.send(kind, id, &"x").await;
            assert_eq!(c.error(0).await.code, codes::BAD_FRAME, "{kind:?}");
            assert!(c.next().await.is_none());
            drop(c);
            assert!(
                task.await.unwrap().is_ok(),
                "a client's fault is no server error"
            );
        }
    }

    struct Refuser;

    impl Service for Refuser {
        type Protocol = Test;
        type Init = ();

        async fn init(_: &Arc<()>, ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
            Err(format!("no entry for connection {}", ctx.id()).into())
        }

        async fn call(&mut self, _: Req, _: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
            Ok(Reply::Later)
        }
    }

    #[tokio::test]
    async fn an_init_error_refuses_the_connection() {
        let (socket, client) = socket_pair();
        let daemon = Arc::new(
            DaemonState::<Refuser>::new((), &RpcOptions::default(), Supervisor::new()).unwrap(),
        );
        let supervisor = daemon.supervisor.clone();
        let task = tokio::spawn(serve(daemon, socket));
        let mut c = Client {
            stream: client,
            buf: BytesMut::new(),
        };
        let hello = Hello {
            identifier: "test.serve".into(),
            version: "1.0.0".into(),
        };
        c.send(Kind::Hello, 0, &hello).await;
        let err = c.error(0).await;
        assert_eq!(err.code, codes::SERVER_ERROR);
        assert!(
            err.message.starts_with("no entry for connection"),
            "{}",
            err.message
        );
        assert!(c.next().await.is_none());
        drop(c);
        assert!(task.await.unwrap().is_err());
        assert_eq!(supervisor.count(), 0);
    }

    #[test]
    fn guarded_turns_a_panic_into_its_message() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut ok = pin!(Guarded::new(async { 5 }));
        assert!(matches!(ok.as_mut().poll(&mut cx), Poll::Ready(Ok(5))));
        let mut bad = pin!(Guarded::new(async {
            let n: u32 = "x".parse().unwrap_or(0);
            if n == 0 {
                panic!("boom {n}");
            }
        }));
        match bad.as_mut().poll(&mut cx) {
            Poll::Ready(Err(p)) => assert_eq!(p.to_string(), "the service panicked: boom 0"),
            other => panic!("{other:?}"),
        }
    }
}
