//! The table of live connections: what `connections()` lists, and how `stop` reaches every
//! connection (a stop signal first, an abort when the shutdown timeout runs out).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// One connection's entry, shared between its task and the table.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    pub(crate) peer: Addr,
    pub(crate) started: Instant,
    stopping: AtomicBool,
    /// Wakes waiters of [`stopped`](Slot::stopped) (a handler that took the socket over).
    notify: Notify,
    /// Wakes the connection loop, which polls [`poll_stopped`](Slot::poll_stopped): a waker
    /// slot instead of a pinned `Notified` keeps every connection's task 100 bytes smaller.
    loop_waker: Mutex<Option<Waker>>,
}

impl Slot {
    pub(crate) fn new(id: u64, peer: Addr) -> Self {
        Slot {
            id,
            peer,
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            notify: Notify::new(),
            loop_waker: Mutex::new(None),
        }
    }

    /// Resolves once the server has asked this connection to stop.
    pub(crate) async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Ready once the server has asked this connection to stop; for the connection loop only
    /// (one waker is kept).
    pub(crate) fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopping() {
            return Poll::Ready(());
        }
        {
            let mut w = self.loop_waker.lock().unwrap_or_else(|p| p.into_inner());
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        // Checked again after registering, so a stop between the two checks is not missed.
        if self.is_stopping() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify.notify_waiters();
        let waker = self
            .loop_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Live connections by id, with the handle that aborts each one's task.
type Live = HashMap<u64, (Arc<Slot>, AbortHandle)>;

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

    /// Adds a connection, spawning its task while the table is locked so the task cannot remove
    /// its entry before it is there.
    pub(crate) fn insert_with(&self, slot: Arc<Slot>, spawn: impl FnOnce() -> AbortHandle) {
        let mut live = self.lock();
        let id = slot.id;
        let abort = spawn();
        live.insert(id, (slot, abort));
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut live = self.lock();
        live.remove(&id);
        if live.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn list(&self) -> Vec<ConnectionInfo> {
        let mut out: Vec<_> = self
            .lock()
            .values()
            .map(|(s, _)| ConnectionInfo {
                id: s.id,
                peer: s.peer.clone(),
                age: s.started.elapsed(),
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Asks every connection to stop; returns how many there were.
    pub(crate) fn stop_all(&self) -> usize {
        let live = self.lock();
        for (slot, _) in live.values() {
            slot.stop();
        }
        live.len()
    }

    /// Aborts every connection still open; returns their ids.
    pub(crate) fn abort_all(&self) -> Vec<u64> {
        let live = self.lock();
        live.iter()
            .map(|(id, (_, abort))| {
                abort.abort();
                *id
            })
            .collect()
    }

    /// Waits until the table is empty.
    pub(crate) async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }
}
