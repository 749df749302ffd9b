//! RPC calls never fail because a daemon stops its listener: the `going away` frame, with
//! real sockets. A daemon stopped under load from eight tasks sharing one client, while
//! another serves the same listening socket; and the frames themselves, with a peer that
//! names the feature and one that does not.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atoll::rpc::wire::{self, codes, features, Decoder, ErrorBody, Frame, Hello, Kind};
use atoll::rpc::{Client, Ctx, Daemon, DaemonHandle, Protocol, Reply, Service};
use atoll::BoxError;
use bytes::BytesMut;
use common::{within, LOCALHOST, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Calls carry a number unique to the test; the service counts how often it ran each.
struct Count;

impl Protocol for Count {
    const IDENTIFIER: &'static str = "test.count";
    const VERSION: &'static str = "1.0.0";
    type Request = u64;
    type Reply = u64;
    type Push = u64;
}

/// Every run of every call, by number, shared by every daemon of a test.
type Runs = Arc<Mutex<HashMap<u64, u32>>>;

struct Counter {
    runs: Runs,
}

impl Service for Counter {
    type Protocol = Count;
    type Init = Runs;

    async fn init(runs: &Arc<Runs>, _: &mut Ctx<Self>) -> Result<Self, BoxError> {
        Ok(Counter {
            runs: Runs::clone(runs),
        })
    }

    async fn call(&mut self, n: u64, _: &mut Ctx<Self>) -> Result<Reply<u64>, BoxError> {
        // A call that yields, so that some are under way when the stop comes.
        tokio::task::yield_now().await;
        *self.runs.lock().unwrap().entry(n).or_default() += 1;
        Ok(n.into())
    }

    async fn cast(&mut self, n: u64, _: &mut Ctx<Self>) -> Result<(), BoxError> {
        *self.runs.lock().unwrap().entry(n).or_default() += 1;
        Ok(())
    }
}

/// Eight tasks sharing `client`, each calling in a loop until `stop`, then 50 calls more.
/// Returns the numbers of the calls made and the failures. `started` is told once 200 calls
/// have been answered.
async fn load(
    client: Client<Count>,
    stop: Arc<AtomicBool>,
    started: Arc<Notify>,
) -> (Vec<u64>, Vec<String>) {
    let next = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, stop, started, next) =
            (client.clone(), stop.clone(), started.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut made, mut failures) = (Vec::new(), Vec::new());
            let mut after = 0;
            while after < 50 {
                if stop.load(Ordering::Acquire) {
                    after += 1;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                match client.call(&n).await {
                    Ok(got) if got == n => {}
                    Ok(got) => failures.push(format!("call {n} answered {got}")),
                    Err(e) => failures.push(format!("call {n}: {e}")),
                }
                made.push(n);
                if n == 200 {
                    started.notify_one();
                }
            }
            (made, failures)
        }));
    }
    let (mut made, mut failures) = (Vec::new(), Vec::new());
    for task in tasks {
        let (m, f) = within("a load task", task).await.unwrap();
        made.extend(m);
        failures.extend(f);
    }
    (made, failures)
}

fn counter_daemon(runs: &Runs, listener: &std::net::TcpListener) -> DaemonHandle {
    Daemon::<Counter>::new(runs.clone())
        .plain()
        .bind(atoll::Bind::TcpListeners(vec![listener
            .try_clone()
            .unwrap()]))
        .start()
        .expect("the daemon starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_stopped_under_load_fails_no_call_and_runs_none_twice() {
    // Two daemons on one listening socket: when the first stops, the second takes the
    // connections, as the new process of an upgrade does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("atoll=debug")
        .with_test_writer()
        .try_init();
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let runs = Runs::default();
    let first = counter_daemon(&runs, &listener);
    let client = within("connect", Client::<Count>::connect(addr.to_string()))
        .await
        .unwrap();
    let second = counter_daemon(&runs, &listener);

    let (stop, started) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
    let load = tokio::spawn(load(client.clone(), stop.clone(), started.clone()));
    within("200 calls", started.notified()).await;
    let report = within("the first daemon's stop", first.stop(WAIT)).await;
    assert_eq!(report.forced, 0, "{report:?}");
    stop.store(true, Ordering::Release);
    let (made, failures) = within("the load", load).await.unwrap();

    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), made.len(), "every call ran");
    let twice: Vec<_> = runs.iter().filter(|(_, &r)| r != 1).collect();
    assert!(twice.is_empty(), "calls run more than once: {twice:?}");
    assert!(second.instance_count() > 0, "the second daemon took over");
    within("shutdown", second.shutdown()).await;
}

// ===== the frames =====

/// A peer speaking raw frames.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, features: &[&str]) -> (Raw, Hello) {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        let hello = Hello {
            identifier: Count::IDENTIFIER.into(),
            version: Count::VERSION.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        };
        raw.send(Kind::Hello, 0, &hello).await;
        let f = raw.frame().await.expect("the server's hello");
        assert_eq!(f.kind, Kind::Hello, "{f:?}");
        let theirs = wire::decode(&f.payload).unwrap();
        (raw, theirs)
    }

    async fn send<T: serde::Serialize>(&mut self, kind: Kind, id: u64, value: &T) {
        let mut out = BytesMut::new();
        wire::encode(kind, id, value, usize::MAX, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next frame, or `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Frame> {
        within("a frame or the end", async {
            loop {
                if let Some(f) = Decoder::default().decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    async fn reply(&mut self, id: u64) -> u64 {
        let f = self.frame().await.expect("a reply");
        assert_eq!((f.kind, f.id), (Kind::Reply, id), "{f:?}");
        wire::decode(&f.payload).unwrap()
    }
}

#[tokio::test]
async fn going_away_takes_the_calls_sent_until_the_client_answers() {
    let runs = Runs::default();
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let daemon = counter_daemon(&runs, &listener);
    let (mut c, hello) =
        Raw::connect(listener.local_addr().unwrap(), &[features::GOING_AWAY]).await;
    assert_eq!(hello.features, [features::GOING_AWAY]);
    c.send(Kind::Call, 1, &101u64).await;
    assert_eq!(c.reply(1).await, 101);

    let stop = tokio::spawn(async move { daemon.stop(WAIT).await });
    let f = c.frame().await.expect("going away");
    assert_eq!((f.kind, f.id, f.payload.len()), (Kind::GoingAway, 0, 0));
    // Calls sent after the server went away, before the client answers: taken and run.
    c.send(Kind::Call, 2, &102u64).await;
    c.send(Kind::Cast, 0, &103u64).await;
    c.send(Kind::Call, 3, &104u64).await;
    let mut out = BytesMut::new();
    wire::going_away(&mut out);
    c.stream.write_all(&out).await.unwrap();
    assert_eq!(c.reply(2).await, 102);
    assert_eq!(c.reply(3).await, 104);
    assert!(
        c.frame().await.is_none(),
        "the server closes after the answers"
    );
    let report = within("the stop", stop).await.unwrap();
    assert_eq!(report.forced, 0);
    let runs = runs.lock().unwrap().clone();
    for n in [101, 102, 103, 104] {
        assert_eq!(runs.get(&n), Some(&1), "{n}: {runs:?}");
    }
}

#[tokio::test]
async fn a_peer_without_the_feature_gets_the_old_hello_and_no_going_away() {
    let runs = Runs::default();
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let daemon = counter_daemon(&runs, &listener);
    // Unknown feature names are ignored, and so is an old peer's lack of any.
    for features in [&[][..], &["time travel"][..]] {
        let (mut c, hello) = Raw::connect(listener.local_addr().unwrap(), features).await;
        assert!(hello.features.is_empty(), "{hello:?}");
        c.send(Kind::Call, 1, &7u64).await;
        assert_eq!(c.reply(1).await, 7);
        // Sent unasked, `going away` is a bad frame.
        let mut out = BytesMut::new();
        wire::going_away(&mut out);
        c.stream.write_all(&out).await.unwrap();
        let f = c.frame().await.expect("an error");
        assert_eq!((f.kind, f.id), (Kind::Error, 0));
        assert_eq!(
            wire::decode::<ErrorBody>(&f.payload).unwrap().code,
            codes::BAD_FRAME
        );
    }
    // The server's hello to an old peer is the same bytes as before features existed.
    let mut old = BytesMut::new();
    wire::encode(
        Kind::Hello,
        0,
        &serde_json::json!({"identifier": Count::IDENTIFIER, "version": Count::VERSION}),
        usize::MAX,
        &mut old,
    )
    .unwrap();
    let (mut c, _) = Raw::connect(listener.local_addr().unwrap(), &[]).await;
    let mut theirs = BytesMut::new();
    let hello = Hello {
        identifier: Count::IDENTIFIER.into(),
        version: Count::VERSION.into(),
        features: Vec::new(),
    };
    wire::encode(Kind::Hello, 0, &hello, usize::MAX, &mut theirs).unwrap();
    assert_eq!(old, theirs);
    // At a stop, an old peer is not told: the server closes.
    let stop = tokio::spawn(async move { daemon.stop(WAIT).await });
    assert!(c.frame().await.is_none(), "closed without a going away");
    within("the stop", stop).await.unwrap();
}
