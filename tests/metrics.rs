//! The `metrics` subscriber feeds counters and histograms to whatever recorder is installed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atoll::echo::Echo;
use atoll::telemetry::{EventKind, MetricsRecorder};
use atoll::Server;
use common::*;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Keeps counter totals and histogram sample counts by key (name and labels).
#[derive(Default, Clone)]
struct Totals {
    counters: Arc<Mutex<HashMap<String, Arc<Count>>>>,
    histograms: Arc<Mutex<HashMap<String, Arc<Count>>>>,
}

#[derive(Default)]
struct Count(AtomicU64);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Count {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn key_text(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Totals {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(key_text(key))
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = self
            .histograms
            .lock()
            .unwrap()
            .entry(key_text(key))
            .or_default()
            .clone();
        Histogram::from_arc(h)
    }
}

impl Totals {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
    fn samples(&self, key: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

#[tokio::test]
async fn connection_metrics_reach_the_recorder() {
    let totals = Totals::default();
    metrics::set_global_recorder(totals.clone()).unwrap();
    let server = TestServer::start(
        Server::new(Echo)
            .name("m")
            .subscribe(MetricsRecorder::new()),
    );
    let mut c = server.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"0123456789").await, b"0123456789");
    drop(c);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;

    assert_eq!(
        totals.counter("atoll_events_total{event=connection.start,listener=m}"),
        1
    );
    assert_eq!(
        totals.counter("atoll_events_total{event=connection.recv,listener=m}"),
        1
    );
    assert_eq!(totals.counter("atoll_received_bytes_total{listener=m}"), 10);
    assert_eq!(totals.counter("atoll_sent_bytes_total{listener=m}"), 10);
    assert_eq!(
        totals.samples("atoll_connection_duration_seconds{listener=m}"),
        1
    );
}
