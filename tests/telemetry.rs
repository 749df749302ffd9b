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

/// Says which callbacks ran; shuts its writing side down when told `half`; says GOODBYE when
/// the server stops.
#[derive(Clone)]
struct Callbacks(Arc<Mutex<Vec<&'static str>>>);

impl atoll::Handler for Callbacks {
    async fn handle_connection(&mut self, _socket: &mut atoll::Socket) -> atoll::Action {
        self.0.lock().unwrap().push("connection");
        atoll::Action::Continue
    }

    async fn handle_data(&mut self, data: &[u8], socket: &mut atoll::Socket) -> atoll::Action {
        self.0.lock().unwrap().push("data");
        if data == b"half" {
            if let Err(e) = socket.shutdown(std::net::Shutdown::Write).await {
                return atoll::Action::Error(e.into());
            }
        }
        atoll::Action::Continue
    }

    async fn handle_close(&mut self, _socket: &mut atoll::Socket) {
        self.0.lock().unwrap().push("close");
    }

    async fn handle_shutdown(&mut self, socket: &mut atoll::Socket) -> atoll::Action {
        self.0.lock().unwrap().push("shutdown");
        let _ = socket.send(b"GOODBYE").await;
        atoll::Action::Close
    }
}

/// ThousandIsland's handler and socket events, each asserted: a socket shut down by the
/// handler (`connection.socket_shutdown`), a peer that closes (the close callback), and a
/// server that stops (the shutdown callback, which can still write).
#[tokio::test]
async fn handler_shutdown_close_and_socket_events_are_all_emitted() {
    use tokio::io::AsyncReadExt;
    let calls = Callbacks(Arc::new(Mutex::new(Vec::new())));
    let server = TestServer::start(Server::new(calls.clone()).name("callbacks"));

    // The handler shuts its writing side: the client reads the end, then closes.
    let mut c = server.connect().await;
    c.write_all(b"half").await.unwrap();
    let mut rest = Vec::new();
    within("the server's end", c.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    drop(c);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;
    assert_eq!(*calls.0.lock().unwrap(), ["connection", "data", "close"]);

    // The server stops while a connection is open: the shutdown callback says GOODBYE.
    let mut c = server.connect().await;
    server.events.wait_for(EventKind::Ready, 2).await;
    let stop = tokio::spawn({
        let handle = server.handle.clone();
        async move { handle.stop(WAIT).await }
    });
    let mut said = Vec::new();
    within("GOODBYE", c.read_to_end(&mut said)).await.unwrap();
    assert_eq!(said, b"GOODBYE");
    within("stop", stop).await.unwrap();
    assert_eq!(
        *calls.0.lock().unwrap(),
        ["connection", "data", "close", "connection", "shutdown"]
    );

    use EventKind::*;
    let of = |id: u64| -> Vec<EventKind> {
        server
            .events
            .all()
            .into_iter()
            .filter(|e| e.connection == Some(id))
            .map(|e| e.kind)
            .collect()
    };
    let ids: Vec<u64> = server
        .events
        .all()
        .iter()
        .filter(|e| e.kind == ConnectionStart)
        .filter_map(|e| e.connection)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(
        of(ids[0]),
        [ConnectionStart, Ready, Recv, SocketShutdown, ConnectionStop]
    );
    assert_eq!(of(ids[1]), [ConnectionStart, Ready, Send, ConnectionStop]);
    assert_eq!(server.events.count(ListenerStop), 1);
}
