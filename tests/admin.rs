//! The admin listener from code: `/metrics` read by a Prometheus text-format parser, its
//! counters moving with traffic on other listeners; `/livez` and `/readyz`.

mod common;

use ::http::StatusCode;
use atoll::echo::Echo;
use atoll::http::{Admin, Handlers, Health, HttpListener, Metrics, Readiness};
use atoll::rpc::{Client, Ctx, Daemon, Protocol, Reply, Service};
use atoll::telemetry::{EventKind, MetricsRecorder};
use atoll::Server;
use common::http::HttpTest;
use common::prometheus::{scrape, value};
use common::*;

fn admin() -> (Readiness, HttpTest) {
    let readiness = Readiness::new();
    let metrics = Metrics::install().expect("the Prometheus recorder installs");
    let admin = Admin::new(metrics, readiness.clone());
    (readiness, HttpTest::start(admin.listener()))
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let (_readiness, admin) = admin();
    let mut scraper = admin.h1().await;
    let web = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Health::default()))
            .name("web")
            .subscribe(MetricsRecorder::new()),
    );
    let echo = TestServer::start(
        Server::new(Echo)
            .name("echo")
            .subscribe(MetricsRecorder::new()),
    );
    let full = echo_one_at_a_time("full", MetricsRecorder::new());

    let mut client = web.h1().await;
    for _ in 0..3 {
        assert_eq!(client.get("/health").await.status, StatusCode::OK);
    }
    assert_eq!(client.get("/nothing").await.status, StatusCode::NOT_FOUND);
    let mut c = echo.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"0123456789").await, b"0123456789");
    // Bytes are counted when their connection ends.
    drop(c);
    echo.events.wait_for(EventKind::ConnectionStop, 1).await;
    let mut first = full.connect().await;
    assert_eq!(echo_roundtrip(&mut first, b"one").await, b"one");
    let mut second = full.connect().await;
    assert!(closed_by_server(&mut second).await, "kept past the limit");
    full.events
        .wait_for(EventKind::MaxConnectionsExceeded, 1)
        .await;

    let before = scrape(&mut scraper).await;
    let web_l = ("listener", "web");
    let ok = [web_l, ("status", "2xx")];
    let missing = [web_l, ("status", "4xx")];
    assert_eq!(value(&before, "atoll_http_requests_total", &ok), 3.0);
    assert_eq!(value(&before, "atoll_http_requests_total", &missing), 1.0);
    assert_eq!(
        value(&before, "atoll_http_request_duration_seconds", &[web_l]),
        4.0
    );
    assert_eq!(
        value(&before, "atoll_connections_accepted_total", &[web_l]),
        1.0
    );
    assert_eq!(value(&before, "atoll_connections_open", &[web_l]), 1.0);
    let echo_l = [("listener", "echo")];
    assert_eq!(value(&before, "atoll_received_bytes_total", &echo_l), 10.0);
    assert_eq!(value(&before, "atoll_sent_bytes_total", &echo_l), 10.0);
    let refused = [("listener", "full"), ("reason", "max_connections_exceeded")];
    assert_eq!(
        value(&before, "atoll_connections_refused_total", &refused),
        1.0
    );
    assert_eq!(
        value(
            &before,
            "atoll_connections_accepted_total",
            &[("listener", "full")]
        ),
        1.0
    );

    // More traffic moves the same counters.
    assert_eq!(client.get("/health").await.status, StatusCode::OK);
    assert_eq!(client.get("/nothing").await.status, StatusCode::NOT_FOUND);
    let mut c = echo.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"abcde").await, b"abcde");
    assert_eq!(
        value(
            &scrape(&mut scraper).await,
            "atoll_connections_open",
            &echo_l
        ),
        1.0
    );
    drop(c);
    echo.events.wait_for(EventKind::ConnectionStop, 2).await;
    let after = scrape(&mut scraper).await;
    assert_eq!(value(&after, "atoll_http_requests_total", &ok), 4.0);
    assert_eq!(value(&after, "atoll_http_requests_total", &missing), 2.0);
    assert_eq!(value(&after, "atoll_received_bytes_total", &echo_l), 15.0);
    assert_eq!(value(&after, "atoll_sent_bytes_total", &echo_l), 15.0);
    assert_eq!(value(&after, "atoll_connections_open", &echo_l), 0.0);
    assert_eq!(
        value(&after, "atoll_connection_duration_seconds", &echo_l),
        2.0
    );
}

#[tokio::test]
async fn livez_and_readyz() {
    let (readiness, admin) = admin();
    let mut client = admin.h1().await;
    let live = client.get("/livez").await;
    assert_eq!((live.status, live.text()), (StatusCode::OK, "ok\n".into()));
    let ready = client.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.text()),
        (StatusCode::OK, "ready\n".into())
    );

    readiness.drain();
    let draining = client.get("/readyz").await;
    assert_eq!(
        (draining.status, draining.text()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    );
    assert_eq!(client.get("/livez").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_recorder_is_installed_once() {
    let (a, b) = (Metrics::install(), Metrics::install());
    assert!(a.is_ok() && b.is_ok());
    // Describes its metrics: the `# HELP` lines of the text format.
    metrics::counter!("atoll_reloads_total", "outcome" => "ok").increment(0);
    let page = b.unwrap().render();
    assert!(
        page.contains("# HELP atoll_reloads_total Config reloads, by outcome."),
        "{page}"
    );
}

/// Answers every number with itself.
struct Same;

impl Protocol for Same {
    const IDENTIFIER: &'static str = "test.same";
    const VERSION: &'static str = "1.0.0";
    type Request = u64;
    type Reply = u64;
    type Push = ();
}

impl Service for Same {
    type Protocol = Same;
    type Init = ();

    async fn init(_: &std::sync::Arc<()>, _ctx: &mut Ctx<Self>) -> Result<Self, atoll::BoxError> {
        Ok(Same)
    }

    async fn call(&mut self, n: u64, _ctx: &mut Ctx<Self>) -> Result<Reply<u64>, atoll::BoxError> {
        Ok(Reply::Now(n))
    }
}

#[tokio::test]
async fn rpc_calls_are_counted_by_outcome() {
    let (_readiness, admin) = admin();
    let mut scraper = admin.h1().await;
    let daemon = Daemon::<Same>::new(())
        .name("same")
        .plain()
        .subscribe(MetricsRecorder::new())
        .start()
        .expect("the daemon starts");
    let client = within(
        "the client to connect",
        Client::<Same>::builder(daemon.local_addr().to_string()).connect(),
    )
    .await
    .expect("connect");
    for n in 1..=3 {
        assert_eq!(within("a call", client.call(&n)).await.expect("a reply"), n);
    }
    let samples = scrape(&mut scraper).await;
    let l = ("listener", "same");
    assert_eq!(
        value(&samples, "atoll_rpc_calls_total", &[l, ("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        value(&samples, "atoll_rpc_call_duration_seconds", &[l]),
        3.0
    );
}
