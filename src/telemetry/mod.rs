//! Telemetry: the events a listener emits, and the hub subscribers attach to.
//!
//! Every listener owns a [`Telemetry`] hub. Subscribers ([`Subscriber`]) can be attached and
//! detached while it runs; when none is attached, emitting an event costs one relaxed atomic
//! load and a branch, and the event is never built.
//!
//! atoll ships two subscribers: [`TracingLogger`] logs every event through `tracing` at a chosen
//! level, failures at a bounded rate (a [`FailureLogBudget`] per kind: by default
//! [`FAILURE_LOG_LINES`] per [`FAILURE_LOG_WINDOW`]), and [`MetricsRecorder`] feeds counters,
//! a gauge and histograms to the `metrics` facade, each listener's handles registered once
//! (the metrics, their names and labels are listed in its module, `telemetry/recorder.rs`).
//!
//! A hub also carries the failure log budget of its listener
//! ([`Telemetry::with_failure_log_budget`]): the lines a peer can trigger outside the events
//! (a mounted service's error, an RPC service's panic in `terminate`...) are held to it.

pub(crate) mod budget;
#[cfg(test)]
pub(crate) mod capture;
mod event;
pub(crate) mod failure_log;
mod logger;
mod recorder;

pub use budget::{
    FailureLogBudget, InvalidFailureLogWindow, FAILURE_LOG_LINES, FAILURE_LOG_WINDOW,
};
pub use event::{Event, EventKind};
pub use logger::TracingLogger;
pub use recorder::MetricsRecorder;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Receives a listener's events. Called inline on the task that emits the event, so it should be
/// quick and must not block.
pub trait Subscriber: Send + Sync + 'static {
    /// One event happened.
    fn on_event(&self, event: &Event<'_>);
}

impl<F> Subscriber for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// Names one attachment, to detach it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

type Subscribers = Vec<(SubscriptionId, Arc<dyn Subscriber>)>;

/// A listener's telemetry hub, and the failure log budget of its listener.
pub struct Telemetry {
    active: AtomicBool,
    subscribers: ArcSwap<Subscribers>,
    next_id: AtomicU64,
    failure_log_budget: FailureLogBudget,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::with_failure_log_budget(FailureLogBudget::default())
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("subscribers", &self.subscribers.load().len())
            .field("failure_log_budget", &self.failure_log_budget)
            .finish()
    }
}

impl Telemetry {
    /// A hub whose listener holds the log lines a peer can trigger outside the events (a
    /// mounted HTTP service's error, an RPC service's panic in `terminate`, ...) to `budget`,
    /// each kind of line with its own; the loggers `log_events` attaches take it too. Default
    /// ([`Telemetry::default`]) is [`FailureLogBudget::default()`], 10 lines per 10 s (the
    /// config keys `failure_log_lines` and `failure_log_window`). A listener reads it when it
    /// starts.
    pub fn with_failure_log_budget(budget: FailureLogBudget) -> Self {
        Telemetry {
            active: AtomicBool::new(false),
            subscribers: ArcSwap::from_pointee(Vec::new()),
            next_id: AtomicU64::new(1),
            failure_log_budget: budget,
        }
    }

    /// The failure log budget of this hub's listener.
    pub fn failure_log_budget(&self) -> FailureLogBudget {
        self.failure_log_budget
    }

    /// Attaches a subscriber; it sees every event from now on.
    pub fn attach(&self, subscriber: impl Subscriber) -> SubscriptionId {
        self.attach_arc(Arc::new(subscriber))
    }

    /// Attaches a shared subscriber.
    pub fn attach_arc(&self, subscriber: Arc<dyn Subscriber>) -> SubscriptionId {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.subscribers.rcu(|current| {
            let mut next = Subscribers::clone(current);
            next.push((id, subscriber.clone()));
            next
        });
        self.active.store(true, Ordering::Release);
        id
    }

    /// Detaches a subscriber; returns false when it was not attached.
    pub fn detach(&self, id: SubscriptionId) -> bool {
        let previous = self.subscribers.rcu(|current| {
            let mut next = Subscribers::clone(current);
            next.retain(|(i, _)| *i != id);
            next
        });
        let found = previous.iter().any(|(i, _)| *i == id);
        self.active
            .store(!self.subscribers.load().is_empty(), Ordering::Release);
        found
    }

    /// True when at least one subscriber is attached.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Emits the event `build` makes, building it only when someone listens.
    #[inline]
    pub fn emit<'a>(&self, build: impl FnOnce() -> Event<'a>) {
        if self.is_active() {
            self.dispatch(&build());
        }
    }

    #[cold]
    fn dispatch(&self, event: &Event<'_>) {
        for (_, s) in self.subscribers.load().iter() {
            s.on_event(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn events_reach_attached_subscribers_only() {
        let hub = Telemetry::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let built = AtomicU64::new(0);
        hub.emit(|| {
            built.fetch_add(1, Ordering::Relaxed);
            Event::new(EventKind::ListenerStart, "x")
        });
        assert_eq!(built.load(Ordering::Relaxed), 0, "built with no subscriber");
        let s = seen.clone();
        let id = hub.attach(move |e: &Event<'_>| s.lock().unwrap().push(e.kind));
        hub.emit(|| Event::new(EventKind::ListenerStart, "x"));
        assert!(hub.detach(id));
        assert!(!hub.detach(id));
        hub.emit(|| Event::new(EventKind::ListenerStop, "x"));
        assert_eq!(*seen.lock().unwrap(), vec![EventKind::ListenerStart]);
        assert!(!hub.is_active());
    }
}
