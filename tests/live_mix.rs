//! Every listener kind and every kind of client at once, through ten zero-downtime upgrades of
//! one `atoll serve` (echo, rpc, http and https listeners), each to the same binary, one
//! every 2.5 s:
//!
//! - echo, a new connection per message (connect, send, read the echo, close);
//! - echo, long-lived connections sending a message every 10 ms;
//! - `atoll::rpc::Client`: tasks sharing one client, each a kv put then a get, answers checked;
//! - HTTP/1.1 keep-alive (raw requests on a kept connection);
//! - h2c, h2 over TLS, and HTTP/1.1 over TLS, from h2load (`.ci/run` installs it; the test
//!   fails without it), run after run.
//!
//! No client kind may see a failure; the long-lived echo and the keep-alive HTTP/1.1
//! connections are never reopened (they move to each new process); and a kv key put before
//! the upgrades is there after them, and after a `kill -9` of the last process and a fresh
//! start. Every loop is bounded in count and time, every read has a timeout, and nothing
//! asserts a timing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atoll::rpc::kv::{KvReply, KvRequest};
use common::control::ctl;
use common::h2load::{self, Run};
use common::http::health_kept;
use common::kv_load::{call_once, KvLoad};
use common::process::{kill9, wait_exit, Atoll, Reaper};
use common::{echo_once, Pki, WAIT};
use serde_json::Value;

const UPGRADES: usize = 10;

/// The time from one upgrade's start to the next's.
const PERIOD: Duration = Duration::from_millis(2500);

const LONG_LIVED: usize = 4;
const KEPT_ALIVE: usize = 2;
const RPC_TASKS: usize = 4;

/// The most turns any client loop makes: the load is bounded even if nothing stops it.
const MAX_TURNS: u64 = 100_000;

/// The key put before the upgrades, and its value.
const SURVIVOR: &str = "survivor";

fn survivor_value() -> Value {
    Value::from("put before the upgrades")
}

/// `atoll serve`'s config, next to the test certificates: an echo, an rpc (the kv service),
/// an http and an https listener on 127.0.0.1, any port.
fn config(pki: &Pki) -> PathBuf {
    let path = pki.dir.path().canonicalize().unwrap().join("atoll.toml");
    let listener = |name: &str, kind: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\n\
             shutdown_timeout = \"20s\"\n{extra}\n"
        )
    };
    let health = "[[listener.handlers]]\nhost = \"_\"\nresources = [\"health\"]\n";
    let text = format!(
        "[app]\nnode = \"t\"\n\n{}{}{}{}",
        listener("echo", "echo", ""),
        listener("kv", "rpc", "plain = true\n"),
        listener("web", "http", health),
        listener(
            "tls",
            "https",
            &format!("[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n{health}")
        ),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `atoll serve CONFIG`, the process noted in `reaper`; returns it and the address of each
/// listener by name: echo, kv, web, tls.
fn serve(config: &Path, reaper: &Reaper) -> (Atoll, [SocketAddr; 4]) {
    let atoll = Atoll::serve(config);
    reaper.add(atoll.pid());
    let listening = atoll.listening(4);
    let addr = |name: &str| {
        listening
            .iter()
            .find(|l| l.0 == name)
            .unwrap_or_else(|| panic!("no `{name}` in {listening:?}"))
            .2
    };
    let addrs = [addr("echo"), addr("kv"), addr("web"), addr("tls")];
    (atoll, addrs)
}

/// What one client kind saw.
#[derive(Default)]
struct Tally {
    /// Requests or messages answered as they should be.
    ok: AtomicU64,
    /// Connections opened (for h2load: runs started).
    connects: AtomicU64,
    /// h2load's requests never sent, after a GOAWAY: not failures (see `common::h2load`).
    unsent: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self, n: u64) {
        self.ok.fetch_add(n, Ordering::Relaxed);
    }

    fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }
}

/// What one client kind saw, in the end.
struct Seen {
    what: &'static str,
    ok: u64,
    connects: u64,
    unsent: u64,
    failures: Vec<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} answered, {} failed, {} connects",
            self.what,
            self.ok,
            self.failures.len(),
            self.connects
        )?;
        match self.unsent {
            0 => Ok(()),
            n => write!(f, ", {n} never sent after a GOAWAY"),
        }
    }
}

/// The client's kept-alive connection to `addr`, connected (and counted) when there is none;
/// `None`, with the failure counted, when connecting fails.
fn kept<'a>(
    stream: &'a mut Option<TcpStream>,
    addr: SocketAddr,
    tally: &Tally,
) -> Option<&'a mut TcpStream> {
    if stream.is_none() {
        tally.connected();
        match TcpStream::connect_timeout(&addr, WAIT) {
            Ok(s) => {
                s.set_read_timeout(Some(WAIT)).unwrap();
                *stream = Some(s);
            }
            Err(e) => {
                tally.fail(format!("connect: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                return None;
            }
        }
    }
    stream.as_mut()
}

/// The clients, all running until [`Clients::finish`].
struct Clients {
    stop: Arc<AtomicBool>,
    kinds: Vec<(&'static str, Arc<Tally>)>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    kv: KvLoad,
    /// h2load's per-request logs.
    _logs: tempfile::TempDir,
}

impl Clients {
    fn start([echo, kv, web, tls]: [SocketAddr; 4]) -> Clients {
        let mut clients = Clients {
            stop: Arc::new(AtomicBool::new(false)),
            kinds: Vec::new(),
            threads: Vec::new(),
            kv: KvLoad::start(kv, RPC_TASKS),
            _logs: tempfile::tempdir().unwrap(),
        };
        clients.spawn("echo, a connection per message", 1, move |stop, tally| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < MAX_TURNS {
                tally.connected();
                match echo_once(echo, n) {
                    Ok(()) => tally.ok(1),
                    Err(e) => tally.fail(format!("message {n}: {e}")),
                }
                n += 1;
                // Paced, so TIME_WAIT sockets never run out of ports.
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        clients.spawn("echo, long-lived", LONG_LIVED, move |stop, tally| {
            let mut stream: Option<TcpStream> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < MAX_TURNS {
                n += 1;
                let Some(s) = kept(&mut stream, echo, tally) else {
                    continue;
                };
                let msg = format!("{n:012}\n");
                let mut back = vec![0; msg.len()];
                let echoed = s
                    .write_all(msg.as_bytes())
                    .and_then(|()| s.read_exact(&mut back));
                match echoed {
                    Ok(()) if back == msg.as_bytes() => tally.ok(1),
                    Ok(()) => {
                        tally.fail(format!("message {n}: echoed {back:?}"));
                        stream = None;
                    }
                    Err(e) => {
                        tally.fail(format!("message {n}: {e}"));
                        stream = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        clients.spawn("HTTP/1.1 keep-alive", KEPT_ALIVE, move |stop, tally| {
            let mut stream: Option<TcpStream> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < MAX_TURNS {
                n += 1;
                let Some(s) = kept(&mut stream, web, tally) else {
                    continue;
                };
                match health_kept(s) {
                    Ok((_, close)) => {
                        tally.ok(1);
                        // Told to, a client opens a new connection: counted, and not a
                        // failure, but the test wants none.
                        if close {
                            stream = None;
                        }
                    }
                    Err(e) => {
                        tally.fail(format!("request {n}: {e}"));
                        stream = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let h2load_runs: [(&'static str, bool, Vec<String>); 3] = [
            (
                "h2c (h2load)",
                false,
                vec![format!("http://{web}/health"), "-n2000".into()],
            ),
            (
                "h2 over TLS (h2load)",
                false,
                vec![format!("https://{tls}/health"), "-n2000".into()],
            ),
            (
                "HTTP/1.1 over TLS (h2load --h1)",
                true,
                vec![
                    format!("https://{tls}/health"),
                    "--h1".into(),
                    "-n1000".into(),
                ],
            ),
        ];
        for (i, (what, h1, mut args)) in h2load_runs.into_iter().enumerate() {
            args.extend(["-c2".into(), format!("-m{}", if h1 { 1 } else { 4 })]);
            let logs = clients._logs.path().to_owned();
            clients.spawn(what, 1, move |stop, tally| {
                let mut run = 0;
                while !stop.load(Ordering::Relaxed) && run < MAX_TURNS {
                    tally.connected();
                    let log = logs.join(format!("{i}-{run}.log"));
                    let (out, log) = Run::start(what, &args, log).finish(Vec::new());
                    match h2load::verdict(what, h1, &out, &log) {
                        Ok(v) => {
                            tally.ok(v.succeeded);
                            tally.unsent.fetch_add(v.unsent, Ordering::Relaxed);
                        }
                        Err(why) => tally.fail(format!("run {run}: {why}")),
                    }
                    run += 1;
                    // Leaves the server some breath between runs on a 2-core machine.
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        clients
    }

    /// Starts `n` threads running `client`, which count in one [`Tally`] named `what`.
    fn spawn(
        &mut self,
        what: &'static str,
        n: usize,
        client: impl Fn(&AtomicBool, &Tally) + Send + Sync + 'static,
    ) {
        let tally = Arc::new(Tally::default());
        let client = Arc::new(client);
        for _ in 0..n {
            let (stop, tally, client) = (self.stop.clone(), tally.clone(), client.clone());
            self.threads
                .push((what, std::thread::spawn(move || client(&stop, &tally))));
        }
        self.kinds.push((what, tally));
    }

    fn oks(&self) -> Vec<u64> {
        self.kinds
            .iter()
            .map(|(_, t)| t.ok.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits (bounded) until every client kind has had answers since the call.
    fn progress(&self, what: &str) {
        let (from, deadline) = (self.oks(), Instant::now() + WAIT);
        loop {
            let now = self.oks();
            if now.iter().zip(&from).all(|(n, f)| n > f) {
                break;
            }
            let stalled: Vec<_> = self
                .kinds
                .iter()
                .zip(now.iter().zip(&from))
                .filter(|(_, (n, f))| n <= f)
                .map(|((name, t), _)| (name, t.failures.lock().unwrap().clone()))
                .collect();
            assert!(
                Instant::now() < deadline,
                "no answers {what} for {stalled:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kv.progress(what);
    }

    /// Stops every client; returns, per kind, what it saw (the RPC tasks last), and the
    /// rounds each RPC task completed.
    fn finish(self) -> (Vec<Seen>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut panicked = Vec::new();
        for (what, t) in self.threads {
            if t.join().is_err() {
                panicked.push(what);
            }
        }
        assert!(panicked.is_empty(), "client threads panicked: {panicked:?}");
        let (rounds, rpc_failures) = self.kv.stop();
        let mut kinds: Vec<_> = self
            .kinds
            .into_iter()
            .map(|(what, t)| Seen {
                what,
                ok: t.ok.load(Ordering::Relaxed),
                connects: t.connects.load(Ordering::Relaxed),
                unsent: t.unsent.load(Ordering::Relaxed),
                failures: t.failures.lock().unwrap().clone(),
            })
            .collect();
        kinds.push(Seen {
            what: "rpc::Client, kv put then get",
            ok: rounds.iter().sum::<u64>() * 2,
            connects: 1,
            unsent: 0,
            failures: rpc_failures,
        });
        (kinds, rounds)
    }
}

fn get(addr: SocketAddr, key: &str) -> Option<Value> {
    match call_once(addr, &KvRequest::Get { key: key.into() }) {
        Ok(KvReply::Value(v)) => v,
        other => panic!("get {key}: {other:?}"),
    }
}

#[test]
fn every_client_kind_rides_ten_upgrades_and_the_kv_store_a_kill_9() {
    h2load::require();
    let pki = Pki::new();
    let config = config(&pki);
    let reaper = Reaper::default();
    let (mut first, addrs) = serve(&config, &reaper);
    let [_, kv, _, _] = addrs;
    let stored = call_once(
        kv,
        &KvRequest::Put {
            key: SURVIVOR.into(),
            value: survivor_value(),
        },
    );
    assert!(matches!(stored, Ok(KvReply::Stored { .. })), "{stored:?}");

    let clients = Clients::start(addrs);
    clients.progress("before the first upgrade");
    let bin = env!("CARGO_BIN_EXE_atoll");
    let mut pids = vec![first.pid()];
    let mut last = Instant::now();
    for i in 0..UPGRADES {
        std::thread::sleep(PERIOD.saturating_sub(last.elapsed()));
        last = Instant::now();
        let answer = ctl(&config, &["upgrade", "--path", bin, "--json"]).json();
        assert_eq!(
            answer["old_pid"],
            *pids.last().unwrap(),
            "upgrade {i}: {answer}"
        );
        let pid = answer["pid"].as_u64().unwrap_or_else(|| panic!("{answer}")) as u32;
        reaper.add(pid);
        pids.push(pid);
        clients.progress(&format!("after upgrade {i}"));
    }
    let (kinds, rounds) = clients.finish();
    let report: Vec<String> = kinds.iter().map(Seen::to_string).collect();
    let report = report.join("\n");
    eprintln!("{UPGRADES} upgrades:\n{report}");
    for seen in &kinds {
        assert!(
            seen.failures.is_empty(),
            "{}: {:?}\n{report}",
            seen.what,
            seen.failures
        );
        assert!(seen.ok > 0, "{}: no answers", seen.what);
    }
    // Connections that never closed: they moved from process to process.
    let connects = |name: &str| kinds.iter().find(|k| k.what == name).unwrap().connects;
    assert_eq!(
        connects("echo, long-lived"),
        LONG_LIVED as u64,
        "long-lived echo connections were reopened"
    );
    assert_eq!(
        connects("HTTP/1.1 keep-alive"),
        KEPT_ALIVE as u64,
        "keep-alive connections were reopened"
    );

    // The old processes drained and left.
    assert!(first.exited().success(), "{}", first.stderr());
    let serving = *pids.last().unwrap();
    for pid in &pids[1..pids.len() - 1] {
        wait_exit(*pid, WAIT);
    }
    // The kv store kept the key put before the upgrades, and each task's last put.
    assert_eq!(get(kv, SURVIVOR), Some(survivor_value()));
    let last_puts: Vec<(String, Value)> = rounds
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(task, n)| (format!("task-{task}"), Value::from(format!("{task}:{n}"))))
        .collect();
    for (key, value) in &last_puts {
        assert_eq!(get(kv, key).as_ref(), Some(value), "{key}");
    }
    // ... and after a `kill -9` of the serving process and a fresh start.
    kill9(serving);
    let (_again, [_, kv, _, _]) = serve(&config, &reaper);
    assert_eq!(get(kv, SURVIVOR), Some(survivor_value()), "after kill -9");
    for (key, value) in &last_puts {
        assert_eq!(get(kv, key).as_ref(), Some(value), "{key}, after kill -9");
    }
}
