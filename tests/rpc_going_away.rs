//! RPC calls never fail because a daemon stops its listener: the `going away` frame, with
//! real sockets. A daemon stopped while another serves the same listening socket, a
//! registry's replace of an `rpc` listener, both under load from eight tasks sharing one
//! client; and the frames themselves, with a peer that names the feature and one that does
//! not. `atoll upgrade` under load is in `rpc_upgrade.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atoll::rpc::{Client, Ctx, Daemon, DaemonHandle, Protocol, Reply, Service};
use atoll::BoxError;
use common::{within, LOCALHOST, WAIT};
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
