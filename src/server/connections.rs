//! The table of live connections: what `connections()` lists, and how `stop` reaches every
//! connection (a stop signal first, an abort when the shutdown timeout runs out).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::addr::Addr;

/// A live connection, as listed by [`ServerHandle::connections`](crate::ServerHandle::connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id, unique within its listener.
    pub id: u64,
    /// The peer's address.
    pub peer: Addr,
    /// How long the connection has been open.
    pub age: Duration,
}

/// One connection's entry, shared between its task, the table and the timeout sweeper.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    /// Where the table keeps this connection.
    key: AtomicUsize,
    /// The socket's peer: the client, or the proxy in front of it.
    peer: Addr,
    /// The client's address from a PROXY protocol header, which stands for `peer` once known.
    client: OnceLock<Box<Addr>>,
    pub(crate) started: Instant,
    stopping: AtomicBool,
    /// When the read timeout runs out, as nanoseconds on the listener's
    /// [`Timeouts`](crate::timeouts::Timeouts) clock.
    pub(crate) deadline: AtomicU64,
    /// Set by the sweeper when the deadline has passed; taken by the connection loop.
    expired: AtomicBool,
    /// Wakes waiters of [`stopped`](Slot::stopped) (a handler that took the socket over).
    notify: Notify,
    /// The connection loop's waker, woken on a stop request and on an expired deadline. A
    /// waker slot instead of a pinned `Notified` and a timer keeps every connection's task
    /// over 200 bytes smaller.
    loop_waker: Mutex<Option<Waker>>,
}

/// What the server asked of a connection, as seen by [`Slot::poll_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Stop,
    Expired,
}

impl Slot {
    pub(crate) fn new(id: u64, peer: Addr) -> Self {
        Slot {
            id,
            key: AtomicUsize::new(usize::MAX),
            peer,
            client: OnceLock::new(),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            deadline: AtomicU64::new(u64::MAX),
            expired: AtomicBool::new(false),
            notify: Notify::new(),
            loop_waker: Mutex::new(None),
        }
    }

    /// The connection's peer as atoll shows it: the client's address from its PROXY header,
    /// else the socket's peer.
    #[inline]
    pub(crate) fn peer(&self) -> &Addr {
        self.client.get().map_or(&self.peer, |c| c)
    }

    /// The client's address a PROXY protocol header gave, if one did.
    pub(crate) fn client(&self) -> Option<std::net::SocketAddr> {
        self.client.get().and_then(|c| c.inet())
    }

    /// Sets the client's address a PROXY protocol header gave (once; later calls do nothing).
    pub(crate) fn set_client(&self, client: Addr) {
        let _ = self.client.set(Box::new(client));
    }

    /// Resolves once the server has asked this connection to stop.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopping() {
                return;
            }
            notified.await;
        }
    }

    /// For the connection loop: a stop request (once `stop_seen` is false) or an expired
    /// deadline. The waker is stored on the first call only (`registered`): a task's waker
    /// does not change, so later polls are two atomic loads.
    pub(crate) fn poll_signal(
        &self,
        cx: &mut Context<'_>,
        registered: &mut bool,
        stop_seen: bool,
    ) -> Poll<Signal> {
        if !*registered {
            let mut w = self.loop_waker.lock().unwrap_or_else(|p| p.into_inner());
            *w = Some(cx.waker().clone());
            *registered = true;
        }
        // Read after the waker is in place, so a signal raised in between still wakes us.
        if !stop_seen && self.is_stopping() {
            Poll::Ready(Signal::Stop)
        } else if self.expired.load(Ordering::Acquire) && self.expired.swap(false, Ordering::AcqRel)
        {
            Poll::Ready(Signal::Expired)
        } else {
            Poll::Pending
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn wake_loop(&self) {
        if let Some(w) = &*self.loop_waker.lock().unwrap_or_else(|p| p.into_inner()) {
            w.wake_by_ref();
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.wake_loop();
    }

    /// Marks the deadline as passed and wakes the connection, once.
    pub(crate) fn expire(&self) {
        if !self.expired.swap(true, Ordering::AcqRel) {
            self.wake_loop();
        }
    }
}

/// A live connection and the handle that aborts its task (`None` for the moment between its
/// entry and its task).
type Entry = (Arc<Slot>, Option<AbortHandle>);

/// Live connections, with the handle that aborts each one's task: a slab, so adding and
/// removing one is an index, with no hashing, on every accept and close.
#[derive(Debug, Default)]
struct Live {
    entries: Vec<Option<Entry>>,
    /// Indexes of empty entries, reused first.
    free: Vec<usize>,
    len: usize,
    /// Every task has been aborted ([`Table::abort_all`]): a task spawned since is aborted as
    /// soon as its handle comes.
    aborted: bool,
}

impl Live {
    fn insert(&mut self, entry: Entry) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.entries[key] = Some(entry);
                key
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.take().is_some() {
                self.len -= 1;
                self.free.push(key);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().flatten()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    live: Mutex<Live>,
    emptied: Notify,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Live> {
        // A panic while holding this lock cannot leave the map half-updated (every update is a
        // single insert or remove), so a poisoned lock is still good to use.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection, then spawns its task. The entry comes first, so that a task that
    /// ends at once finds it to remove; the task is spawned with the table unlocked, since
    /// tokio drops a task's future on the spot, on this thread, when its runtime is shutting
    /// down, and the connection in it then removes its entry, which takes the lock.
    pub(crate) fn insert_with(&self, slot: Arc<Slot>, spawn: impl FnOnce() -> AbortHandle) {
        {
            let mut live = self.lock();
            let key = live.insert((slot.clone(), None));
            slot.key.store(key, Ordering::Relaxed);
        }
        self.set_abort(&slot, spawn());
    }

    /// Moves a connection to a new task, spawned by `spawn` (with the table unlocked, as for
    /// [`insert_with`](Self::insert_with)): the table aborts that one from now on. For a
    /// connection that changes protocol and leaves its first task's space behind.
    pub(crate) fn respawn(&self, slot: &Arc<Slot>, spawn: impl FnOnce() -> AbortHandle) {
        self.set_abort(slot, spawn());
    }

    /// Gives `slot`'s entry the handle of its task, if the entry is still this connection's
    /// (a task that has ended already removed it, and its key may be another's since); aborts
    /// the task at once if every task has been aborted meanwhile.
    fn set_abort(&self, slot: &Arc<Slot>, abort: AbortHandle) {
        let mut live = self.lock();
        if live.aborted {
            abort.abort();
        }
        let key = slot.key.load(Ordering::Relaxed);
        if let Some(Some(entry)) = live.entries.get_mut(key) {
            if Arc::ptr_eq(&entry.0, slot) {
                entry.1 = Some(abort);
            }
        }
    }

    pub(crate) fn remove(&self, slot: &Slot) {
        let mut live = self.lock();
        live.remove(slot.key.load(Ordering::Relaxed));
        if live.len == 0 {
            self.emptied.notify_waiters();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    pub(crate) fn list(&self) -> Vec<ConnectionInfo> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(s, _)| ConnectionInfo {
                id: s.id,
                peer: s.peer().clone(),
                age: s.started.elapsed(),
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Asks every connection to stop; returns how many there were.
    pub(crate) fn stop_all(&self) -> usize {
        let live = self.lock();
        for (slot, _) in live.iter() {
            slot.stop();
        }
        live.len
    }

    /// Aborts every connection still open; returns their ids.
    pub(crate) fn abort_all(&self) -> Vec<u64> {
        let mut live = self.lock();
        live.aborted = true;
        live.iter()
            .map(|(slot, abort)| {
                if let Some(abort) = abort {
                    abort.abort();
                }
                slot.id
            })
            .collect()
    }

    /// Runs `f` on every live connection, with the table locked.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Slot)) {
        for (slot, _) in self.lock().iter() {
            f(slot);
        }
    }

    /// Waits until the table is empty.
    pub(crate) async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().len == 0 {
                return;
            }
            notified.await;
        }
    }
}
