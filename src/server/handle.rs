//! A running server's handle: addresses, live connections, suspend and resume, and the
//! graceful stop that drains connections and reports how they ended.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::addr::Addr;
use crate::bind::{self, Listener};
use crate::connections::ConnectionInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::moved::{MoveTo, Moved, Resume};
use crate::options::ServerOptions;
use crate::shared::Shared;
use crate::socket::{Conn, Socket, Stream};
use crate::telemetry::{Event, EventKind, Telemetry};

/// Starts one acceptor task on a listening socket.
pub(crate) type Spawner =
    Box<dyn Fn(Arc<Listener>, Arc<Shared>, usize) -> JoinHandle<()> + Send + Sync>;

/// A value a protocol layer keeps with a server (see [`Server::extension`](crate::Server::extension)).
pub(crate) type Extension = Arc<dyn Any + Send + Sync>;

/// How a [`stop`](ServerHandle::stop) went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Connections that ended by themselves within the shutdown timeout.
    pub drained: usize,
    /// Connections still open at the timeout, closed by force.
    pub forced: usize,
}

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting connections.
    Running,
    /// Not accepting (new connects are refused); existing connections go on.
    Suspended,
    /// Stopping: no longer accepting, draining connections.
    Stopping,
    /// Stopped; every connection has ended.
    Stopped,
}

struct Lifecycle {
    listeners: Vec<Arc<Listener>>,
    acceptors: Vec<JoinHandle<()>>,
    /// The read-timeout sweeper; runs until every connection has ended.
    sweeper: Option<JoinHandle<()>>,
    report: Option<StopReport>,
}

struct Inner {
    shared: Arc<Shared>,
    addrs: Vec<Addr>,
    started: Instant,
    spawner: Spawner,
    /// Rebuilds the handler of a connection that moved in from another process.
    resume: Resume,
    extension: Option<Extension>,
    lifecycle: Mutex<Lifecycle>,
    phase: watch::Sender<Phase>,
}

/// A handle on a running server; clones control the same server.
///
/// Dropping every handle leaves the server running; call [`stop`](ServerHandle::stop) to end it.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("name", &self.name())
            .field("addrs", &self.inner.addrs)
            .field("phase", &self.phase())
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn launch(
        shared: Arc<Shared>,
        listeners: Vec<Arc<Listener>>,
        spawner: Spawner,
        resume: Resume,
        extension: Option<Extension>,
    ) -> Result<Self> {
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let inner = Arc::new(Inner {
            shared,
            addrs,
            started: Instant::now(),
            spawner,
            resume,
            extension,
            lifecycle: Mutex::new(Lifecycle {
                listeners,
                acceptors: Vec::new(),
                sweeper: None,
                report: None,
            }),
            phase: watch::Sender::new(Phase::Running),
        });
        let handle = ServerHandle { inner };
        {
            let mut life = handle
                .inner
                .lifecycle
                .try_lock()
                .expect("a new server's lifecycle has no other user");
            handle.emit(EventKind::ListenerStart, None);
            let shared = handle.inner.shared.clone();
            life.sweeper = Some(tokio::spawn(async move {
                shared.timeouts.sweep(&shared.table).await
            }));
            handle.spawn_acceptors(&mut life);
        }
        Ok(handle)
    }

    fn emit(&self, kind: EventKind, duration: Option<Duration>) {
        let s = &self.inner.shared;
        s.telemetry.emit(|| {
            let e = Event::new(kind, &s.name);
            match duration {
                Some(d) => e.duration(d),
                None => e,
            }
        });
    }

    fn spawn_acceptors(&self, life: &mut Lifecycle) {
        let per_socket = self.inner.shared.opts.num_acceptors;
        let mut index = 0;
        for listener in &life.listeners {
            for _ in 0..per_socket {
                let task = (self.inner.spawner)(listener.clone(), self.inner.shared.clone(), index);
                life.acceptors.push(task);
                index += 1;
            }
        }
    }

    async fn stop_acceptors(life: &mut Lifecycle) {
        for task in &life.acceptors {
            task.abort();
        }
        for task in life.acceptors.drain(..) {
            // Aborted on purpose; the error says only that.
            let _ = task.await;
        }
    }

    /// Whether a connection accepted by another process may come in: a permit under
    /// `max_connections`, or why not. Refused over TLS (the handshake is long past), when the
    /// listener is full, or when it no longer runs.
    fn admit(&self) -> std::result::Result<tokio::sync::OwnedSemaphorePermit, &'static str> {
        let s = &self.inner.shared;
        if s.tls.is_some() {
            return Err("it serves TLS");
        }
        if self.phase() != Phase::Running {
            return Err("it is not running");
        }
        s.limiter
            .clone()
            .try_acquire_owned()
            .map_err(|_| "it is at max_connections")
    }

    /// Takes in a TCP connection accepted by another process (handed over at an upgrade), as
    /// if this listener's acceptors had accepted it: it counts toward `max_connections`, is
    /// listed, and drains on stop. `serve` runs it on a task of its own. `client`, the address
    /// its PROXY header gave, stands for its peer. Refused as [`admit`](Self::admit) says.
    pub(crate) fn adopt<F, Fut>(
        &self,
        tcp: tokio::net::TcpStream,
        client: Option<std::net::SocketAddr>,
        serve: F,
    ) -> std::result::Result<(), String>
    where
        F: FnOnce(Socket) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let permit = self.admit()?;
        let s = &self.inner.shared;
        let peer = Addr::Inet(tcp.peer_addr().map_err(|e| e.to_string())?);
        Conn::start(s, peer, client, permit, None, |conn| {
            serve(Socket::new(Stream::Tcp(tcp), conn))
        });
        Ok(())
    }

    /// From now on, when this server stops, each plain TCP connection whose handler agrees
    /// ([`Handler::handle_move`](crate::Handler::handle_move)) goes to `to`, between two
    /// callbacks, instead of draining here; the others drain. `atoll upgrade` sends them to
    /// the new process, which [adopts](Self::adopt_moved) them into the listener of the same
    /// name. Default is none: every connection drains.
    pub fn move_connections(&self, to: MoveTo) {
        self.inner.shared.move_to.set(to);
    }

    /// Takes in a connection that moved from another process: the handler is rebuilt from
    /// its state by [`Handler::restore`](crate::Handler::restore) on this listener's initial
    /// handler, handles the unread bytes first, then the connection goes on as if accepted
    /// here (it counts toward `max_connections`, is listed, and drains or moves on stop).
    ///
    /// Errors are [`ErrorKind::Refused`]: the listener serves TLS, is full, no longer runs,
    /// or the handler refused the state. The connection is then dropped, so closed.
    pub fn adopt_moved(&self, moved: Moved) -> Result<()> {
        let refused = |why: String| {
            Error::with_source(ErrorKind::Refused, why)
                .context(format!("listener `{}`", self.name()))
        };
        let permit = self.admit().map_err(|why| refused(why.to_owned()))?;
        let resumed = (self.inner.resume)(&moved.state)
            .map_err(|e| refused(format!("the handler cannot restore the state: {e}")))?;
        let Moved {
            tcp,
            unread,
            client,
            ..
        } = moved;
        let tcp = tcp
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(tcp))
            .map_err(|e| refused(e.to_string()))?;
        let peer = Addr::Inet(tcp.peer_addr().map_err(|e| refused(e.to_string()))?);
        Conn::start(&self.inner.shared, peer, client, permit, None, |conn| {
            resumed(tcp, conn, unread)
        });
        Ok(())
    }

    /// The value attached with [`Server::extension`](crate::Server::extension), if it is a `T`.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner.extension.clone()?.downcast().ok()
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The address actually bound (the first one, with several listening sockets: they all
    /// share it).
    pub fn local_addr(&self) -> &Addr {
        &self.inner.addrs[0]
    }

    /// The options the server runs with.
    pub fn options(&self) -> &ServerOptions {
        &self.inner.shared.opts
    }

    /// How long the server has been running.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Where the server is in its life.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// The telemetry hub, to attach and detach subscribers while the server runs.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.shared.telemetry
    }

    /// The live connections, oldest first.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.inner.shared.table.list()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.shared.table.len()
    }

    /// Copies of the listening sockets (new descriptors for the same sockets), to hand to
    /// another listener or process: the sockets stay open, and connects queue, for as long as
    /// any copy is open. Empty when suspended or stopped.
    pub async fn listening_sockets(&self) -> Result<Vec<OwnedFd>> {
        let life = self.inner.lifecycle.lock().await;
        let mut fds = Vec::with_capacity(life.listeners.len());
        for listener in &life.listeners {
            fds.push(listener.as_fd().try_clone_to_owned()?);
        }
        Ok(fds)
    }

    /// Stops accepting: the listening sockets close, so new connects are refused, while
    /// existing connections go on. [`resume`](Self::resume) binds the same addresses again.
    pub async fn suspend(&self) -> Result<()> {
        let mut life = self.inner.lifecycle.lock().await;
        if self.phase() != Phase::Running {
            return Ok(());
        }
        Self::stop_acceptors(&mut life).await;
        // The acceptors are gone, so these were the last references: the sockets close now.
        life.listeners.clear();
        self.inner.phase.send_replace(Phase::Suspended);
        self.emit(EventKind::ListenerSuspend, None);
        Ok(())
    }

    /// Accepts again after [`suspend`](Self::suspend).
    pub async fn resume(&self) -> Result<()> {
        let mut life = self.inner.lifecycle.lock().await;
        if self.phase() != Phase::Suspended {
            return Ok(());
        }
        let opts = &self.inner.shared.opts;
        let ctx = || format!("listener `{}`", self.name());
        for addr in &self.inner.addrs {
            match bind::rebind(addr, opts) {
                Ok(listener) => life.listeners.push(Arc::new(listener)),
                Err(e) => {
                    // Stay suspended, with no socket half-open.
                    life.listeners.clear();
                    return Err(e.context(ctx()));
                }
            }
        }
        self.spawn_acceptors(&mut life);
        self.inner.phase.send_replace(Phase::Running);
        self.emit(EventKind::ListenerResume, None);
        Ok(())
    }

    /// Stops with the listener's `shutdown_timeout`.
    pub async fn shutdown(&self) -> StopReport {
        self.stop(self.inner.shared.opts.shutdown_timeout).await
    }

    /// Stops the server: closes the listening sockets at once (new connects are refused), asks
    /// every connection to stop (its handler's shutdown callback runs with the socket still
    /// open), waits up to `timeout` for connections to end, then closes the rest.
    ///
    /// Calling it again, or from a clone, waits for the first stop and returns its report.
    pub async fn stop(&self, timeout: Duration) -> StopReport {
        let mut life = self.inner.lifecycle.lock().await;
        if let Some(report) = life.report {
            return report;
        }
        self.inner.phase.send_replace(Phase::Stopping);
        Self::stop_acceptors(&mut life).await;
        // The acceptors are gone, so these were the last references: the sockets close now.
        life.listeners.clear();

        let table = &self.inner.shared.table;
        let asked = table.stop_all();
        let forced = match tokio::time::timeout(timeout, table.emptied()).await {
            Ok(()) => 0,
            Err(_) => {
                let ids = table.abort_all();
                let s = &self.inner.shared;
                for id in &ids {
                    s.telemetry.emit(|| {
                        let mut e = Event::new(EventKind::ConnectionForced, &s.name);
                        e.connection = Some(*id);
                        e
                    });
                }
                table.emptied().await;
                ids.len()
            }
        };
        if let Some(sweeper) = life.sweeper.take() {
            sweeper.abort();
        }
        let report = StopReport {
            drained: asked.saturating_sub(forced),
            forced,
        };
        life.report = Some(report);
        // Its connections are gone: what their failures' budgets held back is summed up now.
        self.inner.shared.failure_logs.flush();
        self.emit(EventKind::ListenerStop, Some(self.uptime()));
        self.inner.phase.send_replace(Phase::Stopped);
        report
    }

    /// Resolves once the server has stopped (by any handle).
    pub async fn stopped(&self) {
        let mut rx = self.inner.phase.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|p| *p == Phase::Stopped).await;
    }
}
