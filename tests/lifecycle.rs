//! Suspend and resume, connection limits, and the graceful stop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll::echo::Echo;
use atoll::telemetry::EventKind;
use atoll::{Action, Handler, Phase, Server, Socket};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

async fn refused(addr: std::net::SocketAddr) -> bool {
    match within("connect", TcpStream::connect(addr)).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

#[tokio::test]
async fn suspend_refuses_new_connects_and_keeps_old_ones() {
    let server = TestServer::start(Server::new(Echo));
    let mut old = server.connect().await;
    assert_eq!(echo_roundtrip(&mut old, b"before").await, b"before");

    within("suspend", server.handle.suspend()).await.unwrap();
    assert_eq!(server.handle.phase(), Phase::Suspended);
    assert!(
        refused(server.addr()).await,
        "a connect was accepted while suspended"
    );
    assert_eq!(echo_roundtrip(&mut old, b"during").await, b"during");

    within("resume", server.handle.resume()).await.unwrap();
    let mut new = server.connect().await;
    assert_eq!(echo_roundtrip(&mut new, b"after").await, b"after");
    assert_eq!(echo_roundtrip(&mut old, b"still").await, b"still");
    let kinds = server.events.kinds();
    assert!(
        kinds.contains(&EventKind::ListenerSuspend) && kinds.contains(&EventKind::ListenerResume)
    );
}

#[tokio::test]
async fn a_full_server_makes_the_next_client_wait_for_a_slot() {
    let server = TestServer::start(Server::new(Echo).configure(|o| {
        o.max_connections = 1;
        o.max_connections_retry_wait = Duration::from_secs(2);
        o.max_connections_retry_count = 2;
    }));
    let mut first = server.connect().await;
    assert_eq!(echo_roundtrip(&mut first, b"one").await, b"one");
    // The second connect completes in the kernel but is not served while the first is open.
    let mut second = server.connect().await;
    second.write_all(b"two").await.unwrap();
    let mut buf = [0u8; 3];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    // Once the first leaves, the waiting one gets the slot and its bytes are echoed.
    drop(first);
    within("second served", second.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"two");
}

#[tokio::test]
async fn a_client_waiting_past_the_retry_budget_is_closed() {
    let server = TestServer::start(Server::new(Echo).configure(|o| {
        o.max_connections = 1;
        o.max_connections_retry_wait = Duration::from_millis(100);
        o.max_connections_retry_count = 3;
    }));
    let mut first = server.connect().await;
    assert_eq!(echo_roundtrip(&mut first, b"one").await, b"one");
    let mut second = server.connect().await;
    assert!(
        closed_by_server(&mut second).await,
        "kept past the retry budget"
    );
    server
        .events
        .wait_for(EventKind::MaxConnectionsExceeded, 1)
        .await;
    // The first keeps working.
    assert_eq!(echo_roundtrip(&mut first, b"fine").await, b"fine");
}

/// Holds each request until released, then answers `done`; says GOODBYE when asked to stop.
#[derive(Clone)]
struct Slow {
    release: Arc<Notify>,
    started: Arc<Notify>,
}

impl Handler for Slow {
    async fn handle_data(&mut self, _data: &[u8], socket: &mut Socket) -> Action {
        self.started.notify_one();
        self.release.notified().await;
        match socket.send(b"done").await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }

    async fn handle_shutdown(&mut self, socket: &mut Socket) -> Action {
        let _ = socket.send(b"GOODBYE").await;
        Action::Close
    }
}

#[tokio::test]
async fn stop_refuses_new_connects_lets_work_finish_and_says_goodbye() {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let server = TestServer::start(Server::new(Slow {
        release: release.clone(),
        started: started.clone(),
    }));
    let addr = server.addr();
    let mut idle = server.connect().await;
    let mut busy = server.connect().await;
    busy.write_all(b"work").await.unwrap();
    within("request started", started.notified()).await;

    let handle = server.handle.clone();
    let stopping = tokio::spawn(async move { handle.stop(Duration::from_secs(10)).await });
    // New connects are refused at once, while the stop is still waiting.
    within("stopping", async {
        while server.handle.phase() == Phase::Running {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused(addr).await, "accepted a connect while stopping");
    // The idle connection is told goodbye on a still-open socket, then closed.
    let mut text = String::new();
    within("goodbye", idle.read_to_string(&mut text))
        .await
        .unwrap();
    assert_eq!(text, "GOODBYE");
    assert!(!stopping.is_finished(), "stop returned with work in flight");

    // The work in flight finishes and its answer arrives before the goodbye.
    release.notify_one();
    let mut text = String::new();
    within("done", busy.read_to_string(&mut text))
        .await
        .unwrap();
    assert_eq!(text, "doneGOODBYE");
    let report = within("stop", stopping).await.unwrap();
    assert_eq!((report.drained, report.forced), (2, 0));
    assert_eq!(server.handle.phase(), Phase::Stopped);
}

#[tokio::test]
async fn stop_forces_stragglers_at_the_timeout() {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let server = TestServer::start(Server::new(Slow {
        release: release.clone(),
        started: started.clone(),
    }));
    let mut busy = server.connect().await;
    busy.write_all(b"work").await.unwrap();
    within("request started", started.notified()).await;
    let mut idle = server.connect().await;
    server.events.wait_for(EventKind::Ready, 2).await;
    assert_eq!(server.handle.connections().len(), 2);

    let report = within("stop", server.handle.stop(Duration::from_millis(200))).await;
    assert_eq!((report.drained, report.forced), (1, 1));
    assert!(closed_by_server(&mut busy).await);
    let mut text = String::new();
    within("goodbye", idle.read_to_string(&mut text))
        .await
        .unwrap();
    assert_eq!(text, "GOODBYE");
    assert_eq!(server.events.count(EventKind::ConnectionForced), 1);
    assert_eq!(server.handle.connection_count(), 0);
    // A second stop returns the same report.
    assert_eq!(
        within("stop again", server.handle.stop(Duration::ZERO)).await,
        report
    );
}

#[tokio::test]
async fn several_listen_sockets_share_one_port() {
    let server = TestServer::start(Server::new(Echo).configure(|o| {
        o.num_listen_sockets = 3;
        o.num_acceptors = 2;
    }));
    let mut clients = Vec::new();
    for i in 0..12u8 {
        let mut c = server.connect().await;
        assert_eq!(echo_roundtrip(&mut c, &[i]).await, [i]);
        clients.push(c);
    }
    assert_eq!(server.events.count(EventKind::AcceptorStart), 6);
}

#[tokio::test]
async fn starts_on_a_listener_bound_elsewhere() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let handle = Server::new(Echo).listener(std_listener).start().unwrap();
    assert_eq!(handle.local_addr().inet(), Some(addr));
    let mut c = within("connect", TcpStream::connect(addr)).await.unwrap();
    assert_eq!(echo_roundtrip(&mut c, b"adopted").await, b"adopted");
    drop(c);
    within("stop", handle.stop(WAIT)).await;
}

#[tokio::test]
async fn address_in_use_is_a_typed_error_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Server::new(Echo)
        .name("dup")
        .ip(LOCALHOST)
        .port(port)
        .start()
        .unwrap_err();
    assert!(err.is_address_in_use(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("listener `dup`") && text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn starts_on_inherited_descriptors_of_either_family() {
    use std::os::fd::OwnedFd;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let handle = Server::new(Echo)
        .bind(atoll::Bind::Fds(vec![OwnedFd::from(tcp)]))
        .start()
        .unwrap();
    let mut c = within("connect", TcpStream::connect(addr)).await.unwrap();
    assert_eq!(echo_roundtrip(&mut c, b"fd").await, b"fd");
    drop(c);
    within("stop", handle.stop(WAIT)).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let handle = Server::new(Echo)
        .bind(atoll::Bind::Fds(vec![OwnedFd::from(unix)]))
        .start()
        .unwrap();
    let mut c = within("connect", tokio::net::UnixStream::connect(&path))
        .await
        .unwrap();
    assert_eq!(echo_roundtrip(&mut c, b"unix fd").await, b"unix fd");
    drop(c);
    within("stop", handle.stop(WAIT)).await;

    // A descriptor that is not a socket is refused with a clear error, not a panic.
    let file = std::fs::File::open("Cargo.toml").unwrap();
    let err = Server::new(Echo)
        .name("odd")
        .bind(atoll::Bind::Fds(vec![OwnedFd::from(file)]))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("listener `odd`"), "{err}");
}

/// Found while checking every lock that a task's drop can take: the table of connections
/// spawned each connection's task while locked, and tokio drops a task's future on the spot,
/// on the spawning thread, when its runtime is shutting down. The connection's drop then took
/// the same lock: the worker thread hung for good, and with it the runtime's drop (the first
/// round hung, every time).
#[test]
fn a_runtime_dropped_while_connections_arrive_shuts_down() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for round in 0..20 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.block_on(async {
            Server::new(Echo)
                .configure(|o| {
                    o.ip = std::net::Ipv4Addr::LOCALHOST.into();
                    o.port = 0;
                })
                .start()
                .unwrap()
        });
        let addr = handle.local_addr().inet().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let wait = Duration::from_millis(200);
                        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, wait) {
                            held.push(s);
                        }
                        if held.len() == 256 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            let _ = dropped.send(());
        });
        let ended = done.recv_timeout(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        assert!(ended.is_ok(), "round {round}: the runtime's drop hung");
        drop(handle);
    }
}
