//! One HTTP connection: hyper (HTTP/1.1, or HTTP/2 by ALPN or prior knowledge) driven on the
//! socket the socket server hands over, with the header read and idle timeouts, and a graceful
//! close when the listener stops.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::activity::{Activity, Verdict, Watch, Watched};
use super::listener::HttpShared;
use super::service::HttpService;
use crate::connections::Signal;
use crate::error::BoxError;
use crate::socket::Socket;

type Io = TokioIo<Watched<Socket>>;

/// What an HTTP/2 client with prior knowledge sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project_lite::pin_project! {
    /// hyper's connection for the protocol the client speaks.
    #[project = ConnProj]
    enum Conn {
        H1 { #[pin] conn: http1::Connection<Io, HttpService> },
        H2 { #[pin] conn: http2::Connection<Io, HttpService, TokioExecutor> },
    }
}

impl Conn {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ConnProj::H1 { conn } => conn.graceful_shutdown(),
            ConnProj::H2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl Future for Conn {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        match self.project() {
            ConnProj::H1 { conn } => conn.poll(cx),
            ConnProj::H2 { conn } => conn.poll(cx),
        }
    }
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
/// next one and answers it before it closes).
pub(crate) async fn serve(http: Arc<HttpShared>, socket: Socket) -> Result<(), BoxError> {
    let opts = &http.options;
    let h2 = if opts.http2 {
        match tokio::time::timeout(opts.header_read_timeout, speaks_h2(&socket)).await {
            Ok(Ok(h2)) => h2,
            // Silent past the header read timeout, or gone: nothing to serve.
            Err(_) | Ok(Err(_)) => return Ok(()),
        }
    } else {
        false
    };
    let activity = Arc::new(Activity::new());
    let service = HttpService::new(
        http.clone(),
        activity.clone(),
        socket.conn.shared.clone(),
        socket.conn.slot.clone(),
    );
    // Polled through the slot's loop waker: after the first poll, a wake costs two atomic
    // loads instead of a lock in `Notify`.
    let slot = socket.conn.slot.clone();
    let mut registered = false;
    let io = TokioIo::new(Watched {
        inner: socket,
        activity: activity.clone(),
    });
    let mut conn = pin!(if h2 {
        Conn::H2 {
            conn: http.h2.serve_connection(io, service),
        }
    } else {
        Conn::H1 {
            conn: http.h1.serve_connection(io, service),
        }
    });
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

    // Once the listener stops, the connection waits for its turn within `drain_spread`, then
    // closes: at once when a request is in flight (its answer says `connection: close`).
    // A turn that finds no request in flight: hyper would close the connection at once,
    // failing a request the client may have sent already. The connection waits up to
    // DRAIN_GRACE for one instead, which the service answers with `connection: close` (hyper
    // then closes the connection itself); the client's next request goes to a listener that
    // still accepts (after an upgrade, the new process).
    let mut turn: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let close = |conn: Pin<&mut Conn>, grace: &mut Option<Pin<Box<tokio::time::Sleep>>>| {
        activity.close();
        match activity.busy() {
            true => conn.graceful_shutdown(),
            false => *grace = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE))),
        }
    };

    let result = poll_fn(|cx| loop {
        if let Poll::Ready(done) = conn.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if let Some(sleep) = &mut turn {
            if sleep.as_mut().poll(cx).is_ready() {
                turn = None;
                close(conn.as_mut(), &mut grace);
                continue;
            }
        }
        if let Some(sleep) = &mut grace {
            // A request in the service (HTTP/2's, or a slow HTTP/1 one) finishes first.
            if activity.busy() || sleep.as_mut().poll(cx).is_ready() {
                grace = None;
                conn.as_mut().graceful_shutdown();
                continue;
            }
        }
        if let Poll::Ready(signal) = slot.poll_signal(cx, &mut registered, draining) {
            // An expired read deadline means nothing here: this connection keeps its own.
            if signal == Signal::Stop && !draining {
                draining = true;
                match turn_of(slot.id, opts.drain_spread) {
                    wait if wait.is_zero() => close(conn.as_mut(), &mut grace),
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
        match activity.check(opts, &mut watch) {
            Verdict::Wait(at) => timer.as_mut().reset(Instant::from_std(at)),
            Verdict::Idle if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            Verdict::Idle => timer
                .as_mut()
                .reset(Instant::now() + opts.header_read_timeout),
            Verdict::HeadTimeout => return Poll::Ready(Ok(())),
        }
    })
    .await;
    // Errors here are the client's doing (a reset, a malformed request hyper already answered
    // with 400); they end this connection and are no failure of the server.
    if let Err(e) = result {
        tracing::debug!(target: "atoll::http", error = %e, "connection ended with an error");
    }
    Ok(())
}
