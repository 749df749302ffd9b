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
//! From the bottom up; each layer only uses the ones above it in this list.
//!
//! - [`error`](Error): the one-pointer [`Error`] with a matchable [`ErrorKind`].
//! - `addr`: [`Addr`], an IP or Unix socket address.
//! - `options`: [`ServerOptions`], every knob of a listener with its default, readable from TOML.
//! - `tls`: [`TlsOptions`] (PEM files, client CA required or [optional](ClientAuth), ALPN,
//!   SNI) loaded into a [`TlsConfig`].
//! - [`telemetry`]: the [`Event`](telemetry::Event)s, the hub subscribers attach to, and the
//!   `tracing` and `metrics` subscribers.
//! - `stats`: [`SocketStats`], a connection's byte and packet counts.
//! - `bind`: getting listening sockets: TCP with options and `SO_REUSEPORT`, Unix, adopted
//!   listeners and inherited descriptors ([`Bind`]).
//! - `buffer`: the per-thread pool of read buffers, so idle connections hold none.
//! - `connections`: the table of live connections ([`ConnectionInfo`]) and their stop signals.
//! - `proxy`: the PROXY protocol header a load balancer sends first ([`ProxyProtocol`]), read
//!   with a deadline; the client it names stands for the socket's peer.
//! - `per_ip`: connections open per client address, for `max_connections_per_ip`.
//! - `timeouts`: read timeouts for every connection, kept by one sweeper task per listener.
//! - `shared`: what a listener's acceptors and connections share.
//! - `socket`: [`Socket`], what handlers talk through (recv, send, sendfile, shutdown, close,
//!   addresses, peer certificate, ALPN, statistics; also `AsyncRead + AsyncWrite`).
//! - `handler`: the [`Handler`] trait, the [`Action`] each callback answers with, and the
//!   contract for connections that [`Move`] to another process at an upgrade or drain.
//! - `moved`: a connection on its way to another process ([`Moved`]), where a stopping
//!   listener sends it ([`MoveTo`]), and how the receiving listener resumes it.
//! - `connection`: one connection's task: handshake, then the callback loop (which moves the
//!   connection out when the handler agrees, or resumes one that moved in).
//! - `acceptor`: an acceptor task: accept, hold to `max_connections`, spawn; backs off on
//!   errors such as EMFILE instead of dying or spinning.
//! - `handle`: [`ServerHandle`]: addresses, connections, suspend, resume, stop.
//! - `server`: [`Server`], the builder that binds and starts.
//! - [`echo`]: the built-in `echo` handler.
//! - `spec` and `registry`: [`ListenerSpec`] (a listener as data) and the [`Registry`] of
//!   named listeners.
//! - [`http`]: HTTP and HTTPS listeners on hyper, leptus's way: host-matched REST
//!   [`Resource`](http::Resource)s, static files, mounted `tower` services, live route
//!   upgrades, the `http`/`https` kinds of the config file, and the `admin` kind (`/metrics`
//!   for Prometheus, `/livez`, `/readyz`). It uses the socket server
//!   through [`Action::TakeOver`] and the registry; nothing below it knows HTTP.
//! - [`rpc`]: RPC daemons and clients, erps's way: a [`Service`](rpc::Service) instance per
//!   connection, calls, casts and pushes of serde types over a documented framing, mutual
//!   TLS, and the `rpc` kind of the config file. Like HTTP, it uses the socket server through
//!   [`Action::TakeOver`]; HTTP and RPC never import each other.
//! - [`setup`]: the application environment ([`AppEnv`](setup::AppEnv): name, node, home,
//!   data, log, priv and lib dirs, from OS variables, the config file or defaults), the
//!   check that its directories are writable, and `$VARIABLE` expansion in config strings.
//! - `config`: the `atoll` binary's config file ([`Config`]).
//! - [`app`]: the running application: the control socket, reload, zero-downtime upgrade by
//!   handing listening sockets to a new process, systemd integration and log files.
//!
//! Beside the layers: `sockets` holds listening sockets inherited from systemd or a previous
//! process ([`SocketPool`]) until the listener of that name adopts them, and `sys` is the one
//! module with `unsafe` code (taking ownership of passed file descriptors, and reusing an HTTP
//! connection's allocation for its next request's future).
//!
//! # Defaults
//!
//! Every option's default is documented on its [`ServerOptions`] field: port 4000 on all
//! interfaces, [`DEFAULT_NUM_ACCEPTORS`] acceptor per socket, 16,384 connections, 60 s read
//! timeout, 5 s handshake timeout, 15 s shutdown timeout.
#![deny(unsafe_code)]

mod acceptor;
mod addr;
pub mod app;
mod bind;
mod buffer;
mod config;
mod connection;
mod connections;
pub mod echo;
mod error;
mod handle;
mod handler;
pub mod http;
mod moved;
mod options;
mod per_ip;
mod proxy;
mod registry;
pub mod rpc;
mod server;
pub mod setup;
mod shared;
mod socket;
mod sockets;
mod spec;
mod stats;
mod sys;
pub mod telemetry;
mod timeouts;
mod tls;

pub use addr::Addr;
pub use bind::Bind;
pub use config::{Config, ConfigError, FoundKey, LogEvents};
pub use connections::ConnectionInfo;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use handle::{Phase, ServerHandle, StopReport};
pub use handler::{Action, Handler, Move, SHUTDOWN_QUIET};
pub use moved::{MoveTo, Moved};
pub use options::{parse_duration, ServerOptions, DEFAULT_NUM_ACCEPTORS};
pub use proxy::{ProxyProtocol, MAX_V2_HEADER};
pub use registry::{Launcher, ListenerInfo, Registry, Updater, Uptime};
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
