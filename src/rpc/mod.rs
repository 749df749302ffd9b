//! RPC daemons and clients, erps's way: a [`Daemon`] gives every inbound connection its own
//! instance of your [`Service`], seeded with common initial data; a [`Client`] calls it over
//! TCP or mutual TLS. Messages are your own serde types, framed as described in
//! [`wire`] and `docs/rpc-wire.md`, with MessagePack payloads.
//!
//! A daemon and a client of a shared counter: every connection gets its own `CounterServer`,
//! seeded with the `AtomicU64` they all share, and an `Add` pushes the new total to every
//! other client. `examples/rpc_counter.rs` is the whole program, with a deferred reply.
//!
//! ```rust,no_run
//! use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
//! use atoll::rpc::{Client, Ctx, Daemon, Protocol, Reply, Service};
//! use serde::{Deserialize, Serialize};
//!
//! struct Counter;                               // what both sides agree on
//!
//! #[derive(Serialize, Deserialize)]
//! enum Request { Add(u64), Get }
//!
//! impl Protocol for Counter {
//!     const IDENTIFIER: &'static str = "example.counter";
//!     const VERSION: &'static str = "1.0.0";
//!     type Request = Request;
//!     type Reply = u64;
//!     type Push = u64;
//! }
//!
//! struct CounterServer { total: Arc<AtomicU64> } // one per connection
//!
//! impl Service for CounterServer {
//!     type Protocol = Counter;
//!     type Init = AtomicU64;                     // shared by every instance
//!
//!     async fn init(total: &Arc<AtomicU64>, _ctx: &mut Ctx<Self>) -> Result<Self, atoll::BoxError> {
//!         Ok(CounterServer { total: total.clone() })
//!     }
//!
//!     async fn call(&mut self, req: Request, ctx: &mut Ctx<Self>) -> Result<Reply<u64>, atoll::BoxError> {
//!         Ok(Reply::Now(match req {
//!             Request::Get => self.total.load(Ordering::Relaxed),
//!             Request::Add(n) => {
//!                 let total = self.total.fetch_add(n, Ordering::Relaxed) + n;
//!                 ctx.broadcast(&total);         // a push to every other client
//!                 total
//!             }
//!         }))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let daemon = Daemon::<CounterServer>::new(AtomicU64::new(0)).plain().start()?;
//!     let client = Client::<Counter>::builder(daemon.local_addr().to_string())
//!         .on_push(|total| println!("someone added: total {total}"))
//!         .connect()
//!         .await?;
//!     println!("total {}", client.call(&Request::Add(2)).await?);
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! From the bottom up; each part only uses the ones above it.
//!
//! - [`wire`]: the frame format, its decoder (checks before it allocates, never panics) and
//!   the `hello` and `error` payloads.
//! - `protocol`: [`Protocol`] (the types, identifier and version a service and its clients
//!   share) and [`Versions`], the check of a peer's hello.
//! - `options`: [`RpcOptions`], the daemon's settings with their defaults.
//! - `service`: the [`Service`] trait, one instance per connection, and its [`Ctx`]: push,
//!   deferred replies, disconnect.
//! - `supervisor`: [`Supervisor`], the table of live server instances, and [`Supervise`],
//!   a supervisor of the user's own that runs them.
//! - `caller`: the context of the code that started a daemon (its span and a value,
//!   [`caller`]), which instances run in when the daemon forwards it.
//! - `state`: what every connection of one daemon shares.
//! - `guard`: a service callback's panic, caught and returned.
//! - `server_conn`: the loop of one daemon-side connection: hello, then frames in, replies
//!   out, pushes and deferred answers from the channel, timeouts, close.
//! - `serve`: one connection on the daemon side from start to end: `init`, enrolment in the
//!   daemon's tables, the loop, `terminate`.
//! - `daemon`: [`Daemon`], the builder that starts a listener of the socket server whose
//!   connections are taken over by `serve`, and its [`DaemonHandle`].
//! - `client`: [`Client`], with call timeouts, casts, pushes, keepalives and reconnection.
//! - `kv`: the built-in key-value demo service, its durable store (a redb file shared by
//!   every process that opens it, with one group-committing writer per process), and `kind`,
//!   the `rpc` kind of the config file, which keeps that file in the data dir.
//!
//! It uses the socket server through [`Action::TakeOver`](crate::Action::TakeOver) and the
//! registry; nothing below it knows RPC, and it knows nothing of HTTP.

mod options;
mod protocol;
pub mod wire;
// ===== service side =====
mod caller;
mod daemon;
mod guard;
mod serve;
mod server_conn;
mod service;
mod state;
mod supervisor;
pub use caller::caller;
pub use daemon::{Daemon, DaemonHandle};
pub use service::{Ctx, Deferred, Pusher, Reply, Service};
pub use supervisor::{Exit, Instance, InstanceInfo, Supervise, Supervisor};
// ===== client side =====
mod client;
mod client_conn;
mod client_tls;
mod error;
pub use client::{Client, ClientBuilder};
pub use client_tls::ClientTls;
pub use error::RpcError;
// ===== demo service and config kind =====
mod kind;
pub mod kv;
pub use kind::install;

pub use options::{RpcOptions, DEFAULT_RPC_PORT};
pub use protocol::{Protocol, Versions};
