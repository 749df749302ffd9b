//! [`Groups`]: named groups of WebSocket connections, to broadcast to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::conn::Outgoing;
use super::message::WsMessage;

type Members = HashMap<u64, mpsc::Sender<Outgoing>>;

/// Named groups of connections (a chat room, the viewers of a page). A connection joins with
/// [`WsConn::join`](super::WsConn::join) and leaves when it ends. Each
/// [`WebSocket`](super::WebSocket) route has its own, unless given a shared one
/// ([`WebSocket::groups`](super::WebSocket::groups)); clones share the same groups, so the
/// application can keep one to broadcast from anywhere.
#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<Mutex<HashMap<String, Members>>>,
}

impl Groups {
    /// No groups yet.
    pub fn new() -> Groups {
        Groups::default()
    }

    /// Queues `message` on every connection of group `name`; returns how many took it. A
    /// connection whose send queue is full misses it (it reads slower than the group talks),
    /// rather than holding up the others.
    pub fn broadcast(&self, name: &str, message: impl Into<WsMessage>) -> usize {
        let message = message.into();
        let groups = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(members) = groups.get(name) else {
            return 0;
        };
        members
            .values()
            .filter(|tx| tx.try_send(Outgoing::Send(message.clone())).is_ok())
            .count()
    }

    /// How many connections group `name` has.
    pub fn len(&self, name: &str) -> usize {
        let groups = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        groups.get(name).map_or(0, HashMap::len)
    }

    /// The names of the groups with at least one connection.
    pub fn names(&self) -> Vec<String> {
        let groups = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        groups.keys().cloned().collect()
    }

    pub(crate) fn join(&self, name: &str, id: u64, tx: mpsc::Sender<Outgoing>) {
        let mut groups = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        groups.entry(name.to_owned()).or_default().insert(id, tx);
    }

    pub(crate) fn leave(&self, name: &str, id: u64) {
        let mut groups = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = groups.get_mut(name) {
            members.remove(&id);
            if members.is_empty() {
                groups.remove(name);
            }
        }
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
