//! Every client kind at once through a number of upgrades: a running `atoll serve` with an
//! `echo` listener on port P, a plain `rpc` listener (the kv service) on P+1, an `http` one on
//! P+2 and an `https` one on P+3 (each answering `/health`), and `atoll upgrade --path BIN`
//! every `--every` seconds, `--upgrades` times, under
//!
//! - echo, a connection per message: 2 loops of connect, send 16 bytes, read the echo, close;
//! - echo, long-lived: 8 connections, a 16-byte message every 10 ms each;
//! - HTTP/1.1 keep-alive: 8 connections, a `GET /health` every 5 ms each;
//! - RPC: 8 tasks sharing one `atoll::rpc::Client`, each a kv put then a get, without pause,
//!   answers checked (a wrong answer is a failure);
//! - HTTP/1.1 over TLS (rustls, trusting `--ca`): 4 keep-alive connections, a `GET /health`
//!   every 5 ms each;
//! - h2c and h2 over TLS: h2load, 4 connections at `--rps` requests per second each, up to 4
//!   streams in flight, run after run: a run ends at a GOAWAY (h2load never reconnects), and
//!   the next one starts at once. (Not h2load for HTTP/1.1: its paced mode stalls, or fails
//!   requests, when a server answers `connection: close`, which a draining one does.)
//!
//! The clients pace themselves, so latency is the server's answer time, not a queue the load
//! generator builds. For each kind it reports the requests (messages, calls) answered, the
//! failures, and p99 latency in the steady state against during the upgrades (from the
//! command until the old process has exited), by when each request ended. A failure: an
//! error, a wrong answer, a connection that ends other than by `connection: close`; for
//! h2load, a request that reached the wire and failed, or any answer but 2xx (requests h2load
//! never sent after a GOAWAY are counted apart: a standard client sends them on a new
//! connection). Connections reconnect after a failure or a `connection: close`, and their
//! connects are counted: one each means none was ever closed. The RPC client's connects are
//! its own (`on_connect`): it moves to each new process when the old one says `going away`.
//!
//! Bounded: every read waits at most 5 s, each upgrade 60 s, each h2load run 60 s; the run
//! lasts about 1 s of warm-up, `--steady`, then `--upgrades` × `--every`, then `--every`.
//!
//! ```text
//! atoll-bench upgrade-mix --atoll BIN --config FILE --ca FILE --port P [--upgrades 20]
//!     [--every 3] [--steady 3] [--rps 250]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atoll::app::command::Request;
use atoll::app::control;
use atoll::rpc::kv::{Kv, KvReply, KvRequest};
use atoll::rpc::Client;
use atoll::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::Flags;
use crate::latency::percentile_us;
use crate::upgrade::{exited, request};

/// Every socket wait.
const READ_WAIT: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_secs(1);
const MESSAGE: &[u8] = b"0123456789abcdef";

/// What one client kind saw.
#[derive(Default)]
struct Kind {
    /// Each answered request: when it ended (since the start) and how long it took.
    done: Vec<(Duration, Duration)>,
    failures: u64,
    first_failure: Option<String>,
    connects: u64,
    /// h2load's requests never sent, after a GOAWAY.
    unsent: u64,
}

impl Kind {
    fn fail(&mut self, why: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(why);
    }
}

type Shared = Arc<Mutex<Kind>>;

/// The start of the run, as an instant and as microseconds since the epoch (h2load logs the
/// latter).
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    epoch_us: u64,
}

impl Clock {
    fn now() -> Clock {
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Clock {
            start: Instant::now(),
            epoch_us,
        }
    }
}

pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "atoll", "config", "ca", "port", "upgrades", "every", "steady", "rps",
        ],
    )?;
    let atoll: PathBuf = flags.required("atoll")?;
    let config: PathBuf = flags.required("config")?;
    let ca: PathBuf = flags.required("ca")?;
    let port: u16 = flags.required("port")?;
    let upgrades: u32 = flags.get("upgrades", 20)?;
    let every = Duration::from_secs_f64(flags.get("every", 3.0)?);
    let steady = Duration::from_secs_f64(flags.get("steady", 3.0)?);
    let rps: u32 = flags.get("rps", 250)?;
    let env = Config::load_env(&config).map_err(|e| e.to_string())?;
    let socket = control::socket_path(&env);
    let addr = |offset: u16| SocketAddr::from(([127, 0, 0, 1], port + offset));
    let addrs = [addr(0), addr(1), addr(2), addr(3)];
    // One worker: the load generator is meant to run pinned to one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let plan = Plan {
        addrs,
        tls: connector(&ca)?,
        atoll,
        socket,
        upgrades,
        every,
        steady,
        rps,
    };
    runtime.block_on(run(plan))
}

struct Plan {
    addrs: [SocketAddr; 4],
    tls: tokio_rustls::TlsConnector,
    atoll: PathBuf,
    socket: PathBuf,
    upgrades: u32,
    every: Duration,
    steady: Duration,
    rps: u32,
}

const KINDS: [&str; 7] = [
    "echo, connection per message",
    "echo, long-lived (8)",
    "HTTP/1.1 keep-alive (8)",
    "RPC kv put/get (8 tasks)",
    "HTTP/1.1 over TLS (4)",
    "h2c (h2load)",
    "h2 over TLS (h2load)",
];

/// A TLS client trusting the certificates in `ca` (PEM), offering HTTP/1.1.
fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn run(plan: Plan) -> Result<(), String> {
    let [echo, kv, web, tls] = plan.addrs;
    let clock = Clock::now();
    let stop = Arc::new(AtomicBool::new(false));
    let kinds: Vec<Shared> = KINDS.iter().map(|_| Shared::default()).collect();
    let rpc_kind = kinds[3].clone();
    let client = Client::<Kv>::builder(kv.to_string())
        .on_connect(move || rpc_kind.lock().unwrap().connects += 1)
        .connect()
        .await
        .map_err(|e| format!("connect to {kv}: {e}"))?;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(tokio::spawn(echo_per_message(
            echo,
            clock,
            stop.clone(),
            kinds[0].clone(),
        )));
    }
    for _ in 0..8 {
        tasks.push(tokio::spawn(echo_long_lived(
            echo,
            clock,
            stop.clone(),
            kinds[1].clone(),
        )));
        tasks.push(tokio::spawn(http_kept(
            Plain(web),
            clock,
            stop.clone(),
            kinds[2].clone(),
        )));
    }
    for _ in 0..4 {
        tasks.push(tokio::spawn(http_kept(
            Tls(tls, plan.tls.clone()),
            clock,
            stop.clone(),
            kinds[4].clone(),
        )));
    }
    let run_id = std::process::id();
    for task in 0..8 {
        let key = format!("upgrade-mix-{run_id}-{task}");
        tasks.push(tokio::spawn(rpc_calls(
            client.clone(),
            key,
            clock,
            stop.clone(),
            kinds[3].clone(),
        )));
    }
    let logs = std::env::temp_dir().join(format!("atoll-upgrade-mix-{run_id}"));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    // A run's requests: about one upgrade period's worth, so a run ends soon after it is
    // told to stop.
    let per_run = (plan.rps as f64 * 4.0 * plan.every.as_secs_f64()).max(100.0) as u64;
    let h2load = [
        format!("http://{web}/health"),
        format!("https://{tls}/health"),
    ];
    let mut threads = Vec::new();
    for (i, url) in h2load.into_iter().enumerate() {
        let args = vec![
            url,
            format!("-n{per_run}"),
            "-c4".into(),
            "-m4".into(),
            format!("--rps={}", plan.rps),
        ];
        let (stop, kind, logs) = (stop.clone(), kinds[5 + i].clone(), logs.clone());
        threads.push(std::thread::spawn(move || {
            h2load_runs(i, &args, &logs, clock, &stop, &kind)
        }));
    }

    tokio::time::sleep(WARM_UP + plan.steady).await;
    // Each upgrade: (asked, ready, old process gone), since the start.
    let mut windows = Vec::new();
    let mut result = Ok(());
    for i in 0..plan.upgrades {
        let asked = clock.start.elapsed();
        let (socket, path) = (plan.socket.clone(), plan.atoll.clone());
        // Asked over the control socket, as `atoll upgrade` would: running the `atoll
        // upgrade` client instead would put its own start on the load generator's core.
        let answer = tokio::task::spawn_blocking(move || {
            let request = Request::Upgrade {
                to: None,
                path: Some(path),
                timeout_ms: None,
            };
            control::call(&socket, &request, Duration::from_secs(60))
        })
        .await
        .map_err(|e| e.to_string())?;
        let ready = clock.start.elapsed();
        let old_pid = match answer {
            Ok(a) if a.ok => a.data["old_pid"].as_u64(),
            Ok(a) => {
                result = Err(format!("upgrade {i} failed: {}", a.text.trim()));
                break;
            }
            Err(e) => {
                result = Err(format!("upgrade {i}: cannot ask: {e}"));
                break;
            }
        };
        let Some(old_pid) = old_pid else {
            result = Err(format!("upgrade {i}: no old_pid in the answer"));
            break;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !exited(old_pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !exited(old_pid) {
            result = Err(format!("upgrade {i}: the old process {old_pid} still runs"));
            break;
        }
        windows.push((asked, ready, clock.start.elapsed()));
        let next = asked + plan.every;
        tokio::time::sleep(next.saturating_sub(clock.start.elapsed())).await;
    }
    if result.is_ok() {
        tokio::time::sleep(plan.every).await;
    }
    let end = clock.start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(READ_WAIT * 2, t).await;
    }
    let _ = tokio::time::timeout(READ_WAIT, client.close()).await;
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = std::fs::remove_dir_all(&logs);
    result?;
    report(&kinds, &windows, end);
    Ok(())
}

fn during(windows: &[(Duration, Duration, Duration)], at: Duration) -> bool {
    windows.iter().any(|(from, _, to)| at >= *from && at < *to)
}

fn report(kinds: &[Shared], windows: &[(Duration, Duration, Duration)], end: Duration) {
    let n = windows.len() as f64;
    let mean_ms = |f: &dyn Fn(&(Duration, Duration, Duration)) -> Duration| {
        windows.iter().map(|w| f(w).as_secs_f64()).sum::<f64>() / n * 1e3
    };
    println!(
        "{} upgrades; command {:.0} ms, until the old process exited {:.0} ms (means); \
         {:.1} s during upgrades, {:.1} s steady",
        windows.len(),
        mean_ms(&|w| w.1 - w.0),
        mean_ms(&|w| w.2 - w.0),
        windows
            .iter()
            .map(|w| (w.2 - w.0).as_secs_f64())
            .sum::<f64>(),
        (end - WARM_UP).as_secs_f64()
            - windows
                .iter()
                .map(|w| (w.2 - w.0).as_secs_f64())
                .sum::<f64>(),
    );
    println!(
        "| client | answered | failures | connects | steady p99 (µs) | during p99 (µs) | during / steady |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, kind) in KINDS.iter().zip(kinds) {
        let k = kind.lock().unwrap();
        let (mut steady, mut busy) = (Vec::new(), Vec::new());
        for (at, latency) in &k.done {
            if *at < WARM_UP || *at >= end {
                continue;
            }
            match during(windows, *at) {
                true => busy.push(*latency),
                false => steady.push(*latency),
            }
        }
        steady.sort_unstable();
        busy.sort_unstable();
        let (s, d) = (percentile_us(&steady, 0.99), percentile_us(&busy, 0.99));
        let failures = match k.unsent {
            0 => k.failures.to_string(),
            n => format!("{} ({n} unsent)", k.failures),
        };
        println!(
            "| {name} | {} | {failures} | {} | {s:.0} | {d:.0} | {:.2} |",
            k.done.len(),
            k.connects,
            d / s
        );
    }
    for (name, kind) in KINDS.iter().zip(kinds) {
        if let Some(first) = &kind.lock().unwrap().first_failure {
            eprintln!("{name}: first failure: {first}");
        }
    }
}

fn record(kind: &Shared, clock: Clock, began: Instant) {
    let now = Instant::now();
    kind.lock()
        .unwrap()
        .done
        .push((now - clock.start, now - began));
}

async fn echo_per_message(addr: SocketAddr, clock: Clock, stop: Arc<AtomicBool>, kind: Shared) {
    let mut back = [0u8; MESSAGE.len()];
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        kind.lock().unwrap().connects += 1;
        let echoed = tokio::time::timeout(READ_WAIT, async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(MESSAGE).await?;
            s.read_exact(&mut back).await?;
            Ok::<_, std::io::Error>(())
        })
        .await;
        match echoed {
            Ok(Ok(())) if back == MESSAGE => record(&kind, clock, began),
            Ok(Ok(())) => kind.lock().unwrap().fail(format!("echoed {back:?}")),
            Ok(Err(e)) => kind.lock().unwrap().fail(e.to_string()),
            Err(_) => kind.lock().unwrap().fail("no echo within 5 s".into()),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn echo_long_lived(addr: SocketAddr, clock: Clock, stop: Arc<AtomicBool>, kind: Shared) {
    let mut stream: Option<TcpStream> = None;
    let mut back = [0u8; MESSAGE.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let s = match &mut stream {
            Some(s) => s,
            None => {
                kind.lock().unwrap().connects += 1;
                match tokio::time::timeout(READ_WAIT, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        stream.insert(s)
                    }
                    _ => {
                        kind.lock().unwrap().fail("connect".into());
                        continue;
                    }
                }
            }
        };
        let began = Instant::now();
        let echoed = tokio::time::timeout(READ_WAIT, async {
            s.write_all(MESSAGE).await?;
            s.read_exact(&mut back).await?;
            Ok::<_, std::io::Error>(())
        })
        .await;
        match echoed {
            Ok(Ok(())) if back == MESSAGE => record(&kind, clock, began),
            other => {
                kind.lock().unwrap().fail(format!("{other:?}"));
                stream = None;
            }
        }
    }
}

/// Where an HTTP/1.1 keep-alive client connects.
trait Dial: Send + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send;
    fn dial(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

struct Plain(SocketAddr);

impl Dial for Plain {
    type Stream = TcpStream;
    async fn dial(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(self.0).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

struct Tls(SocketAddr, tokio_rustls::TlsConnector);

impl Dial for Tls {
    type Stream = tokio_rustls::client::TlsStream<TcpStream>;
    async fn dial(&self) -> std::io::Result<Self::Stream> {
        let s = Plain(self.0).dial().await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
        self.1.connect(name, s).await
    }
}

/// `GET /health` every 5 ms on a kept-alive connection; a new one after `connection: close`
/// or a failure (the connect's time counts in the next request's latency, as a client
/// would see it).
async fn http_kept(to: impl Dial, clock: Clock, stop: Arc<AtomicBool>, kind: Shared) {
    let mut stream = None;
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let s = match &mut stream {
            Some(s) => s,
            None => {
                kind.lock().unwrap().connects += 1;
                match tokio::time::timeout(READ_WAIT, to.dial()).await {
                    Ok(Ok(s)) => stream.insert(s),
                    Ok(Err(e)) => {
                        kind.lock().unwrap().fail(format!("connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(_) => {
                        kind.lock()
                            .unwrap()
                            .fail("connect: no answer within 5 s".into());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
        };
        match tokio::time::timeout(READ_WAIT, request(s, &mut buf)).await {
            Ok(Ok(close)) => {
                record(&kind, clock, began);
                if close {
                    stream = None;
                }
            }
            other => {
                kind.lock().unwrap().fail(format!("{other:?}"));
                stream = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A put then a get of `key`, in a loop: a put must answer the value put before (else a put
/// was lost or run twice), a get the value just put.
async fn rpc_calls(
    client: Client<Kv>,
    key: String,
    clock: Clock,
    stop: Arc<AtomicBool>,
    kind: Shared,
) {
    let mut previous: Option<Value> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = Value::from(n);
        let put = KvRequest::Put {
            key: key.clone(),
            value: value.clone(),
        };
        let began = Instant::now();
        let put = match tokio::time::timeout(READ_WAIT, client.call(&put)).await {
            Ok(Ok(KvReply::Stored { previous: p })) if p == previous => Ok(()),
            other => Err(format!("put {n}: {other:?}, {previous:?} before")),
        };
        if put.is_ok() {
            record(&kind, clock, began);
        }
        let began = Instant::now();
        let get = KvRequest::Get { key: key.clone() };
        let got = match tokio::time::timeout(READ_WAIT, client.call(&get)).await {
            Ok(Ok(KvReply::Value(Some(v)))) if v == value => Ok(()),
            other => Err(format!("get {n}: {other:?}, {value} just put")),
        };
        if got.is_ok() {
            record(&kind, clock, began);
        }
        previous = match (put, got) {
            (Ok(()), Ok(())) => Some(value),
            (put, got) => {
                for why in [put.err(), got.err()].into_iter().flatten() {
                    kind.lock().unwrap().fail(why);
                }
                // After a failure, what the key holds now is what the next put replaces.
                match tokio::time::timeout(READ_WAIT, client.call(&get)).await {
                    Ok(Ok(KvReply::Value(v))) => v,
                    _ => None,
                }
            }
        };
    }
}

/// h2load runs, one after another, until `stop`.
fn h2load_runs(
    i: usize,
    args: &[String],
    logs: &Path,
    clock: Clock,
    stop: &AtomicBool,
    kind: &Shared,
) {
    let mut run = 0;
    while !stop.load(Ordering::Relaxed) {
        let log = logs.join(format!("{i}-{run}.log"));
        run += 1;
        kind.lock().unwrap().connects += 1;
        if let Err(why) = h2load_run(args, &log, clock, kind) {
            kind.lock().unwrap().fail(why);
            // A broken h2load (not installed, refused flags) would spin.
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&log);
    }
}

fn h2load_run(args: &[String], log: &Path, clock: Clock, kind: &Shared) -> Result<(), String> {
    let mut child = Command::new("h2load")
        .args(args)
        .arg(format!("--log-file={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("h2load: {e} (install nghttp2-client)"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("h2load did not finish within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("h2load {status}: {out}"));
    }
    // total, started, ...: requests never started were never sent.
    let counts: Vec<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .ok_or_else(|| format!("no `requests:` line: {out}"))?
        .split(", ")
        .filter_map(|part| part.split(' ').next()?.parse().ok())
        .collect();
    let (total, started) = match counts[..] {
        [total, started, ..] => (total, started),
        _ => return Err(format!("unreadable `requests:` line: {out}")),
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut k = kind.lock().unwrap();
    k.unsent += total - started;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(start), Some(status), Some(took)) = (
            f.first().and_then(|v| v.parse::<u64>().ok()),
            f.get(1).and_then(|v| v.parse::<i64>().ok()),
            f.get(2).and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        match status {
            // Refused by h2load's own HTTP/2 library before it was sent.
            -1 if start == 0 => k.unsent += 1,
            -1 => k.fail(format!(
                "a request sent at {start} µs failed after {took} µs"
            )),
            200..=299 => {
                let ended = Duration::from_micros((start + took).saturating_sub(clock.epoch_us));
                k.done.push((ended, Duration::from_micros(took)));
            }
            other => k.fail(format!("answered {other}")),
        }
    }
    Ok(())
}
