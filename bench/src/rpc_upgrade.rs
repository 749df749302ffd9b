//! RPC calls through upgrades: eight tasks share one `atoll::rpc::Client` of a running
//! `atoll serve`'s `rpc` listener (the kv service), each putting a value of its own then
//! getting it back, without pause, while `atoll upgrade --path BIN` runs `--upgrades` times,
//! one every `--every` seconds. Bounded: it ends one interval after the last upgrade. Prints
//! the calls made, the calls that failed, and the answers that were wrong (a get that does
//! not return the value just put, or a put whose previous value is not the one before: a
//! call lost or run twice).
//!
//! ```text
//! atoll-bench rpc-upgrade --atoll BIN --config FILE --port P [--upgrades 10] [--every 3.5]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::app::command::Request;
use atoll::app::control;
use atoll::rpc::kv::{Kv, KvReply, KvRequest};
use atoll::rpc::Client;
use atoll::Config;
use serde_json::Value;

use crate::args::Flags;

/// What the load saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    failed: u64,
    wrong: u64,
    first: Option<String>,
}

pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(args, &["atoll", "config", "port", "upgrades", "every"])?;
    let atoll: PathBuf = flags.required("atoll")?;
    let config: PathBuf = flags.required("config")?;
    let port: u16 = flags.required("port")?;
    let upgrades: u32 = flags.get("upgrades", 10)?;
    let every = Duration::from_secs_f64(flags.get("every", 3.5)?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let env = Config::load_env(&config).map_err(|e| e.to_string())?;
    let socket = control::socket_path(&env);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(addr, atoll, socket, upgrades, every))
}

async fn run(
    addr: SocketAddr,
    atoll: PathBuf,
    socket: PathBuf,
    upgrades: u32,
    every: Duration,
) -> Result<(), String> {
    let client = Client::<Kv>::connect(addr.to_string())
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let run_id = std::process::id();
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (client, stop, tally) = (client.clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("rpc-upgrade-{run_id}-{task}");
            let mut previous = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let value = Value::from(n);
                let put = client
                    .call(&KvRequest::Put {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .await;
                let expect_previous = previous.clone();
                let put = match put {
                    Ok(KvReply::Stored { previous: p }) if p == expect_previous => Ok(()),
                    Ok(other) => Err((true, format!("put {n}: {other:?}"))),
                    Err(e) => Err((false, format!("put {n}: {e}"))),
                };
                let get = client.call(&KvRequest::Get { key: key.clone() }).await;
                let get = match get {
                    Ok(KvReply::Value(Some(v))) if v == value => Ok(()),
                    Ok(other) => Err((true, format!("get {n}: {other:?}"))),
                    Err(e) => Err((false, format!("get {n}: {e}"))),
                };
                // After a failure, what the key holds now is what the next put replaces.
                let mut extra = 0;
                previous = if get.is_ok() {
                    Some(value)
                } else {
                    extra = 1;
                    match client.call(&KvRequest::Get { key: key.clone() }).await {
                        Ok(KvReply::Value(v)) => v,
                        _ => None,
                    }
                };
                if put.is_err() || get.is_err() {
                    // A client that fails at once (one without `going away`, disconnected)
                    // never yields: let the runtime's other tasks run.
                    tokio::task::yield_now().await;
                }
                let mut t = tally.lock().unwrap();
                t.calls += 2 + extra;
                for outcome in [put, get] {
                    if let Err((wrong, why)) = outcome {
                        if wrong {
                            t.wrong += 1;
                        } else {
                            t.failed += 1;
                        }
                        t.first.get_or_insert(why);
                    }
                }
            }
        }));
    }
    for i in 0..upgrades {
        tokio::time::sleep(every).await;
        let socket = socket.clone();
        let path = atoll.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let request = Request::Upgrade {
                to: None,
                path: Some(path),
                timeout_ms: None,
            };
            control::call(&socket, &request, Duration::from_secs(60))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("upgrade {i}: {e}"))?;
        if !answer.ok {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("upgrade {i} failed: {}", answer.text.trim()));
        }
    }
    tokio::time::sleep(every).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let t = tally.lock().unwrap();
    println!("rpc_upgrade.upgrades {upgrades}");
    println!("rpc_upgrade.calls {}", t.calls);
    println!("rpc_upgrade.failed {}", t.failed);
    println!("rpc_upgrade.wrong {}", t.wrong);
    if let Some(first) = &t.first {
        eprintln!("first: {first}");
    }
    Ok(())
}
