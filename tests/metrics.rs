//! The `metrics` subscriber feeds counters and histograms to whatever recorder is installed,
//! with the names and labels its docs list.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    gauges: Arc<Mutex<HashMap<String, Arc<Level>>>>,
}

/// A gauge's value, in whole units.
#[derive(Default)]
struct Level(std::sync::atomic::AtomicI64);

impl metrics::GaugeFn for Level {
    fn increment(&self, value: f64) {
        self.0.fetch_add(value as i64, Ordering::Relaxed);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub(value as i64, Ordering::Relaxed);
    }
    fn set(&self, value: f64) {
        self.0.store(value as i64, Ordering::Relaxed);
    }
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
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let g = self
            .gauges
            .lock()
            .unwrap()
            .entry(key_text(key))
            .or_default()
            .clone();
        Gauge::from_arc(g)
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
    fn gauge(&self, key: &str) -> i64 {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |g| g.0.load(Ordering::Relaxed))
    }
    fn samples(&self, key: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

/// The process's recorder: installed once, shared by the tests (each on listeners of its own
/// names).
fn totals() -> &'static Totals {
    static TOTALS: OnceLock<Totals> = OnceLock::new();
    TOTALS.get_or_init(|| {
        let totals = Totals::default();
        metrics::set_global_recorder(totals.clone()).unwrap();
        totals
    })
}

#[tokio::test]
async fn connection_metrics_reach_the_recorder() {
    let totals = totals();
    let server = TestServer::start(
        Server::new(Echo)
            .name("m")
            .subscribe(MetricsRecorder::new()),
    );
    let mut c = server.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"0123456789").await, b"0123456789");
    assert_eq!(totals.gauge("atoll_connections_open{listener=m}"), 1);
    drop(c);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;

    assert_eq!(
        totals.counter("atoll_connections_accepted_total{listener=m}"),
        1
    );
    assert_eq!(totals.gauge("atoll_connections_open{listener=m}"), 0);
    assert_eq!(totals.counter("atoll_received_bytes_total{listener=m}"), 10);
    assert_eq!(totals.counter("atoll_sent_bytes_total{listener=m}"), 10);
    assert_eq!(
        totals.samples("atoll_connection_duration_seconds{listener=m}"),
        1
    );
}

#[tokio::test]
async fn a_refusal_is_counted_with_its_reason() {
    let totals = totals();
    let server = echo_one_at_a_time("full", MetricsRecorder::new());
    let mut first = server.connect().await;
    assert_eq!(echo_roundtrip(&mut first, b"one").await, b"one");
    let mut second = server.connect().await;
    assert!(closed_by_server(&mut second).await, "kept past the limit");
    server
        .events
        .wait_for(EventKind::MaxConnectionsExceeded, 1)
        .await;
    assert_eq!(
        totals.counter(
            "atoll_connections_refused_total{listener=full,reason=max_connections_exceeded}"
        ),
        1
    );
    assert_eq!(
        totals.counter("atoll_connections_accepted_total{listener=full}"),
        1
    );
}

#[tokio::test]
async fn one_recorder_serves_several_listeners() {
    let totals = totals();
    let shared = MetricsRecorder::new();
    let a = TestServer::start(Server::new(Echo).name("a").subscribe(shared.clone()));
    let b = TestServer::start(Server::new(Echo).name("b").subscribe(shared));
    for (server, times) in [(&a, 1), (&b, 2), (&a, 1)] {
        for _ in 0..times {
            let mut c = server.connect().await;
            assert_eq!(echo_roundtrip(&mut c, b"x").await, b"x");
        }
    }
    a.events.wait_for(EventKind::ConnectionStop, 2).await;
    b.events.wait_for(EventKind::ConnectionStop, 2).await;
    assert_eq!(
        totals.counter("atoll_connections_accepted_total{listener=a}"),
        2
    );
    assert_eq!(
        totals.counter("atoll_connections_accepted_total{listener=b}"),
        2
    );
    assert_eq!(totals.counter("atoll_received_bytes_total{listener=b}"), 2);
}
