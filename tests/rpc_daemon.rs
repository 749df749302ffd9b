//! The RPC daemon over real sockets, spoken to with raw frames built with `atoll::rpc::wire`.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::rpc::wire::{self, codes, Decoder, ErrorBody, Frame, Hello, Kind};
use atoll::rpc::{
    Ctx, Daemon, DaemonHandle, Deferred, Exit, Instance as Started, InstanceInfo, Protocol, Reply,
    RpcError, Service, Supervise, Supervisor,
};
use atoll::telemetry::{Event, EventKind, Subscriber};
use atoll::{BoxError, ErrorKind, Phase, Registry};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use common::{within, Pki};

// ===== the service under test =====

struct TestProtocol;

impl Protocol for TestProtocol {
    const IDENTIFIER: &'static str = "test.daemon";
    const VERSION: &'static str = "1.2.0";
    type Request = Req;
    type Reply = String;
    type Push = String;
}

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    Echo(String),
    /// Defers the reply; the test answers it through `Held`.
    Hold,
    /// Waits, in the call, until the test notifies `Held::release`.
    Wait,
    /// As a cast: pushes the text back.
    Notify(String),
    /// Pushes the text to every other client.
    Broadcast(String),
    /// How many certificates the client presented.
    Certs,
    Panic,
    Fail,
    /// Pushes strings of this many bytes until a push is refused; answers how many were
    /// taken and the refusal.
    Flood(usize),
    /// The same from a task of its own, which reports to `Held::flooded`; answers at once.
    FloodLater(usize),
    /// The name of the current span and the value the daemon forwards, if any.
    Context,
}

/// What the test shares with every instance.
#[derive(Default)]
struct Held {
    deferred: Mutex<Vec<Deferred<String>>>,
    waiting: Mutex<bool>,
    release: Notify,
    /// What a `FloodLater` task saw: pushes taken, and the refusal.
    flooded: Mutex<Option<(usize, Option<RpcError>)>>,
    /// Makes `init` fail.
    refuse: Mutex<bool>,
}

impl Held {
    fn take(&self) -> Deferred<String> {
        self.deferred.lock().unwrap().pop().expect("a held call")
    }
}

struct Instance {
    held: Arc<Held>,
}

impl Service for Instance {
    type Protocol = TestProtocol;
    type Init = Arc<Held>;

    async fn init(init: &Arc<Arc<Held>>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        if *init.refuse.lock().unwrap() {
            return Err("refused on purpose".into());
        }
        Ok(Instance {
            held: Arc::clone(init),
        })
    }

    async fn call(&mut self, req: Req, ctx: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
        Ok(match req {
            Req::Echo(s) => s.into(),
            Req::Hold => {
                self.held.deferred.lock().unwrap().push(ctx.defer());
                Reply::Later
            }
            Req::Wait => {
                let released = self.held.release.notified();
                *self.held.waiting.lock().unwrap() = true;
                released.await;
                "done".to_owned().into()
            }
            Req::Notify(s) => {
                ctx.push(&s)?;
                s.into()
            }
            Req::Broadcast(s) => {
                ctx.broadcast(&s);
                "sent".to_owned().into()
            }
            Req::Certs => ctx
                .peer_certificates()
                .map_or(0, |c| c.len())
                .to_string()
                .into(),
            Req::Panic => panic!("the test service panics on purpose"),
            Req::Fail => return Err("the test service fails on purpose".into()),
            Req::Flood(size) => {
                // Through the context, so the pushes go before the reply.
                let (taken, refused) = flood(|text| ctx.push(text), size);
                format!("{taken} {refused:?}").into()
            }
            Req::FloodLater(size) => {
                let pusher = ctx.pusher();
                let held = self.held.clone();
                tokio::spawn(async move {
                    let text = "x".repeat(size);
                    let mut taken = 0;
                    let mut refused = None;
                    while taken < FLOOD_MAX {
                        if let Err(e) = pusher.push(&text) {
                            refused = Some(e);
                            break;
                        }
                        taken += 1;
                        // A pause between pushes lets the connection write what it can.
                        tokio::task::yield_now().await;
                    }
                    *held.flooded.lock().unwrap() = Some((taken, refused));
                });
                "started".to_owned().into()
            }
            Req::Context => {
                let span = tracing::Span::current();
                let name = span.metadata().map(|m| m.name());
                let value = ctx.caller::<String>();
                assert_eq!(value, atoll::rpc::caller::<String>(), "both ways agree");
                format!("{name:?} {:?}", value.as_deref()).into()
            }
        })
    }

    async fn cast(&mut self, req: Req, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
        if let Req::Notify(s) = req {
            ctx.push(&s)?;
        }
        Ok(())
    }
}

/// Pushes strings of `size` bytes until one is refused, [`FLOOD_MAX`] at most: how many were
/// taken, and the refusal.
fn flood(push: impl Fn(&String) -> Result<(), RpcError>, size: usize) -> (usize, Option<RpcError>) {
    let text = "x".repeat(size);
    for taken in 0..FLOOD_MAX {
        if let Err(e) = push(&text) {
            return (taken, Some(e));
        }
    }
    (FLOOD_MAX, None)
}

/// Where a flood gives up, so that a daemon that never refuses fails the test instead of
/// filling the machine's memory.
const FLOOD_MAX: usize = 2000;

// ===== helpers =====

/// One event seen: kind, code, error text.
type Seen1 = (EventKind, Option<String>, Option<String>);

/// The RPC events seen, and the socket server's handler errors.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Seen1>>>);

impl Subscriber for Seen {
    fn on_event(&self, e: &Event<'_>) {
        if matches!(
            e.kind,
            EventKind::RpcCall | EventKind::RpcFailure | EventKind::HandlerError
        ) {
            self.0.lock().unwrap().push((
                e.kind,
                e.code.map(str::to_owned),
                e.error.map(|x| x.to_string()),
            ));
        }
    }
}

impl Seen {
    fn codes(&self, kind: EventKind) -> Vec<Option<String>> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, c, _)| c.clone())
            .collect()
    }

    fn errors(&self, kind: EventKind) -> Vec<String> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(k, _, _)| *k == kind)
            .filter_map(|(_, _, e)| e.clone())
            .collect()
    }
}

/// Waits until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A started test daemon.
struct Fixture {
    handle: DaemonHandle,
    held: Arc<Held>,
    seen: Seen,
}

impl Fixture {
    fn start(change: impl FnOnce(Daemon<Instance>) -> Daemon<Instance>) -> Fixture {
        let held = Arc::new(Held::default());
        let seen = Seen::default();
        let daemon = Daemon::<Instance>::new(held.clone()).subscribe(seen.clone());
        let handle = change(daemon).start().expect("the daemon starts");
        Fixture { handle, held, seen }
    }

    fn plain() -> Fixture {
        Fixture::start(|d| d.plain())
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr().inet().expect("a TCP daemon")
    }

    async fn raw(&self) -> Raw<TcpStream> {
        Raw::tcp(self.addr()).await
    }

    /// A connection whose hello was accepted.
    async fn open(&self) -> Raw<TcpStream> {
        let mut c = self.raw().await;
        c.hello("test.daemon", "1.0.0").await;
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(Duration::from_millis(100)).await });
        }
    }
}

/// A client speaking raw frames.
struct Raw<S> {
    io: S,
    buf: BytesMut,
}

impl Raw<TcpStream> {
    async fn tcp(addr: SocketAddr) -> Raw<TcpStream> {
        let io = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Raw::new(io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    fn new(io: S) -> Raw<S> {
        Raw {
            io,
            buf: BytesMut::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        within("write", self.io.write_all(bytes))
            .await
            .expect("write");
    }

    async fn send<T: Serialize>(&mut self, kind: Kind, id: u64, value: &T) {
        let mut out = BytesMut::new();
        wire::encode(kind, id, value, usize::MAX, &mut out).unwrap();
        self.write(&out).await;
    }

    /// The next frame, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        within("a frame or the end", async {
            loop {
                if let Some(frame) = Decoder::default().decode(&mut self.buf).unwrap() {
                    return Some(frame);
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    async fn frame(&mut self) -> Frame {
        self.next().await.expect("a frame, not the end")
    }

    async fn reply(&mut self, id: u64) -> String {
        let f = self.frame().await;
        assert_eq!((f.kind, f.id), (Kind::Reply, id), "{f:?}");
        wire::decode(&f.payload).unwrap()
    }

    async fn push(&mut self) -> String {
        let f = self.frame().await;
        assert_eq!((f.kind, f.id), (Kind::Push, 0), "{f:?}");
        wire::decode(&f.payload).unwrap()
    }

    async fn error(&mut self, id: u64) -> ErrorBody {
        let f = self.frame().await;
        assert_eq!((f.kind, f.id), (Kind::Error, id), "{f:?}");
        wire::decode(&f.payload).unwrap()
    }

    async fn closed(&mut self) -> bool {
        self.next().await.is_none()
    }

    async fn say_hello(&mut self, identifier: &str, version: &str) {
        let hello = Hello {
            identifier: identifier.into(),
            version: version.into(),
            features: Vec::new(),
        };
        self.send(Kind::Hello, 0, &hello).await;
    }

    /// Sends a hello and checks the daemon's.
    async fn hello(&mut self, identifier: &str, version: &str) {
        self.say_hello(identifier, version).await;
        let f = self.frame().await;
        assert_eq!((f.kind, f.id), (Kind::Hello, 0), "{f:?}");
        let theirs: Hello = wire::decode(&f.payload).unwrap();
        assert_eq!(
            theirs,
            Hello {
                identifier: "test.daemon".into(),
                version: "1.2.0".into(),
                features: Vec::new(),
            }
        );
    }

    async fn call(&mut self, id: u64, req: &Req) -> String {
        self.send(Kind::Call, id, req).await;
        self.reply(id).await
    }
}

// ===== the hello =====

#[tokio::test]
async fn a_hello_is_answered_with_the_daemons_own() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    assert_eq!(c.call(1, &Req::Echo("hi".into())).await, "hi");
}

#[tokio::test]
async fn a_wrong_identifier_is_refused_and_closed() {
    let f = Fixture::plain();
    let mut c = f.raw().await;
    c.say_hello("other.service", "1.2.0").await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::WRONG_IDENTIFIER);
    assert!(
        err.message
            .contains("expected `test.daemon`, got `other.service`"),
        "{}",
        err.message
    );
    assert!(c.closed().await);
    until("the failure event", || {
        f.seen.codes(EventKind::RpcFailure) == [Some(codes::WRONG_IDENTIFIER.to_owned())]
    })
    .await;
}

#[tokio::test]
async fn an_incompatible_version_is_refused_and_closed() {
    let f = Fixture::plain();
    let mut c = f.raw().await;
    c.say_hello("test.daemon", "2.0.0").await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::INCOMPATIBLE_VERSION);
    assert!(
        err.message.contains("2.0.0 is not in `^1`"),
        "{}",
        err.message
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn the_accepted_versions_follow_the_options() {
    let f = Fixture::start(|d| {
        d.plain()
            .configure_rpc(|o| o.accept = Some(">=1, <3".into()))
    });
    let mut c = f.raw().await;
    c.hello("test.daemon", "2.5.0").await;
}

#[tokio::test]
async fn a_call_before_the_hello_is_a_bad_frame() {
    let f = Fixture::plain();
    let mut c = f.raw().await;
    c.send(Kind::Call, 1, &Req::Echo("x".into())).await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::BAD_FRAME);
    assert!(
        err.message.contains("expected a hello first"),
        "{}",
        err.message
    );
    assert!(c.closed().await);
}

// ===== calls, casts, pushes =====

#[tokio::test]
async fn keepalives_are_answered() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    let mut k = BytesMut::new();
    wire::keepalive(&mut k);
    c.write(&k).await;
    let back = c.frame().await;
    assert_eq!(
        (back.kind, back.id, back.payload.len()),
        (Kind::Keepalive, 0, 0)
    );
}

#[tokio::test]
async fn a_cast_gets_no_answer_but_may_push() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Cast, 0, &Req::Notify("pushed".into())).await;
    assert_eq!(c.push().await, "pushed");
    // Nothing else came for the cast: the next frame answers the next call.
    assert_eq!(c.call(2, &Req::Echo("next".into())).await, "next");
}

#[tokio::test]
async fn a_deferred_reply_comes_after_a_later_calls_reply() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Hold).await;
    assert_eq!(c.call(2, &Req::Echo("quick".into())).await, "quick");
    f.held.take().reply("late".into()).unwrap();
    assert_eq!(c.reply(1).await, "late");
}

#[tokio::test]
async fn a_failed_deferred_call_leaves_the_connection_open() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Hold).await;
    c.send(Kind::Call, 2, &Req::Hold).await;
    assert_eq!(c.call(3, &Req::Echo("x".into())).await, "x");
    f.held.take().fail("not today");
    let err = c.error(2).await;
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        (codes::SERVER_ERROR, "not today")
    );
    drop(f.held.take());
    assert_eq!(c.error(1).await.code, codes::NO_REPLY);
    assert_eq!(c.call(4, &Req::Echo("still".into())).await, "still");
}

#[tokio::test]
async fn many_calls_in_one_write_are_all_answered_in_order() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    let mut batch = BytesMut::new();
    for id in 1..=1000u64 {
        let req = Req::Echo(format!("call {id}"));
        wire::encode(Kind::Call, id, &req, usize::MAX, &mut batch).unwrap();
    }
    c.write(&batch).await;
    for id in 1..=1000u64 {
        assert_eq!(c.reply(id).await, format!("call {id}"));
    }
    until("1000 rpc.call events", || {
        f.seen.codes(EventKind::RpcCall).len() == 1000
    })
    .await;
    assert!(f.seen.codes(EventKind::RpcCall).iter().all(Option::is_none));
}

#[tokio::test]
async fn a_bad_request_is_answered_and_the_connection_goes_on() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Call, 5, &("not", "a", "request")).await;
    let err = c.error(5).await;
    assert_eq!(err.code, codes::BAD_REQUEST);
    assert_eq!(c.call(6, &Req::Echo("fine".into())).await, "fine");
    until("the call events", || {
        f.seen.codes(EventKind::RpcCall).len() == 2
    })
    .await;
    assert_eq!(
        f.seen.codes(EventKind::RpcCall)[0].as_deref(),
        Some(codes::BAD_REQUEST)
    );
    assert!(f.seen.codes(EventKind::RpcFailure).is_empty());
}

#[tokio::test]
async fn a_payload_nested_thousands_deep_is_a_bad_request_not_a_crash() {
    use atoll::rpc::kv::{KvReply, KvRequest, KvService, KvStore};
    let d = Daemon::<KvService>::new(KvStore::new())
        .plain()
        .start()
        .unwrap();
    let addr: SocketAddr = d.local_addr().to_string().parse().unwrap();
    let mut c = Raw::tcp(addr).await;
    c.say_hello("atoll.kv", "1.0.0").await;
    assert_eq!(c.frame().await.kind, Kind::Hello);
    // {"put": {"key": "k", "value": [[[[...1]]]]}}, 5,000 arrays deep: decoding a JSON value
    // recurses once per level, which would overflow the stack of the daemon's thread.
    let mut payload = b"\x81\xa3put\x82\xa3key\xa1k\xa5value".to_vec();
    payload.extend(std::iter::repeat_n(0x91, 5_000));
    payload.push(0x01);
    let mut frame = BytesMut::new();
    wire::encode_raw(Kind::Call, 7, &payload, &mut frame).unwrap();
    c.write(&frame).await;
    let err = c.error(7).await;
    assert_eq!(err.code, codes::BAD_REQUEST);
    assert!(
        err.message.contains("nested deeper than 64"),
        "{}",
        err.message
    );
    let put = KvRequest::Put {
        key: "k".into(),
        value: serde_json::json!([[1]]),
    };
    c.send(Kind::Call, 8, &put).await;
    let f = c.frame().await;
    assert_eq!((f.kind, f.id), (Kind::Reply, 8), "the connection goes on");
    let reply: KvReply = wire::decode(&f.payload).unwrap();
    assert_eq!(reply, KvReply::Stored { previous: None });
    within("shutdown", d.shutdown()).await;
}

#[tokio::test]
async fn a_broadcast_reaches_every_other_client() {
    let f = Fixture::plain();
    let mut a = f.open().await;
    let mut b = f.open().await;
    let mut c = f.open().await;
    assert_eq!(a.call(1, &Req::Broadcast("news".into())).await, "sent");
    assert_eq!(b.push().await, "news");
    assert_eq!(c.push().await, "news");
    // The sender got none: its next frame answers its next call.
    assert_eq!(a.call(2, &Req::Echo("me".into())).await, "me");
}

// ===== faults of the client =====

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let f = Fixture::start(|d| d.plain().configure_rpc(|o| o.max_frame_size = 4096));
    let mut c = f.open().await;
    let mut header = vec![0xA7, 0x11, wire::WIRE_VERSION, Kind::Call as u8];
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(&1u64.to_be_bytes());
    c.write(&header).await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::FRAME_TOO_LARGE);
    assert!(
        err.message.contains("the maximum is 4096"),
        "{}",
        err.message
    );
    assert!(c.closed().await);
    // The daemon goes on.
    let mut d = f.open().await;
    assert_eq!(d.call(1, &Req::Echo("ok".into())).await, "ok");
}

#[tokio::test]
async fn a_frame_that_stops_halfway_times_out() {
    let f = Fixture::start(|d| {
        d.plain()
            .configure_rpc(|o| o.frame_timeout = Duration::from_millis(200))
    });
    let mut c = f.open().await;
    let mut frame = BytesMut::new();
    wire::encode(
        Kind::Call,
        1,
        &Req::Echo("cut".into()),
        usize::MAX,
        &mut frame,
    )
    .unwrap();
    c.write(&frame[..10]).await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::FRAME_TIMEOUT);
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_client_that_never_says_hello_times_out() {
    let f = Fixture::start(|d| {
        d.plain()
            .configure_rpc(|o| o.frame_timeout = Duration::from_millis(200))
    });
    let mut c = f.raw().await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::FRAME_TIMEOUT);
    assert!(err.message.contains("no hello"), "{}", err.message);
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_idle_timeout() {
    let f = Fixture::start(|d| {
        d.plain()
            .configure_rpc(|o| o.idle_timeout = Duration::from_millis(300))
    });
    let mut c = f.open().await;
    assert_eq!(
        c.call(1, &Req::Echo("then silence".into())).await,
        "then silence"
    );
    assert!(c.closed().await, "closed without an error frame");
    until("the instance is gone", || f.handle.instance_count() == 0).await;
}

#[tokio::test]
async fn garbage_is_a_bad_frame_and_closes() {
    let f = Fixture::plain();
    let mut c = f.raw().await;
    c.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let err = c.error(0).await;
    assert_eq!(err.code, codes::BAD_FRAME);
    assert!(err.message.contains("magic 47 45"), "{}", err.message);
    assert!(c.closed().await);
}

// ===== faults of the service =====

#[tokio::test]
async fn a_panicking_call_fails_its_connection_only() {
    let f = Fixture::plain();
    let mut a = f.open().await;
    let mut b = f.open().await;
    a.send(Kind::Call, 7, &Req::Panic).await;
    let err = a.error(7).await;
    assert_eq!(err.code, codes::SERVER_PANIC);
    assert!(a.closed().await);
    assert_eq!(
        b.call(1, &Req::Echo("unaffected".into())).await,
        "unaffected"
    );
    until("the failure event", || {
        f.seen.codes(EventKind::RpcFailure) == [Some(codes::SERVER_PANIC.to_owned())]
    })
    .await;
    assert!(f.seen.errors(EventKind::RpcFailure)[0].contains("panics on purpose"));
    until("the socket server's report", || {
        !f.seen.errors(EventKind::HandlerError).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_failing_call_is_answered_server_error_and_closed() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Call, 3, &Req::Fail).await;
    let err = c.error(3).await;
    assert_eq!(err.code, codes::SERVER_ERROR);
    assert_eq!(err.message, "the test service fails on purpose");
    assert!(c.closed().await);
    until("the failure event", || {
        f.seen.codes(EventKind::RpcFailure) == [Some(codes::SERVER_ERROR.to_owned())]
    })
    .await;
}

// ===== instances and supervisors =====

#[tokio::test]
async fn instances_are_listed_and_counted_until_their_clients_leave() {
    let f = Fixture::plain();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let e = exits.clone();
    f.handle
        .supervisor()
        .on_exit(move |info: &InstanceInfo, exit: &Exit| {
            e.lock().unwrap().push((info.id, exit.clone()))
        });
    assert_eq!(f.handle.instance_count(), 0);
    let a = f.open().await;
    let b = f.open().await;
    assert_eq!(f.handle.instance_count(), 2);
    let listed = f.handle.instances();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| i.listener == "rpc"));
    assert!(listed[0].id < listed[1].id);
    let a_addr = a.io.local_addr().unwrap();
    assert_eq!(listed[0].peer.inet(), Some(a_addr));
    drop(a);
    until("one instance left", || f.handle.instance_count() == 1).await;
    assert_eq!(*exits.lock().unwrap(), vec![(listed[0].id, Exit::Normal)]);
    drop(b);
    until("no instance left", || f.handle.instance_count() == 0).await;
}

#[tokio::test]
async fn a_shared_supervisor_sees_the_instances_of_both_daemons() {
    let sup = Supervisor::new();
    let one = Fixture::start(|d| d.plain().name("one").supervisor(sup.clone()));
    let two = Fixture::start(|d| d.plain().name("two").supervisor(sup.clone()));
    let _a = one.open().await;
    let _b = two.open().await;
    let _c = two.open().await;
    assert_eq!(sup.count(), 3);
    let listeners: Vec<String> = sup.instances().into_iter().map(|i| i.listener).collect();
    assert_eq!(listeners, ["one", "two", "two"]);
    assert_eq!(
        (one.handle.instance_count(), two.handle.instance_count()),
        (1, 2)
    );
    assert!(one.handle.instances().iter().all(|i| i.listener == "one"));
}

#[tokio::test]
async fn the_supervisor_can_end_one_instance() {
    let f = Fixture::plain();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let e = exits.clone();
    f.handle
        .supervisor()
        .on_exit(move |_: &InstanceInfo, exit: &Exit| e.lock().unwrap().push(exit.clone()));
    let mut a = f.open().await;
    let mut b = f.open().await;
    let id = f.handle.instances()[0].id;
    assert!(f.handle.supervisor().terminate("rpc", id));
    assert!(a.closed().await);
    until("the exit", || exits.lock().unwrap().len() == 1).await;
    assert_eq!(*exits.lock().unwrap(), [Exit::Stopped]);
    assert_eq!(b.call(1, &Req::Echo("b".into())).await, "b");
    assert!(!f.handle.supervisor().terminate("rpc", id));
}

// ===== a supervisor of the user's own, and the starter's context =====

/// Runs each instance on a task of its own (or drops it, when `refuse`), and records what it
/// is told.
#[derive(Default)]
struct Spawner {
    refuse: bool,
    started: Mutex<Vec<InstanceInfo>>,
    exits: Mutex<Vec<(u64, Exit)>>,
}

impl Supervise for Spawner {
    fn start(&self, instance: Started) {
        self.started.lock().unwrap().push(instance.info().clone());
        if !self.refuse {
            tokio::spawn(instance);
        }
    }

    fn exited(&self, info: &InstanceInfo, exit: &Exit) {
        self.exits.lock().unwrap().push((info.id, exit.clone()));
    }
}

impl Spawner {
    fn exits(&self) -> Vec<(u64, Exit)> {
        self.exits.lock().unwrap().clone()
    }
}

/// A plain daemon whose instances `spawner` runs; the table's exit hooks recorded too.
fn supervised(spawner: &Arc<Spawner>) -> (Fixture, Arc<Mutex<Vec<Exit>>>) {
    let sup = Supervisor::with(spawner.clone());
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let h = hooked.clone();
    sup.on_exit(move |_: &InstanceInfo, exit: &Exit| h.lock().unwrap().push(exit.clone()));
    (Fixture::start(|d| d.plain().supervisor(sup)), hooked)
}

#[tokio::test]
async fn a_custom_supervisor_starts_each_instance_and_hears_how_it_ended() {
    let spawner = Arc::new(Spawner::default());
    let (f, hooked) = supervised(&spawner);
    let mut a = f.open().await;
    assert_eq!(a.call(1, &Req::Echo("served".into())).await, "served");
    let listed = f.handle.instances();
    assert_eq!(listed.len(), 1, "the table still lists it");
    let started = spawner.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(
        (started[0].id, &started[0].peer),
        (listed[0].id, &listed[0].peer)
    );
    drop(a);
    until("the end", || !spawner.exits().is_empty()).await;
    assert_eq!(spawner.exits(), [(listed[0].id, Exit::Normal)]);
    assert_eq!(*hooked.lock().unwrap(), [Exit::Normal], "the hooks ran too");
    assert_eq!(f.handle.instance_count(), 0);

    // An instance whose init fails is heard of too (the table never listed it).
    *f.held.refuse.lock().unwrap() = true;
    let mut b = f.raw().await;
    b.say_hello("test.daemon", "1.0.0").await;
    assert_eq!(b.error(0).await.message, "refused on purpose");
    until("the failed end", || spawner.exits().len() == 2).await;
    let (_, exit) = &spawner.exits()[1];
    assert!(
        matches!(exit, Exit::Failed { code, .. } if code == codes::SERVER_ERROR),
        "{exit:?}"
    );
    assert_eq!(hooked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_instance_the_supervisor_drops_refuses_its_connection() {
    let spawner = Arc::new(Spawner {
        refuse: true,
        ..Spawner::default()
    });
    let (f, _) = supervised(&spawner);
    let mut c = f.raw().await;
    c.say_hello("test.daemon", "1.0.0").await;
    assert!(c.closed().await, "closed without a hello");
    until("the end", || !spawner.exits().is_empty()).await;
    assert!(matches!(spawner.exits()[..], [(_, Exit::Stopped)]));
    assert_eq!(f.handle.instance_count(), 0);
    // The daemon goes on.
    assert_eq!(spawner.started.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stop_drains_and_then_ends_instances_a_custom_supervisor_runs() {
    let spawner = Arc::new(Spawner::default());
    let (f, hooked) = supervised(&spawner);
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Hold).await;
    assert_eq!(c.call(2, &Req::Echo("x".into())).await, "x");
    let report = within("the stop", f.handle.stop(Duration::from_millis(200))).await;
    assert_eq!(
        (report.drained, report.forced),
        (0, 1),
        "held open until then"
    );
    until("the end", || !spawner.exits().is_empty()).await;
    assert!(matches!(spawner.exits()[..], [(_, Exit::Stopped)]));
    assert_eq!(*hooked.lock().unwrap(), [Exit::Stopped]);
    assert_eq!(f.handle.instance_count(), 0);
    assert!(c.closed().await);
}

#[tokio::test]
async fn instances_run_in_the_span_and_with_the_value_of_the_code_that_started_the_daemon() {
    // Spans exist only where a subscriber listens; this test's runtime runs on this thread.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let span = tracing::info_span!("starter");
    let forwarding =
        span.in_scope(|| Fixture::start(|d| d.plain().forward_callers(String::from("blue"))));
    let spawner = Arc::new(Spawner::default());
    let supervised = span.in_scope(|| {
        Fixture::start(|d| {
            d.plain()
                .supervisor(Supervisor::with(spawner.clone()))
                .forward_callers(String::from("green"))
        })
    });
    let not_forwarding = span.in_scope(Fixture::plain);

    let mut c = forwarding.open().await;
    assert_eq!(
        c.call(1, &Req::Context).await,
        r#"Some("starter") Some("blue")"#
    );
    let mut c = supervised.open().await;
    assert_eq!(
        c.call(1, &Req::Context).await,
        r#"Some("starter") Some("green")"#
    );
    let mut c = not_forwarding.open().await;
    let seen = c.call(1, &Req::Context).await;
    assert!(seen.ends_with(" None"), "{seen}");
    assert!(!seen.contains("starter"), "{seen}");
}

// ===== starting and stopping =====

#[tokio::test]
async fn tls_is_required_unless_plain_is_asked_for() {
    let err = Daemon::<Instance>::new(Arc::default()).start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(text.starts_with("listener `rpc`"), "{text}");
    assert!(
        text.contains("needs TLS") && text.contains(".plain()"),
        "{text}"
    );
    let registry = Registry::new();
    let err = Daemon::<Instance>::new(Arc::default())
        .start_in(&registry)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn a_bad_version_option_is_a_config_error() {
    let err = Daemon::<Instance>::new(Arc::default())
        .plain()
        .configure_rpc(|o| o.version = Some("1.0".into()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("version `1.0`"), "{err}");
}

#[tokio::test]
async fn a_daemon_started_in_a_registry_is_listed_as_rpc() {
    let registry = Registry::new();
    let handle = Daemon::<Instance>::new(Arc::default())
        .plain()
        .name("calls")
        .start_in(&registry)
        .unwrap();
    let listed = registry.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].kind.as_str()),
        ("calls", "rpc")
    );
    let found = DaemonHandle::from_server(&registry.get("calls").unwrap()).unwrap();
    let mut c = Raw::tcp(handle.local_addr().inet().unwrap()).await;
    c.hello("test.daemon", "1.0.0").await;
    assert_eq!(found.instance_count(), 1);
    registry
        .stop("calls", Some(Duration::from_millis(100)))
        .await
        .unwrap();
}

#[tokio::test]
async fn over_tls_the_client_certificate_reaches_the_instance() {
    let pki = Pki::new();
    let tls = pki.verifying_clients(None).load().unwrap();
    let f = Fixture::start(|d| d.tls(tls));
    let connector = pki.connector(Some((&pki.client_cert, &pki.client_key)), &[]);
    let tcp = TcpStream::connect(f.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within("handshake", connector.connect(name, tcp))
        .await
        .unwrap();
    let mut c = Raw::new(tls);
    c.hello("test.daemon", "1.0.0").await;
    assert_eq!(c.call(1, &Req::Certs).await, "1");
}

#[tokio::test]
async fn stopping_answers_the_running_and_deferred_calls_then_closes() {
    let f = Fixture::plain();
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Hold).await;
    assert_eq!(c.call(2, &Req::Echo("x".into())).await, "x");
    // A call in progress, and one read behind it but not started.
    let mut batch = BytesMut::new();
    wire::encode(Kind::Call, 3, &Req::Wait, usize::MAX, &mut batch).unwrap();
    wire::encode(
        Kind::Call,
        4,
        &Req::Echo("y".into()),
        usize::MAX,
        &mut batch,
    )
    .unwrap();
    c.write(&batch).await;
    until("the call in progress", || *f.held.waiting.lock().unwrap()).await;

    let handle = f.handle.clone();
    let stop = tokio::spawn(async move { handle.shutdown().await });
    until("the stop", || f.handle.server().phase() == Phase::Stopping).await;
    // Margin for the stop request to reach the connection; the drain must still hold.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stop.is_finished(), "the stop waits for the owed answers");
    assert_eq!(f.handle.server().connection_count(), 1);

    f.held.release.notify_one();
    assert_eq!(c.reply(3).await, "done");
    assert_eq!(c.error(4).await.code, codes::SHUTTING_DOWN);
    f.held.take().reply("late but answered".into()).unwrap();
    assert_eq!(c.reply(1).await, "late but answered");
    assert!(c.closed().await);
    drop(c);
    let report = within("the stop", stop).await.unwrap();
    assert_eq!((report.drained, report.forced), (1, 0));
}

#[tokio::test]
async fn a_connection_forced_closed_at_the_shutdown_timeout_leaves_the_tables() {
    let f = Fixture::plain();
    let exits = Arc::new(Mutex::new(Vec::new()));
    let e = exits.clone();
    f.handle
        .supervisor()
        .on_exit(move |_: &InstanceInfo, exit: &Exit| e.lock().unwrap().push(exit.clone()));
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Hold).await;
    assert_eq!(c.call(2, &Req::Echo("x".into())).await, "x");
    let report = within("the stop", f.handle.stop(Duration::from_millis(200))).await;
    assert_eq!((report.drained, report.forced), (0, 1));
    assert_eq!(f.handle.instance_count(), 0);
    assert_eq!(*exits.lock().unwrap(), [Exit::Stopped]);
    assert!(f.held.take().reply("too late".into()).is_err());
}

// ===== push backlog =====

#[tokio::test]
async fn pushes_to_a_client_that_does_not_read_are_held_to_the_backlog() {
    const BACKLOG: usize = 1 << 20;
    const SIZE: usize = 64 * 1024;
    let f = Fixture::start(|d| d.plain().configure_rpc(|o| o.max_push_backlog = BACKLOG));
    let mut c = f.open().await;

    // Within a call the pushes wait in the connection until it returns: the backlog refuses
    // the one that would pass 1 MiB, and everything taken arrives, before the reply.
    for round in 1..=2 {
        c.send(Kind::Call, round, &Req::Flood(SIZE)).await;
        let mut pushes = 0;
        let reply = loop {
            let f = c.frame().await;
            match f.kind {
                Kind::Push => pushes += 1,
                Kind::Reply => break wire::decode::<String>(&f.payload).unwrap(),
                other => panic!("round {round}: {other:?}"),
            }
        };
        let (taken, refusal) = reply.split_once(' ').unwrap();
        assert_eq!(
            taken.parse::<usize>().unwrap(),
            pushes,
            "round {round}: {reply}"
        );
        assert!(
            pushes * SIZE <= BACKLOG && (pushes + 2) * SIZE > BACKLOG,
            "{pushes}"
        );
        assert!(refusal.contains("Backlog"), "round {round}: {refusal}");
    }

    // From a task of its own, to a client that reads nothing: the socket's buffers fill,
    // then the connection's, then pushes are refused instead of piling up.
    c.send(Kind::Call, 3, &Req::FloodLater(SIZE)).await;
    until("the flood refused", || {
        f.held.flooded.lock().unwrap().is_some()
    })
    .await;
    let (taken, refusal) = f.held.flooded.lock().unwrap().take().unwrap();
    assert!(
        matches!(refusal, Some(RpcError::Backlog(_))),
        "{taken}: {refusal:?}"
    );
    // What the kernel holds on loopback (send and receive buffers) is a few MiB at most.
    assert!(taken * SIZE < BACKLOG + (32 << 20), "{taken} pushes taken");

    // The connection goes on: the client reads all of it, and pushes are taken again.
    let mut pushes = 0;
    while pushes < taken {
        let f = c.frame().await;
        match f.kind {
            Kind::Push => pushes += 1,
            Kind::Reply => assert_eq!(f.id, 3),
            other => panic!("{other:?}"),
        }
    }
    c.send(Kind::Call, 4, &Req::Notify("again".into())).await;
    let mut frame = c.frame().await;
    if frame.kind == Kind::Reply && frame.id == 3 {
        frame = c.frame().await;
    }
    assert_eq!(frame.kind, Kind::Push, "{frame:?}");
    assert_eq!(wire::decode::<String>(&frame.payload).unwrap(), "again");
    assert_eq!(c.reply(4).await, "again");
}

// ===== keepalive during a call =====

#[tokio::test]
async fn a_keepalive_is_answered_while_a_call_runs() {
    // The call outlasts the idle timeout too, which rests while it runs.
    let idle = Duration::from_millis(200);
    let f = Fixture::start(|d| d.plain().configure_rpc(|o| o.idle_timeout = idle));
    let mut c = f.open().await;
    c.send(Kind::Call, 1, &Req::Wait).await;
    until("the call waits", || *f.held.waiting.lock().unwrap()).await;
    let mut keepalive = BytesMut::new();
    wire::keepalive(&mut keepalive);
    c.write(&keepalive).await;
    let answer = c.frame().await;
    assert_eq!((answer.kind, answer.id), (Kind::Keepalive, 0), "{answer:?}");
    // A call sent meanwhile waits for the running one; another keepalive behind it waits too.
    c.send(Kind::Call, 2, &Req::Echo("next".into())).await;
    c.write(&keepalive).await;
    tokio::time::sleep(3 * idle).await;
    f.held.release.notify_one();
    assert_eq!(c.reply(1).await, "done");
    assert_eq!(c.reply(2).await, "next");
    let last = c.frame().await;
    assert_eq!((last.kind, last.id), (Kind::Keepalive, 0), "{last:?}");
    assert_eq!(
        c.call(3, &Req::Echo("still open".into())).await,
        "still open"
    );
}
