//! Reading a request body from a client that may be slow, stalled or hostile: every wait for
//! its next bytes has a deadline ([`TimedBody`]), and a body read whole for a resource costs
//! about what arrived ([`read_whole`]), never what the client announced.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;

/// A request body's wait for its next bytes outlasted the listener's `body_read_timeout`:
/// the error a [`TimedBody`] ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body stopped arriving for {:?} (body_read_timeout)",
            self.0
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// hyper's request body with a deadline on each wait: when a read finds no bytes, a timer of
/// `body_read_timeout` starts, and bytes arriving stop it. Time the reader spends elsewhere
/// (a service thinking before it reads) does not count. Past the deadline the body ends with
/// a [`BodyTimeout`] error.
pub struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Set on the first wait and reused: reset, not reallocated, at each later wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs: a read is waiting for the client.
    waiting: bool,
    timed_out: bool,
}

impl fmt::Debug for TimedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedBody")
            .field("timeout", &self.timeout)
            .field("waiting", &self.waiting)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

impl TimedBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            timer: None,
            waiting: false,
            timed_out: false,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                if !this.waiting {
                    this.waiting = true;
                    let due = Instant::now() + timeout;
                    match &mut this.timer {
                        Some(timer) => timer.as_mut().reset(due),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
                let timer = this.timer.as_mut().expect("armed above");
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timed_out = true;
                        Poll::Ready(Some(Err(BodyTimeout(timeout).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a body whole for a resource, up to `max` bytes: 413 past it, 408 when it stops
/// arriving, 400 when the client breaks it off or sends it malformed.
///
/// A body that comes in one piece is kept as hyper read it. A body in several pieces is
/// copied into one buffer that grows as they arrive (to at most twice what arrived): each
/// piece hyper hands over may hold on to a whole read buffer of its own, so keeping the
/// pieces would cost kilobytes per byte of a body sent a byte at a time.
pub(crate) async fn read_whole(mut body: TimedBody, max: usize) -> Result<Bytes, StatusCode> {
    let mut first: Option<Bytes> = None;
    let mut copied: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.is::<BodyTimeout>() {
            true => StatusCode::REQUEST_TIMEOUT,
            false => StatusCode::BAD_REQUEST,
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > max {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        if data.is_empty() {
            continue;
        }
        match first.take() {
            None if copied.is_empty() => first = Some(data),
            None => copied.extend_from_slice(&data),
            Some(earlier) => {
                copied.reserve(earlier.len() + data.len());
                copied.extend_from_slice(&earlier);
                copied.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(whole) => whole,
        None => Bytes::from(copied),
    })
}
