//! An RPC counter service and its client, in one process.
//!
//! The daemon gives every connection its own `CounterServer`, all seeded with one shared
//! counter. Clients `add` to it and `get` it; `wait_for` holds the call until the counter
//! reaches a value (a deferred reply, answered when another client's `add` gets there); every
//! change is pushed to the other connected clients.
//!
//! ```text
//! cargo run --example rpc_counter
//! ```
//!
//! It listens on plain TCP on a free port of 127.0.0.1. In production, give the daemon a
//! certificate with `.tls(...)` (and a client CA for mutual TLS) instead of `.plain()`, and the
//! client a `ClientTls`. The frames on the wire are described in `docs/rpc-wire.md`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::rpc::{Client, Ctx, Daemon, Deferred, Protocol, Reply, Service};
use atoll::BoxError;
use serde::{Deserialize, Serialize};

/// What the counter's clients and server agree on.
struct Counter;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    /// Adds to the counter; replies with the new value.
    Add(u64),
    /// Replies with the counter.
    Get,
    /// Replies once the counter is at least this value.
    WaitFor(u64),
}

impl Protocol for Counter {
    const IDENTIFIER: &'static str = "example.counter";
    const VERSION: &'static str = "1.0.0";
    type Request = Request;
    /// The counter's value.
    type Reply = u64;
    /// The counter's new value, pushed when another client changed it.
    type Push = u64;
}

/// What every connection's instance shares: the counter, and the calls waiting on it.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    value: u64,
    waiting: Vec<(u64, Deferred<u64>)>,
}

/// One connection's server instance.
struct CounterServer {
    shared: Arc<Shared>,
}

impl Service for CounterServer {
    type Protocol = Counter;
    type Init = Shared;

    async fn init(shared: &Arc<Shared>, ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        println!("server: client {} connected from {}", ctx.id(), ctx.peer());
        Ok(CounterServer {
            shared: shared.clone(),
        })
    }

    async fn call(
        &mut self,
        request: Request,
        ctx: &mut Ctx<Self>,
    ) -> Result<Reply<u64>, BoxError> {
        let mut state = self
            .shared
            .state
            .lock()
            .map_err(|_| "counter lock poisoned")?;
        match request {
            Request::Get => Ok(Reply::Now(state.value)),
            Request::Add(n) => {
                state.value = state
                    .value
                    .checked_add(n)
                    .ok_or("the counter would overflow")?;
                let value = state.value;
                // Answer the calls waiting for this value, and keep the others waiting.
                let (ready, waiting) = std::mem::take(&mut state.waiting)
                    .into_iter()
                    .partition(|(target, _)| *target <= value);
                state.waiting = waiting;
                drop(state);
                for (_, deferred) in ready {
                    // The waiting client may have left meanwhile; nothing to do then.
                    let _ = deferred.reply(value);
                }
                ctx.broadcast(&value);
                Ok(Reply::Now(value))
            }
            Request::WaitFor(target) if state.value >= target => Ok(Reply::Now(state.value)),
            Request::WaitFor(target) => {
                state.waiting.push((target, ctx.defer()));
                Ok(Reply::Later)
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let daemon = Daemon::<CounterServer>::new(Shared::default())
        .name("counter")
        .plain()
        .start()?;
    let addr = daemon.local_addr().to_string();
    println!("daemon: listening on {addr}");

    let watcher = Client::<Counter>::builder(addr.clone())
        .on_push(|value| println!("watcher: pushed, the counter is now {value}"))
        .connect()
        .await?;
    let adder = Client::<Counter>::connect(addr).await?;

    // A call held by the server until another client's add reaches 10.
    let waiting = {
        let watcher = watcher.clone();
        tokio::spawn(async move { watcher.call(&Request::WaitFor(10)).await })
    };
    for _ in 0..4 {
        let value = adder.call(&Request::Add(3)).await?;
        println!("adder: add 3 -> {value}");
    }
    let reached = tokio::time::timeout(Duration::from_secs(5), waiting).await???;
    println!("watcher: wait_for 10 answered with {reached}");
    println!("adder: get -> {}", adder.call(&Request::Get).await?);
    println!(
        "daemon: {} instances live: {:?}",
        daemon.instance_count(),
        daemon.instances().iter().map(|i| i.id).collect::<Vec<_>>()
    );

    adder.close().await;
    watcher.close().await;
    let report = daemon.shutdown().await;
    println!("daemon: stopped ({} drained)", report.drained);
    Ok(())
}
