//! [`Supervisor`]: the table of live server instances, which one or several daemons share;
//! list them, count them, end one, and hear how each one ended. Optionally with a
//! [`Supervise`] of the user's own, which runs the instances (erps's `server_supervisor`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::mpsc::UnboundedSender;

use super::service::Outgoing;
use crate::addr::Addr;

/// A live server instance, as [`Supervisor::instances`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The name of the daemon's listener.
    pub listener: String,
    /// The connection's id, unique within its listener.
    pub id: u64,
    /// The client's address.
    pub peer: Addr,
    /// When the instance was made (its client's hello accepted).
    pub started: SystemTime,
}

/// How an instance ended, as [`Supervisor::on_exit`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The client closed the connection between two frames, or the instance asked to
    /// disconnect ([`Ctx::disconnect`](super::Ctx::disconnect)).
    Normal,
    /// The connection was lost: a socket error, the client silent past the idle timeout, or
    /// the client closing in the middle of a frame.
    Disconnected,
    /// The daemon stopped, or [`Supervisor::terminate`] ended it.
    Stopped,
    /// The instance failed (it returned an error or panicked), or its client broke the
    /// protocol; `code` is the error code sent to the client (see
    /// [`wire::codes`](super::wire::codes)), `message` why.
    Failed {
        /// The error code.
        code: String,
        /// What went wrong.
        message: String,
    },
}

type ExitHook = Arc<dyn Fn(&InstanceInfo, &Exit) + Send + Sync>;

/// A supervisor of your own, which daemons hand their instances to (erps's
/// `server_supervisor: {module, name}`): put it in a [`Supervisor`] with
/// [`Supervisor::with`] and give that to the daemons
/// ([`Daemon::supervisor`](super::Daemon::supervisor)).
///
/// Each connection whose hello the daemon accepts becomes an [`Instance`], a future that
/// runs the service's `init`, its calls and casts, and its `terminate`; the daemon hands it
/// to [`start`](Supervise::start), which decides where it runs (a `tokio::spawn`, a runtime
/// of its own, a `JoinSet` it watches...), and tells [`exited`](Supervise::exited) how it
/// ended. The connection counts as open until the instance ends, so a stopping daemon still
/// drains it, and at its shutdown timeout ends it wherever it runs.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use atoll::rpc::{Ctx, Daemon, Exit, Instance, InstanceInfo, Protocol, Reply, Service};
/// use atoll::rpc::{Supervise, Supervisor};
/// use atoll::BoxError;
///
/// /// Runs every instance on a task of its own and counts those still running.
/// #[derive(Default)]
/// struct Counting {
///     running: AtomicUsize,
/// }
///
/// impl Supervise for Counting {
///     fn start(&self, instance: Instance) {
///         self.running.fetch_add(1, Ordering::Relaxed);
///         tokio::spawn(instance);
///     }
///
///     fn exited(&self, info: &InstanceInfo, exit: &Exit) {
///         self.running.fetch_sub(1, Ordering::Relaxed);
///         tracing::info!(listener = %info.listener, id = info.id, ?exit, "instance ended");
///     }
/// }
///
/// # struct Ping;
/// # impl Protocol for Ping {
/// #     const IDENTIFIER: &'static str = "example.ping";
/// #     const VERSION: &'static str = "1.0.0";
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Push = ();
/// # }
/// # struct Pong;
/// # impl Service for Pong {
/// #     type Protocol = Ping;
/// #     type Init = ();
/// #     async fn init(_: &Arc<()>, _: &mut Ctx<Self>) -> Result<Self, BoxError> { Ok(Pong) }
/// #     async fn call(&mut self, _: (), _: &mut Ctx<Self>) -> Result<Reply<()>, BoxError> {
/// #         Ok(().into())
/// #     }
/// # }
/// let counting = Arc::new(Counting::default());
/// let supervisor = Supervisor::with(counting.clone());
/// # async {
/// // Every connection's instance of `Pong` now goes through `counting`.
/// let daemon = Daemon::<Pong>::new(()).plain().supervisor(supervisor).start()?;
/// # daemon.shutdown().await;
/// # Ok::<(), atoll::Error>(())
/// # };
/// ```
pub trait Supervise: Send + Sync + 'static {
    /// Runs `instance` to its end: spawn it, or poll it in a task you keep. Dropping it
    /// unpolled refuses the connection: it closes without a hello, and
    /// [`exited`](Supervise::exited) hears [`Exit::Stopped`].
    fn start(&self, instance: Instance);

    /// Told how an instance given to [`start`](Supervise::start) ended, once it has: after
    /// its `terminate` and its connection's close, and after the [`Supervisor::on_exit`]
    /// hooks. Unlike those hooks, it also hears of instances whose `init` failed
    /// ([`Exit::Failed`]). It runs where the instance ran, so it should be quick. Default
    /// does nothing.
    fn exited(&self, info: &InstanceInfo, exit: &Exit) {
        let _ = (info, exit);
    }
}

impl<T: Supervise> Supervise for Arc<T> {
    fn start(&self, instance: Instance) {
        (**self).start(instance)
    }

    fn exited(&self, info: &InstanceInfo, exit: &Exit) {
        (**self).exited(info, exit)
    }
}

/// One connection's server instance, as a daemon hands it to [`Supervise::start`]: a future
/// that serves the connection from the service's `init` to its `terminate`. Spawn it or
/// await it; it is `Send` and `'static`.
#[must_use = "an instance does nothing unless polled; dropping it refuses the connection"]
pub struct Instance {
    info: InstanceInfo,
    run: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Instance {
    pub(crate) fn new(
        info: InstanceInfo,
        run: impl Future<Output = ()> + Send + 'static,
    ) -> Instance {
        Instance {
            info,
            run: Box::pin(run),
        }
    }

    /// Which connection it serves.
    pub fn info(&self) -> &InstanceInfo {
        &self.info
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("info", &self.info)
            .finish()
    }
}

impl Future for Instance {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.run.as_mut().poll(cx)
    }
}

struct Entry {
    info: InstanceInfo,
    /// The daemon the instance belongs to ([`Supervisor::daemon_token`]).
    daemon: u64,
    /// The connection's channel, to ask it to end.
    control: UnboundedSender<Outgoing>,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<u64, Entry>>,
    hooks: Mutex<Vec<ExitHook>>,
    next_key: AtomicU64,
    /// Where instances run: the user's [`Supervise`], or (none) each on its connection's
    /// task.
    runner: Option<Arc<dyn Supervise>>,
}

/// The table of live server instances: one entry per connection whose hello was accepted, from
/// its [`init`](super::Service::init) to its end. Every daemon has one; give several daemons
/// the same one ([`Daemon::supervisor`](super::Daemon::supervisor)) to see all their instances
/// together. Clones share the same table. Made with [`Supervisor::with`], it also hands the
/// instances to a [`Supervise`] of yours to run.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("instances", &self.count())
            .field("custom", &self.inner.runner.is_some())
            .finish()
    }
}

/// Gives every daemon its own token, whatever supervisor it uses.
static NEXT_DAEMON: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one insert, remove or push: a poisoned table is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    /// An empty table; each instance runs on its connection's task.
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// An empty table whose daemons hand every instance to `runner`
    /// ([`Supervise::start`]) and tell it how each ended ([`Supervise::exited`]).
    pub fn with(runner: impl Supervise) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                runner: Some(Arc::new(runner)),
                ..Inner::default()
            }),
        }
    }

    /// The live instances, by listener name then connection id.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.list(|_| true)
    }

    /// How many instances are live.
    pub fn count(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// Ends the instance of connection `id` on the daemon named `listener`: its connection
    /// closes after the message it is handling, and it exits with [`Exit::Stopped`]. False
    /// when there is no such instance.
    pub fn terminate(&self, listener: &str, id: u64) -> bool {
        lock(&self.inner.entries)
            .values()
            .filter(|e| e.info.id == id && e.info.listener == listener)
            .any(|e| e.control.send(Outgoing::Terminate).is_ok())
    }

    /// Calls `f` each time an instance ends, with how it ended, after its
    /// [`terminate`](super::Service::terminate) ran. It runs on the connection's task, so it
    /// should be quick.
    pub fn on_exit(&self, f: impl Fn(&InstanceInfo, &Exit) + Send + Sync + 'static) {
        lock(&self.inner.hooks).push(Arc::new(f));
    }

    // ===== for the daemons =====

    /// The user's supervisor, if any.
    pub(crate) fn runner(&self) -> Option<&Arc<dyn Supervise>> {
        self.inner.runner.as_ref()
    }

    /// A token unique to one daemon, naming its instances.
    pub(crate) fn daemon_token() -> u64 {
        NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds an instance; the key returned removes it.
    pub(crate) fn enter(
        &self,
        daemon: u64,
        info: InstanceInfo,
        control: UnboundedSender<Outgoing>,
    ) -> u64 {
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            info,
            daemon,
            control,
        };
        lock(&self.inner.entries).insert(key, entry);
        key
    }

    /// Removes an instance and tells the exit hooks how it ended.
    pub(crate) fn leave(&self, key: u64, exit: &Exit) {
        let Some(entry) = lock(&self.inner.entries).remove(&key) else {
            return;
        };
        let hooks: Vec<ExitHook> = lock(&self.inner.hooks).clone();
        for hook in hooks {
            hook(&entry.info, exit);
        }
    }

    /// The live instances of one daemon.
    pub(crate) fn instances_of(&self, daemon: u64) -> Vec<InstanceInfo> {
        self.list(|e| e.daemon == daemon)
    }

    /// How many instances of one daemon are live.
    pub(crate) fn count_of(&self, daemon: u64) -> usize {
        lock(&self.inner.entries)
            .values()
            .filter(|e| e.daemon == daemon)
            .count()
    }

    fn list(&self, keep: impl Fn(&Entry) -> bool) -> Vec<InstanceInfo> {
        let mut out: Vec<InstanceInfo> = lock(&self.inner.entries)
            .values()
            .filter(|e| keep(e))
            .map(|e| e.info.clone())
            .collect();
        out.sort_by(|a, b| (&a.listener, a.id).cmp(&(&b.listener, b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::sync::mpsc;

    fn info(listener: &str, id: u64) -> InstanceInfo {
        InstanceInfo {
            listener: listener.into(),
            id,
            peer: Addr::Inet(SocketAddr::from(([127, 0, 0, 1], 5000 + id as u16))),
            started: SystemTime::now(),
        }
    }

    #[test]
    fn instances_are_listed_by_listener_then_id_and_counted_per_daemon() {
        let sup = Supervisor::new();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (a, b) = (Supervisor::daemon_token(), Supervisor::daemon_token());
        sup.enter(a, info("b", 2), tx.clone());
        let k = sup.enter(b, info("a", 9), tx.clone());
        sup.enter(a, info("b", 1), tx);
        let listed: Vec<(String, u64)> = sup
            .instances()
            .into_iter()
            .map(|i| (i.listener, i.id))
            .collect();
        assert_eq!(
            listed,
            vec![("a".into(), 9), ("b".into(), 1), ("b".into(), 2)]
        );
        assert_eq!((sup.count(), sup.count_of(a), sup.count_of(b)), (3, 2, 1));
        assert_eq!(sup.instances_of(a).len(), 2);
        sup.leave(k, &Exit::Normal);
        assert_eq!((sup.count(), sup.count_of(b)), (2, 0));
    }

    #[test]
    fn terminate_reaches_the_named_instance_only() {
        let sup = Supervisor::new();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let d = Supervisor::daemon_token();
        sup.enter(d, info("rpc", 1), tx1);
        sup.enter(d, info("rpc", 2), tx2);
        assert!(sup.terminate("rpc", 2));
        assert!(!sup.terminate("rpc", 3));
        assert!(!sup.terminate("other", 1));
        assert!(matches!(rx2.try_recv(), Ok(Outgoing::Terminate)));
        assert!(rx1.try_recv().is_err());
        drop(rx1);
        assert!(!sup.terminate("rpc", 1), "its connection is gone");
    }

    #[test]
    fn exit_hooks_hear_each_end_once() {
        let sup = Supervisor::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        sup.on_exit(move |i, e| s.lock().unwrap().push((i.id, e.clone())));
        let (tx, _rx) = mpsc::unbounded_channel();
        let key = sup.enter(Supervisor::daemon_token(), info("rpc", 4), tx);
        let failed = Exit::Failed {
            code: "server error".into(),
            message: "boom".into(),
        };
        sup.leave(key, &failed);
        sup.leave(key, &Exit::Normal);
        assert_eq!(*seen.lock().unwrap(), vec![(4, failed)]);
    }
}
