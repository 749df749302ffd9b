//! One connection's task: the TLS handshake, then the callback loop that waits for bytes, a
//! stop request or the read timeout, and runs the handler's callbacks in turn. When the
//! listener stops with somewhere to move connections, the loop asks the handler between two
//! callbacks whether this one moves; a connection that moved in resumes the loop here.

use std::future::poll_fn;
use std::io;
use std::task::Poll;

use crate::addr::Addr;
use crate::bind::Accepted;
use bytes::Bytes;

use crate::buffer;
use crate::connections::Signal;
use crate::error::{Error, ErrorKind};
use crate::handler::{Action, Handler, Move};
use crate::moved::{MoveTo, Moved};
use crate::proxy;
use crate::socket::{handshake, Conn, Socket, Stream};
use crate::telemetry::{Event, EventKind};

/// Runs a connection to its end: a freshly accepted one (`moved_in` is `None`), or one that
/// moved in from another process, with the bytes read there and not handled yet (a restored
/// handler; its connection callback ran in the other process).
///
/// One function on purpose: every `async fn` layer keeps its own copy of what it is given, and
/// this future is what an idle connection costs. The read timeout is kept by the listener's
/// sweeper ([`Timeouts`](crate::timeouts::Timeouts)), which wakes the loop through the slot.
pub(crate) async fn run<H: Handler>(
    mut handler: H,
    accepted: Accepted,
    mut conn: Conn,
    moved_in: Option<Bytes>,
) {
    let opened = match moved_in {
        // Adopted connections are plain: a TLS listener refuses them.
        Some(_) => Ok(plain(accepted)),
        None => open(accepted, &mut conn).await,
    };
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            let mut socket = Socket::new(Stream::Closed, conn);
            handler.handle_error(&e, &mut socket).await;
            return;
        }
    };
    let mut socket = Socket::new(stream, conn);
    socket.conn.emit(EventKind::Ready, |e| e);
    let mut action = match moved_in {
        None => handler.handle_connection(&mut socket).await,
        Some(unread) if unread.is_empty() => Action::Continue,
        Some(unread) => handler.handle_data(&unread, &mut socket).await,
    };

    let slot = socket.conn.slot.clone();
    let shared = socket.conn.shared.clone();
    let timeouts = &shared.timeouts;
    let mut stop_seen = false;
    let mut registered = false;
    let read_buffer_size = shared.opts.read_buffer_size;
    let mut persistent = shared.opts.read_timeout;
    timeouts.arm(&slot, persistent);
    // Once the listener stops with somewhere to move connections to, and this one can move:
    // where it goes, and whether to ask the handler (between callbacks) if it goes now.
    let mut moving: Option<MoveTo> = None;
    let mut ask_move = false;
    // Closing once the peer is quiet (`Action::CloseWhenQuiet`): the read timeout is then the
    // quiet period, and its expiry closes.
    let mut quiet = false;

    loop {
        match action {
            Action::Continue => {}
            Action::ContinueWithTimeout(d) => timeouts.arm(&slot, d),
            Action::SetReadTimeout(d) => {
                persistent = d;
                timeouts.arm(&slot, d);
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
            Action::CloseWhenQuiet(d) => {
                quiet = true;
                persistent = d;
                timeouts.arm(&slot, d);
            }
            Action::TakeOver => {
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
        if ask_move {
            ask_move = false;
            if let Some(to) = &moving {
                match handler.handle_move(&mut socket).await {
                    Move::Now(state) => {
                        move_out(&mut socket, state, to);
                        return;
                    }
                    Move::Later => {}
                    Move::Never => {
                        moving = None;
                        action = handler.handle_shutdown(&mut socket).await;
                        continue;
                    }
                }
            }
        }

        // A stop request or an expired deadline first, then bytes to read.
        let wake = poll_fn(
            |cx| match slot.poll_signal(cx, &mut registered, stop_seen) {
                Poll::Ready(Signal::Stop) => Poll::Ready(Wake::Stop),
                Poll::Ready(Signal::Expired) => Poll::Ready(Wake::Timer),
                Poll::Pending => socket.poll_readable(cx).map(Wake::Readable),
            },
        )
        .await;

        action = match wake {
            Wake::Stop => {
                stop_seen = true;
                moving = match socket.can_move() {
                    true => shared.move_to.get(),
                    false => None,
                };
                match moving {
                    Some(_) => {
                        ask_move = true;
                        Action::Continue
                    }
                    None => handler.handle_shutdown(&mut socket).await,
                }
            }
            // A read may have moved the deadline since the sweeper looked.
            Wake::Timer if !timeouts.is_due(&slot) => Action::Continue,
            // Quiet for the whole period, unless bytes came just now: those are read first.
            Wake::Timer if quiet => match socket.peer_is_quiet() {
                true => Action::Close,
                false => Action::Continue,
            },
            Wake::Timer => {
                timeouts.arm(&slot, persistent);
                socket.conn.emit(EventKind::Timeout, |e| e);
                ask_move = moving.is_some();
                handler.handle_timeout(&mut socket).await
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
                        timeouts.arm(&slot, persistent);
                        ask_move = stop_seen;
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
async fn open(accepted: Accepted, conn: &mut Conn) -> Result<Stream, Error> {
    match accepted {
        Accepted::Unix(s) => {
            // No PROXY header on a Unix socket: its peer is local.
            if conn.shared.reads_proxy_header() && !conn.admit(None) {
                return Err(Error::with_source(ErrorKind::Refused, PER_IP));
            }
            Ok(Stream::Unix(s))
        }
        Accepted::Tcp(mut tcp) => {
            if conn.shared.reads_proxy_header() {
                // Boxed, as the handshake: only listeners that read a header pay for its state.
                Box::pin(proxy_header(&mut tcp, conn)).await?;
            }
            match &conn.shared.tls {
                None => Ok(Stream::Tcp(tcp)),
                // Boxed: a handshake's state is large, and would otherwise sit in every
                // connection's task, TLS or not.
                Some(tls) => Ok(Stream::Tls(Box::pin(handshake(conn, tls, tcp)).await?)),
            }
        }
    }
}

const PER_IP: &str = "the client has max_connections_per_ip connections open";

/// Reads the PROXY header of a fresh connection within `proxy_header_timeout`: the client
/// it names becomes the connection's peer, which is then counted per IP and reported as
/// started. A source outside `proxy_trusted`, or a missing, bad or late header, is refused
/// and reported (`proxy_header_error`).
#[cold]
async fn proxy_header(tcp: &mut tokio::net::TcpStream, conn: &mut Conn) -> Result<(), Error> {
    let opts = &conn.shared.opts;
    let source = conn.slot.peer().inet();
    let outcome = match source {
        Some(from) if !proxy::trusted(&opts.proxy_trusted, from.ip()) => Err(format!(
            "{} may not send a PROXY header: it is not in proxy_trusted",
            from.ip()
        )),
        _ => match tokio::time::timeout(opts.proxy_header_timeout, proxy::read_header(tcp)).await {
            Ok(read) => read,
            Err(_) => Err(format!(
                "no whole PROXY header within {:?} (proxy_header_timeout)",
                opts.proxy_header_timeout
            )),
        },
    };
    match outcome {
        Ok(client) => {
            if let Some(client) = client {
                conn.slot.set_client(Addr::Inet(client));
            }
            match conn.admit(None) {
                true => Ok(()),
                false => Err(Error::with_source(ErrorKind::Refused, PER_IP)),
            }
        }
        Err(why) => {
            let e = Error::with_source(ErrorKind::Refused, why);
            conn.emit(EventKind::ProxyHeaderError, |ev| ev.error(&e));
            Err(e)
        }
    }
}

/// The stream of a connection that needs no handshake (one that moved in).
fn plain(accepted: Accepted) -> Stream {
    match accepted {
        Accepted::Tcp(tcp) => Stream::Tcp(tcp),
        Accepted::Unix(s) => Stream::Unix(s),
    }
}

/// Sends the connection to `to`, with the handler's `state`. Bytes the peer sent that were
/// not read yet stay in the socket, and travel with it.
fn move_out(socket: &mut Socket, state: Vec<u8>, to: &MoveTo) {
    let client = socket.conn.slot.client();
    match socket.take_tcp().map(|tcp| tcp.into_std()) {
        Some(Ok(tcp)) => to(Moved {
            tcp,
            unread: Bytes::new(),
            state,
            client,
        }),
        Some(Err(e)) => {
            socket.conn.emit(EventKind::HandlerError, |ev| ev.error(&e));
        }
        None => {}
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
        let task = super::run(Echo, Accepted::Tcp(tcp), conn, None);
        let size = std::mem::size_of_val(&task);
        eprintln!("echo connection future: {size} bytes");
        assert!(size <= 1024, "echo connection future is {size} bytes");
    }
}
