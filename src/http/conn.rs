//! One HTTP connection: hyper (HTTP/1.1, or HTTP/2 by ALPN or prior knowledge) driven on the
//! socket the socket server hands over, with the header read and idle timeouts, and a graceful
//! close when the listener stops.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::activity::{Activity, Verdict, Watch, Watched};
use super::listener::HttpShared;
use super::service::HttpService;
use crate::connections::Signal;
use crate::error::BoxError;
use crate::socket::Socket;

/// Serves HTTP on `socket` until the client leaves, a timeout closes it, or the listener stops
/// (in-flight requests finish, idle keep-alive connections close at once).
pub(crate) async fn serve(http: Arc<HttpShared>, socket: Socket) -> Result<(), BoxError> {
    let activity = Arc::new(Activity::new());
    let service = HttpService {
        http: http.clone(),
        activity: activity.clone(),
        server: socket.conn.shared.clone(),
        slot: socket.conn.slot.clone(),
    };
    // Polled through the slot's loop waker: after the first poll, a wake costs two atomic
    // loads instead of a lock in `Notify`.
    let slot = socket.conn.slot.clone();
    let mut registered = false;
    let io = TokioIo::new(Watched {
        inner: socket,
        activity: activity.clone(),
    });
    let mut conn = pin!(http.builder.serve_connection(io, service));
    let opts = &http.options;
    // The first check comes at the sooner of the two timeouts; each check then sets the next
    // from what it sees (the end of the last request, a head that began).
    let first = std::time::Instant::now() + opts.header_read_timeout.min(opts.idle_timeout);
    let mut timer = pin!(tokio::time::sleep_until(Instant::from_std(first)));
    let mut armed_head = None;
    let mut watch = Watch::default();
    let mut draining = false;

    let result = poll_fn(|cx| loop {
        if let Poll::Ready(done) = conn.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if let Poll::Ready(signal) = slot.poll_signal(cx, &mut registered, draining) {
            // An expired read deadline means nothing here: this connection keeps its own.
            if signal == Signal::Stop {
                draining = true;
                conn.as_mut().graceful_shutdown();
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
                }
            }
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
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
