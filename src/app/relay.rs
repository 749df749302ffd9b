//! Connections crossing an upgrade, over the handover connection that stays open after the
//! new process is ready ([`handover`](super::handover) has the messages): kept-alive HTTP/1
//! connections, and the socket server's connections whose handler agreed to move.
//!
//! In the old process, a [`Relay`] takes each connection a stopping listener moves out and
//! sends it on one thread of its own, so the listener's tasks never block on the socket.
//! In the new process, [`receive`] adopts each one into the listener of the same name: an
//! HTTP listener's way, or the socket server's (the handler restored from its state).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use socket2::Socket;

use super::handover;
use crate::http::handoff;
use crate::moved::{MoveTo, Moved};
use crate::registry::Registry;

/// A connection on its way out, and the listener it leaves.
struct Outgoing {
    listener: String,
    moved: Moved,
}

/// The old process's sender of handed-over connections.
pub(crate) struct Relay {
    tx: Mutex<Option<mpsc::Sender<Outgoing>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The handover connection to the process that serves now; none once finished.
    target: Arc<ArcSwapOption<Socket>>,
}

impl Relay {
    /// Starts sending on `socket`, the handover connection to the new process.
    pub(crate) fn start(socket: Socket) -> std::io::Result<Arc<Relay>> {
        let (tx, rx) = mpsc::channel::<Outgoing>();
        let target = Arc::new(ArcSwapOption::from_pointee(socket));
        let to = target.clone();
        let thread = std::thread::Builder::new()
            .name("atoll-relay".to_owned())
            .spawn(move || send_all(&rx, &to))?;
        Ok(Arc::new(Relay {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            target,
        }))
    }

    /// Sends the connections still to come on `socket` instead: the handover connection to
    /// a process started in place of one that died (see `standby`).
    pub(crate) fn retarget(&self, socket: Socket) {
        self.target.store(Some(Arc::new(socket)));
    }

    /// Where the listener `name` sends its connections.
    pub(crate) fn to(self: &Arc<Relay>, name: &str) -> MoveTo {
        let (relay, name) = (self.clone(), name.to_owned());
        Arc::new(move |moved| {
            let tx = relay.tx.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = &*tx {
                let out = Outgoing {
                    listener: name.clone(),
                    moved,
                };
                // Sent or, with the thread gone, dropped: the connection closes.
                let _ = tx.send(out);
            }
        })
    }

    /// Sends what is queued (what waits for a process in place of a dead one closes), then
    /// closes the handover connection. Blocking.
    pub(crate) fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        // The new process's `receive` ends when this closes.
        self.target.store(None);
    }
}

/// How often connections waiting for a process started in place of a dead one look for it:
/// every 50 ms.
const RETARGET_POLL: Duration = Duration::from_millis(50);

/// The relay's thread: sends each connection on the current target. A connection whose
/// process is gone (the handover connection broke) waits, with those after it, for a process
/// started in its place ([`Relay::retarget`]); what still waits when this process exits
/// closes, and its client reconnects.
fn send_all(rx: &mpsc::Receiver<Outgoing>, to: &ArcSwapOption<Socket>) {
    let mut waiting: VecDeque<Outgoing> = VecDeque::new();
    // The target a send broke on: nothing more is tried on it.
    let mut broken: Option<Arc<Socket>> = None;
    let mut open = true;
    while open || !waiting.is_empty() {
        let received = match waiting.is_empty() {
            true => rx.recv().ok(),
            false => match rx.recv_timeout(RETARGET_POLL) {
                Ok(out) => Some(out),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            },
        };
        match received {
            Some(out) => waiting.push_back(out),
            // Nothing came and nothing waits: the sender is gone.
            None if waiting.is_empty() => open = false,
            None => {}
        }
        let Some(socket) = to.load_full() else { break };
        if broken.as_ref().is_some_and(|b| Arc::ptr_eq(b, &socket)) {
            if !open {
                break;
            }
            continue;
        }
        broken = None;
        while let Some(out) = waiting.pop_front() {
            let Outgoing { listener, moved } = &out;
            let fd = moved.tcp.as_fd();
            let (unread, state) = (&moved.unread, &moved.state);
            match handover::send_connection(&socket, listener, fd, unread, state, moved.client) {
                Ok(()) => {}
                Err(e) if gone(&e) => {
                    tracing::warn!(
                        target: "atoll",
                        error = %e,
                        "upgrade: the new process is gone; connections moving to it wait for one \
                         started in its place"
                    );
                    waiting.push_front(out);
                    broken = Some(socket.clone());
                    break;
                }
                // The client sees its idle connection close, and reconnects.
                Err(e) => tracing::warn!(
                    target: "atoll",
                    listener,
                    error = %e,
                    "upgrade: cannot hand a connection over; closed"
                ),
            }
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            target: "atoll",
            connections = waiting.len(),
            "upgrade: no process took over from the dead one; connections that were moving closed"
        );
    }
}

/// Whether a send failed because the process at the other end is gone.
fn gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | NotConnected | ConnectionAborted
    )
}

/// The new process's side: adopts every connection handed over on `socket` into the listener
/// of its name in `registry`, until the old process closes its end. Blocking: run it on a
/// thread of its own, with `runtime` the runtime the listeners run on.
pub(crate) fn receive(socket: Socket, registry: Registry, runtime: tokio::runtime::Handle) {
    if let Err(e) = socket.set_read_timeout(None) {
        tracing::warn!(target: "atoll", error = %e, "upgrade: cannot wait for connections");
        return;
    }
    let _runtime = runtime.enter();
    loop {
        let handed = match handover::receive_connection(&socket) {
            Ok(Some(handed)) => handed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target: "atoll", error = %e, "upgrade: bad connection handover");
                return;
            }
        };
        let tcp = std::net::TcpStream::from(handed.fd);
        let unread = Bytes::from(handed.unread);
        let adopted = match registry.get(&handed.listener) {
            Err(_) => Err("no listener of that name runs here".to_owned()),
            Ok(handle) if handoff::is_http(&handle) => {
                handoff::adopt(&handle, tcp, unread, handed.client, &handed.state)
            }
            Ok(handle) => handle
                .adopt_moved(Moved {
                    tcp,
                    unread,
                    state: handed.state,
                    client: handed.client,
                })
                .map_err(|e| e.to_string()),
        };
        if let Err(why) = adopted {
            // Dropped, so closed: the client reconnects.
            tracing::warn!(
                target: "atoll",
                listener = handed.listener,
                "upgrade: cannot take a connection over ({why}); closed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use socket2::{Domain, Socket, Type};

    use super::*;

    /// A connected TCP pair: (the client's end, the server's end).
    fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, server)
    }

    #[test]
    fn connections_moving_to_a_dead_process_wait_for_the_one_in_its_place() {
        let (to_dead, dead) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        drop(dead);
        let relay = Relay::start(to_dead).unwrap();
        let send = relay.to("echo");
        let (mut client, server) = tcp_pair();
        send(Moved {
            tcp: server,
            unread: Bytes::from_static(b"half a mess"),
            state: b"state".to_vec(),
            client: Some("192.0.2.1:5000".parse().unwrap()),
        });
        // The send to the dead process breaks first (or, on a slow machine, this retarget
        // comes first): either way the connection arrives at the new one.
        std::thread::sleep(Duration::from_millis(200));
        let (to_new, new) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        new.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        relay.retarget(to_new);
        let handed = handover::receive_connection(&new).unwrap().unwrap();
        assert_eq!(handed.listener, "echo");
        assert_eq!(
            (&handed.unread[..], &handed.state[..]),
            (&b"half a mess"[..], &b"state"[..])
        );
        assert_eq!(handed.client, Some("192.0.2.1:5000".parse().unwrap()));
        // The same connection: what the new process writes, the client reads.
        let mut moved = std::net::TcpStream::from(handed.fd);
        moved.write_all(b"age").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = [0; 3];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"age");
        relay.finish();
        assert!(handover::receive_connection(&new).unwrap().is_none());
    }

    #[test]
    fn connections_still_waiting_when_the_process_exits_close() {
        let (to_dead, dead) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        drop(dead);
        let relay = Relay::start(to_dead).unwrap();
        let (mut client, server) = tcp_pair();
        relay.to("echo")(Moved {
            tcp: server,
            unread: Bytes::new(),
            state: Vec::new(),
            client: None,
        });
        relay.finish();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0; 1];
        assert_eq!(
            client.read(&mut buf).unwrap(),
            0,
            "the connection is closed"
        );
    }
}
