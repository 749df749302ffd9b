//! atoll-bench: atoll's echo server against a plain tokio echo server, atoll's HTTP listener
//! against bare hyper and axum, and atoll's RPC daemon and client against tarpc, measured in
//! the same run.
//!
//! ```text
//! atoll-bench server --impl atoll|tokio --port P [--threads 1] [--acceptors N] [--listen-sockets N]
//! atoll-bench server --protocol http --impl atoll|hyper|axum --port P [--threads 1]
//! atoll-bench server --protocol rpc --impl atoll|tarpc --port P [--threads 1]
//! atoll-bench load --port P --pid PID [--scenarios echo,bulk,accept,idle,idle-used,http,rpc]
//!     [--rpc-impl atoll|tarpc] ...
//! atoll-bench report [--ratio atoll/tokio[,A/B...]] [--only PREFIX] LABEL=FILE...
//! atoll-bench interleave --targets atoll=P1:PID1,hyper=P2:PID2,axum=P3:PID3 [--cycles 20]
//!     [--slice 1] [--settle 0.25] [--http-conns 64]
//! atoll-bench upgrade --atoll BIN --config FILE --port P [--conns 64] [--steady 3] [--after 2]
//! atoll-bench rpc-upgrade --atoll BIN --config FILE --port P [--upgrades 10] [--every 3.5]
//! atoll-bench upgrade-mix --atoll BIN --config FILE --port P [--upgrades 20] [--every 3]
//!     [--steady 3] [--rps 250]
//! atoll-bench kv --dir DIR [--stores a,b] [--clients 16] [--seconds 2]
//! ```
//!
//! `load` prints one `metric value` line per result; `report` puts such files side by side.
//! `bench/run.sh` builds, pins server and load generator to separate cores, runs every
//! scenario against each server and prints the tables.
//!
//! # Layout
//! - `args`: the `--flag value` parser.
//! - `server`: the two echo servers under test, and the `server` command.
//! - `http_server`: the three HTTP servers under test: atoll, bare hyper, axum.
//! - `rpc_server`: the two RPC servers under test, atoll and tarpc, and their shared service.
//! - `load`: the load generator: runs the chosen scenarios and prints their metrics.
//! - `echo`, `bulk`, `accept`, `idle`, `http_load`, `rpc_load`: one scenario each.
//! - `interleave`: the HTTP servers side by side, loaded in turn a second at a time, with the
//!   median of per-cycle ratios.
//! - `latency`: percentiles of per-request latencies.
//! - `window`: the warm-up / measure / stop phases of a timed scenario, and the server's CPU
//!   time over the measured part.
//! - `probe`: the server process's CPU time and resident memory, read from `/proc`.
//! - `report`: the side-by-side tables with ratios.
//! - `upgrade`: HTTP load on a running `atoll serve` through `atoll upgrade`: steady state
//!   against the upgrade.
//! - `rpc-upgrade`: RPC calls (kv put then get, eight tasks on one client) through a number
//!   of upgrades: calls failed and answers wrong.
//! - `upgrade_mix`: every client kind at once (echo per message and long-lived, HTTP/1.1
//!   keep-alive, RPC, h2c, h2 and HTTP/1.1 over TLS) through a number of upgrades: per kind,
//!   answers, failures, and p99 during the upgrades against steady.
//! - `ws_server`, `ws_load`: atoll's WebSocket route against tokio-tungstenite directly,
//!   and the `ws` and `ws-idle` scenarios.
//! - `kv`: the kv store's engine (redb) against the in-memory map, put and get rates and p99.

mod accept;
mod args;
mod bulk;
mod echo;
mod http_load;
mod http_server;
mod idle;
mod interleave;
mod kv;
mod latency;
mod load;
mod probe;
mod report;
mod rpc_load;
mod rpc_server;
mod rpc_upgrade;
mod server;
mod upgrade;
mod upgrade_mix;
mod window;
mod ws_load;
mod ws_server;

use std::process::ExitCode;

const USAGE: &str =
    "usage: atoll-bench server|load|report|interleave|upgrade|rpc-upgrade|upgrade-mix|kv [--flag value]... (see bench/README.md)";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let result = match command.as_str() {
        "server" => server::main(args),
        "load" => load::main(args),
        "report" => report::main(args),
        "interleave" => interleave::main(args),
        "upgrade" => upgrade::main(args),
        "rpc-upgrade" => rpc_upgrade::main(args),
        "upgrade-mix" => upgrade_mix::main(args),
        "kv" => kv::main(args),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("atoll-bench {command}: {why}");
            ExitCode::FAILURE
        }
    }
}
