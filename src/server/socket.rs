//! The socket a handler talks through: receive, send, sendfile, shutdown, close, addresses,
//! peer certificate, ALPN and statistics, over TCP, TLS or a Unix socket.
//!
//! A `Socket` also implements tokio's `AsyncRead` and `AsyncWrite`, so a handler that takes the
//! connection over (see [`Action::TakeOver`](crate::Action::TakeOver)) can hand it to any
//! protocol library, hyper included.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;

use crate::addr::Addr;
use crate::connections::Slot;
use crate::error::{Error, ErrorKind, Result};
use crate::per_ip::IpPlace;
use crate::shared::Shared;
use crate::stats::SocketStats;
use crate::telemetry::{Event, EventKind};
use crate::tls::TlsConfig;

/// Chunk size for sendfile over TLS, where the file has to pass through user space.
const SENDFILE_CHUNK: usize = 1 << 20;

pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
    Closed,
}

/// A connection's life: its table entry, counters and connection-limit permit. Dropping it,
/// however the connection ends (return, error, panic, abort), reports the end and frees the slot.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) stats: SocketStats,
    _permit: OwnedSemaphorePermit,
    /// Its place in its client address's count, with `max_connections_per_ip`.
    ip_place: Option<Box<IpPlace>>,
    /// Whether `connection_start` was reported, so that its end is too.
    announced: bool,
}

impl Conn {
    pub(crate) fn new(shared: Arc<Shared>, slot: Arc<Slot>, permit: OwnedSemaphorePermit) -> Self {
        Conn {
            shared,
            slot,
            stats: SocketStats::default(),
            _permit: permit,
            ip_place: None,
            announced: false,
        }
    }

    /// Starts a connection of the listener `shared`, under `permit`: gives it the next id and
    /// a slot, reports `connection_start` (with the acceptor that took it, if one did), and
    /// spawns `task` with its `Conn`, listed in the connection table.
    ///
    /// A connection an acceptor took (`acceptor` is set) on a listener that reads a PROXY
    /// header is reported, and counted per IP, once its header is read ([`Conn::admit`]);
    /// one over `max_connections_per_ip` is closed here. One handed over from another process
    /// counts per IP but is never refused; `client` is what its PROXY header said there.
    pub(crate) fn start<Fut>(
        shared: &Arc<Shared>,
        peer: Addr,
        client: Option<std::net::SocketAddr>,
        permit: OwnedSemaphorePermit,
        acceptor: Option<usize>,
        task: impl FnOnce(Conn) -> Fut,
    ) where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let slot = Arc::new(Slot::new(shared.next_connection_id(), peer));
        if let Some(client) = client {
            slot.set_client(Addr::Inet(client));
        }
        let mut conn = Conn::new(shared.clone(), slot.clone(), permit);
        if acceptor.is_none() || !shared.reads_proxy_header() {
            let admitted = match acceptor {
                Some(_) => conn.admit(acceptor),
                None => {
                    conn.count_ip(true);
                    conn.announce(None);
                    true
                }
            };
            if !admitted {
                return;
            }
        }
        shared
            .table
            .insert_with(slot, || tokio::spawn(task(conn)).abort_handle());
    }

    /// Counts the connection against `max_connections_per_ip` by its peer (the client, once a
    /// PROXY header named it) and reports `connection_start`; false, with the refusal
    /// reported, when its address is at the limit: the connection is then to be closed.
    pub(crate) fn admit(&mut self, acceptor: Option<usize>) -> bool {
        if !self.count_ip(false) {
            self.emit(EventKind::MaxConnectionsPerIpExceeded, |e| e);
            return false;
        }
        self.announce(acceptor);
        true
    }

    fn count_ip(&mut self, force: bool) -> bool {
        let (Some(per_ip), Some(peer)) = (&self.shared.per_ip, self.slot.peer().inet()) else {
            return true;
        };
        self.ip_place = match force {
            true => Some(per_ip.force(peer.ip())),
            false => per_ip.take(peer.ip()),
        };
        self.ip_place.is_some()
    }

    fn announce(&mut self, acceptor: Option<usize>) {
        self.announced = true;
        self.emit(EventKind::ConnectionStart, |e| match acceptor {
            Some(index) => e.acceptor(index),
            None => e,
        });
    }

    #[inline]
    pub(crate) fn emit<'a>(&'a self, kind: EventKind, fill: impl FnOnce(Event<'a>) -> Event<'a>) {
        let shared = &self.shared;
        let slot = &self.slot;
        shared
            .telemetry
            .emit(|| fill(Event::new(kind, &shared.name).connection(slot.id, slot.peer())));
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let why = io::Error::other("the connection handler panicked");
            self.emit(EventKind::HandlerPanic, |e| e.error(&why));
        }
        let (started, stats) = (self.slot.started, self.stats);
        if self.announced {
            self.emit(EventKind::ConnectionStop, |e| {
                e.duration(started.elapsed()).stats(stats)
            });
        }
        self.shared.table.remove(&self.slot);
    }
}

/// One connection's socket, as handed to a [`Handler`](crate::Handler).
pub struct Socket {
    stream: Stream,
    pub(crate) conn: Conn,
    /// Set by [`close`](Socket::close): the handler ended the connection itself.
    pub(crate) closed_by_handler: bool,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.conn.slot.id)
            .field("peer", self.conn.slot.peer())
            .field("secure", &self.is_secure())
            .field("stats", &self.conn.stats)
            .finish()
    }
}

macro_rules! zero_copy {
    ($s:expr, $file:expr, $offset:expr, $end:expr, $limit:expr) => {{
        let s = $s;
        let mut pos = $offset.min($end);
        let start = pos;
        while pos < $end {
            let want = usize::try_from($end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            tokio::time::timeout($limit, s.writable())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "sendfile timed out"))??;
            let sent = s.try_io(Interest::WRITABLE, || {
                let mut off = pos as nix::libc::off_t;
                nix::sys::sendfile::sendfile(s.as_fd(), $file.as_fd(), Some(&mut off), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => break,
                Ok(n) => pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(pos - start)
    }};
}

// ===== impl Socket: handler calls =====

impl Socket {
    pub(crate) fn new(stream: Stream, conn: Conn) -> Self {
        Socket {
            stream,
            conn,
            closed_by_handler: false,
        }
    }

    /// Takes the TCP stream out, to hand it to another process; the socket is closed here
    /// from then on. `None` (and nothing taken) over TLS or a Unix socket.
    pub(crate) fn take_tcp(&mut self) -> Option<TcpStream> {
        match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Tcp(tcp) => Some(tcp),
            other => {
                self.stream = other;
                None
            }
        }
    }

    /// Whether the connection can move to another process: plain TCP only (a TLS session's
    /// state is not portable; Unix socket connections stay).
    pub(crate) fn can_move(&self) -> bool {
        matches!(self.stream, Stream::Tcp(_))
    }

    /// The connection's id, unique within its listener.
    pub fn id(&self) -> u64 {
        self.conn.slot.id
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.conn.shared.name
    }

    /// This end's address (asked of the system on each call).
    pub fn local_addr(&self) -> Result<Addr> {
        let addr = match &self.stream {
            Stream::Tcp(s) => s.local_addr().map(Addr::Inet),
            Stream::Tls(s) => s.get_ref().0.local_addr().map(Addr::Inet),
            Stream::Unix(s) => s.local_addr().map(|a| Addr::from_unix(&a)),
            Stream::Closed => Err(closed()),
        };
        addr.map_err(Error::io)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Addr {
        self.conn.slot.peer()
    }

    /// True when the connection runs over TLS.
    pub fn is_secure(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// True once the socket is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.stream, Stream::Closed)
    }

    /// The certificate chain the client presented (leaf first), on TLS connections that asked
    /// for one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.stream {
            Stream::Tls(s) => s.get_ref().1.peer_certificates(),
            _ => None,
        }
    }

    /// The ALPN protocol agreed during the TLS handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.stream {
            Stream::Tls(s) => s.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// The server name the TLS client asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        match &self.stream {
            Stream::Tls(s) => s.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// Bytes and packets moved so far.
    pub fn stats(&self) -> SocketStats {
        self.conn.stats
    }

    /// The underlying TCP stream, to read or set socket options (`nodelay`, `ttl`...). `None`
    /// on Unix sockets.
    pub fn tcp_stream(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Tcp(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            _ => None,
        }
    }

    /// True once the server is stopping. A handler that took the connection over should watch
    /// [`stopping`](Socket::stopping) and wind down.
    pub fn is_stopping(&self) -> bool {
        self.conn.slot.is_stopping()
    }

    /// Resolves when the server asks this connection to stop (see
    /// [`ServerHandle::stop`](crate::ServerHandle::stop)). The future owns what it needs, so it
    /// can be moved into another task.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let slot = self.conn.slot.clone();
        async move { slot.stopped().await }
    }

    /// Receives bytes. With `len` 0, returns whatever arrives next (at most the listener's
    /// `read_buffer_size`, empty at end of stream); otherwise exactly `len` bytes, or a
    /// [`Closed`](ErrorKind::Closed) error if the stream ends first. `timeout` bounds the whole
    /// call; `None` waits as long as it takes.
    pub async fn recv(&mut self, len: usize, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let read = self.recv_inner(len);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "recv timed out")),
            },
            None => read.await,
        };
        result.map_err(|e| {
            self.conn.emit(EventKind::RecvError, |ev| ev.error(&e));
            Error::io(e)
        })
    }

    async fn recv_inner(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let chunk = self.conn.shared.opts.read_buffer_size;
        if len == 0 {
            let mut buf = Vec::new();
            self.read_counted(&mut buf, chunk).await?;
            return Ok(buf);
        }
        // Grown as bytes arrive, a read buffer at a time, not to `len` at once.
        let mut buf = Vec::new();
        while buf.len() < len {
            let left = len - buf.len();
            let n = self.read_counted(&mut buf, left).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {} of {len} bytes", buf.len()),
                ));
            }
        }
        Ok(buf)
    }

    /// Reads at most `most` bytes (and at most a read buffer's size) onto the end of `buf`,
    /// into its spare room: never zeroed first, which for a read that brings a few bytes
    /// would cost more than the read.
    async fn read_counted(&mut self, buf: &mut Vec<u8>, most: usize) -> io::Result<usize> {
        let most = most.min(self.conn.shared.opts.read_buffer_size);
        buf.reserve(most);
        let mut room = bytes::BufMut::limit(&mut *buf, most);
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read_buf(&mut room).await?,
            Stream::Tls(s) => s.read_buf(&mut room).await?,
            Stream::Unix(s) => s.read_buf(&mut room).await?,
            Stream::Closed => return Err(closed()),
        };
        self.count_recv(n);
        Ok(n)
    }

    #[inline]
    fn count_recv(&mut self, n: usize) {
        if n > 0 {
            self.conn.stats.recv_bytes += n as u64;
            self.conn.stats.recv_packets += 1;
            self.conn.emit(EventKind::Recv, |e| e.bytes(n as u64));
        }
    }

    /// Sends all of `data`. Fails when the peer makes no room for it within the listener's
    /// `send_timeout`.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        let limit = self.conn.shared.opts.send_timeout;
        let result = match &mut self.stream {
            Stream::Tcp(s) => write_bounded(s, data, limit).await,
            Stream::Unix(s) => write_bounded(s, data, limit).await,
            Stream::Tls(s) => write_bounded(&mut **s, data, limit).await,
            Stream::Closed => Err(closed()),
        };
        match result {
            Ok(()) => {
                self.conn.stats.send_bytes += data.len() as u64;
                self.conn.stats.send_packets += 1;
                self.conn
                    .emit(EventKind::Send, |e| e.bytes(data.len() as u64));
                Ok(())
            }
            Err(e) => {
                self.conn.emit(EventKind::SendError, |ev| ev.error(&e));
                Err(Error::io(e))
            }
        }
    }

    /// Sends `len` bytes of `file` from `offset` (`None`: to the end of the file) and returns
    /// how many were sent. Zero-copy (`sendfile(2)`) on plain TCP and Unix sockets; over TLS the
    /// file passes through user space in 1 MiB chunks.
    pub async fn sendfile(&mut self, file: &File, offset: u64, len: Option<u64>) -> Result<u64> {
        let result = self.sendfile_inner(file, offset, len).await;
        match result {
            Ok(n) => {
                self.conn.stats.send_bytes += n;
                self.conn.stats.send_packets += 1;
                self.conn.emit(EventKind::Sendfile, |e| e.bytes(n));
                Ok(n)
            }
            Err(e) => {
                self.conn.emit(EventKind::SendfileError, |ev| ev.error(&e));
                Err(Error::io(e))
            }
        }
    }

    async fn sendfile_inner(
        &mut self,
        file: &File,
        offset: u64,
        len: Option<u64>,
    ) -> io::Result<u64> {
        let size = file.metadata()?.len();
        let end = match len {
            Some(l) => offset.saturating_add(l).min(size),
            None => size,
        };
        let limit = self.conn.shared.opts.send_timeout;
        match &mut self.stream {
            Stream::Tcp(s) => zero_copy!(s, file, offset, end, limit),
            Stream::Unix(s) => zero_copy!(s, file, offset, end, limit),
            Stream::Tls(s) => {
                use std::os::unix::fs::FileExt;
                let mut chunk = vec![0u8; SENDFILE_CHUNK.min((end - offset.min(end)) as usize)];
                let mut pos = offset;
                while pos < end {
                    let want = chunk.len().min((end - pos) as usize);
                    let n = file.read_at(&mut chunk[..want], pos)?;
                    if n == 0 {
                        break;
                    }
                    write_bounded(&mut **s, &chunk[..n], limit).await?;
                    pos += n as u64;
                }
                Ok(pos - offset.min(end))
            }
            Stream::Closed => Err(closed()),
        }
    }

    /// Shuts down reading, writing or both; the socket stays open until closed.
    pub async fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        let result = match &mut self.stream {
            Stream::Tls(s) if how != Shutdown::Read => s.shutdown().await,
            Stream::Tls(s) => socket2::SockRef::from(s.get_ref().0).shutdown(how),
            Stream::Tcp(s) => socket2::SockRef::from(&*s).shutdown(how),
            Stream::Unix(s) => socket2::SockRef::from(&*s).shutdown(how),
            Stream::Closed => Err(closed()),
        };
        self.conn.emit(EventKind::SocketShutdown, |e| e);
        result.map_err(Error::io)
    }

    /// Closes the connection. The handler's close callback is not called for a close the
    /// handler asked for itself.
    pub async fn close(&mut self) {
        if let Stream::Tls(s) = &mut self.stream {
            // Best effort close_notify; the peer may be gone already.
            let _ = s.shutdown().await;
        }
        self.stream = Stream::Closed;
        self.closed_by_handler = true;
    }

    /// Upgrades this plain TCP connection to TLS (STARTTLS), within the listener's
    /// `handshake_timeout`.
    pub async fn start_tls(&mut self, tls: &TlsConfig) -> Result<()> {
        let tcp = match std::mem::replace(&mut self.stream, Stream::Closed) {
            Stream::Tcp(s) => s,
            other => {
                self.stream = other;
                return Err(Error::with_source(
                    ErrorKind::Handshake,
                    "only a plain TCP connection can switch to TLS",
                ));
            }
        };
        let tls_stream = Box::pin(handshake(&self.conn, tls, tcp)).await?;
        self.stream = Stream::Tls(tls_stream);
        Ok(())
    }
}

/// Runs a TLS handshake within the listener's `handshake_timeout`, reporting its outcome.
///
/// The stream comes back boxed: a TLS session is over a kilobyte, and should not sit inline in
/// the futures of connections that are not TLS.
pub(crate) async fn handshake(
    conn: &Conn,
    tls: &TlsConfig,
    tcp: TcpStream,
) -> Result<Box<TlsStream<TcpStream>>> {
    let started = Instant::now();
    let limit = conn.shared.opts.handshake_timeout;
    let result = match tokio::time::timeout(limit, tls.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(Error::with_source(ErrorKind::Handshake, e)),
        Err(_) => Err(Error::with_source(
            ErrorKind::Timeout,
            format!("TLS handshake not finished within {limit:?}"),
        )),
    };
    match &result {
        Ok(_) => conn.emit(EventKind::Handshake, |e| e.duration(started.elapsed())),
        Err(err) => conn.emit(EventKind::HandshakeError, |e| e.error(err)),
    }
    result
}

/// Bytes rustls holds already (decrypted, or a record it has not decrypted yet) are ready;
/// otherwise the TCP socket says. Waiting inside the read instead would leave a stop request
/// and the read timeout unseen while the peer is silent. Out of line, so that the plain TCP
/// path of [`Socket::poll_readable`] stays small enough to inline into the connection loop.
#[inline(never)]
fn tls_readable(s: &TlsStream<TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    match s.get_ref().1.wants_read() {
        false => Poll::Ready(Ok(())),
        true => s.get_ref().0.poll_read_ready(cx),
    }
}

// ===== impl Socket: the connection loop's reads =====

impl Socket {
    /// Ready when a read may make progress, without holding a buffer. Uses the stream's own
    /// waker slot rather than a readiness future, which would add 150 bytes to every
    /// connection's task.
    #[inline]
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.stream {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(s) => tls_readable(s, cx),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    /// True when the peer has sent nothing that waits to be read (or the socket is closed):
    /// checked without reading, before a close that must not drop the peer's bytes.
    pub(crate) fn peer_is_quiet(&self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let ready = match &self.stream {
            Stream::Tcp(s) => s.poll_read_ready(&mut cx),
            Stream::Unix(s) => s.poll_read_ready(&mut cx),
            Stream::Tls(s) => s.get_ref().0.poll_read_ready(&mut cx),
            Stream::Closed => return true,
        };
        ready.is_pending()
    }

    /// Reads once into `buf`: `Ok(None)` when the readiness was spurious.
    ///
    /// Reads through `poll_read` rather than `try_read`: a read that does not fill the buffer
    /// has drained the socket, and `poll_read` then forgets the readiness, saving the read
    /// that would only have said "would block".
    pub(crate) async fn read_into(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let n = match &mut self.stream {
            Stream::Tcp(s) => match read_ready(s, buf).await {
                Some(r) => r?,
                None => return Ok(None),
            },
            Stream::Unix(s) => match read_ready(s, buf).await {
                Some(r) => r?,
                None => return Ok(None),
            },
            Stream::Tls(s) => match read_ready(&mut **s, buf).await {
                Some(r) => r?,
                None => return Ok(None),
            },
            Stream::Closed => return Err(closed()),
        };
        self.count_recv(n);
        Ok(Some(n))
    }
}

/// One read of what is there now; `None` when nothing is (the readiness was spurious).
async fn read_ready<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> Option<io::Result<usize>> {
    let mut rb = ReadBuf::new(buf);
    let polled =
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *s).poll_read(cx, &mut rb))).await;
    match polled {
        Poll::Pending => None,
        Poll::Ready(r) => Some(r.map(|()| rb.filled().len())),
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket is closed")
}

/// Writes all of `data` and flushes, failing if that takes longer than `limit`.
///
/// Most writes complete on the first try, so that try runs without a timer; only a write that
/// has to wait for the peer gets one, boxed, so the timer's state does not sit in every
/// connection's task (it would add some 200 bytes to each).
async fn write_bounded<S: AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let write = async {
        s.write_all(data).await?;
        s.flush().await
    };
    tokio::pin!(write);
    if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return r;
    }
    Box::pin(tokio::time::timeout(limit, write))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")))
}

// ===== impl AsyncRead / AsyncWrite for Socket =====

impl AsyncRead for Socket {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        };
        if let Poll::Ready(Ok(())) = polled {
            this.count_recv(buf.filled().len() - before);
        }
        polled
    }
}

impl Socket {
    /// Counts a write that went through in the connection's statistics and reports it.
    #[inline]
    fn count_sent(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = polled {
            self.conn.stats.send_bytes += n as u64;
            self.conn.stats.send_packets += 1;
            self.conn.emit(EventKind::Send, |e| e.bytes(n as u64));
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
            Stream::Closed => Poll::Ready(Err(closed())),
        };
        this.count_sent(polled)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Closed => Poll::Ready(Err(closed())),
        };
        this.count_sent(polled)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Closed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}
