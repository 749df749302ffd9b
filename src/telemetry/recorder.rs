//! A subscriber that feeds the `metrics` facade.

use super::{Event, EventKind, Subscriber};

/// Records events as `metrics`: a counter `atoll_events_total{listener, event}` for every event,
/// histograms `atoll_connection_duration_seconds` and `atoll_handshake_duration_seconds`, and
/// counters `atoll_received_bytes_total` / `atoll_sent_bytes_total` fed at connection stop,
/// and the histogram `atoll_http_request_duration_seconds{listener, status}` for HTTP requests.
///
/// Install any `metrics` recorder (a Prometheus exporter, say) to collect them.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsRecorder {
    _private: (),
}

impl MetricsRecorder {
    /// A recorder feeding the global `metrics` recorder.
    pub fn new() -> Self {
        MetricsRecorder::default()
    }
}

impl Subscriber for MetricsRecorder {
    fn on_event(&self, e: &Event<'_>) {
        let listener = e.listener.to_owned();
        metrics::counter!("atoll_events_total", "listener" => listener.clone(), "event" => e.kind.name())
            .increment(1);
        match e.kind {
            EventKind::ConnectionStop => {
                if let Some(d) = e.duration {
                    metrics::histogram!("atoll_connection_duration_seconds", "listener" => listener.clone())
                        .record(d.as_secs_f64());
                }
                if let Some(s) = e.stats {
                    metrics::counter!("atoll_received_bytes_total", "listener" => listener.clone())
                        .increment(s.recv_bytes);
                    metrics::counter!("atoll_sent_bytes_total", "listener" => listener)
                        .increment(s.send_bytes);
                }
            }
            EventKind::Handshake => {
                if let Some(d) = e.duration {
                    metrics::histogram!("atoll_handshake_duration_seconds", "listener" => listener)
                        .record(d.as_secs_f64());
                }
            }
            EventKind::HttpRequest => {
                if let Some(d) = e.duration {
                    let status = e.status.map_or_else(String::new, |s| s.to_string());
                    metrics::histogram!("atoll_http_request_duration_seconds", "listener" => listener, "status" => status)
                        .record(d.as_secs_f64());
                }
            }
            EventKind::RpcCall => {
                if let Some(d) = e.duration {
                    let outcome = e.code.unwrap_or("ok").to_owned();
                    metrics::histogram!("atoll_rpc_call_duration_seconds", "listener" => listener, "outcome" => outcome)
                        .record(d.as_secs_f64());
                }
            }
            _ => {}
        }
    }
}
