//! The socket server, ThousandIsland's design: listening sockets, acceptor tasks, one task per
//! connection running a [`Handler`](crate::Handler)'s callbacks, TLS, limits, timeouts, the
//! PROXY protocol, connections that move to another process at an upgrade, and a graceful
//! stop. [`Server`](crate::Server) builds and starts one; [`ServerHandle`](crate::ServerHandle)
//! runs it.
//!
//! # Layout
//!
//! From the bottom up; each module only uses the ones above it in this list (and, below the
//! server, `error`, `addr`, `stats` and `telemetry`).
//!
//! - `options`: [`ServerOptions`](crate::ServerOptions), every knob of a listener with its
//!   default, readable from TOML.
//! - `tls`: [`TlsOptions`](crate::TlsOptions) (PEM files, client CA required or optional, ALPN,
//!   SNI) loaded into a [`TlsConfig`](crate::TlsConfig).
//! - `bind`: getting listening sockets: TCP with options and `SO_REUSEPORT`, Unix, adopted
//!   listeners and inherited descriptors ([`Bind`](crate::Bind)).
//! - `sockets`: listening sockets inherited from systemd or a previous process
//!   ([`SocketPool`](crate::SocketPool)) until the listener of that name adopts them.
//! - `buffer`: the per-thread pool of read buffers, so idle connections hold none.
//! - `connections`: the table of live connections ([`ConnectionInfo`](crate::ConnectionInfo))
//!   and their stop signals.
//! - `proxy`: the PROXY protocol header a load balancer sends first
//!   ([`ProxyProtocol`](crate::ProxyProtocol)), read with a deadline; the client it names
//!   stands for the socket's peer.
//! - `per_ip`: connections open per client address, for `max_connections_per_ip`.
//! - `timeouts`: read timeouts for every connection, kept by one sweeper task per listener.
//! - `shared`: what a listener's acceptors and connections share.
//! - `socket`: [`Socket`](crate::Socket), what handlers talk through (recv, send, sendfile,
//!   shutdown, close, addresses, peer certificate, ALPN, statistics; also
//!   `AsyncRead + AsyncWrite`).
//! - `handler`: the [`Handler`](crate::Handler) trait, the [`Action`](crate::Action) each
//!   callback answers with, and the contract for connections that [`Move`](crate::Move) to
//!   another process at an upgrade or drain.
//! - `moved`: a connection on its way to another process ([`Moved`](crate::Moved)), where a
//!   stopping listener sends it ([`MoveTo`](crate::MoveTo)), and how the receiving listener
//!   resumes it.
//! - `connection`: one connection's task: PROXY header, handshake, then the callback loop
//!   (which moves the connection out when the handler agrees, or resumes one that moved in).
//! - `acceptor`: an acceptor task: accept, hold to `max_connections`, spawn; backs off on
//!   errors such as EMFILE instead of dying or spinning.
//! - `handle`: [`ServerHandle`](crate::ServerHandle): addresses, connections, suspend,
//!   resume, stop.
//! - `builder`: [`Server`](crate::Server), the builder that binds and starts.
//! - [`echo`]: the built-in `echo` handler.

pub(crate) mod acceptor;
pub(crate) mod bind;
pub(crate) mod buffer;
pub(crate) mod builder;
pub(crate) mod connection;
pub(crate) mod connections;
pub mod echo;
pub(crate) mod handle;
pub(crate) mod handler;
pub(crate) mod moved;
pub(crate) mod options;
pub(crate) mod per_ip;
pub(crate) mod proxy;
pub(crate) mod shared;
pub(crate) mod socket;
pub(crate) mod sockets;
pub(crate) mod timeouts;
pub(crate) mod tls;

pub use builder::Server;
