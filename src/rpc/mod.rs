//! RPC daemons and clients, erps's way: a [`Daemon`] gives every inbound connection its own
//! instance of your [`Service`], seeded with common initial data; a [`Client`] calls it over
//! TCP or mutual TLS. Messages are your own serde types, framed as described in
//! [`wire`] and `docs/rpc-wire.md`, with MessagePack payloads.
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
