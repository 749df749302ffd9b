//! The rpc scenario: callers loop on `add(a, b)`, each waiting for its answer before the next
//! call, in two parts measured one after the other:
//!
//! - `rpc_shared`: all the callers share ONE client connection (calls multiplexed on it);
//! - `rpc_own`: each caller has its own client connection.
//!
//! Each part reports calls per second, their latency and the server's CPU per call.
//!
//! The client is the library of the server under test: atoll's [`atoll::rpc::Client`] against
//! atoll, tarpc's generated client against tarpc, both as their documentation uses them, every
//! option at its default. So the figures compare the two stacks, client and server, with the
//! load generator's own work in them too (it runs on another core). Every answer is checked;
//! a failed call or a wrong sum makes the run invalid: it fails rather than print figures.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tokio::task::JoinSet;

use crate::latency::percentile_us;
use crate::load::{connect, Metrics};
use crate::probe::Probe;
use crate::rpc_server::{Add, AddProtocol, AdderClient};
use crate::window::{self, Timing, Window};

/// The longest a call may take before it counts as failed: both clients' own limits are longer
/// (atoll 5 s, tarpc 10 s), and no call of a healthy run comes near it.
const CALL_LIMIT: Duration = Duration::from_secs(2);
/// How long the callers may take to finish their last call once the run stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// The metric names of one part.
struct Part {
    shared: bool,
    calls: &'static str,
    p50: &'static str,
    p99: &'static str,
    cpu: &'static str,
    errors: &'static str,
}

const PARTS: [Part; 2] = [
    Part {
        shared: true,
        calls: "rpc_shared.calls_per_s",
        p50: "rpc_shared.p50_us",
        p99: "rpc_shared.p99_us",
        cpu: "rpc_shared.server_cpu_us_per_op",
        errors: "rpc_shared.errors",
    },
    Part {
        shared: false,
        calls: "rpc_own.calls_per_s",
        p50: "rpc_own.p50_us",
        p99: "rpc_own.p99_us",
        cpu: "rpc_own.server_cpu_us_per_op",
        errors: "rpc_own.errors",
    },
];

/// Runs both parts against the server `implementation` (`atoll` or `tarpc`) with `callers`
/// callers each.
pub(crate) async fn run(
    addr: SocketAddr,
    implementation: &str,
    callers: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    let kind = match implementation {
        "atoll" => Kind::Atoll,
        "tarpc" => Kind::Tarpc,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown --rpc-impl `{other}` (atoll or tarpc)"),
            ))
        }
    };
    let mut metrics = Metrics::new();
    for part in &PARTS {
        metrics.extend(run_part(part, addr, kind, callers, timing, probe).await?);
    }
    Ok(metrics)
}

/// One part: connects, runs the callers through warm-up and measure, checks they all ended
/// well.
async fn run_part(
    part: &Part,
    addr: SocketAddr,
    kind: Kind,
    callers: usize,
    timing: Timing,
    probe: &Probe,
) -> io::Result<Metrics> {
    // All connections are open before any call, so the server sees them all.
    let clients = if part.shared {
        vec![Client::connect(kind, addr).await?]
    } else {
        let mut clients = Vec::with_capacity(callers);
        for _ in 0..callers {
            clients.push(Client::connect(kind, addr).await?);
        }
        clients
    };
    let window = Arc::new(Window::default());
    let mut tasks = JoinSet::new();
    for i in 0..callers {
        let client = clients[i % clients.len()].clone();
        tasks.spawn(caller(client, window.clone(), i as u64 * 1_000_000_000));
    }
    let measured = window::run(&window, timing, probe).await;
    let mut total = Tally::default();
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(joined) = tasks.join_next().await {
            let tally = joined.map_err(io::Error::other)?;
            total.errors += tally.errors;
            if total.first_error.is_none() {
                total.first_error = tally.first_error;
            }
            total.latencies.extend(tally.latencies);
        }
        Ok::<_, io::Error>(())
    })
    .await;
    drop(tasks);
    for client in clients {
        client.close().await;
    }
    match drained {
        Ok(joined) => joined?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the callers did not stop within {DRAIN_LIMIT:?} of the end"),
            ))
        }
    }
    if let Some(first) = total.first_error {
        return Err(io::Error::other(format!(
            "{} failed calls or wrong answers, the run is invalid; the first: {first}",
            total.errors
        )));
    }
    let measured = measured?;
    total.latencies.sort_unstable();
    let calls = total.latencies.len() as f64;
    Ok(vec![
        (part.calls, measured.per_second(calls)),
        (part.p50, percentile_us(&total.latencies, 0.50)),
        (part.p99, percentile_us(&total.latencies, 0.99)),
        (part.cpu, measured.cpu_us_per(calls)),
        (part.errors, 0.0),
    ])
}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    /// One per call answered in the measured part.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// One caller's loop: call, check the answer, call again, until the window stops. It stops at
/// its first failure: the run is invalid then anyway.
async fn caller(client: Client, window: Arc<Window>, mut a: u64) -> Tally {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    while !window.stopped() {
        let b = 1;
        let started = Instant::now();
        let failure = match tokio::time::timeout(CALL_LIMIT, client.add(a, b)).await {
            Ok(Ok(sum)) if sum == a.wrapping_add(b) => {
                if window.measuring() {
                    tally.latencies.push(started.elapsed());
                }
                a = a.wrapping_add(1);
                continue;
            }
            Ok(Ok(sum)) => format!("add({a}, {b}) answered {sum}"),
            Ok(Err(e)) => format!("add({a}, {b}) failed: {e}"),
            Err(_) => format!("add({a}, {b}) had no answer within {CALL_LIMIT:?}"),
        };
        tally.errors += 1;
        tally.first_error = Some(failure);
        break;
    }
    tally
}

/// Which client library to call with.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Atoll,
    Tarpc,
}

/// A client connection of either library; clones share the connection.
#[derive(Clone)]
enum Client {
    Atoll(atoll::rpc::Client<AddProtocol>),
    Tarpc(AdderClient),
}

impl Client {
    /// Connects as the library's documentation does, with its default options. The tarpc
    /// connection gets `TCP_NODELAY` as the servers' sockets have (atoll's client sets it
    /// itself).
    async fn connect(kind: Kind, addr: SocketAddr) -> io::Result<Client> {
        match kind {
            Kind::Atoll => atoll::rpc::Client::connect(addr.to_string())
                .await
                .map(Client::Atoll)
                .map_err(|e| io::Error::other(format!("atoll client: {e}"))),
            Kind::Tarpc => {
                let transport = Transport::from((connect(addr).await?, Bincode::default()));
                let client = AdderClient::new(tarpc::client::Config::default(), transport);
                Ok(Client::Tarpc(client.spawn()))
            }
        }
    }

    /// `a + b`, asked of the server.
    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        match self {
            Client::Atoll(client) => client.call(&Add { a, b }).await.map_err(|e| e.to_string()),
            Client::Tarpc(client) => client
                .add(tarpc::context::current(), a, b)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Ends the connection: atoll's client is closed; tarpc's ends once its last clone is
    /// dropped.
    async fn close(self) {
        if let Client::Atoll(client) = self {
            client.close().await;
        }
    }
}
