//! The load generator: runs the chosen scenarios, one after another, against a server on
//! 127.0.0.1 whose pid it is given, and prints one `metric value` line per result on stdout
//! (progress goes to stderr). It runs on its own single-threaded tokio runtime.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::args::Flags;
use crate::probe::Probe;
use crate::window::Timing;
use crate::{accept, bulk, echo, http_load, idle, rpc_load};

/// A scenario's results: metric name (`scenario.what_unit`) and value.
pub(crate) type Metrics = Vec<(&'static str, f64)>;

const SCENARIOS: &[&str] = &[
    "echo",
    "bulk",
    "accept",
    "idle",
    "idle-used",
    "http",
    "rpc",
    "ws",
    "ws-idle",
];

/// `load --port P --pid PID [--scenarios echo,bulk,accept,idle,idle-used,http,rpc,ws,ws-idle]
/// [--warmup 1] [--duration 5] [--echo-conns 50] [--bulk-conns 4] [--accept-loops 8]
/// [--idle-conns 10000] [--http-conns 64] [--rpc-impl atoll|tarpc] [--rpc-callers 50]`:
/// `--rpc-impl` names the server under test, whose client library the rpc scenario calls with
/// (required for `rpc`). `ws` runs `--http-conns` connections, `ws-idle` `--idle-conns`.
pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(
        args,
        &[
            "port",
            "pid",
            "scenarios",
            "warmup",
            "duration",
            "echo-conns",
            "bulk-conns",
            "accept-loops",
            "idle-conns",
            "http-conns",
            "rpc-impl",
            "rpc-callers",
        ],
    )?;
    let port: u16 = flags.required("port")?;
    let pid: u32 = flags.required("pid")?;
    let scenarios: String = flags.get("scenarios", "echo,bulk,accept".to_owned())?;
    let timing = Timing {
        warmup: Duration::from_secs_f64(flags.get("warmup", 1.0)?),
        measure: Duration::from_secs_f64(flags.get("duration", 5.0)?),
    };
    let echo_conns: usize = flags.get("echo-conns", 50)?;
    let bulk_conns: usize = flags.get("bulk-conns", 4)?;
    let accept_loops: usize = flags.get("accept-loops", 8)?;
    let idle_conns: usize = flags.get("idle-conns", 10_000)?;
    let http_conns: usize = flags.get("http-conns", 64)?;
    let rpc_impl: String = flags.get("rpc-impl", String::new())?;
    let rpc_callers: usize = flags.get("rpc-callers", 50)?;
    let scenarios: Vec<&str> = scenarios.split(',').map(str::trim).collect();
    if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(s)) {
        return Err(format!(
            "unknown scenario `{bad}` (known: {})",
            SCENARIOS.join(", ")
        ));
    }
    if scenarios.contains(&"rpc") && rpc_impl.is_empty() {
        return Err(
            "the rpc scenario needs `--rpc-impl atoll|tarpc`: the server's library is the client"
                .to_owned(),
        );
    }
    if rpc_callers == 0 {
        return Err("--rpc-callers must be at least 1".to_owned());
    }

    let probe = Probe::new(pid).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        for scenario in scenarios {
            eprintln!("load: {scenario} against {addr} (server pid {pid})");
            let metrics = match scenario {
                "echo" => echo::run(addr, echo_conns, timing, &probe).await,
                "bulk" => bulk::run(addr, bulk_conns, timing, &probe).await,
                "accept" => accept::run(addr, accept_loops, timing, &probe).await,
                "idle" => idle::run(addr, idle_conns, false, &probe).await,
                "http" => http_load::run(addr, http_conns, timing, &probe).await,
                "rpc" => rpc_load::run(addr, &rpc_impl, rpc_callers, timing, &probe).await,
                "ws" => crate::ws_load::run(addr, http_conns, timing, &probe).await,
                "ws-idle" => crate::ws_load::idle(addr, idle_conns, &probe).await,
                _ => idle::run(addr, idle_conns, true, &probe).await,
            }
            .map_err(|e| format!("scenario `{scenario}`: {e}"))?;
            for (name, value) in metrics {
                println!("{name} {value}");
            }
        }
        Ok(())
    })
}

/// A client connection with `TCP_NODELAY`, as the servers' own sockets have.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `n` client connections, all open before any load starts, so the server sees them all.
pub(crate) async fn connect_all(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(connect(addr).await?);
    }
    Ok(streams)
}
