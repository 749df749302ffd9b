//! An acceptor task: accepts connections from one listening socket, holds each to the
//! connection limit, and spawns its task. Accept errors never end it: it backs off and goes on.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bind::Listener;
use crate::connection;
use crate::handler::Handler;
use crate::shared::Shared;
use crate::socket::Conn;
use crate::telemetry::{Event, EventKind};

/// First pause after an accept error; it doubles on each error in a row.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after accept errors, so recovery (descriptors freed, say) is seen quickly.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

pub(crate) fn spawn<H: Handler>(
    handler: H,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    index: usize,
) -> JoinHandle<()> {
    tokio::spawn(accept_loop(handler, listener, shared, index))
}

/// Reports the acceptor's end, however it ends (aborted by stop or suspend included).
struct Lifetime {
    shared: Arc<Shared>,
    index: usize,
    started: Instant,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        let (s, index, age) = (&self.shared, self.index, self.started.elapsed());
        s.telemetry.emit(|| {
            Event::new(EventKind::AcceptorStop, &s.name)
                .acceptor(index)
                .duration(age)
        });
    }
}

async fn accept_loop<H: Handler>(
    handler: H,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    index: usize,
) {
    let _lifetime = Lifetime {
        shared: shared.clone(),
        index,
        started: Instant::now(),
    };
    let s = &shared;
    s.telemetry
        .emit(|| Event::new(EventKind::AcceptorStart, &s.name).acceptor(index));
    let mut backoff = BACKOFF_MIN;
    let full_wait = s.opts.max_connections_retry_wait * s.opts.max_connections_retry_count.max(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = BACKOFF_MIN;
                accepted
            }
            Err(e) => {
                let kind = classify(&e);
                if kind == EventKind::Econnaborted {
                    s.telemetry
                        .emit(|| Event::new(kind, &s.name).acceptor(index).error(&e));
                    continue;
                }
                s.telemetry.emit(|| {
                    Event::new(kind, &s.name)
                        .acceptor(index)
                        .duration(backoff)
                        .error(&e)
                });
                // The failed connection is still queued, so accepting again at once would fail
                // again at once: pause instead of spinning a core.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let permit = match s.limiter.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: this connection waits for a free slot, as do the ones queued behind it.
                match tokio::time::timeout(full_wait, s.limiter.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        s.telemetry.emit(|| {
                            Event::new(EventKind::MaxConnectionsExceeded, &s.name)
                                .acceptor(index)
                                .duration(full_wait)
                        });
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let handler = handler.clone();
        Conn::start(&shared, peer, None, permit, Some(index), |conn| {
            connection::run(handler, stream, conn, None)
        });
    }
}

fn classify(e: &io::Error) -> EventKind {
    use nix::libc;
    match e.raw_os_error() {
        Some(libc::ECONNABORTED) => EventKind::Econnaborted,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => EventKind::Emfile,
        _ if e.kind() == io::ErrorKind::ConnectionAborted => EventKind::Econnaborted,
        _ => EventKind::AcceptError,
    }
}
