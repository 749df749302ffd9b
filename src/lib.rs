//! atoll runs supervised network listeners on tokio: a pool of acceptors per listening socket,
//! one task per connection driving your [`Handler`]'s callbacks, TCP, TLS (rustls) and Unix
//! sockets, connection limits, timeouts, telemetry, a registry of named listeners, and a
//! graceful stop that drains connections and reports how they ended.
//!
//! It follows Elixir's ThousandIsland (the socket server) and Erlang's leptus (named HTTP
//! listeners with host-matched REST resources, see [`http`]), the Rust way: handlers are plain
//! types with async callbacks, options are serde-readable structs, errors are typed.
//!
//! ```no_run
//! use atoll::{Action, Handler, Server, Socket};
//!
//! #[derive(Clone)]
//! struct Echo;
//!
//! impl Handler for Echo {
//!     async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
//!         match socket.send(data).await {
//!             Ok(()) => Action::Continue,
//!             Err(e) => Action::Error(e.into()),
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> atoll::Result<()> {
//!     let server = Server::new(Echo).name("echo").port(4000).start()?;
//!     println!("listening on {}", server.local_addr());
//!     tokio::signal::ctrl_c().await?;
//!     let report = server.shutdown().await;
//!     println!("{} drained, {} forced", report.drained, report.forced);
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! `ls src` shows the layers. From the bottom up; each uses only the ones above it in this
//! list. Names in plain text are private modules; their public items are re-exported at the
//! crate root.
//!
//! - `error.rs`: the one-pointer [`Error`] with a matchable [`ErrorKind`].
//! - `addr.rs`: [`Addr`], an IP or Unix socket address.
//! - `stats.rs`: [`SocketStats`], a connection's byte and packet counts.
//! - [`telemetry/`](telemetry): the [`Event`](telemetry::Event)s, the hub subscribers attach
//!   to, and the `tracing` and `metrics` subscribers.
//! - `server/`: the socket server (ThousandIsland's design): [`ServerOptions`],
//!   [`TlsOptions`] (client CA required or [optional](ClientAuth)), [`Bind`], the connection
//!   table ([`ConnectionInfo`]), the PROXY protocol ([`ProxyProtocol`]), per-IP limits, read
//!   timeouts, [`Socket`], the [`Handler`] trait and its [`Action`]s, connections that
//!   [`Move`] at an upgrade ([`Moved`]), acceptors, [`ServerHandle`], the [`Server`] builder
//!   and the built-in [`echo`] handler. Its module docs list its files bottom up.
//! - `spec.rs` and `registry.rs`: [`ListenerSpec`] (a listener as data) and the [`Registry`]
//!   of named listeners.
//! - [`http/`](http): HTTP and HTTPS listeners on hyper, leptus's way: host-matched REST
//!   [`Resource`](http::Resource)s, static files, WebSocket routes, mounted `tower` services,
//!   live route upgrades, the `http`/`https` kinds of the config file, and the `admin` kind
//!   (`/metrics` for Prometheus, `/livez`, `/readyz`). It uses the socket server through
//!   [`Action::TakeOver`] and the registry; nothing below it knows HTTP.
//! - [`rpc/`](rpc): RPC daemons and clients, erps's way: a [`Service`](rpc::Service) instance
//!   per connection, calls, casts and pushes of serde types over a documented framing, mutual
//!   TLS, and the `rpc` kind of the config file. Like HTTP, it uses the socket server through
//!   [`Action::TakeOver`]; HTTP and RPC never import each other.
//! - [`setup/`](setup): the application environment ([`AppEnv`](setup::AppEnv): name, node,
//!   home, data, log, priv and lib dirs, from OS variables, the config file or defaults), the
//!   check that its directories are writable, `$VARIABLE` expansion in config strings, and
//!   the installed releases ([`setup::versions`]).
//! - `config.rs` and `config_check.rs`: the `atoll` binary's config file ([`Config`]), and
//!   its check without starting anything ([`ListenerCheck`]): settings, files, and
//!   listeners that would share an address.
//! - [`app/`](app): the running application: the control socket, reload, zero-downtime upgrade
//!   by handing listening sockets to a new process, systemd integration and log files.
//!
//! Beside the layers: `sys.rs` is the one module with `unsafe` code (taking ownership of
//! passed file descriptors, and reusing an HTTP connection's allocation for its next
//! request's future); `main.rs` is the `atoll` command, a thin shell over the library.
//!
//! # Defaults
//!
//! Every option's default is documented on its [`ServerOptions`] field: port 4000 on all
//! interfaces, [`DEFAULT_NUM_ACCEPTORS`] acceptor per socket, 16,384 connections, 60 s read
//! timeout, 5 s handshake timeout, 15 s shutdown timeout.
#![deny(unsafe_code)]

mod addr;
pub mod app;
mod config;
mod config_check;
mod error;
pub mod http;
mod registry;
pub mod rpc;
mod server;
pub mod setup;
mod spec;
mod stats;
mod sys;
pub mod telemetry;

// The socket server's modules, by the names the rest of the crate uses.
pub use server::echo;
use server::{
    acceptor, bind, buffer, connection, connections, handle, handler, moved, options, per_ip,
    proxy, shared, socket, sockets, timeouts, tls,
};

pub use addr::Addr;
pub use bind::Bind;
pub use config::{Config, ConfigError, FoundKey, LogEvents};
pub use config_check::{ListenAt, ListenerCheck};
pub use connections::ConnectionInfo;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use handle::{Phase, ServerHandle, StopReport};
pub use handler::{Action, Handler, Move, SHUTDOWN_QUIET};
pub use moved::{MoveTo, Moved};
pub use options::{parse_duration, ServerOptions, DEFAULT_NUM_ACCEPTORS};
pub use proxy::{ProxyProtocol, MAX_V2_HEADER};
pub use registry::{Checker, Launcher, ListenerInfo, Registry, Updater, Uptime};
pub use server::Server;
pub use socket::Socket;
pub use sockets::{Inherited, Origin, SocketPool};
pub use spec::ListenerSpec;
pub use stats::SocketStats;
pub use tls::{ClientAuth, SniCert, TlsConfig, TlsOptions};

/// The README's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// docs/http.md's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../docs/http.md")]
struct HttpDocDoctests;

/// docs/websocket.md's examples, compiled by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../docs/websocket.md")]
struct WebSocketDocDoctests;
