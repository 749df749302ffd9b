//! Kept-alive HTTP/1 connections crossing an upgrade, over the handover connection that stays
//! open after the new process is ready ([`handover`](super::handover) has the messages).
//!
//! In the old process, a [`Relay`] takes each connection a stopping HTTP listener hands over
//! and sends it on one thread of its own, so the listener's tasks never block on the socket.
//! In the new process, [`receive`] adopts each one into the listener of the same name.

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use socket2::Socket;

use super::handover;
use crate::http::handoff::{self, HandOff};
use crate::registry::Registry;

/// A connection on its way out.
struct Outgoing {
    listener: String,
    tcp: std::net::TcpStream,
    unread: Bytes,
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
                    let fd = OwnedFd::from(out.tcp);
                    if let Err(e) =
                        handover::send_connection(&socket, &out.listener, &fd, &out.unread)
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
    pub(crate) fn to(self: &Arc<Relay>, name: &str) -> HandOff {
        let (relay, name) = (self.clone(), name.to_owned());
        Arc::new(move |tcp, unread| {
            let tx = relay.tx.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = &*tx {
                let out = Outgoing {
                    listener: name.clone(),
                    tcp,
                    unread,
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
        let adopted = registry
            .get(&handed.listener)
            .map_err(|_| "no listener of that name runs here".to_owned())
            .and_then(|handle| handoff::adopt(&handle, tcp, Bytes::from(handed.unread)));
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
