//! A subscriber that feeds the `metrics` facade, with each listener's metric handles
//! registered once, so that an event costs a few atomic adds and no allocation. The metrics
//! are listed on [`MetricsRecorder`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram};

use super::{Event, EventKind, Subscriber};

/// Records a listener's events as `metrics`: counters of connections accepted, refused and
/// failed, a gauge of open connections, byte counters, HTTP requests by status class, RPC
/// calls by outcome, and duration histograms.
///
/// # Metrics
///
/// Every metric is labelled `listener` (the listener's name). Names follow Prometheus's
/// conventions: counters end in `_total`, durations are histograms in `_seconds`, byte counts
/// end in `_bytes_total`.
///
/// | name | type | more labels | counts |
/// | --- | --- | --- | --- |
/// | `atoll_connections_accepted_total` | counter | | connections accepted (and connections moved in from another process at an upgrade) |
/// | `atoll_connections_open` | gauge | | connections open now |
/// | `atoll_connections_refused_total` | counter | `reason` | connections closed at once by a limit or a check (`max_connections_exceeded`, and every other refusal event) |
/// | `atoll_failures_total` | counter | `event` | other failures: accept errors, EMFILE, TLS handshake errors, read and write errors, handler errors and panics, forced closes, RPC failures (`event` is the event's name, such as `connection.handshake_error`) |
/// | `atoll_received_bytes_total` | counter | | bytes received by handlers (after TLS), counted when their connection ends |
/// | `atoll_sent_bytes_total` | counter | | bytes sent by handlers, files included (before TLS), counted when their connection ends |
/// | `atoll_connection_duration_seconds` | histogram | | how long connections lasted: their handler's run, from accept to close |
/// | `atoll_handshake_duration_seconds` | histogram | | how long TLS handshakes took |
/// | `atoll_http_requests_total` | counter | `status` | HTTP requests answered, by status class: `1xx`, `2xx`, `3xx`, `4xx`, `5xx` |
/// | `atoll_http_request_duration_seconds` | histogram | | from a request's head to its response's head: the resource's (or mounted service's) handling |
/// | `atoll_rpc_calls_total` | counter | `outcome` | RPC calls answered: `ok`, or the error code (see `rpc::wire::codes`) |
/// | `atoll_rpc_call_duration_seconds` | histogram | | from a call's frame to its reply |
///
/// The `atoll` binary adds `atoll_build_info{version}` (always 1), `atoll_reloads_total{outcome}`
/// and `atoll_upgrades_total{outcome}` (`ok` or `failed`), which have no listener label.
///
/// Like every counter, these count from the process's start. `atoll_upgrades_total` is
/// counted by the process an upgrade was asked of: a `failed` one by the process that goes on
/// serving, where `/metrics` shows it; an `ok` one as that process hands its listeners over
/// to the new process and exits. From then on the admin port (its kept-alive connections
/// included, which move) answers from the new process, which starts without the series: a
/// successful upgrade shows, as any new process does, as counters starting again, which
/// Prometheus's `rate()` and `increase()` take as a reset.
///
/// Bytes are counted from a connection's statistics when it ends, not at every read and write,
/// so that the per-read path pays nothing: a long-lived connection's bytes show when it
/// closes.
///
/// Which events are refusals is decided by elimination: every failure event
/// ([`EventKind::is_error`]) that is not one of the failures listed for
/// `atoll_failures_total` is a refusal, its `reason` the event's name without its span
/// (`acceptor.max_connections_exceeded` gives `max_connections_exceeded`). So a new kind of
/// refusal is counted without a change here.
///
/// # Installing
///
/// Install a `metrics` recorder (the Prometheus exporter of the `admin` kind,
/// [`http::Metrics`](crate::http::Metrics), or any other) before the listener's first event:
/// the recorder registers each listener's handles with the global recorder once, at that
/// event, and keeps them. Attach it before the listener starts, so that the open-connections
/// gauge sees every connection's start and stop. Clones share their handles; one recorder may
/// serve several listeners (the first one it sees is found fastest).
#[derive(Debug, Clone, Default)]
pub struct MetricsRecorder {
    cache: Arc<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// The handles of the first listener seen: the only one when a recorder is attached per
    /// listener, as `atoll serve` does.
    first: OnceLock<ListenerMetrics>,
    /// Listeners seen after the first, when one recorder serves several: read without a
    /// lock, added to under `adding`.
    others: ArcSwap<Vec<Arc<ListenerMetrics>>>,
    adding: Mutex<()>,
}

/// One listener's handles. The ones of events that come rarely (failures, RPC errors) are
/// registered when first seen.
#[derive(Debug)]
struct ListenerMetrics {
    listener: Box<str>,
    /// The address of the name its first event carried (the listener's own, which every
    /// event of that listener carries), until that listener stops: recognising a listener
    /// by it spares comparing names. 0 once it stopped, as the address may then be reused.
    seen_at: AtomicUsize,
    accepted: Counter,
    open: Gauge,
    received: Counter,
    sent: Counter,
    connection_duration: Histogram,
    handshake_duration: Histogram,
    /// `1xx` to `5xx`, then any other status.
    requests: [Counter; 6],
    request_duration: Histogram,
    rpc_ok: Counter,
    rpc_duration: Histogram,
    /// Failures and refusals, by kind.
    failures: Mutex<Vec<(EventKind, Counter)>>,
    /// RPC calls that failed, by code.
    rpc_failed: Mutex<Vec<(Box<str>, Counter)>>,
}

/// The status classes of `atoll_http_requests_total`, by the status's first digit.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl MetricsRecorder {
    /// A recorder feeding the global `metrics` recorder.
    pub fn new() -> Self {
        MetricsRecorder::default()
    }

    /// Gives the global `metrics` recorder the help text and unit of every metric this
    /// recorder and the `atoll` binary record. An exporter that shows them (Prometheus's
    /// `# HELP` lines) calls this once; [`http::Metrics`](crate::http::Metrics) does.
    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(
            "atoll_connections_accepted_total",
            "Connections accepted, by listener."
        );
        describe_gauge!(
            "atoll_connections_open",
            "Connections open now, by listener."
        );
        describe_counter!(
            "atoll_connections_refused_total",
            "Connections closed at once by a limit or a check, by listener and reason."
        );
        describe_counter!(
            "atoll_failures_total",
            "Failure events other than refusals, by listener and event."
        );
        describe_counter!(
            "atoll_received_bytes_total",
            Unit::Bytes,
            "Bytes received by handlers, by listener."
        );
        describe_counter!(
            "atoll_sent_bytes_total",
            Unit::Bytes,
            "Bytes sent by handlers, by listener."
        );
        describe_histogram!(
            "atoll_connection_duration_seconds",
            Unit::Seconds,
            "How long connections lasted, by listener."
        );
        describe_histogram!(
            "atoll_handshake_duration_seconds",
            Unit::Seconds,
            "How long TLS handshakes took, by listener."
        );
        describe_counter!(
            "atoll_http_requests_total",
            "HTTP requests answered, by listener and status class."
        );
        describe_histogram!(
            "atoll_http_request_duration_seconds",
            Unit::Seconds,
            "Time from an HTTP request's head to its response's head, by listener."
        );
        describe_counter!(
            "atoll_rpc_calls_total",
            "RPC calls answered, by listener and outcome (ok or the error code)."
        );
        describe_histogram!(
            "atoll_rpc_call_duration_seconds",
            Unit::Seconds,
            "Time from an RPC call's frame to its reply, by listener."
        );
        describe_gauge!(
            "atoll_build_info",
            "Always 1; the version label says which atoll runs."
        );
        describe_counter!("atoll_reloads_total", "Config reloads, by outcome.");
        describe_counter!(
            "atoll_upgrades_total",
            "Live upgrades asked of this process, by outcome. A failed one is counted by the \
             process that goes on serving; an ok one by the old process as it hands over and \
             exits, so the new process, which answers from then on, starts without it."
        );
    }

    /// Records an event of a listener other than the first this recorder saw, or the first
    /// event of all.
    #[cold]
    #[inline(never)]
    fn record_other(&self, e: &Event<'_>) {
        let first = self
            .cache
            .first
            .get_or_init(|| ListenerMetrics::register(e.listener));
        match first.is(e.listener) {
            true => first.record(e),
            false => self.other(e.listener).record(e),
        }
    }

    fn other(&self, listener: &str) -> Arc<ListenerMetrics> {
        let find = |others: &[Arc<ListenerMetrics>]| {
            others.iter().find(|m| &*m.listener == listener).cloned()
        };
        if let Some(m) = find(&self.cache.others.load()) {
            return m;
        }
        let _one_at_a_time = self.cache.adding.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = find(&self.cache.others.load()) {
            return m;
        }
        let m = Arc::new(ListenerMetrics::register(listener));
        self.cache.others.rcu(|others| {
            let mut others = Vec::clone(others);
            others.push(m.clone());
            others
        });
        m
    }
}

impl Subscriber for MetricsRecorder {
    #[inline]
    fn on_event(&self, e: &Event<'_>) {
        // The events of every read and write: their bytes are counted from the connection's
        // statistics when it stops, so that the hottest path pays one branch here.
        if matches!(
            e.kind,
            EventKind::Recv | EventKind::Send | EventKind::Sendfile
        ) {
            return;
        }
        match self.cache.first.get() {
            Some(m) if m.is(e.listener) => m.record(e),
            _ => self.record_other(e),
        }
    }
}

// ===== impl ListenerMetrics =====

impl ListenerMetrics {
    fn register(listener: &str) -> ListenerMetrics {
        let l = listener.to_owned();
        let requests = STATUS_CLASSES.map(
            |class| metrics::counter!("atoll_http_requests_total", "listener" => l.clone(), "status" => class),
        );
        ListenerMetrics {
            accepted: metrics::counter!("atoll_connections_accepted_total", "listener" => l.clone()),
            open: metrics::gauge!("atoll_connections_open", "listener" => l.clone()),
            received: metrics::counter!("atoll_received_bytes_total", "listener" => l.clone()),
            sent: metrics::counter!("atoll_sent_bytes_total", "listener" => l.clone()),
            connection_duration: metrics::histogram!("atoll_connection_duration_seconds", "listener" => l.clone()),
            handshake_duration: metrics::histogram!("atoll_handshake_duration_seconds", "listener" => l.clone()),
            requests,
            request_duration: metrics::histogram!("atoll_http_request_duration_seconds", "listener" => l.clone()),
            rpc_ok: metrics::counter!("atoll_rpc_calls_total", "listener" => l.clone(), "outcome" => "ok"),
            rpc_duration: metrics::histogram!("atoll_rpc_call_duration_seconds", "listener" => l),
            failures: Mutex::new(Vec::new()),
            rpc_failed: Mutex::new(Vec::new()),
            seen_at: AtomicUsize::new(listener.as_ptr() as usize),
            listener: listener.into(),
        }
    }

    /// True when `name` is this listener's.
    #[inline]
    fn is(&self, name: &str) -> bool {
        let same_place = self.seen_at.load(Ordering::Relaxed) == name.as_ptr() as usize
            && name.len() == self.listener.len();
        same_place || *self.listener == *name
    }

    #[inline]
    fn record(&self, e: &Event<'_>) {
        use EventKind::*;
        match e.kind {
            HttpRequest => {
                let class = match e.status {
                    Some(s @ 100..=599) => usize::from(s / 100 - 1),
                    _ => 5,
                };
                self.requests[class].increment(1);
                if let Some(d) = e.duration {
                    self.request_duration.record(d.as_secs_f64());
                }
            }
            ConnectionStart => {
                self.accepted.increment(1);
                self.open.increment(1.0);
            }
            ConnectionStop => {
                self.open.decrement(1.0);
                if let Some(s) = e.stats {
                    self.received.increment(s.recv_bytes);
                    self.sent.increment(s.send_bytes);
                }
                if let Some(d) = e.duration {
                    self.connection_duration.record(d.as_secs_f64());
                }
            }
            Handshake => {
                if let Some(d) = e.duration {
                    self.handshake_duration.record(d.as_secs_f64());
                }
            }
            RpcCall => {
                match e.code {
                    None => self.rpc_ok.increment(1),
                    Some(code) => self.rpc_failed(code).increment(1),
                }
                if let Some(d) = e.duration {
                    self.rpc_duration.record(d.as_secs_f64());
                }
            }
            ListenerStop => self.seen_at.store(0, Ordering::Relaxed),
            kind if kind.is_error() => self.failure(kind).increment(1),
            _ => {}
        }
    }

    #[cold]
    fn failure(&self, kind: EventKind) -> Counter {
        let mut seen = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = seen.iter().find(|(k, _)| *k == kind) {
            return c.clone();
        }
        let l = self.listener.to_string();
        let name = kind.name();
        let c = match is_refusal(kind) {
            true => {
                let reason = name.split_once('.').map_or(name, |(_, r)| r);
                metrics::counter!("atoll_connections_refused_total", "listener" => l, "reason" => reason)
            }
            false => metrics::counter!("atoll_failures_total", "listener" => l, "event" => name),
        };
        seen.push((kind, c.clone()));
        c
    }

    #[cold]
    fn rpc_failed(&self, code: &str) -> Counter {
        let mut seen = self.rpc_failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = seen.iter().find(|(k, _)| &**k == code) {
            return c.clone();
        }
        let c = metrics::counter!("atoll_rpc_calls_total", "listener" => self.listener.to_string(), "outcome" => code.to_owned());
        seen.push((code.into(), c.clone()));
        c
    }
}

/// True for the failure events that refuse a connection: every failure but the ones that
/// happen to accepting or to a connection already served (see [`MetricsRecorder`]).
fn is_refusal(kind: EventKind) -> bool {
    use EventKind::*;
    kind.is_error()
        && !matches!(
            kind,
            AcceptError
                | Emfile
                | HandshakeError
                | RecvError
                | SendError
                | SendfileError
                | HandlerError
                | HandlerPanic
                | ConnectionForced
                | RpcFailure
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_limits_and_checks_are_refusals() {
        assert!(is_refusal(EventKind::MaxConnectionsExceeded));
        for kind in [
            EventKind::AcceptError,
            EventKind::HandshakeError,
            EventKind::HandlerPanic,
            EventKind::RpcFailure,
            EventKind::ConnectionStop,
        ] {
            assert!(!is_refusal(kind), "{kind}");
        }
    }
}
