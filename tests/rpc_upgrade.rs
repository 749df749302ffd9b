//! RPC calls through `atoll upgrade` and `atoll reload`, with real processes: eight tasks
//! share one `atoll::rpc::Client` of an `atoll serve`'s plain `rpc` listener (the kv
//! service), each putting values of its own and getting each back, without pause, while the
//! listener moves to a new process three times, or is replaced by a reload three times. No
//! call may fail, and no answer may be one that a call lost or run twice would give.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::rpc::kv::{Kv, KvReply, KvRequest};
use atoll::rpc::Client;
use common::control::ctl;
use common::process::{terminate, wait_exit, Atoll, Reaper};
use common::WAIT;
use serde_json::Value;

const TASKS: usize = 8;

/// The most put-then-get rounds a task makes: the load is bounded even if nothing stops it.
const MAX_ROUNDS: u64 = 200_000;

/// A config with one plain `rpc` listener, `kv`, whose connections may drain for
/// `shutdown_timeout`. Long, so a connection the client does not leave keeps the old
/// process (or listener) from finishing within the test's waits instead of being cut.
fn config_text(shutdown_timeout: &str) -> String {
    format!(
        "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\n\
         shutdown_timeout = \"{shutdown_timeout}\"\n"
    )
}

/// `atoll serve` on [`config_text`]; the config's path and the listener's address.
fn serve(dir: &Path) -> (Atoll, PathBuf, SocketAddr) {
    let path = dir.canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&path, config_text("20s")).unwrap();
    let atoll = Atoll::serve(&path);
    let (name, kind, addr) = atoll.listening(1).remove(0);
    assert_eq!((name.as_str(), kind.as_str()), ("kv", "rpc"));
    (atoll, path, addr)
}

/// Eight tasks on one client, each putting `TASK:N` under a key of its own, then getting it.
/// A put must answer the value put before (else a put was lost or run twice), a get the
/// value just put; a task stops at its first failed or wrong answer, which it records.
struct Load {
    runtime: tokio::runtime::Runtime,
    client: Client<Kv>,
    stop: Arc<AtomicBool>,
    /// Rounds completed, per task.
    rounds: Arc<Vec<AtomicU64>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(common::within(
                "the client's connect",
                Client::<Kv>::connect(addr.to_string()),
            ))
            .expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new((0..TASKS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..TASKS)
            .map(|task| {
                let (client, stop) = (client.clone(), stop.clone());
                let (rounds, failures) = (rounds.clone(), failures.clone());
                runtime.spawn(async move {
                    let key = format!("task-{task}");
                    let mut previous: Option<Value> = None;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && n < MAX_ROUNDS {
                        n += 1;
                        let value = Value::from(format!("{task}:{n}"));
                        let put = KvRequest::Put {
                            key: key.clone(),
                            value: value.clone(),
                        };
                        let why = match client.call(&put).await {
                            Ok(KvReply::Stored { previous: p }) if p == previous => None,
                            other => Some(format!(
                                "task {task}, put {n}: {other:?}, the value before being {previous:?}"
                            )),
                        };
                        let why = match why {
                            Some(why) => Some(why),
                            None => match client.call(&KvRequest::Get { key: key.clone() }).await
                            {
                                Ok(KvReply::Value(Some(v))) if v == value => None,
                                other => Some(format!(
                                    "task {task}, get {n}: {other:?}, {value} just put"
                                )),
                            },
                        };
                        if let Some(why) = why {
                            failures.lock().unwrap().push(why);
                            return;
                        }
                        previous = Some(value);
                        rounds[task].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            runtime,
            client,
            stop,
            rounds,
            failures,
            tasks,
        }
    }

    fn rounds(&self) -> Vec<u64> {
        self.rounds
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    fn assert_no_failure(&self, what: &str) {
        let failures = self.failures.lock().unwrap();
        assert!(failures.is_empty(), "{what}: {failures:?}");
    }

    /// Waits (bounded) until every task has made 5 more rounds, failing at once on a
    /// failed or wrong call.
    fn progress(&self, what: &str) {
        let (from, deadline) = (self.rounds(), Instant::now() + WAIT);
        loop {
            self.assert_no_failure(what);
            let now = self.rounds();
            if now.iter().zip(&from).all(|(n, f)| *n >= f + 5) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no progress {what}: rounds {from:?} then {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the tasks and the client, failing on a failed or wrong call.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let tasks = std::mem::take(&mut self.tasks);
        self.runtime.block_on(async {
            for task in tasks {
                common::within("a task's end", task).await.unwrap();
            }
            common::within("the client's close", self.client.close()).await;
        });
        self.assert_no_failure("at the end");
    }
}

#[test]
fn rpc_calls_ride_through_three_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, config, addr) = serve(dir.path());
    let reaper = Reaper::default();
    reaper.add(first.pid());
    let load = Load::start(addr);
    load.progress("before the first upgrade");

    let mut old_pid = first.pid();
    for i in 0..3 {
        let answer = ctl(
            &config,
            &["upgrade", "--path", env!("CARGO_BIN_EXE_atoll"), "--json"],
        )
        .json();
        assert_eq!(answer["old_pid"], old_pid, "upgrade {i}: {answer}");
        let new_pid = answer["pid"].as_u64().unwrap() as u32;
        reaper.add(new_pid);
        // The old process exits once the client has left it: its connection drains well
        // before `shutdown_timeout` would cut it.
        if i == 0 {
            assert!(first.exited().success(), "{}", first.stderr());
        } else {
            wait_exit(old_pid, WAIT);
        }
        // The calls go on, in the new process alone.
        load.progress(&format!("after upgrade {i}"));
        old_pid = new_pid;
    }
    let status = ctl(&config, &["status", "--json"]).json();
    assert_eq!(status["pid"], old_pid, "{status}");
    load.finish();

    terminate(old_pid);
}

#[test]
fn rpc_calls_ride_through_three_reloads_that_replace_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (mut atoll, config, addr) = serve(dir.path());
    let load = Load::start(addr);
    load.progress("before the first reload");

    // `shutdown_timeout` is a socket-server option: an `rpc` listener whose options change
    // is replaced by a new one on the same sockets, and the old one drains.
    for (i, timeout) in ["21s", "22s", "23s"].into_iter().enumerate() {
        std::fs::write(&config, config_text(timeout)).unwrap();
        let report = ctl(&config, &["reload", "--json"]).json();
        assert_eq!(report["replaced"][0]["name"], "kv", "reload {i}: {report}");
        // The client's connection left the old listener, which cut none.
        let old = &report["replaced"][0];
        assert_eq!(
            (&old["drained"], &old["forced"]),
            (&1.into(), &0.into()),
            "reload {i}: {report}"
        );
        load.progress(&format!("after reload {i}"));
    }
    let listeners = ctl(&config, &["listeners", "--json"]).json();
    assert_eq!(listeners[0]["addr"], addr.to_string(), "{listeners}");
    load.finish();

    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0), "{}", atoll.stderr());
}
