//! Calls to the `rpc` kind's kv service through one `atoll::rpc::Client`, from tasks that
//! never pause: each puts `TASK:N` under a key of its own, then gets it. A put must answer the
//! value put before (else a put was lost or run twice), a get the value just put; a task stops
//! at its first failed or wrong answer, which it records.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::rpc::kv::{Kv, KvReply, KvRequest};
use atoll::rpc::{Client, RpcError};
use serde_json::Value;

use super::{within, WAIT};

/// The most put-then-get rounds a task makes: the load is bounded even if nothing stops it.
const MAX_ROUNDS: u64 = 200_000;

/// The tasks, their shared client and its runtime.
pub struct KvLoad {
    runtime: tokio::runtime::Runtime,
    client: Client<Kv>,
    stop: Arc<AtomicBool>,
    /// Rounds completed, per task.
    rounds: Arc<Vec<AtomicU64>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KvLoad {
    /// Connects one client to `addr` and starts `tasks` tasks on it, keys `task-0`...
    pub fn start(addr: SocketAddr, tasks: usize) -> KvLoad {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(within(
                "the client's connect",
                Client::<Kv>::connect(addr.to_string()),
            ))
            .expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..tasks)
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
        KvLoad {
            runtime,
            client,
            stop,
            rounds,
            failures,
            tasks,
        }
    }

    /// One more call on the shared client, bounded by [`WAIT`].
    pub fn call(&self, request: &KvRequest) -> Result<KvReply, RpcError> {
        self.runtime
            .block_on(within("a call", self.client.call(request)))
    }

    pub fn rounds(&self) -> Vec<u64> {
        self.rounds
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    pub fn assert_no_failure(&self, what: &str) {
        let failures = self.failures.lock().unwrap();
        assert!(failures.is_empty(), "{what}: {failures:?}");
    }

    /// Waits (bounded) until every task has made 5 more rounds, failing at once on a
    /// failed or wrong call.
    pub fn progress(&self, what: &str) {
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

    /// Stops the tasks and the client; returns the rounds each task completed, and the
    /// failures.
    pub fn stop(mut self) -> (Vec<u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let tasks = std::mem::take(&mut self.tasks);
        self.runtime.block_on(async {
            for task in tasks {
                within("a task's end", task).await.unwrap();
            }
            within("the client's close", self.client.close()).await;
        });
        (self.rounds(), self.failures())
    }

    /// Stops the tasks and the client, failing on a failed or wrong call.
    pub fn finish(self) {
        let (_, failures) = self.stop();
        assert!(failures.is_empty(), "at the end: {failures:?}");
    }
}

/// One call on a client of its own to `addr`, bounded by [`WAIT`].
pub fn call_once(addr: SocketAddr, request: &KvRequest) -> Result<KvReply, RpcError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(within("a call on a new client", async {
        let client = Client::<Kv>::connect(addr.to_string()).await?;
        let reply = client.call(request).await;
        client.close().await;
        reply
    }))
}
