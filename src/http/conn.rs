//! One HTTP connection: hyper (HTTP/1.1, or HTTP/2 by ALPN or prior knowledge) driven on the
//! socket the socket server hands over, with the header read and idle timeouts, and a graceful
//! close when the listener stops.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::activity::{Activity, Verdict, Watch, Watched};
use super::listener::HttpShared;
use super::service::HttpService;
use crate::connections::Signal;
use crate::error::BoxError;
use crate::moved::{MoveTo, Moved};
use crate::socket::Socket;

type Io = TokioIo<Watched<Socket>>;

/// What an HTTP/2 client with prior knowledge sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's connection for the protocol the client speaks, boxed: the connection's task goes
/// on after it (as a WebSocket, say), and its future would otherwise keep hyper's space for
/// as long as it runs. One allocation per connection, not per request.
enum Conn {
    H1(Box<http1::UpgradeableConnection<Io, HttpService>>),
    H2(Pin<Box<http2::Connection<Io, HttpService, TokioExecutor>>>),
}

impl Conn {
    fn graceful_shutdown(&mut self) {
        match self {
            Conn::H1(conn) => Pin::new(&mut **conn).graceful_shutdown(),
            Conn::H2(conn) => conn.as_mut().graceful_shutdown(),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        match self {
            Conn::H1(conn) => Pin::new(&mut **conn).poll(cx),
            Conn::H2(conn) => conn.as_mut().poll(cx),
        }
    }
}

/// How the connection's loop ended.
enum Ended {
    /// hyper is done with the connection (the client left, or a timeout or stop closed it).
    Done(hyper::Result<()>),
    /// The listener stopped with somewhere to hand its connections, and this one is between
    /// requests.
    HandOff,
}

/// Whether the client speaks HTTP/2: ALPN `h2` over TLS; the preface, peeked at without
/// reading it, on plain TCP. Unix sockets speak HTTP/1.1.
async fn speaks_h2(socket: &Socket) -> std::io::Result<bool> {
    if socket.is_secure() {
        return Ok(socket.alpn_protocol() == Some(b"h2"));
    }
    let Some(tcp) = socket.tcp_stream() else {
        return Ok(false);
    };
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut seen).await?;
        if n == 0 || seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far (clients send it whole; this is the rare split segment).
        // The header read timeout around this call bounds the wait.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How long a connection with no request in flight waits, once its listener stops, for one
/// more request to answer with `connection: close` before it closes: 1 s.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// When, within `spread` after its listener stops, the connection `id` closes. Successive ids
/// land evenly across the window (the golden-ratio sequence), so connections leave a few at
/// a time however many there are.
fn turn_of(id: u64, spread: Duration) -> Duration {
    let fraction = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    spread.mul_f64(fraction)
}

/// Serves HTTP on `socket` until the client leaves, a timeout closes it, or the listener stops
/// (at the connection's turn within `drain_spread`: a request in flight finishes with
/// `connection: close`; a connection between requests waits up to [`DRAIN_GRACE`] for its
/// next one and answers it before it closes). When the stopping listener has somewhere to
/// hand its connections (an upgrade's new process), a plain HTTP/1 connection goes there
/// instead, at its first moment between requests. `adopted` holds the bytes already read
/// from a connection this process was handed.
pub(crate) async fn serve(
    http: Arc<HttpShared>,
    socket: Socket,
    adopted: Option<Bytes>,
) -> Result<(), BoxError> {
    let opts = &http.options;
    let (h2, activity, prefix) = match adopted {
        Some(prefix) => (false, Activity::adopted(), prefix),
        None if opts.http2 => {
            match tokio::time::timeout(opts.header_read_timeout, speaks_h2(&socket)).await {
                Ok(Ok(h2)) => (h2, Activity::new(), Bytes::new()),
                // Silent past the header read timeout, or gone: nothing to serve.
                Err(_) | Ok(Err(_)) => return Ok(()),
            }
        }
        None => (false, Activity::new(), Bytes::new()),
    };
    let plain_tcp = !socket.is_secure() && socket.tcp_stream().is_some();
    let movable = !h2 && plain_tcp;
    let vectored = opts
        .vectored_writes
        .unwrap_or_else(|| http.routes.load().serves_files());
    let mut activity = activity.with_failure_logs(socket.conn.shared.failure_logs.clone());
    // hyper's vectored strategy hands a body's frames to the socket uncopied, which is what
    // lets a file region stand in for its bytes (see `zero_copy`).
    if movable && vectored {
        activity = activity.with_zero_copy();
    }
    let activity = Arc::new(activity);
    let service = HttpService::new(
        http.clone(),
        activity.clone(),
        socket.conn.shared.clone(),
        socket.conn.slot.clone(),
        socket.peer_certificates().map(Arc::from),
    );
    // Polled through the slot's loop waker: after the first poll, a wake costs two atomic
    // loads instead of a lock in `Notify`.
    let slot = socket.conn.slot.clone();
    // The listener's connection table, should the connection go on as a WebSocket.
    let socket_shared = socket.conn.shared.clone();
    // Where the connection may move when the listener stops: read only then.
    let shared = match movable {
        true => Some(socket.conn.shared.clone()),
        false => None,
    };
    let mut registered = false;
    let send_timeout = socket.conn.shared.opts.send_timeout;
    // HTTP/1 heads are held to hyper's buffer limit as they are read; HTTP/2 has its own.
    let head_limit = match h2 {
        true => usize::MAX,
        false => super::listener::head_buffer_limit(opts),
    };
    let mut watched = Watched::new(socket, activity.clone(), head_limit);
    watched.prefix = prefix;
    let io = TokioIo::new(watched);
    let mut conn = if h2 {
        Conn::H2(Box::pin(http.h2.serve_connection(io, service)))
    } else {
        let h1 = if vectored {
            &http.h1_vectored
        } else {
            &http.h1
        };
        Conn::H1(Box::new(h1.serve_connection(io, service).with_upgrades()))
    };
    // The first check comes at the sooner of the two timeouts; each check then sets the next
    // from what it sees (the end of the last request, a head that began).
    let first = std::time::Instant::now() + opts.header_read_timeout.min(opts.idle_timeout);
    let mut timer = pin!(tokio::time::sleep_until(Instant::from_std(first)));
    // Whether the timer holds this task's waker: polled since it was last set, and not yet
    // fired. A task's waker does not change, so polling it again would only store the same
    // waker again; the loop then looks at `is_elapsed`, a load.
    let mut timer_waits = false;
    let mut armed_head = None;
    let mut watch = Watch::default();
    let mut draining = false;
    // Where this connection goes once it is between requests, after its listener stopped.
    let mut handing: Option<MoveTo> = None;

    // Once the listener stops, the connection waits for its turn within `drain_spread`, then
    // closes: at once when a request is in flight (its answer says `connection: close`).
    // A turn that finds no request in flight: hyper would close the connection at once,
    // failing a request the client may have sent already. The connection waits up to
    // DRAIN_GRACE for one instead, which the service answers with `connection: close` (hyper
    // then closes the connection itself); the client's next request goes to a listener that
    // still accepts (after an upgrade, the new process).
    let mut turn: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let close = |conn: &mut Conn, grace: &mut Option<Pin<Box<tokio::time::Sleep>>>| {
        activity.close();
        match activity.busy() {
            true => conn.graceful_shutdown(),
            false => *grace = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE))),
        }
    };

    let ended = poll_fn(|cx| loop {
        if let Poll::Ready(done) = conn.poll(cx) {
            return Poll::Ready(Ended::Done(done));
        }
        if handing.is_some() && activity.at_rest() {
            return Poll::Ready(Ended::HandOff);
        }
        if let Some(sleep) = &mut turn {
            if sleep.as_mut().poll(cx).is_ready() {
                turn = None;
                close(&mut conn, &mut grace);
                continue;
            }
        }
        if let Some(sleep) = &mut grace {
            // A request in the service (HTTP/2's, or a slow HTTP/1 one) finishes first.
            if activity.busy() || sleep.as_mut().poll(cx).is_ready() {
                grace = None;
                conn.graceful_shutdown();
                continue;
            }
        }
        if let Poll::Ready(signal) = slot.poll_signal(cx, &mut registered, draining) {
            // An expired read deadline means nothing here: this connection keeps its own.
            if signal == Signal::Stop && !draining {
                draining = true;
                handing = shared.as_ref().and_then(|s| s.move_to.get());
                if handing.is_some() {
                    continue;
                }
                match turn_of(slot.id, opts.drain_spread) {
                    wait if wait.is_zero() => close(&mut conn, &mut grace),
                    wait => turn = Some(Box::pin(tokio::time::sleep(wait))),
                }
            }
            continue;
        }
        // A request head that began since the timer was set may be due sooner.
        let head = activity.head_deadline(opts);
        if head != armed_head {
            armed_head = head;
            if let Some(due) = head {
                let due = Instant::from_std(due);
                if due < timer.deadline() {
                    timer.as_mut().reset(due);
                    timer_waits = false;
                }
            }
        }
        if timer_waits && !timer.is_elapsed() {
            return Poll::Pending;
        }
        if timer.as_mut().poll(cx).is_pending() {
            timer_waits = true;
            return Poll::Pending;
        }
        timer_waits = false;
        match activity.check(opts, send_timeout, &mut watch) {
            Verdict::Wait(at) => timer.as_mut().reset(Instant::from_std(at)),
            Verdict::Idle if !draining => {
                draining = true;
                conn.graceful_shutdown();
                // HTTP/2's graceful close waits for the client to answer a PING; a client
                // that never does gets one header read timeout, then the connection closes.
                timer
                    .as_mut()
                    .reset(Instant::now() + opts.header_read_timeout);
            }
            Verdict::Idle | Verdict::HeadTimeout | Verdict::SendTimeout => {
                return Poll::Ready(Ended::Done(Ok(())))
            }
        }
    })
    .await;
    let session = activity.take_session();
    match (ended, conn, handing) {
        (Ended::HandOff, Conn::H1(conn), Some(to)) => hand_off(*conn, &to),
        // Errors here are the client's doing (a reset, a malformed request hyper already
        // answered with 400); they end this connection and are no failure of the server.
        (Ended::Done(Err(e)), ..) => {
            tracing::debug!(target: "atoll::http", error = %e, "connection ended with an error");
        }
        _ => {}
    }
    // A WebSocket route answered 101: hyper has let go of the socket, and the connection
    // goes on as a WebSocket, under the same stop and connection count, on a task of its own
    // (this one's space, sized for hyper's connection and its timers, goes now).
    if let Some(session) = session {
        let table = &socket_shared.table;
        table.respawn(&slot, || session.spawn());
    }
    Ok(())
}

/// Takes an HTTP/1 connection that is between requests apart and hands its socket, with the
/// bytes hyper read but did not parse yet, to `to`. Dropping what is left here ends the
/// connection in this listener's table; the socket itself stays open in the other process.
fn hand_off(conn: http1::UpgradeableConnection<Io, HttpService>, to: &MoveTo) {
    // `None` only once upgraded, and an upgraded connection is never at rest.
    let Some(parts) = conn.into_parts() else {
        return;
    };
    let mut watched = parts.io.into_inner();
    // A connection handed over again before hyper read all of its own prefix: what hyper
    // holds came first, the rest of the prefix after.
    let unread = if watched.prefix.is_empty() {
        parts.read_buf
    } else {
        let mut all = Vec::with_capacity(parts.read_buf.len() + watched.prefix.len());
        all.extend_from_slice(&parts.read_buf);
        all.extend_from_slice(&watched.prefix);
        Bytes::from(all)
    };
    let client = watched.inner.conn.slot.client();
    match watched.inner.take_tcp().map(|tcp| tcp.into_std()) {
        Some(Ok(tcp)) => to(Moved {
            tcp,
            unread,
            // hyper's state between requests is none: the next request starts afresh.
            state: Vec::new(),
            client,
        }),
        Some(Err(e)) => {
            tracing::debug!(target: "atoll::http", error = %e, "cannot hand a connection over");
        }
        None => {}
    }
}
