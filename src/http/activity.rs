//! What one HTTP connection is doing, for its timeouts: requests in flight, when a request head
//! began to arrive, when the last answer went out. Written by the service and the socket
//! wrapper, read by the connection's timer.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::options::HttpOptions;
use super::websocket::session::Session;
use super::zero_copy::ZeroCopy;
use crate::socket::Socket;
use crate::telemetry::failure_log::FailureLogs;

/// `head_since` when a head began but no time is noted yet.
const UNSTAMPED: u64 = u64::MAX;

/// One connection's activity. Times are milliseconds since `base`.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The listener's log budgets, for the faults of the answers (see
    /// [`Fault`](super::fault::Fault)); `None` in tests of the timer alone.
    failure_logs: Option<Arc<FailureLogs>>,
    base: Instant,
    /// Requests handed to the service so far. Only the connection's task writes it (hyper
    /// calls the service there, for HTTP/2 too), so a load and a store do.
    started: AtomicU64,
    /// Requests answered so far (or given up): answers end on other tasks under HTTP/2.
    /// `started - finished` are in flight. The timer also notes when this changes, so
    /// answering a request reads no clock.
    finished: AtomicU64,
    /// 1 + when the first byte of a request head not yet handed to the service arrived;
    /// 0 when no head is pending; [`UNSTAMPED`] when bytes arrived and the connection's
    /// timer has not yet looked. The reader reads no clock: most heads arrive whole and reach
    /// the service in the same poll, so the timer only stamps the few that do not.
    head_since: AtomicU64,
    /// Writes so far, so a long response body counts as activity.
    writes: AtomicU64,
    /// The listener stopped and this connection's turn to close has come: HTTP/1 answers say
    /// `connection: close`.
    closing: AtomicBool,
    /// Response bodies that stream (a file, a mounted service's body) still being sent. Only
    /// such bodies count: a body in memory goes out in the poll that answers.
    streams: AtomicUsize,
    /// A request body was not seen to its end (a mounted service got it, or it was refused):
    /// hyper may still be reading it, so the connection cannot be handed over.
    body_open: AtomicBool,
    /// The socket's last write would have blocked: hyper still holds bytes to send.
    write_blocked: AtomicBool,
    /// Bytes read with no request in the service since the last one reached it: the
    /// pending request head's, at most (only the connection's task reads and writes it).
    head_bytes: AtomicUsize,
    /// The file regions its socket sends with `sendfile`, on a connection that can
    /// ([`zero_copy`](super::zero_copy)); `None` elsewhere.
    zero_copy: Option<Arc<ZeroCopy>>,
    /// A WebSocket route's session, from its 101 answer until the connection's task runs it
    /// once hyper has let go of the socket.
    upgrade: Mutex<Option<Box<dyn Session>>>,
}

/// What the timer found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Check again at this instant.
    Wait(Instant),
    /// No request for `idle_timeout`: close gracefully.
    Idle,
    /// A request head took longer than `header_read_timeout`: close now.
    HeadTimeout,
    /// The client has not taken any of what the connection has to send for the socket
    /// server's `send_timeout`: close now.
    SendTimeout,
}

/// The timer's own memory between checks.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    seen_writes: u64,
    seen_done: u64,
    quiet_since: u64,
}

impl Activity {
    /// A connection that just opened: the wait for its first request head starts now.
    pub(crate) fn new() -> Activity {
        Activity {
            failure_logs: None,
            base: Instant::now(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            writes: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            body_open: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            head_bytes: AtomicUsize::new(0),
            zero_copy: None,
            upgrade: Mutex::new(None),
        }
    }

    /// Lets this connection's file bodies go out with `sendfile`: only for connections whose
    /// writes all reach [`Watched`]'s vectored write (plain TCP, HTTP/1, vectored writes).
    pub(crate) fn with_zero_copy(mut self) -> Activity {
        self.zero_copy = Some(Arc::default());
        self
    }

    /// Where this connection's file bodies note their regions, if they may.
    pub(crate) fn zero_copy(&self) -> Option<&Arc<ZeroCopy>> {
        self.zero_copy.as_ref()
    }

    /// A kept-alive connection handed over by the process before this one: it waits for its
    /// next request under the idle timeout, as it did there, not the header read timeout.
    pub(crate) fn adopted() -> Activity {
        let activity = Activity::new();
        activity.head_since.store(0, Relaxed);
        activity
    }

    /// Logs the faults of this connection's answers in `logs`, its listener's.
    pub(crate) fn with_failure_logs(mut self, logs: Arc<FailureLogs>) -> Activity {
        self.failure_logs = Some(logs);
        self
    }

    /// Where the faults of this connection's answers are logged.
    pub(crate) fn failure_logs(&self) -> Option<&Arc<FailureLogs>> {
        self.failure_logs.as_ref()
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// A request reached the service: its head is complete.
    pub(crate) fn begin(&self) {
        self.started
            .store(self.started.load(Relaxed).wrapping_add(1), Relaxed);
        self.head_since.store(0, Relaxed);
        self.head_bytes.store(0, Relaxed);
    }

    /// Whether a request is in the service now.
    pub(crate) fn busy(&self) -> bool {
        self.started.load(Relaxed) != self.finished.load(Relaxed)
    }

    /// From now on, answers close the connection.
    pub(crate) fn close(&self) {
        self.closing.store(true, Relaxed);
    }

    /// Whether answers close the connection.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// A request was answered.
    pub(crate) fn end(&self) {
        self.finished.fetch_add(1, Relaxed);
    }

    /// The answer switched protocols (101): from now on the socket carries another protocol
    /// (a route's WebSocket `session`, or a mounted service's), so it counts as one request
    /// that never ends: its bytes are no request head, and no HTTP timeout applies.
    #[cold]
    pub(crate) fn switched(&self, session: Option<Box<dyn Session>>) {
        self.begin();
        *self.upgrade.lock().unwrap_or_else(|p| p.into_inner()) = session;
    }

    /// The session of a route's 101, to run on the socket hyper let go of.
    pub(crate) fn take_session(&self) -> Option<Box<dyn Session>> {
        self.upgrade
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// A request came with a body that is not yet read to its end.
    pub(crate) fn body_opened(&self) {
        self.body_open.store(true, Relaxed);
    }

    /// The request body was read to its end.
    pub(crate) fn body_read(&self) {
        self.body_open.store(false, Relaxed);
    }

    /// Whether the connection is between requests with nothing left to send or to read
    /// for the last one: no request in the service, no streaming body, no request body
    /// unread, no bytes waiting for the socket. Only there can it change hands.
    pub(crate) fn at_rest(&self) -> bool {
        !self.busy()
            && self.streams.load(Relaxed) == 0
            && !self.body_open.load(Relaxed)
            && !self.write_blocked.load(Relaxed)
    }

    /// When the pending request head must be complete, if one is pending. A head that began
    /// since the last look is stamped now.
    pub(crate) fn head_deadline(&self, opts: &HttpOptions) -> Option<Instant> {
        let since = match self.head_since.load(Relaxed) {
            0 => return None,
            UNSTAMPED => self.stamp(),
            since => since,
        };
        Some(self.at(since - 1) + opts.header_read_timeout)
    }

    /// Notes now as the start of the pending head, unless the service took it meanwhile.
    fn stamp(&self) -> u64 {
        let now = self.now() + 1;
        match self
            .head_since
            .compare_exchange(UNSTAMPED, now, Relaxed, Relaxed)
        {
            Ok(_) => now,
            // Taken by the service (0), or stamped by another look.
            Err(seen) => seen,
        }
    }

    /// `n` bytes arrived. Between requests, they start the header read timeout and count
    /// toward the pending head.
    fn read(&self, n: usize) {
        if !self.busy() {
            self.head_bytes
                .store(self.head_bytes.load(Relaxed) + n, Relaxed);
            if self.head_since.load(Relaxed) == 0 {
                self.head_since.store(UNSTAMPED, Relaxed);
            }
        }
    }

    /// A write went out. Only the socket wrapper writes this counter, so a load and a store
    /// do (no read-modify-write).
    fn wrote(&self) {
        self.writes
            .store(self.writes.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Decides, when the timer fires, whether the connection has timed out. `send_timeout`
    /// is how long a write may find the socket full with no write going through.
    pub(crate) fn check(
        &self,
        opts: &HttpOptions,
        send_timeout: Duration,
        watch: &mut Watch,
    ) -> Verdict {
        let now = self.now();
        let header_ms = opts.header_read_timeout.as_millis() as u64;
        let idle_ms = opts.idle_timeout.as_millis() as u64;
        let head = match self.head_since.load(Relaxed) {
            UNSTAMPED => self.stamp(),
            head => head,
        };
        let mut next = now + idle_ms.min(header_ms);
        if head != 0 {
            let due = head - 1 + header_ms;
            if now >= due {
                return Verdict::HeadTimeout;
            }
            next = next.min(due);
        }
        // Answers and writes since the last check count as activity at this check: the idle
        // timeout runs from then, so it may end up to one check interval late.
        let (writes, done) = (self.writes.load(Relaxed), self.finished.load(Relaxed));
        if writes != watch.seen_writes || done != watch.seen_done {
            (watch.seen_writes, watch.seen_done) = (writes, done);
            watch.quiet_since = now;
        }
        // A client that stopped reading: nothing went out since the write that found the
        // socket full. Seen at a check, so it may come up to one check interval late.
        if self.write_blocked.load(Relaxed) {
            let due = watch.quiet_since + send_timeout.as_millis() as u64;
            if now >= due {
                return Verdict::SendTimeout;
            }
            next = next.min(due);
        }
        if !self.busy() {
            let due = watch.quiet_since + idle_ms;
            if now >= due && head == 0 {
                return Verdict::Idle;
            }
            next = next.min(due.max(now + 1));
        }
        Verdict::Wait(self.at(next))
    }
}

/// A response body that streams, counted in its connection's [`Activity`] until dropped
/// (hyper drops a body once it has sent it, or given up).
#[derive(Debug)]
pub(crate) struct Streaming(Arc<Activity>);

impl Streaming {
    pub(crate) fn new(activity: &Arc<Activity>) -> Streaming {
        activity.streams.fetch_add(1, Relaxed);
        Streaming(activity.clone())
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Relaxed);
    }
}

/// The connection's socket, noting reads and writes in its [`Activity`], and holding what an
/// HTTP/1 request head may take to its limit.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    pub(crate) inner: S,
    pub(crate) activity: Arc<Activity>,
    /// Bytes read from this connection before it reached this process (a handed-over
    /// connection's unparsed request bytes), read before the socket's.
    pub(crate) prefix: Bytes,
    /// The most bytes read for one request head (`usize::MAX`: no limit). hyper refuses a
    /// head that fills its buffer unfinished, but checks only after a read, and one read may
    /// take more than the limit: reads are cut here so that a head never has more to parse.
    /// (Bytes of a pipelined head that came in the read of the head before it are not
    /// counted: such a head may pass the limit by less than one read.)
    head_limit: usize,
}

impl<S> Watched<S> {
    /// `head_limit`: see the field; hyper's `max_buf_size` for HTTP/1.
    pub(crate) fn new(inner: S, activity: Arc<Activity>, head_limit: usize) -> Watched<S> {
        Watched {
            inner,
            activity,
            prefix: Bytes::new(),
            head_limit,
        }
    }

    /// Serves the prefix (or as much as fits). Out of line: only a handed-over connection's
    /// first read comes here.
    #[cold]
    #[inline(never)]
    fn read_prefix(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // The buffer it was cut from goes with it.
            self.prefix = Bytes::new();
        }
        self.activity.read(n);
    }

    /// Notes how a write went: whether the socket left bytes with hyper.
    #[inline]
    fn noted<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &polled {
            Poll::Ready(Ok(_)) => {
                self.activity.wrote();
                if self.activity.write_blocked.load(Relaxed) {
                    self.activity.write_blocked.store(false, Relaxed);
                }
            }
            Poll::Pending => self.activity.write_blocked.store(true, Relaxed),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() && buf.remaining() > 0 {
            this.read_prefix(buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        // While a request is in the service, `head_bytes` stays 0: its body's reads are cut
        // at the limit too, which is hyper's own buffer limit anyway.
        let room = this
            .head_limit
            .saturating_sub(this.activity.head_bytes.load(Relaxed));
        let polled = if buf.remaining() <= room {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        } else if room == 0 {
            // hyper answers 431 before it reads again when its buffer holds a whole limit of
            // head; bytes it took as the body of an answered request leave it less.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head over max_header_size",
            )));
        } else {
            crate::sys::poll_read_at_most(&mut this.inner, cx, buf, room)
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.read(n);
        }
        polled
    }
}

impl AsyncWrite for Watched<Socket> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.noted(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &this.activity.zero_copy {
            Some(files) if files.is_pending() => files.poll_write(&mut this.inner, cx, bufs),
            _ => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        };
        this.noted(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Not noted: only writes leave bytes behind. A TCP socket's flush does nothing, and
        // only TCP connections change hands.
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(header_ms: u64, idle_ms: u64) -> HttpOptions {
        HttpOptions {
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..HttpOptions::default()
        }
    }

    #[test]
    fn a_silent_new_connection_hits_the_header_timeout() {
        let a = Activity::new();
        let o = opts(0, 1000);
        assert_eq!(
            a.check(&o, Duration::from_secs(30), &mut Watch::default()),
            Verdict::HeadTimeout
        );
    }

    #[test]
    fn an_answered_connection_goes_idle_not_head_timeout() {
        let a = Activity::new();
        a.begin();
        a.end();
        let o = opts(0, 0);
        assert_eq!(
            a.check(&o, Duration::from_secs(30), &mut Watch::default()),
            Verdict::Idle
        );
        a.read(1);
        assert_eq!(
            a.check(&o, Duration::from_secs(30), &mut Watch::default()),
            Verdict::HeadTimeout
        );
    }

    #[test]
    fn a_client_that_stops_reading_hits_the_send_timeout() {
        let a = Activity::new();
        a.begin();
        a.write_blocked.store(true, Relaxed);
        let o = opts(1000, 1000);
        assert_eq!(
            a.check(&o, Duration::ZERO, &mut Watch::default()),
            Verdict::SendTimeout
        );
        a.write_blocked.store(false, Relaxed);
        assert!(matches!(
            a.check(&o, Duration::ZERO, &mut Watch::default()),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn a_request_in_flight_is_never_idle() {
        let a = Activity::new();
        a.begin();
        let o = opts(0, 0);
        assert!(matches!(
            a.check(&o, Duration::from_secs(30), &mut Watch::default()),
            Verdict::Wait(_)
        ));
    }
}
