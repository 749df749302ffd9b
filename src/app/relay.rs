//! Connections crossing an upgrade, over the handover connection that stays open after the
//! new process is ready ([`handover`](super::handover) has the messages): kept-alive HTTP/1
//! connections, and the socket server's connections whose handler agreed to move.
//!
//! In the old process, a [`Relay`] takes each connection a stopping listener moves out and
//! sends it on one thread of its own, so the listener's tasks never block on the socket.
//! In the new process, [`receive`] adopts each one into the listener of the same name: an
//! HTTP listener's way, or the socket server's (the handler restored from its state).

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
}

impl Relay {
    /// Starts sending on `socket`, the handover connection to the new process.
    pub(crate) fn start(socket: Socket) -> std::io::Result<Arc<Relay>> {
        let (tx, rx) = mpsc::channel::<Outgoing>();
        let thread = std::thread::Builder::new()
            .name("atoll-relay".to_owned())
            .spawn(move || {
                for out in rx {
                    let Moved { tcp, unread, state } = out.moved;
                    let fd = OwnedFd::from(tcp);
                    if let Err(e) =
                        handover::send_connection(&socket, &out.listener, &fd, &unread, &state)
                    {
                        // The client sees its idle connection close, and reconnects.
                        tracing::warn!(
                            target: "atoll",
                            listener = out.listener,
                            error = %e,
                            "upgrade: cannot hand a connection over; closed"
                        );
                    }
                }
            })?;
        Ok(Arc::new(Relay {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
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

    /// Sends what is queued, then closes the handover connection. Blocking.
    pub(crate) fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
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
            Ok(handle) if handoff::is_http(&handle) => handoff::adopt(&handle, tcp, unread),
            Ok(handle) => handle
                .adopt_moved(Moved {
                    tcp,
                    unread,
                    state: handed.state,
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
