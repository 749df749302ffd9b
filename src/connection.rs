//! One connection's task: the TLS handshake, then the callback loop that waits for bytes, a
//! stop request or the read timeout, and runs the handler's callbacks in turn.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use tokio::time::{sleep_until, Instant};

use crate::addr::Addr;
use crate::bind::Accepted;
use crate::buffer;
use crate::error::{Error, ErrorKind};
use crate::handler::{Action, Handler};
use crate::socket::{handshake, Conn, Socket, Stream};
use crate::telemetry::{Event, EventKind};

/// Runs a freshly accepted connection to its end.
///
/// One function on purpose: every `async fn` layer keeps its own copy of what it is given, and
/// this future is what an idle connection costs.
pub(crate) async fn run<H: Handler>(mut handler: H, accepted: Accepted, conn: Conn) {
    let stream = match open(accepted, &conn).await {
        Ok(stream) => stream,
        Err(e) => {
            let mut socket = Socket::new(Stream::Closed, conn);
            handler.handle_error(&e, &mut socket).await;
            return;
        }
    };
    let mut socket = Socket::new(stream, conn);
    socket.conn.emit(EventKind::Ready, |e| e);
    let mut action = handler.handle_connection(&mut socket).await;

    let slot = socket.conn.slot.clone();
    let mut stop_seen = false;
    // The task's waker never changes, so once registered for the stop signal, a poll only
    // needs to read the flag.
    let mut stop_registered = false;
    let read_buffer_size = socket.conn.shared.opts.read_buffer_size;
    let mut persistent = socket.conn.shared.opts.read_timeout;
    // The read timeout is kept lazily: a read only moves `deadline`, and the timer, armed for
    // `armed`, is re-armed when it fires early. So a busy connection touches the timer wheel
    // once per timeout period, not once per read.
    let mut deadline = Instant::now() + persistent;
    let mut armed = deadline;
    let timer = sleep_until(armed);
    tokio::pin!(timer);

    loop {
        let mut rearm = |new_deadline: Instant, timer: std::pin::Pin<&mut tokio::time::Sleep>| {
            deadline = new_deadline;
            if new_deadline < armed {
                armed = new_deadline;
                timer.reset(armed);
            }
        };
        match action {
            Action::Continue => {}
            Action::ContinueWithTimeout(d) => rearm(Instant::now() + d, timer.as_mut()),
            Action::SetReadTimeout(d) => {
                persistent = d;
                rearm(Instant::now() + d, timer.as_mut());
            }
            Action::Close => {
                socket.close().await;
                return;
            }
            Action::Error(e) => {
                let err = Error::with_source(ErrorKind::Handler, e);
                socket
                    .conn
                    .emit(EventKind::HandlerError, |ev| ev.error(&err));
                handler.handle_error(&err, &mut socket).await;
                return;
            }
            Action::StartTls(tls) => {
                if let Err(e) = socket.start_tls(&tls).await {
                    handler.handle_error(&e, &mut socket).await;
                    return;
                }
            }
            Action::TakeOver => {
                let shared = socket.conn.shared.clone();
                let (id, peer): (u64, Addr) = (socket.id(), socket.peer_addr().clone());
                if let Err(e) = handler.take_over(socket).await {
                    shared.telemetry.emit(|| {
                        Event::new(EventKind::HandlerError, &shared.name)
                            .connection(id, &peer)
                            .error(&*e)
                    });
                }
                return;
            }
        }
        if socket.is_closed() {
            // The handler closed the socket itself inside its callback.
            return;
        }

        let wake = tokio::select! {
            biased;
            _ = poll_fn(|cx| {
                if stop_registered {
                    if slot.is_stopping() { Poll::Ready(()) } else { Poll::Pending }
                } else {
                    stop_registered = true;
                    slot.poll_stopped(cx)
                }
            }), if !stop_seen => Wake::Stop,
            r = socket.readable() => Wake::Readable(r),
            _ = &mut timer => Wake::Timer,
        };

        action = match wake {
            Wake::Stop => {
                stop_seen = true;
                handler.handle_shutdown(&mut socket).await
            }
            Wake::Timer => {
                let now = Instant::now();
                if now < deadline {
                    armed = deadline;
                    timer.as_mut().reset(armed);
                    Action::Continue
                } else {
                    deadline = now + persistent;
                    armed = deadline;
                    timer.as_mut().reset(armed);
                    socket.conn.emit(EventKind::Timeout, |e| e);
                    handler.handle_timeout(&mut socket).await
                }
            }
            Wake::Readable(Err(e)) => {
                read_failed(&mut handler, &mut socket, e).await;
                return;
            }
            Wake::Readable(Ok(())) => {
                let mut buf = buffer::take(read_buffer_size);
                let next = match socket.read_into(&mut buf).await {
                    Ok(None) => Action::Continue,
                    Ok(Some(0)) => {
                        buffer::give(buf);
                        handler.handle_close(&mut socket).await;
                        return;
                    }
                    Ok(Some(n)) => {
                        deadline = Instant::now() + persistent;
                        handler.handle_data(&buf[..n], &mut socket).await
                    }
                    Err(e) => {
                        buffer::give(buf);
                        read_failed(&mut handler, &mut socket, e).await;
                        return;
                    }
                };
                buffer::give(buf);
                next
            }
        };
    }
}

/// The connection's stream, after the TLS handshake when the listener serves TLS.
async fn open(accepted: Accepted, conn: &Conn) -> Result<Stream, Error> {
    match accepted {
        Accepted::Unix(s) => Ok(Stream::Unix(s)),
        Accepted::Tcp(tcp) => match &conn.shared.tls {
            None => Ok(Stream::Tcp(tcp)),
            // Boxed: a handshake's state is large, and would otherwise sit in every
            // connection's task, TLS or not.
            Some(tls) => Ok(Stream::Tls(Box::pin(handshake(conn, tls, tcp)).await?)),
        },
    }
}

/// Why the connection loop woke up.
enum Wake {
    Readable(io::Result<()>),
    Stop,
    Timer,
}

async fn read_failed<H: Handler>(handler: &mut H, socket: &mut Socket, e: io::Error) {
    socket.conn.emit(EventKind::RecvError, |ev| ev.error(&e));
    let err = Error::io(e);
    if err.is_closed() {
        // A reset peer is a close, not a failure of ours.
        handler.handle_close(socket).await;
    } else {
        handler.handle_error(&err, socket).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::bind::Accepted;
    use crate::connections::Slot;
    use crate::echo::Echo;
    use crate::options::ServerOptions;
    use crate::shared::Shared;
    use crate::socket::Conn;
    use crate::telemetry::Telemetry;

    /// An idle connection's memory is mostly its task's future: keep it small.
    #[tokio::test]
    async fn an_echo_connection_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let shared = Arc::new(Shared::new(
            "t".into(),
            ServerOptions::default(),
            Arc::new(Telemetry::default()),
            None,
        ));
        let permit = shared.limiter.clone().try_acquire_owned().unwrap();
        let conn = Conn::new(shared.clone(), Arc::new(Slot::new(1, peer.into())), permit);
        let task = super::run(Echo, Accepted::Tcp(tcp), conn);
        let size = std::mem::size_of_val(&task);
        eprintln!("echo connection future: {size} bytes");
        assert!(size <= 1024, "echo connection future is {size} bytes");
    }
}
