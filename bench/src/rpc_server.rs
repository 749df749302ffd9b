//! The two RPC servers under test, serving the same one-method service: `add(a, b) -> a + b`
//! on two `u64`s, over plain TCP.
//!
//! - `atoll`: an [`atoll::rpc::Daemon`] with `.plain()`, every other option at its default,
//!   running [`AddService`], one instance per connection.
//! - `tarpc`: tarpc as its examples write it: the service trait from `#[tarpc::service]`,
//!   tarpc's serde transport over TCP with its bincode codec, one [`BaseChannel`] per
//!   connection, each on its own task, whose `execute` stream spawns every request as a task.
//!
//! The tarpc listener has the options atoll sets by default ([`listen`]), so only the server
//! code (and its wire format: MessagePack in atoll frames, bincode in tarpc's length-delimited
//! frames) differs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll::rpc::{Ctx, Daemon, Protocol, Reply, Service};
use atoll::BoxError;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tarpc::context::Context;
use tarpc::serde_transport;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::TcpListener;

use crate::server::listen;

/// Starts the server `implementation` on `addr`, prints `ready` and serves until killed.
pub(crate) async fn serve(implementation: &str, addr: SocketAddr) -> Result<(), String> {
    // Held to the end; the daemon serves for as long as the process runs.
    let _atoll = match implementation {
        "atoll" => Some(
            Daemon::<AddService>::new(())
                .name("bench")
                .ip(addr.ip())
                .port(addr.port())
                .plain()
                .start()
                .map_err(|e| e.to_string())?,
        ),
        "tarpc" => {
            let listener =
                listen(addr, false).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tokio::spawn(tarpc_accept_loop(listener));
            None
        }
        other => return Err(format!("unknown --impl `{other}` (atoll or tarpc)")),
    };
    println!("ready");
    std::future::pending().await
}

/// The one request of the atoll protocol: add `a` and `b`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Add {
    pub(crate) a: u64,
    pub(crate) b: u64,
}

// ===== atoll =====

/// The atoll side of the service: requests are [`Add`], replies the sum.
pub(crate) struct AddProtocol;

impl Protocol for AddProtocol {
    const IDENTIFIER: &'static str = "bench.add";
    const VERSION: &'static str = "1.0.0";
    type Request = Add;
    type Reply = u64;
    type Push = ();
}

/// One instance per connection; it holds nothing.
pub(crate) struct AddService;

impl Service for AddService {
    type Protocol = AddProtocol;
    type Init = ();

    async fn init(_init: &Arc<()>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        Ok(AddService)
    }

    async fn call(&mut self, request: Add, _ctx: &mut Ctx<Self>) -> Result<Reply<u64>, BoxError> {
        Ok(request.a.wrapping_add(request.b).into())
    }
}

// ===== tarpc =====

/// The tarpc side of the service.
#[tarpc::service]
pub(crate) trait Adder {
    /// `a + b`, wrapping.
    async fn add(a: u64, b: u64) -> u64;
}

/// tarpc's server: it holds nothing either.
#[derive(Clone)]
struct TarpcAdder;

impl Adder for TarpcAdder {
    async fn add(self, _: Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// Accepts connections and serves each on its own task, requests spawned one task each.
async fn tarpc_accept_loop(listener: TcpListener) {
    let mut incoming = match serde_transport::tcp::listen_on(listener, Bincode::default).await {
        Ok(incoming) => incoming,
        Err(e) => {
            eprintln!("listen: {e}");
            return;
        }
    };
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(transport) => {
                let channel = BaseChannel::with_defaults(transport);
                tokio::spawn(
                    channel
                        .execute(TarpcAdder.serve())
                        .for_each(|response| async move {
                            tokio::spawn(response);
                        }),
                );
            }
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would fail again.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
