//! Getting a listening socket: binding TCP with the transport options (several sockets with
//! `SO_REUSEPORT`), binding a Unix socket, or adopting a listener or descriptor bound elsewhere.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::Addr;
use crate::error::{Error, ErrorKind, Result};
use crate::options::ServerOptions;
use crate::sockets::Inherited;

/// Where a server gets its listening sockets.
#[derive(Debug)]
#[non_exhaustive]
pub enum Bind {
    /// Bind TCP on [`ServerOptions::ip`] and [`ServerOptions::port`]. The default.
    Tcp,
    /// Bind a Unix socket at this path, removing a stale socket file left there.
    Unix(PathBuf),
    /// Use TCP listeners already bound (and listening) elsewhere, one per listening socket.
    TcpListeners(Vec<std::net::TcpListener>),
    /// Use a Unix listener already bound elsewhere.
    UnixListener(std::os::unix::net::UnixListener),
    /// Use inherited listening descriptors (socket activation, live upgrade); each may be TCP
    /// or Unix.
    Fds(Vec<OwnedFd>),
    /// Adopt these inherited sockets when they fit the listener's address (see
    /// [`Origin`](crate::Origin)); otherwise close them and bind afresh: a Unix socket at
    /// `unix` when set, else TCP.
    Inherited {
        /// The sockets and where they come from.
        sockets: Inherited,
        /// The Unix path to bind when they do not fit.
        unix: Option<PathBuf>,
    },
}

/// A listening socket of any transport.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A freshly accepted connection, before any TLS.
#[derive(Debug)]
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Accepted, Addr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Accepted::Tcp(s), Addr::Inet(peer)))
            }
            Listener::Unix(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Accepted::Unix(s), Addr::from_unix(&peer)))
            }
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Inet),
            Listener::Unix(l) => l.local_addr().map(|a| Addr::from_unix(&a)),
        }
    }
}

/// Opens the listening sockets `bind` asks for.
pub(crate) fn listeners(bind: Bind, opts: &ServerOptions) -> Result<Vec<Listener>> {
    match bind {
        Bind::Tcp => bind_tcp(opts),
        Bind::Unix(path) => bind_unix(path, opts).map(|l| vec![l]),
        Bind::TcpListeners(ls) => ls
            .into_iter()
            .map(|l| adopt(Socket::from(OwnedFd::from(l)), opts))
            .collect(),
        Bind::UnixListener(l) => adopt(Socket::from(OwnedFd::from(l)), opts).map(|l| vec![l]),
        Bind::Fds(fds) => fds
            .into_iter()
            .map(|fd| adopt(Socket::from(fd), opts))
            .collect(),
        Bind::Inherited { sockets, unix } => {
            if sockets.fits(opts, unix.as_ref()) {
                listeners(Bind::Fds(sockets.fds), opts)
            } else {
                drop(sockets);
                match unix {
                    Some(path) => bind_unix(path, opts).map(|l| vec![l]),
                    None => bind_tcp(opts),
                }
            }
        }
    }
}

/// Binds a fresh listening socket on an address a listener had before (after a suspend).
pub(crate) fn rebind(addr: &Addr, opts: &ServerOptions) -> Result<Listener> {
    match addr {
        Addr::Inet(a) => tcp_socket(*a, opts)
            .map(Listener::Tcp)
            .map_err(|e| Error::io(e).context(format!("cannot listen on {a}"))),
        Addr::Unix(Some(path)) => bind_unix(path.clone(), opts),
        Addr::Unix(None) => Err(Error::with_source(
            ErrorKind::Bind,
            "an unnamed Unix socket cannot be bound again",
        )),
    }
}

fn bind_tcp(opts: &ServerOptions) -> Result<Vec<Listener>> {
    let mut addr = SocketAddr::new(opts.ip, opts.port);
    let mut out = Vec::with_capacity(opts.num_listen_sockets);
    for _ in 0..opts.num_listen_sockets {
        let listener = match tcp_socket(addr, opts) {
            Err(e) if addr.ip().is_unspecified() && addr.is_ipv6() && no_ipv6(&e) => {
                // All interfaces, on a host without IPv6: listen on every IPv4 one instead.
                addr.set_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                tcp_socket(addr, opts)
            }
            other => other,
        }
        .map_err(|e| Error::io(e).context(format!("cannot listen on {addr}")))?;
        // Later sockets share the port the first one got, even when port 0 was asked.
        addr = listener.local_addr()?;
        out.push(Listener::Tcp(listener));
    }
    Ok(out)
}

fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EAFNOSUPPORT || code == nix::libc::EADDRNOTAVAIL
    )
}

fn tcp_socket(addr: SocketAddr, opts: &ServerOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    if opts.num_listen_sockets > 1 {
        socket.set_reuse_port(true)?;
    }
    tune_tcp(&socket, opts)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

fn tune_tcp(socket: &Socket, opts: &ServerOptions) -> io::Result<()> {
    // Linux copies these from the listening socket to each accepted one, so setting them here
    // saves a system call per connection.
    socket.set_tcp_nodelay(opts.nodelay)?;
    if let Some(idle) = opts.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(n) = opts.recv_buffer_size {
        socket.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer_size {
        socket.set_send_buffer_size(n)?;
    }
    Ok(())
}

fn bind_unix(path: PathBuf, opts: &ServerOptions) -> Result<Listener> {
    let context = || format!("cannot listen on unix:{}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket file is ours to replace; never delete anything else.
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(&path).is_err() {
            std::fs::remove_file(&path).map_err(|e| Error::io(e).context(context()))?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let addr = socket2::SockAddr::unix(&path)?;
    socket
        .bind(&addr)
        .and_then(|_| socket.listen(opts.backlog.min(i32::MAX as u32) as i32))
        .map_err(|e| Error::io(e).context(context()))?;
    Ok(Listener::Unix(UnixListener::from_std(socket.into())?))
}

/// Takes a socket listening elsewhere, applying the options that can change on a listening
/// socket (Nagle, keepalive, buffer sizes and the backlog: `listen` again only updates it).
fn adopt(socket: Socket, opts: &ServerOptions) -> Result<Listener> {
    let not_listening = |why: &str| Error::with_source(ErrorKind::Bind, why.to_owned());
    if socket.r#type()? != Type::STREAM {
        return Err(not_listening("inherited descriptor is not a stream socket"));
    }
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    if local.as_socket().is_some() {
        tune_tcp(&socket, opts)?;
    }
    socket.listen(opts.backlog.min(i32::MAX as u32) as i32)?;
    if local.is_unix() {
        Ok(Listener::Unix(UnixListener::from_std(socket.into())?))
    } else if local.as_socket().is_some() {
        Ok(Listener::Tcp(TcpListener::from_std(socket.into())?))
    } else {
        Err(not_listening(
            "inherited descriptor is neither TCP nor Unix",
        ))
    }
}
