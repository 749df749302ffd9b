//! Telemetry: events in order with their measurements, subscribers attached and detached on a
//! running server, the tracing logger.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::echo::Echo;
use atoll::telemetry::{Event, EventKind, TracingLogger};
use atoll::Server;
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_connection_emits_its_events_in_order() {
    let server = TestServer::start(Server::new(Echo).name("ordered"));
    let mut c = server.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"12345").await, b"12345");
    c.shutdown().await.unwrap();
    drop(c);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;
    within("stop", server.handle.stop(WAIT)).await;

    use EventKind::*;
    assert_eq!(
        server.events.kinds(),
        vec![
            ListenerStart,
            AcceptorStart,
            ConnectionStart,
            Ready,
            Recv,
            Send,
            ConnectionStop,
            AcceptorStop,
            ListenerStop,
        ]
    );
    let all = server.events.all();
    let recv = all.iter().find(|e| e.kind == Recv).unwrap();
    assert_eq!(recv.bytes, Some(5));
    let stop = all.iter().find(|e| e.kind == ConnectionStop).unwrap();
    assert_eq!(stop.recv_bytes, Some(5));
    assert_eq!(stop.connection, recv.connection);
}

#[tokio::test]
async fn subscribers_attach_and_detach_on_a_running_server() {
    let server = TestServer::start(Server::new(Echo));
    type Seen = Vec<(EventKind, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    let id = server.handle.telemetry().attach(move |e: &Event<'_>| {
        sink.lock()
            .unwrap()
            .push((e.kind, e.peer.map(|p| p.to_string())));
    });
    let mut c = server.connect().await;
    let local = c.local_addr().unwrap().to_string();
    assert_eq!(echo_roundtrip(&mut c, b"a").await, b"a");
    assert!(server.handle.telemetry().detach(id));
    assert_eq!(echo_roundtrip(&mut c, b"b").await, b"b");
    let seen = seen.lock().unwrap().clone();
    let recvs: Vec<_> = seen.iter().filter(|(k, _)| *k == EventKind::Recv).collect();
    assert_eq!(recvs.len(), 1, "saw events after detaching: {seen:?}");
    assert_eq!(recvs[0].1.as_deref(), Some(local.as_str()), "peer metadata");
}

#[tokio::test]
async fn the_tracing_logger_logs_events_at_its_level() {
    let (out, _guard) = capture_logs();

    let server = TestServer::start(Server::new(Echo).name("logged"));
    let id = server
        .handle
        .telemetry()
        .attach(TracingLogger::new(tracing::Level::DEBUG));
    let mut c = server.connect().await;
    assert_eq!(echo_roundtrip(&mut c, b"x").await, b"x");
    server.handle.telemetry().detach(id);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let text = out.text();
    assert!(text.contains("DEBUG"), "{text}");
    assert!(
        text.contains("connection.recv listener=logged connection=1 peer=127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains(" bytes=1"), "{text}");
    assert!(!text.contains("None"), "absent fields printed: {text}");
}
