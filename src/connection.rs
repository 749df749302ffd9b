//! One connection's task: the TLS handshake, then the callback loop that waits for bytes, a
//! stop request or the read timeout, and runs the handler's callbacks in turn.

use std::io;

use tokio::time::{sleep_until, Instant};

use crate::addr::Addr;
use crate::bind::Accepted;
use crate::buffer;
use crate::error::{Error, ErrorKind};
use crate::handler::{Action, Handler};
use crate::socket::{handshake, Conn, Socket, Stream};
use crate::telemetry::EventKind;

/// Runs a freshly accepted connection to its end.
pub(crate) async fn run<H: Handler>(mut handler: H, accepted: Accepted, conn: Conn) {
    let stream = match accepted {
        Accepted::Unix(s) => Stream::Unix(s),
        Accepted::Tcp(tcp) => match conn.shared.tls.clone() {
            None => Stream::Tcp(tcp),
            Some(tls) => match handshake(&conn, &tls, tcp).await {
                Ok(s) => Stream::Tls(Box::new(s)),
                Err(e) => {
                    let mut socket = Socket::new(Stream::Closed, conn);
                    handler.handle_error(&e, &mut socket).await;
                    return;
                }
            },
        },
    };
    let mut socket = Socket::new(stream, conn);
    socket.conn.emit(EventKind::Ready, |e| e);
    let first = handler.handle_connection(&mut socket).await;
    drive(handler, socket, first).await;
}

/// Why the connection loop woke up.
enum Wake {
    Readable(io::Result<()>),
    Stop,
    Timer,
}

async fn drive<H: Handler>(mut handler: H, mut socket: Socket, mut action: Action) {
    let slot = socket.conn.slot.clone();
    let stop = slot.stopped();
    tokio::pin!(stop);
    let mut stop_seen = false;

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
                socket.conn.emit(EventKind::HandlerError, |ev| ev.error(&err));
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
                let conn_events = socket.conn.shared.clone();
                let (id, peer): (u64, Addr) = (socket.id(), socket.peer_addr().clone());
                if let Err(e) = handler.take_over(socket).await {
                    conn_events.telemetry.emit(|| {
                        crate::telemetry::Event::new(EventKind::HandlerError, &conn_events.name)
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
            _ = &mut stop, if !stop_seen => Wake::Stop,
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
