//! Socket addresses of any transport: IP for TCP and TLS, a path for Unix sockets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The address of a listener or of a connection's end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IP address and port.
    Inet(SocketAddr),
    /// A Unix socket path; `None` for an unnamed socket (a Unix client's end, usually).
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The IP address and port, when this is an IP address.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    pub(crate) fn from_unix(addr: &tokio::net::unix::SocketAddr) -> Self {
        Addr::Unix(addr.as_pathname().map(PathBuf::from))
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::Inet(a)
    }
}

/// IP addresses print as `ip:port` (`[ip]:port` for IPv6), Unix ones as `unix:PATH`.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Addr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}
