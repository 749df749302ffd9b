//! [`RpcOptions`]: what an RPC daemon adds to the socket server's options, each with its
//! default, readable from a `[[listener]]` table of kind `rpc`.

use std::time::Duration;

use serde::Deserialize;

use super::wire::{DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HELLO_SIZE};

/// An RPC daemon's own settings. The socket server's ([`ServerOptions`](crate::ServerOptions))
/// apply too: acceptors, connection limits, TLS, shutdown timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RpcOptions {
    /// The service identifier clients must name in their hello. Default is the
    /// [`Protocol`](super::Protocol)'s `IDENTIFIER`.
    pub identifier: Option<String>,
    /// The version the daemon names in its hello, `MAJOR.MINOR.PATCH`. Default is the
    /// protocol's `VERSION`.
    pub version: Option<String>,
    /// The client versions accepted, as a semver requirement (`^1.2`, `>=1, <3`). Default is
    /// the versions with the same major number as `version` (same minor for `0.x`).
    pub accept: Option<String>,
    /// The largest frame payload accepted, in bytes; a larger one closes the connection
    /// before anything is allocated for it. Replies and pushes over it are not sent (the call
    /// gets an error). Default is 8 MiB.
    pub max_frame_size: usize,
    /// The largest frame payload accepted before the client's hello is accepted, the hello's
    /// own included: a larger one is refused from its header alone with `frame too large`
    /// and the connection closes, so a client that has not said who it is cannot make the
    /// daemon hold more than this. At least 256; above `max_frame_size` it is that.
    /// Default is 4 KiB ([`DEFAULT_MAX_HELLO_SIZE`](super::wire::DEFAULT_MAX_HELLO_SIZE)).
    pub max_hello_size: usize,
    /// How long a frame may take to arrive once its first byte has; the hello, counted from
    /// the connect, too. A slower peer is disconnected. Default is 10 s.
    #[serde(with = "crate::options::duration")]
    pub frame_timeout: Duration,
    /// How long a connection may stay silent (no frame, not even a keepalive) before the
    /// daemon closes it. Clients send keepalives more often than this. Default is 120 s.
    #[serde(with = "crate::options::duration")]
    pub idle_timeout: Duration,
    /// The most bytes of pushes that may wait for one client: pushed but not yet written to
    /// its socket. A push past it is refused with [`RpcError::Backlog`](super::RpcError), so a
    /// client that reads slowly, or not at all, cannot make the daemon hold pushes without
    /// end; its connection goes on. A push is always taken when none waits, whatever its
    /// size. Default is 8 MiB.
    pub max_push_backlog: usize,
    /// The most bytes of pushes that may wait for all the daemon's clients together: what
    /// `max_push_backlog` counts, summed over every connection. A push past it is refused
    /// with [`RpcError::DaemonBacklog`](super::RpcError), as one past `max_push_backlog` is,
    /// so many clients that read slowly, or not at all, cannot make the daemon hold
    /// `max_push_backlog` times their number. A broadcast of S bytes to N clients takes
    /// S × N of it while it waits. A push is always taken when none waits for any client.
    /// Default is 64 MiB.
    pub max_push_total: usize,
}

/// The default RPC port: 0, any free port, read back from the daemon.
pub const DEFAULT_RPC_PORT: u16 = 0;

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            identifier: None,
            version: None,
            accept: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_hello_size: DEFAULT_MAX_HELLO_SIZE,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_push_backlog: 8 * 1024 * 1024,
            max_push_total: 64 * 1024 * 1024,
        }
    }
}

impl RpcOptions {
    /// The keys an RPC listener table may set besides the server options.
    pub fn field_names() -> &'static [&'static str] {
        crate::options::fields_of::<RpcOptions>()
    }
}
