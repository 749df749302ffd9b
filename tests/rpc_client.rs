//! The RPC client: against a small hand-written fake server (what the daemon would never send:
//! oversized frames, undecodable pushes, silence), and end to end against a real daemon.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::rpc::wire::{self, Decoder, ErrorBody, Hello, Kind};
use atoll::rpc::{
    Client, ClientTls, Ctx, Daemon, DaemonHandle, Deferred, Protocol, Reply, RpcError, Service,
};
use atoll::{BoxError, ClientAuth};
use bytes::{BufMut, BytesMut};
use common::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ===== the fake server =====

/// Requests the fake server understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum FakeReq {
    /// Replies with the text.
    Echo(String),
    /// Pushes the text, then replies "pushed".
    Push(String),
    /// Pushes a number (not a `String`), then the text, then replies "ok".
    BadPushThen(String),
    /// Answers with a header announcing a payload of this many bytes.
    Huge(u32),
    /// From now on, answers nothing, keepalives included.
    Deaf,
    /// Answers the call with an error frame with this code.
    Fail(String),
    /// Closes the connection without answering.
    Hangup,
}

struct Fake;

impl Protocol for Fake {
    const IDENTIFIER: &'static str = "test.fake";
    const VERSION: &'static str = "1.2.0";
    type Request = FakeReq;
    type Reply = String;
    type Push = String;
}

/// A fake server on 127.0.0.1:0 answering hellos with `version`. Every frame it receives, and
/// every connection's end, is reported on the channel.
struct FakeServer {
    addr: SocketAddr,
    frames: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(version: &'static str) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, frames) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(fake_conn(socket, version, tx.clone()));
            }
        });
        FakeServer { addr, frames, task }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for a frame of this kind to reach the server.
    async fn received(&mut self, kind: Kind) {
        within("a frame at the fake server", async {
            while let Some(seen) = self.frames.recv().await {
                if seen == Seen::Frame(kind) {
                    return;
                }
            }
        })
        .await
    }

    /// Waits for a connection to end.
    async fn closed(&mut self) {
        within("a connection to end at the fake server", async {
            while let Some(seen) = self.frames.recv().await {
                if seen == Seen::Closed {
                    return;
                }
            }
        })
        .await
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the fake server saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Frame(Kind),
    Closed,
}

async fn fake_conn(mut socket: TcpStream, version: &str, seen: mpsc::UnboundedSender<Seen>) {
    fake_frames(&mut socket, version, &seen).await;
    let _ = seen.send(Seen::Closed);
}

async fn fake_frames(socket: &mut TcpStream, version: &str, seen: &mpsc::UnboundedSender<Seen>) {
    let decoder = Decoder::default();
    let mut buf = BytesMut::new();
    let mut deaf = false;
    let mut hello_done = false;
    loop {
        let frame = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(_) => return,
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let _ = seen.send(Seen::Frame(frame.kind));
        let mut out = BytesMut::new();
        let put = |out: &mut BytesMut, kind, id, value: &dyn erased::Value| {
            value.encode(kind, id, out);
        };
        if !hello_done {
            assert_eq!(frame.kind, Kind::Hello);
            hello_done = true;
            let hello = Hello {
                identifier: Fake::IDENTIFIER.into(),
                version: version.into(),
                features: Vec::new(),
            };
            put(&mut out, Kind::Hello, 0, &hello);
        } else if deaf {
            continue;
        } else {
            match frame.kind {
                Kind::Keepalive => wire::keepalive(&mut out),
                Kind::Call | Kind::Cast => {
                    let req: FakeReq = wire::decode(&frame.payload).unwrap();
                    match req {
                        FakeReq::Echo(text) => put(&mut out, Kind::Reply, frame.id, &text),
                        FakeReq::Push(text) => {
                            put(&mut out, Kind::Push, 0, &text);
                            put(&mut out, Kind::Reply, frame.id, &"pushed");
                        }
                        FakeReq::BadPushThen(text) => {
                            put(&mut out, Kind::Push, 0, &42u32);
                            put(&mut out, Kind::Push, 0, &text);
                            put(&mut out, Kind::Reply, frame.id, &"ok");
                        }
                        FakeReq::Huge(len) => {
                            out.put_slice(&wire::MAGIC);
                            out.put_u8(wire::WIRE_VERSION);
                            out.put_u8(Kind::Reply as u8);
                            out.put_u32(len);
                            out.put_u64(frame.id);
                        }
                        FakeReq::Deaf => deaf = true,
                        FakeReq::Hangup => return,
                        FakeReq::Fail(code) => put(
                            &mut out,
                            Kind::Error,
                            frame.id,
                            &ErrorBody::new(&code, "as asked"),
                        ),
                    }
                }
                _ => {}
            }
        }
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Encoding through a trait object, so the fake's `put` takes any payload.
mod erased {
    use atoll::rpc::wire::{self, Kind};
    use bytes::BytesMut;

    pub(crate) trait Value {
        fn encode(&self, kind: Kind, id: u64, out: &mut BytesMut);
    }

    impl<T: serde::Serialize> Value for T {
        fn encode(&self, kind: Kind, id: u64, out: &mut BytesMut) {
            wire::encode(kind, id, self, usize::MAX, out).unwrap();
        }
    }
}

fn echo(text: &str) -> FakeReq {
    FakeReq::Echo(text.into())
}

// ===== against the fake server =====

#[tokio::test]
async fn calls_and_remote_errors_against_a_fake_server() {
    let fake = FakeServer::start("1.2.0").await;
    let client = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap();
    assert!(client.is_connected());
    assert_eq!(client.server_version().as_deref(), Some("1.2.0"));
    let reply = within("call", client.call(&echo("hi"))).await.unwrap();
    assert_eq!(reply, "hi");
    let err = within("call", client.call(&FakeReq::Fail("bad request".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { code, message } if code == "bad request" && message == "as asked"),
        "{err:?}"
    );
    // The connection goes on after a call's error.
    assert_eq!(
        within("call", client.call(&echo("again"))).await.unwrap(),
        "again"
    );
}

#[tokio::test]
async fn a_server_version_outside_the_accepted_range_is_refused() {
    let fake = FakeServer::start("2.0.0").await;
    let err = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::IncompatibleVersion(m) if m.contains("2.0.0")),
        "{err:?}"
    );
    // Unless the client accepts it.
    let client = within(
        "connect",
        Client::<Fake>::builder(fake.addr())
            .accept(">=1, <3")
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(client.server_version().as_deref(), Some("2.0.0"));
}

#[tokio::test]
async fn an_undecodable_push_is_skipped_and_the_next_one_delivered() {
    let fake = FakeServer::start("1.2.0").await;
    let (tx, mut pushes) = mpsc::unbounded_channel();
    let client = within(
        "connect",
        Client::<Fake>::builder(fake.addr())
            .on_push(move |p| {
                let _ = tx.send(p);
            })
            .connect(),
    )
    .await
    .unwrap();
    let reply = within("call", client.call(&FakeReq::BadPushThen("second".into())))
        .await
        .unwrap();
    assert_eq!(reply, "ok");
    assert_eq!(within("push", pushes.recv()).await.unwrap(), "second");
    assert!(client.is_connected());
}

#[tokio::test]
async fn a_frame_over_the_maximum_drops_the_connection() {
    let fake = FakeServer::start("1.2.0").await;
    let client = within(
        "connect",
        Client::<Fake>::builder(fake.addr())
            .max_frame_size(1024)
            .reconnect(false)
            .connect(),
    )
    .await
    .unwrap();
    let err = within("call", client.call(&FakeReq::Huge(4096)))
        .await
        .unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert!(!client.is_connected());
    let err = within("call", client.call(&echo("x"))).await.unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
}

#[tokio::test]
async fn keepalives_are_sent_when_idle_and_a_silent_server_is_dead() {
    let mut fake = FakeServer::start("1.2.0").await;
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = connects.clone();
    let client = within(
        "connect",
        Client::<Fake>::builder(fake.addr())
            .keepalive(Duration::from_millis(100))
            .reconnect(false)
            .on_connect(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            })
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    fake.received(Kind::Hello).await;
    // Idle: keepalives go out, the server answers, the connection lives on.
    for _ in 0..3 {
        fake.received(Kind::Keepalive).await;
    }
    assert!(client.is_connected());
    // A server that answers nothing is given up after 2 x keepalive.
    client.cast(&FakeReq::Deaf).await.unwrap();
    within("the client to give up", async {
        while client.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let start = tokio::time::Instant::now();
    let err = client.call(&echo("x")).await.unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn a_call_that_times_out_is_forgotten() {
    let fake = FakeServer::start("1.2.0").await;
    let client = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap();
    client.cast(&FakeReq::Deaf).await.unwrap();
    let err = within(
        "call",
        client.call_timeout(&echo("x"), Duration::from_millis(50)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RpcError::Timeout(t) if t == Duration::from_millis(50)));
    // Still connected: a timeout is the call's failure, not the connection's.
    assert!(client.is_connected());
}

#[tokio::test]
async fn close_ends_the_client_for_every_clone() {
    let mut fake = FakeServer::start("1.2.0").await;
    let client = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap();
    let clone = client.clone();
    client.cast(&FakeReq::Deaf).await.unwrap();
    let in_flight = tokio::spawn({
        let c = clone.clone();
        async move { c.call(&echo("never answered")).await }
    });
    // Wait until the call is out, so it is in flight when the client closes.
    fake.received(Kind::Call).await;
    within("close", client.close()).await;
    assert!(!clone.is_connected());
    let err = within("the call in flight", in_flight)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RpcError::Closed), "{err:?}");
    let err = clone.call(&echo("x")).await.unwrap_err();
    assert!(matches!(err, RpcError::Closed), "{err:?}");
    assert!(matches!(
        clone.cast(&echo("x")).await,
        Err(RpcError::Closed)
    ));
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = within("connect", Client::<Fake>::connect(addr.to_string()))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_says_hello_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = Arc::new(Mutex::new(Vec::new()));
    let held = _held.clone();
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            held.lock().unwrap().push(s);
        }
    });
    let err = within(
        "connect",
        Client::<Fake>::builder(addr.to_string())
            .connect_timeout(Duration::from_millis(100))
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RpcError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{err:?}"
    );
    accept.abort();
}

#[tokio::test]
async fn dropping_every_clone_ends_the_connection() {
    let mut fake = FakeServer::start("1.2.0").await;
    let client = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap();
    let clone = client.clone();
    drop(client);
    assert_eq!(within("call", clone.call(&echo("x"))).await.unwrap(), "x");
    drop(clone);
    fake.closed().await;
}

#[tokio::test]
async fn casts_sent_before_close_are_delivered() {
    let mut fake = FakeServer::start("1.2.0").await;
    let client = within("connect", Client::<Fake>::connect(fake.addr()))
        .await
        .unwrap();
    client.cast(&echo("last words")).await.unwrap();
    within("close", client.close()).await;
    fake.received(Kind::Cast).await;
    fake.closed().await;
}

#[tokio::test]
async fn a_call_in_flight_when_the_connection_drops_is_disconnected() {
    let mut fake = FakeServer::start("1.2.0").await;
    let client = within(
        "connect",
        Client::<Fake>::builder(fake.addr())
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect(),
    )
    .await
    .unwrap();
    let err = within("call", client.call(&FakeReq::Hangup))
        .await
        .unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    fake.closed().await;
    // The fake server still listens: the client reconnects by itself.
    within("the reconnection", async {
        while !client.is_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        within("call", client.call(&echo("back"))).await.unwrap(),
        "back"
    );
}

// ===== end to end, against a daemon =====

/// Requests of the test service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TestReq {
    /// Replies with the text.
    Echo(String),
    /// Pushes the text to the caller, then replies "pushed".
    Push(String),
    /// A cast: pushes "cast: TEXT" back to the caller.
    Note(String),
    /// Pushes the text to every other client of the daemon, then replies "sent".
    Broadcast(String),
    /// Deferred: answered only once this many `Gather` calls of the connection are waiting,
    /// each with its own number.
    Gather(usize),
    /// Deferred and never answered (the `Deferred` is kept).
    Hang,
    /// Answers "slept" after this many milliseconds, in the call.
    Sleep(u64),
    /// Answers "certs=N", N the length of the client's certificate chain (0 without one).
    Certs,
}

struct TestProtocol;

impl Protocol for TestProtocol {
    const IDENTIFIER: &'static str = "test.rpc";
    const VERSION: &'static str = "1.3.0";
    type Request = TestReq;
    type Reply = String;
    type Push = String;
}

struct TestService {
    gathered: Vec<(usize, Deferred<String>)>,
    hung: Vec<Deferred<String>>,
}

impl Service for TestService {
    type Protocol = TestProtocol;
    type Init = ();

    async fn init(_: &Arc<()>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        Ok(TestService {
            gathered: Vec::new(),
            hung: Vec::new(),
        })
    }

    async fn call(&mut self, req: TestReq, ctx: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
        Ok(match req {
            TestReq::Echo(text) => text.into(),
            TestReq::Push(text) => {
                ctx.push(&text)?;
                "pushed".to_owned().into()
            }
            TestReq::Note(_) => "notes are casts".to_owned().into(),
            TestReq::Broadcast(text) => {
                ctx.broadcast(&text);
                "sent".to_owned().into()
            }
            TestReq::Gather(n) => {
                let i = self.gathered.len();
                self.gathered.push((i, ctx.defer()));
                if self.gathered.len() == n {
                    for (i, deferred) in self.gathered.drain(..) {
                        deferred.reply(format!("#{i}"))?;
                    }
                }
                Reply::Later
            }
            TestReq::Hang => {
                self.hung.push(ctx.defer());
                Reply::Later
            }
            TestReq::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "slept".to_owned().into()
            }
            TestReq::Certs => {
                let n = ctx.peer_certificates().map_or(0, <[_]>::len);
                format!("certs={n}").into()
            }
        })
    }

    async fn cast(&mut self, req: TestReq, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
        if let TestReq::Note(text) = req {
            ctx.push(&format!("cast: {text}"))?;
        }
        Ok(())
    }
}

/// A plain daemon of the test service on 127.0.0.1, port 0 or `port`.
fn daemon(port: u16) -> DaemonHandle {
    Daemon::<TestService>::new(())
        .plain()
        .port(port)
        .start()
        .expect("the daemon starts")
}

fn addr_of(d: &DaemonHandle) -> String {
    format!("127.0.0.1:{}", d.port())
}

type TestClient = Client<TestProtocol>;

/// A client whose pushes arrive on the returned channel.
async fn client_with_pushes(addr: &str) -> (TestClient, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = within(
        "connect",
        TestClient::builder(addr)
            .on_push(move |p| {
                let _ = tx.send(p);
            })
            .connect(),
    )
    .await
    .expect("the client connects");
    (client, rx)
}

fn echo_req(text: &str) -> TestReq {
    TestReq::Echo(text.into())
}

#[tokio::test]
async fn calls_casts_and_pushes() {
    let d = daemon(0);
    let (client, mut pushes) = client_with_pushes(&addr_of(&d)).await;
    assert_eq!(client.server_version().as_deref(), Some("1.3.0"));
    assert_eq!(
        within("call", client.call(&echo_req("hello")))
            .await
            .unwrap(),
        "hello"
    );
    assert_eq!(
        within("call", client.call(&TestReq::Push("news".into())))
            .await
            .unwrap(),
        "pushed"
    );
    assert_eq!(within("push", pushes.recv()).await.unwrap(), "news");
    within(
        "cast",
        client.cast(&TestReq::Note("fire and forget".into())),
    )
    .await
    .unwrap();
    assert_eq!(
        within("the cast's push", pushes.recv()).await.unwrap(),
        "cast: fire and forget"
    );
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn two_hundred_calls_in_flight_on_one_client() {
    let d = daemon(0);
    let client = within("connect", TestClient::connect(addr_of(&d)))
        .await
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let c = client.clone();
        calls.spawn(async move { c.call(&TestReq::Gather(200)).await });
    }
    let mut answers = Vec::new();
    while let Some(joined) = within("200 calls", calls.join_next()).await {
        answers.push(joined.unwrap().unwrap());
    }
    // Each call was answered with its own reply: the 200 numbers, once each.
    answers.sort();
    answers.dedup();
    assert_eq!(answers.len(), 200);
    assert!(client.is_connected());
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn two_clients_on_one_daemon() {
    let d = daemon(0);
    let (a, mut a_pushes) = client_with_pushes(&addr_of(&d)).await;
    let (b, mut b_pushes) = client_with_pushes(&addr_of(&d)).await;
    assert_eq!(within("call a", a.call(&echo_req("a"))).await.unwrap(), "a");
    assert_eq!(within("call b", b.call(&echo_req("b"))).await.unwrap(), "b");
    assert_eq!(d.instance_count(), 2);
    // A broadcast from one reaches the other, and not itself.
    let sent = within("broadcast", a.call(&TestReq::Broadcast("from a".into())))
        .await
        .unwrap();
    assert_eq!(sent, "sent");
    assert_eq!(within("b's push", b_pushes.recv()).await.unwrap(), "from a");
    within("b's push", b.cast(&TestReq::Note("b".into())))
        .await
        .unwrap();
    assert_eq!(
        within("b's cast push", b_pushes.recv()).await.unwrap(),
        "cast: b"
    );
    assert!(a_pushes.try_recv().is_err());
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn a_call_without_an_answer_times_out_and_the_client_goes_on() {
    let d = daemon(0);
    let client = within(
        "connect",
        TestClient::builder(addr_of(&d))
            .call_timeout(Duration::from_millis(100))
            .connect(),
    )
    .await
    .unwrap();
    let err = within("call", client.call(&TestReq::Hang))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Timeout(t) if t == Duration::from_millis(100)),
        "{err:?}"
    );
    assert_eq!(
        within("call", client.call(&echo_req("still here")))
            .await
            .unwrap(),
        "still here"
    );
    // The daemon waits for deferred calls when it stops: leave first, which drops the one
    // that would never be answered.
    within("close", client.close()).await;
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn a_call_longer_than_the_keepalive_window_keeps_its_connection() {
    let d = daemon(0);
    // The client gives a silent server up after 2 x 100 ms; the call takes 600 ms. (And a
    // call timeout of `Duration::MAX` means none.)
    let client = within(
        "connect",
        TestClient::builder(addr_of(&d))
            .keepalive(Duration::from_millis(100))
            .call_timeout(Duration::MAX)
            .connect(),
    )
    .await
    .unwrap();
    let answer = within("the long call", client.call(&TestReq::Sleep(600))).await;
    assert_eq!(answer.unwrap(), "slept");
    assert_eq!(
        within("call", client.call(&echo_req("same connection")))
            .await
            .unwrap(),
        "same connection"
    );
    within("close", client.close()).await;
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn client_settings_out_of_range_are_refused() {
    for (keepalive, unsent) in [
        (Duration::ZERO, 1),
        (Duration::MAX, 1),
        (Duration::from_secs(30), 0),
    ] {
        // Refused before anything is dialled: no server is needed.
        let built = TestClient::builder("127.0.0.1:9")
            .keepalive(keepalive)
            .max_unsent(unsent)
            .connect();
        match within("refusal", built).await {
            Err(RpcError::Config(why)) => {
                let named = if unsent == 0 {
                    "max_unsent"
                } else {
                    "keepalive"
                };
                assert!(why.contains(named), "{why}");
            }
            other => panic!("{keepalive:?}, {unsent}: {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn casts_to_a_server_that_does_not_read_wait_for_room() {
    // A server that answers the hello, then reads nothing.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        while Decoder::default().decode(&mut buf).unwrap().is_none() {
            s.read_buf(&mut buf).await.unwrap();
        }
        let hello = Hello {
            identifier: "test.rpc".into(),
            version: "1.3.0".into(),
            features: Vec::new(),
        };
        let mut out = BytesMut::new();
        wire::encode(Kind::Hello, 0, &hello, usize::MAX, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        s
    });
    let client = within(
        "connect",
        TestClient::builder(addr.to_string())
            .max_unsent(64 * 1024)
            .connect(),
    )
    .await
    .unwrap();
    let mut stream = server.await.unwrap();

    // The kernel's socket buffers take a few MiB, then the client's 64 KiB, then a cast waits.
    // 8,000 casts of 4 KiB (32 MiB) is more than all of it.
    let text = "x".repeat(4096);
    let mut sent = 0;
    let waited = loop {
        if sent == 8000 {
            break false;
        }
        let note = TestReq::Note(text.clone());
        match tokio::time::timeout(Duration::from_millis(500), client.cast(&note)).await {
            Ok(done) => {
                done.unwrap();
                sent += 1;
            }
            Err(_) => break true,
        }
    };
    assert!(waited, "{sent} casts of 4 KiB queued without waiting");

    // Once the server reads, there is room again.
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
    });
    let note = TestReq::Note("after".into());
    within("a cast once the server reads", client.cast(&note))
        .await
        .unwrap();
    assert!(client.is_connected());
}

#[tokio::test]
async fn calls_wait_while_disconnected_and_the_client_reconnects() {
    let first = daemon(0);
    let port = first.port();
    let (connected_tx, mut connected) = mpsc::unbounded_channel();
    let client = within(
        "connect",
        TestClient::builder(addr_of(&first))
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .on_connect(move || {
                let _ = connected_tx.send(());
            })
            .connect(),
    )
    .await
    .unwrap();
    within("the first on_connect", connected.recv())
        .await
        .unwrap();
    assert_eq!(
        within("call", client.call(&echo_req("1"))).await.unwrap(),
        "1"
    );

    // Calls in flight when the connection drops get `Disconnected`: see
    // `a_call_in_flight_when_the_connection_drops_is_disconnected`, with the fake server.
    within("shutdown", first.shutdown()).await;
    within("the client to see the connection lost", async {
        while client.is_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // While disconnected, calls wait for the reconnection. One whose timeout comes first was
    // never sent, and says so.
    let err = within(
        "call",
        client.call_timeout(&echo_req("x"), Duration::from_millis(50)),
    )
    .await
    .unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    let req = echo_req("2");
    let mut waiting = Box::pin(client.call(&req));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut waiting)
            .await
            .is_err(),
        "no daemon, yet the call ended"
    );

    // A daemon on the same port again: the client comes back by itself, and the call that
    // waited is answered.
    let second = daemon(port);
    within("on_connect after the reconnection", connected.recv())
        .await
        .unwrap();
    assert_eq!(within("the waiting call", waiting).await.unwrap(), "2");
    assert!(client.is_connected());
    assert_eq!(
        within("call", client.call(&echo_req("3"))).await.unwrap(),
        "3"
    );
    within("shutdown", second.shutdown()).await;
}

#[tokio::test]
async fn a_wrong_identifier_is_refused() {
    let d = daemon(0);
    let err = within(
        "connect",
        TestClient::builder(addr_of(&d))
            .identifier("test.other")
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RpcError::WrongIdentifier(m) if m.contains("test.other")),
        "{err:?}"
    );
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn an_incompatible_version_is_refused_by_either_side() {
    let d = daemon(0);
    // The daemon (1.3.0, accepting ^1) refuses a 2.x client.
    let err = within(
        "connect",
        TestClient::builder(addr_of(&d)).version("2.0.0").connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RpcError::IncompatibleVersion(m) if m.contains("2.0.0")),
        "{err:?}"
    );
    // The client refuses a daemon outside the versions it accepts.
    let err = within(
        "connect",
        TestClient::builder(addr_of(&d)).accept("^1.4").connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RpcError::IncompatibleVersion(m) if m.contains("1.3.0")),
        "{err:?}"
    );
    within("shutdown", d.shutdown()).await;
}

/// A daemon requiring client certificates signed by the test CA.
fn mtls_daemon(pki: &Pki) -> DaemonHandle {
    tls_daemon(pki, ClientAuth::Required)
}

/// A daemon asking for client certificates signed by the test CA, with `auth`.
fn tls_daemon(pki: &Pki, auth: ClientAuth) -> DaemonHandle {
    let tls = pki
        .verifying_clients(Some(auth))
        .load()
        .expect("the certificates load");
    Daemon::<TestService>::new(())
        .tls(tls)
        .start()
        .expect("the daemon starts")
}

#[tokio::test]
async fn mutual_tls_accepts_a_client_certificate_signed_by_the_ca() {
    let pki = Pki::new();
    let d = mtls_daemon(&pki);
    let tls = ClientTls::new(&pki.ca).client_cert(&pki.client_cert, &pki.client_key);
    let client = within(
        "connect",
        TestClient::builder(format!("localhost:{}", d.port()))
            .tls(tls)
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(
        within("call", client.call(&echo_req("secure")))
            .await
            .unwrap(),
        "secure"
    );
    // The server name defaults to the host of the address; an IP address works too.
    let by_ip = within(
        "connect",
        TestClient::builder(addr_of(&d))
            .tls(ClientTls::new(&pki.ca).client_cert(&pki.client_cert, &pki.client_key))
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(
        within("call", by_ip.call(&echo_req("ip"))).await.unwrap(),
        "ip"
    );
    within("shutdown", d.shutdown()).await;
}

/// Connects to a mutual-TLS daemon with `tls`, which must fail; returns the error.
async fn refused_by_mtls(tls: impl FnOnce(&Pki) -> ClientTls) -> RpcError {
    let pki = Pki::new();
    let d = mtls_daemon(&pki);
    let err = within(
        "connect",
        TestClient::builder(format!("localhost:{}", d.port()))
            .tls(tls(&pki))
            .connect(),
    )
    .await
    .unwrap_err();
    within("shutdown", d.shutdown()).await;
    err
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let err = refused_by_mtls(|pki| ClientTls::new(&pki.ca)).await;
    assert!(matches!(err, RpcError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let err =
        refused_by_mtls(|pki| ClientTls::new(&pki.ca).client_cert(&pki.rogue_cert, &pki.rogue_key))
            .await;
    assert!(matches!(err, RpcError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let err = refused_by_mtls(|pki| {
        ClientTls::new(&pki.other_ca).client_cert(&pki.client_cert, &pki.client_key)
    })
    .await;
    assert!(
        matches!(&err, RpcError::Tls(m) if m.contains("certificate")),
        "{err:?}"
    );
}

#[tokio::test]
async fn optional_client_auth_shows_instances_the_certificate_when_there_is_one() {
    let pki = Pki::new();
    let d = tls_daemon(&pki, ClientAuth::Optional);
    let certs_seen = |tls: ClientTls| {
        let addr = format!("localhost:{}", d.port());
        async move {
            let client = TestClient::builder(addr).tls(tls).connect().await?;
            client.call(&TestReq::Certs).await
        }
    };
    let with_cert = ClientTls::new(&pki.ca).client_cert(&pki.client_cert, &pki.client_key);
    let seen = within("a client with a certificate", certs_seen(with_cert)).await;
    assert_eq!(seen.unwrap(), "certs=1");
    let bare = ClientTls::new(&pki.ca);
    let seen = within("a client without a certificate", certs_seen(bare)).await;
    assert_eq!(seen.expect("accepted without a certificate"), "certs=0");
    let rogue = ClientTls::new(&pki.ca).client_cert(&pki.rogue_cert, &pki.rogue_key);
    let err = within(
        "a client with a certificate from another CA",
        certs_seen(rogue),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RpcError::Tls(_)), "{err:?}");
    within("shutdown", d.shutdown()).await;
}
