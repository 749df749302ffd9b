//! Handler callbacks and socket calls: panics and errors isolated, read timeouts, recv,
//! sendfile, shutdown, statistics, and taking the socket over.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use atoll::echo::Echo;
use atoll::telemetry::EventKind;
use atoll::{Action, BoxError, Handler, Server, Socket};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Panics on `panic`, fails on `fail`, echoes anything else.
#[derive(Clone)]
struct Fragile;

impl Handler for Fragile {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        match data {
            b"panic" => panic!("the handler gave up"),
            b"fail" => Action::Error("asked to fail".into()),
            _ => match socket.send(data).await {
                Ok(()) => Action::Continue,
                Err(e) => Action::Error(e.into()),
            },
        }
    }
}

#[tokio::test]
async fn a_panic_or_error_ends_only_its_own_connection() {
    let server = TestServer::start(Server::new(Fragile));
    let mut bystander = server.connect().await;
    assert_eq!(echo_roundtrip(&mut bystander, b"hi").await, b"hi");

    let mut doomed = server.connect().await;
    doomed.write_all(b"panic").await.unwrap();
    assert!(
        closed_by_server(&mut doomed).await,
        "panicking connection left open"
    );
    server.events.wait_for(EventKind::HandlerPanic, 1).await;

    let mut failing = server.connect().await;
    failing.write_all(b"fail").await.unwrap();
    assert!(closed_by_server(&mut failing).await);
    server.events.wait_for(EventKind::HandlerError, 1).await;
    let failure = server.events.first_error(EventKind::HandlerError).unwrap();
    assert!(failure.contains("asked to fail"));

    // The listener and the other connection go on, and new clients are served.
    assert_eq!(echo_roundtrip(&mut bystander, b"still").await, b"still");
    let mut fresh = server.connect().await;
    assert_eq!(echo_roundtrip(&mut fresh, b"new").await, b"new");
    // Both failed connections were counted out of the table.
    server.events.wait_for(EventKind::ConnectionStop, 2).await;
    assert_eq!(server.handle.connection_count(), 2);
}

/// Counts timeouts; closes at the second one. A `slow` message asks for a longer one-shot
/// timeout.
#[derive(Clone, Default)]
struct Patient {
    timeouts: u32,
}

impl Handler for Patient {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        let _ = socket.send(data).await;
        Action::Continue
    }

    async fn handle_timeout(&mut self, socket: &mut Socket) -> Action {
        self.timeouts += 1;
        let _ = socket
            .send(format!("timeout {}\n", self.timeouts).as_bytes())
            .await;
        if self.timeouts >= 2 {
            Action::Close
        } else {
            Action::Continue
        }
    }
}

#[tokio::test]
async fn read_timeout_calls_the_handler_and_sends_do_not_reset_it() {
    let server = TestServer::start(
        Server::new(Patient::default()).configure(|o| o.read_timeout = Duration::from_millis(150)),
    );
    let c = server.connect().await;
    let mut lines = BufReader::new(c);
    let mut line = String::new();
    within("first timeout", lines.read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "timeout 1\n");
    // The server's own send above did not restart the clock: the second timeout comes, then
    // the close.
    line.clear();
    within("second timeout", lines.read_line(&mut line))
        .await
        .unwrap();
    assert_eq!(line, "timeout 2\n");
    assert!(closed_by_server(&mut lines).await);
    assert_eq!(server.events.count(EventKind::Timeout), 2);
}

#[tokio::test]
async fn bytes_received_keep_a_connection_alive() {
    let server = TestServer::start(
        Server::new(Echo).configure(|o| o.read_timeout = Duration::from_millis(300)),
    );
    let mut c = server.connect().await;
    // Talk for well over the timeout, never pausing longer than a third of it.
    for i in 0..10u8 {
        assert_eq!(echo_roundtrip(&mut c, &[i]).await, [i]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.events.count(EventKind::Timeout), 0);
    // Silence: closed at the timeout (the default timeout callback closes).
    assert!(closed_by_server(&mut c).await);
}

/// What `BIG` receives: many read buffers' worth.
const BIG: usize = 200_000;

/// A tiny request protocol: `GET <n>` answers with `n` bytes of a file via sendfile; `READ`
/// reads exactly 5 more bytes with recv and echoes them upper-cased; `BIG` reads [`BIG`]
/// bytes and answers their count and sum; `ANY` reads whatever comes next and echoes it
/// upper-cased; `HALF` shuts down the write side after a last word.
#[derive(Clone)]
struct Files {
    path: std::path::PathBuf,
}

impl Handler for Files {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        let text = String::from_utf8_lossy(data).trim().to_owned();
        let result: Result<(), atoll::Error> = async {
            if let Some(n) = text.strip_prefix("GET ") {
                let file = std::fs::File::open(&self.path)?;
                let n: u64 = n.parse().unwrap_or(0);
                let sent = socket.sendfile(&file, 0, Some(n)).await?;
                assert_eq!(sent, n);
            } else if text == "READ" {
                let more = socket.recv(5, Some(Duration::from_secs(5))).await?;
                socket.send(&more.to_ascii_uppercase()).await?;
            } else if text == "BIG" {
                // More than one read buffer (8 KiB): whole, in order.
                let got = socket.recv(BIG, Some(Duration::from_secs(5))).await?;
                let sum: u64 = got.iter().map(|b| u64::from(*b)).sum();
                socket
                    .send(format!("{} {sum}", got.len()).as_bytes())
                    .await?;
            } else if text == "ANY" {
                let got = socket.recv(0, Some(Duration::from_secs(5))).await?;
                socket.send(&got.to_ascii_uppercase()).await?;
            } else if text == "STATS" {
                let s = socket.stats();
                socket
                    .send(format!("{} {}", s.recv_bytes, s.recv_packets).as_bytes())
                    .await?;
            } else if text == "HALF" {
                socket.send(b"bye").await?;
                socket.shutdown(Shutdown::Write).await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }
}

#[tokio::test]
async fn sendfile_recv_stats_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&blob)
        .unwrap();
    let server = TestServer::start(Server::new(Files { path }));

    let mut c = server.connect().await;
    c.write_all(b"GET 2500000").await.unwrap();
    let mut got = vec![0u8; 2_500_000];
    within("file", c.read_exact(&mut got)).await.unwrap();
    assert!(got == blob[..2_500_000], "sendfile sent other bytes");
    server.events.wait_for(EventKind::Sendfile, 1).await;

    c.write_all(b"READ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"hello").await.unwrap();
    let mut up = [0u8; 5];
    within("recv", c.read_exact(&mut up)).await.unwrap();
    assert_eq!(&up, b"HELLO");

    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"STATS").await.unwrap();
    let mut stats = [0u8; 64];
    let n = within("stats", c.read(&mut stats)).await.unwrap();
    // 11 + 4 + 5 + 5 bytes in 4 reads (GET, READ, recv's hello, STATS).
    assert_eq!(std::str::from_utf8(&stats[..n]).unwrap(), "25 4");

    // recv of a length spanning many reads, sent in pieces; and recv of whatever comes.
    c.write_all(b"BIG").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let big: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    for piece in big.chunks(BIG / 4) {
        c.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sum: u64 = big.iter().map(|b| u64::from(*b)).sum();
    let mut answer = [0u8; 64];
    let n = within("big recv", c.read(&mut answer)).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&answer[..n]).unwrap(),
        format!("{BIG} {sum}")
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"ANY").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"xyz").await.unwrap();
    let mut up = [0u8; 3];
    within("recv(0)", c.read_exact(&mut up)).await.unwrap();
    assert_eq!(&up, b"XYZ");

    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"HALF").await.unwrap();
    let mut rest = String::new();
    within("half close", c.read_to_string(&mut rest))
        .await
        .unwrap();
    assert_eq!(rest, "bye", "write side not shut down");
}

/// Takes every connection over at once and drives it as a line protocol, the way the HTTP
/// layer runs hyper; answers `stopping` when the server stops.
#[derive(Clone)]
struct Lines;

impl Handler for Lines {
    async fn handle_connection(&mut self, _socket: &mut Socket) -> Action {
        Action::TakeOver
    }

    async fn take_over(self, socket: Socket) -> Result<(), BoxError> {
        let stopping = socket.stopping();
        tokio::pin!(stopping);
        let mut lines = BufReader::new(socket);
        let mut line = String::new();
        loop {
            line.clear();
            tokio::select! {
                _ = &mut stopping => {
                    lines.get_mut().write_all(b"stopping\n").await?;
                    return Ok(());
                }
                n = lines.read_line(&mut line) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    let reply = format!("{} {}", lines.get_ref().id(), line.to_uppercase());
                    lines.get_mut().write_all(reply.as_bytes()).await?;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_handler_can_take_the_socket_over() {
    let server = TestServer::start(Server::new(Lines));
    let c = server.connect().await;
    let mut c = BufReader::new(c);
    c.get_mut().write_all(b"hello\n").await.unwrap();
    let mut line = String::new();
    within("reply", c.read_line(&mut line)).await.unwrap();
    assert!(line.ends_with(" HELLO\n"), "{line}");

    let report = within("stop", server.handle.stop(Duration::from_secs(5))).await;
    line.clear();
    within("stopping", c.read_line(&mut line)).await.unwrap();
    assert_eq!(line, "stopping\n");
    assert_eq!((report.drained, report.forced), (1, 0));
}

/// Records which callbacks ran. `short` asks for a one-shot 100 ms timeout, `long` sets a
/// persistent 150 ms one, `bye` closes from the handler.
#[derive(Clone, Default)]
struct Recorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    fn note(&self, what: impl Into<String>) {
        self.seen.lock().unwrap().push(what.into());
    }
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        self.note(String::from_utf8_lossy(data));
        match data {
            b"short" => Action::ContinueWithTimeout(Duration::from_millis(100)),
            b"long" => Action::SetReadTimeout(Duration::from_millis(150)),
            b"bye" => {
                socket.close().await;
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
    async fn handle_timeout(&mut self, _socket: &mut Socket) -> Action {
        self.note("timeout");
        Action::Continue
    }
    async fn handle_close(&mut self, _socket: &mut Socket) {
        self.note("close");
    }
    async fn handle_error(&mut self, error: &atoll::Error, _socket: &mut Socket) {
        self.note(format!("error: {:?}", error.kind()));
    }
}

#[tokio::test]
async fn handlers_choose_one_shot_and_persistent_timeouts() {
    let recorder = Recorder::default();
    let server = TestServer::start(Server::new(recorder.clone()));
    let mut c = server.connect().await;
    // The default read timeout is 60 s: only the handler's own timeouts can fire here.
    c.write_all(b"short").await.unwrap();
    server.events.wait_for(EventKind::Timeout, 1).await;
    // One-shot: back to 60 s after it fired, so no second timeout comes soon.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.events.count(EventKind::Timeout), 1);
    // Persistent: fires again and again.
    c.write_all(b"long").await.unwrap();
    server.events.wait_for(EventKind::Timeout, 3).await;
    assert_eq!(&recorder.seen()[..3], ["short", "timeout", "long"]);
    // The peer closing runs the close callback.
    drop(c);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;
    assert_eq!(recorder.seen().last().map(String::as_str), Some("close"));
}

#[tokio::test]
async fn a_handler_that_closes_gets_no_close_callback() {
    let recorder = Recorder::default();
    let server = TestServer::start(Server::new(recorder.clone()));
    let mut c = server.connect().await;
    c.write_all(b"bye").await.unwrap();
    assert!(closed_by_server(&mut c).await);
    server.events.wait_for(EventKind::ConnectionStop, 1).await;
    assert_eq!(recorder.seen(), ["bye"]);
}

#[tokio::test]
async fn a_failed_handshake_reaches_the_error_callback() {
    let pki = Pki::new();
    let tls = atoll::TlsOptions::new(&pki.server_cert, &pki.server_key)
        .load()
        .unwrap();
    let recorder = Recorder::default();
    let server = TestServer::start(Server::new(recorder.clone()).tls(tls));
    // Not TLS at all: the handshake fails on the first bytes, and the server closes after
    // its alert.
    let mut c = server.connect().await;
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = within("close", c.read_to_end(&mut rest)).await;
    server.events.wait_for(EventKind::ConnectionStop, 1).await;
    assert_eq!(recorder.seen(), ["error: Handshake"]);
}
