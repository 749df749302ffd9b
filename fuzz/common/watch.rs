//! What a fuzz target's listener reports through telemetry that no input may cause: a
//! connection task that panicked, and an answer with a 5xx status (nothing a client sends is
//! the server's fault, and no resource of the targets answers 5xx on purpose). Shared by the
//! HTTP and the WebSocket targets (each includes this file with `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use atoll::telemetry::{Event, EventKind};

/// The failures seen, and the first one's description.
#[derive(Default)]
pub struct Watch {
    pub panics: AtomicU64,
    pub server_errors: AtomicU64,
    pub first: Mutex<Option<String>>,
}

impl Watch {
    /// Notes `e` if it is a failure; a listener's subscriber.
    pub fn observe(&self, e: &Event<'_>) {
        match e.kind {
            EventKind::HandlerPanic => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                self.note(format!(
                    "a connection task panicked: {:?}",
                    e.error.map(|e| e.to_string())
                ));
            }
            EventKind::HttpRequest if e.status.is_some_and(|s| s >= 500) => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                self.note(format!(
                    "answered {:?} to {:?} {:?}",
                    e.status, e.method, e.path
                ));
            }
            _ => {}
        }
    }

    fn note(&self, what: String) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(what);
    }

    /// The first failure seen, if any.
    pub fn failure(&self) -> Option<String> {
        if self.panics.load(Ordering::Relaxed) + self.server_errors.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        Some(first.clone().unwrap_or_default())
    }
}
