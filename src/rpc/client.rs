//! [`Client`]: calls, casts and pushes over one connection to a [`Daemon`](super::Daemon), with
//! call timeouts, keepalives and reconnection; [`ClientBuilder`] sets it up.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::client_conn::{Callback, Command, Connector, Settings, Shared, Task};
use super::protocol::Identity;
use super::wire::{self, Kind, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HELLO_SIZE};
use super::{ClientTls, Protocol, RpcError};

/// A client of a service speaking `P`, over one connection (plain TCP or TLS) owned by a
/// background task.
///
/// Cheap to clone: clones share the connection, and calls from many tasks at once are
/// multiplexed over it. Dropping every clone, or [`close`](Client::close), ends the task.
///
/// # When the connection ends
///
/// A lost connection is made again in the background, after 100 ms and then with a growing
/// delay ([`backoff`](ClientBuilder::backoff)). Meanwhile calls and casts wait for it, each
/// call within its own timeout; a call that times out before any connection was made fails
/// with [`RpcError::Disconnected`]. Without [`reconnect`](ClientBuilder::reconnect), they fail
/// at once with it instead.
///
/// **Upgrades, reloads and stops** of an atoll daemon cost nothing but a short wait. The
/// client asks for the wire protocol's `going away` in its hello; a daemon that stops its
/// listener (the old process of `atoll upgrade`, a reload that replaces the listener, a
/// [`DaemonHandle`](super::DaemonHandle) stopped) then tells the client, runs every call and
/// cast the client sent before it heard, and sends their answers; the client sends its later
/// calls and casts on a new connection, to whichever process or listener now takes them,
/// which it opens at once. No call fails, none is lost, none runs twice.
///
/// Without `going away` (a daemon older than it, or a connection that breaks), a call
/// written whole to the lost connection and not answered fails with
/// [`RpcError::Disconnected`], since the server may have run it; calls not yet written whole,
/// and calls a stopping daemon answered `shutting down` (read, not run), are sent again on
/// the next connection.
///
/// Pushes are per connection: those the server sent on a connection before it went away are
/// delivered, but a push made while the client has no connection, or by a process the
/// client was not connected to (during an upgrade both run for a while, and each pushes
/// only to its own clients), never reaches it. [`on_connect`](ClientBuilder::on_connect) is
/// called after every reconnection: that is where to read again what pushes would have
/// told.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] enum Req { Get(String) }
/// # struct Kv;
/// # impl atoll::rpc::Protocol for Kv {
/// #     const IDENTIFIER: &'static str = "kv"; const VERSION: &'static str = "1.0.0";
/// #     type Request = Req; type Reply = Option<String>; type Push = String;
/// # }
/// use atoll::rpc::{Client, ClientTls};
///
/// # async {
/// let client = Client::<Kv>::builder("localhost:7450")
///     .tls(ClientTls::new("ca.pem").client_cert("client.pem", "client-key.pem"))
///     .on_push(|msg| println!("pushed: {msg}"))
///     .connect()
///     .await?;
/// let value = client.call(&Req::Get("colour".into())).await?;
/// # Ok::<_, atoll::rpc::RpcError>(())
/// # };
/// ```
pub struct Client<P: Protocol> {
    inner: Arc<Inner>,
    _protocol: PhantomData<fn() -> P>,
}

/// What the clones of a client share. Dropping it drops the channel's sender, which ends the
/// connection task.
struct Inner {
    addr: String,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// The next call id; ids start at 1 (0 means "no id" on the wire).
    next_id: AtomicU64,
    call_timeout: Duration,
    max_frame_size: usize,
    max_unsent: usize,
    /// Whether calls made while disconnected wait for the reconnection.
    reconnect: bool,
}

/// The longest keepalive interval accepted: a day (the connection gives up on a silent server
/// after twice it).
const MAX_KEEPALIVE: Duration = Duration::from_secs(24 * 3600);

/// The default of [`ClientBuilder::max_unsent`]: 8 MiB.
const DEFAULT_MAX_UNSENT: usize = 8 * 1024 * 1024;

impl<P: Protocol> Client<P> {
    /// A builder for a client of the daemon at `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder<P> {
        ClientBuilder::new(addr.into())
    }

    /// Connects to the daemon at `addr` over plain TCP, with the default settings.
    pub async fn connect(addr: impl Into<String>) -> Result<Client<P>, RpcError> {
        Client::builder(addr).connect().await
    }

    /// Calls the service and waits for its reply, at most the client's call timeout.
    pub async fn call(&self, request: &P::Request) -> Result<P::Reply, RpcError> {
        self.call_timeout(request, self.inner.call_timeout).await
    }

    /// Calls the service and waits for its reply, at most `timeout`. A call that times out is
    /// forgotten: its reply, if it comes, is dropped. A call that times out while the client
    /// has no connection fails with [`RpcError::Disconnected`] (it was never sent).
    pub async fn call_timeout(
        &self,
        request: &P::Request,
        timeout: Duration,
    ) -> Result<P::Reply, RpcError> {
        self.ready()?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(Kind::Call, id, request)?;
        // Waiting for room to send counts against the timeout.
        let started = std::time::Instant::now();
        let room = match tokio::time::timeout(timeout, self.room(frame.len())).await {
            Ok(room) => room?,
            Err(_) => return Err(self.timed_out(timeout)),
        };
        let left = timeout.saturating_sub(started.elapsed());
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Call {
                id,
                frame,
                room,
                reply,
            })
            .map_err(|_| self.gone())?;
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(Ok(payload))) => wire::decode(&payload).map_err(RpcError::Decode),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => {
                let _ = self.inner.commands.send(Command::Cancel(id));
                Err(self.timed_out(timeout))
            }
        }
    }

    /// Sends a request that wants no reply. `Ok` means it was queued (while reconnecting, for
    /// the next connection), not that the service handled it. While the connection holds
    /// [`max_unsent`](ClientBuilder::max_unsent) bytes not yet written (the server reads
    /// slowly, or not at all), it waits for room: a client that casts in a loop is held to
    /// the server's pace instead of queueing without end.
    pub async fn cast(&self, request: &P::Request) -> Result<(), RpcError> {
        self.ready()?;
        let frame = self.encode(Kind::Cast, 0, request)?;
        let room = self.room(frame.len()).await?;
        self.inner
            .commands
            .send(Command::Cast(frame, room))
            .map_err(|_| self.gone())
    }

    /// Takes room for a frame of `len` bytes among those not yet written, waiting for it (a
    /// frame larger than all the room waits for all of it).
    async fn room(&self, len: usize) -> Result<u32, RpcError> {
        let room = len.min(self.inner.max_unsent).min(u32::MAX as usize) as u32;
        match self.inner.shared.room.acquire_many(room).await {
            Ok(permit) => {
                // Given back by the connection task as it writes the frame.
                permit.forget();
                Ok(room)
            }
            Err(_) => Err(self.gone()),
        }
    }

    /// Whether the client is connected now (its last hello succeeded and the connection has
    /// not been lost since).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Acquire)
    }

    /// The version the server named in its last hello.
    pub fn server_version(&self) -> Option<String> {
        self.inner
            .shared
            .server_version
            .lock()
            .ok()
            .and_then(|v| v.clone())
    }

    /// The address the client connects to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Closes the connection, for every clone, and ends the connection task: calls in flight
    /// and every later call fail with [`RpcError::Closed`]. Casts queued before are written
    /// first (for at most a second).
    pub async fn close(&self) {
        self.inner.shared.closed.store(true, Ordering::Release);
        let (done, closed) = oneshot::channel();
        if self.inner.commands.send(Command::Close(done)).is_ok() {
            // An error means the task had already ended.
            let _ = closed.await;
        }
        self.inner.shared.connected.store(false, Ordering::Release);
    }

    /// Fails fast when no call can succeed now.
    fn ready(&self) -> Result<(), RpcError> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(RpcError::Closed);
        }
        if !self.inner.reconnect && !self.is_connected() {
            return Err(RpcError::Disconnected);
        }
        Ok(())
    }

    /// The error of a call that got no answer within `timeout`.
    fn timed_out(&self, timeout: Duration) -> RpcError {
        if self.is_connected() {
            RpcError::Timeout(timeout)
        } else {
            RpcError::Disconnected
        }
    }

    /// The error of a call whose command the task dropped: it ended, or lost the connection
    /// for good.
    fn gone(&self) -> RpcError {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            RpcError::Closed
        } else {
            RpcError::Disconnected
        }
    }

    fn encode(&self, kind: Kind, id: u64, request: &P::Request) -> Result<Bytes, RpcError> {
        let mut buf = BytesMut::new();
        wire::encode(kind, id, request, self.inner.max_frame_size, &mut buf)
            .map_err(|e| RpcError::Encode(e.to_string()))?;
        Ok(buf.freeze())
    }
}

impl<P: Protocol> Clone for Client<P> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
            _protocol: PhantomData,
        }
    }
}

impl<P: Protocol> fmt::Debug for Client<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("identifier", &P::IDENTIFIER)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

// ===== impl ClientBuilder =====

/// Settings of a [`Client`]; [`connect`](ClientBuilder::connect) makes the first connection.
#[must_use]
pub struct ClientBuilder<P: Protocol> {
    addr: String,
    tls: Option<ClientTls>,
    identifier: Option<String>,
    version: Option<String>,
    accept: Option<String>,
    call_timeout: Duration,
    keepalive: Duration,
    connect_timeout: Duration,
    reconnect: bool,
    backoff: (Duration, Duration),
    max_frame_size: usize,
    max_hello_size: usize,
    frame_timeout: Duration,
    max_unsent: usize,
    on_push: Option<Callback<P::Push>>,
    on_connect: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl<P: Protocol> ClientBuilder<P> {
    fn new(addr: String) -> Self {
        ClientBuilder {
            addr,
            tls: None,
            identifier: None,
            version: None,
            accept: None,
            call_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect: true,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_hello_size: DEFAULT_MAX_HELLO_SIZE,
            frame_timeout: Duration::from_secs(10),
            max_unsent: DEFAULT_MAX_UNSENT,
            on_push: None,
            on_connect: None,
        }
    }

    /// Connects over TLS with these settings. Default is plain TCP.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The service identifier sent in the hello and expected in the server's. Default is
    /// `P::IDENTIFIER`.
    pub fn identifier(mut self, identifier: &str) -> Self {
        self.identifier = Some(identifier.to_owned());
        self
    }

    /// The protocol version sent in the hello, `MAJOR.MINOR.PATCH`. Default is `P::VERSION`.
    pub fn version(mut self, version: &str) -> Self {
        self.version = Some(version.to_owned());
        self
    }

    /// The server versions accepted, a semver requirement such as `^1.2`. Default is the
    /// versions compatible with the client's own (same major; same minor for `0.x`).
    pub fn accept(mut self, versions: &str) -> Self {
        self.accept = Some(versions.to_owned());
        self
    }

    /// How long [`Client::call`] waits for a reply. Default is 5 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// A keepalive is sent when nothing was sent for this long (or nothing received), and the
    /// connection is considered dead when nothing at all was received for twice this long.
    /// More than 0 and at most a day. Default is 30 s.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = interval;
        self
    }

    /// How long connecting may take, TLS handshake and hello exchange included. Default is
    /// 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a lost connection is made again, in the background; calls made meanwhile wait
    /// for it. Without it, a client whose connection is lost stays disconnected, and its
    /// calls fail at once with [`RpcError::Disconnected`]. Default is true.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.reconnect = on;
        self
    }

    /// The delay before the first reconnection attempt, doubled after each failure up to
    /// `max`, with up to 10% jitter. Default is 100 ms doubling to 10 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// The largest payload sent or received; a larger frame from the server is a protocol
    /// error that drops the connection. Default is
    /// [`DEFAULT_MAX_FRAME_SIZE`](super::wire::DEFAULT_MAX_FRAME_SIZE) (8 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// The largest payload accepted from the server before its hello: its hello, or the
    /// error frame refusing ours. A larger one fails the connect with
    /// [`RpcError::Protocol`], from its header alone, so a server that is not the one meant
    /// cannot make the client hold more than this. At least 256. Default is 4 KiB
    /// ([`DEFAULT_MAX_HELLO_SIZE`](super::wire::DEFAULT_MAX_HELLO_SIZE)).
    pub fn max_hello_size(mut self, bytes: usize) -> Self {
        self.max_hello_size = bytes;
        self
    }

    /// How long a frame from the server may take to arrive once its first byte has. A
    /// server that starts a frame and stops sending it (even one byte at a time, which
    /// keeps the keepalive check content) loses the connection: `frame timeout`, as the
    /// daemon does to its clients. More than 0. Default is 10 s.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// The most bytes of calls and casts that may wait to be written to the server. Past it,
    /// a cast waits for room, and so does a call, within its timeout. Default is 8 MiB.
    pub fn max_unsent(mut self, bytes: usize) -> Self {
        self.max_unsent = bytes;
        self
    }

    /// Called with every push from the server, on the connection task: keep it short, hand
    /// long work to another task. A push that does not decode is logged and skipped. Default
    /// is none (pushes are dropped).
    pub fn on_push(mut self, f: impl Fn(P::Push) + Send + Sync + 'static) -> Self {
        self.on_push = Some(Arc::new(f));
        self
    }

    /// Called after each successful hello: the first connection (before
    /// [`connect`](ClientBuilder::connect) returns) and every reconnection (on the connection
    /// task). Default is none.
    pub fn on_connect(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Connects, exchanges hellos and starts the connection task. The first connection must
    /// succeed: its failure is returned (refused, timed out, TLS, hello refused with
    /// [`RpcError::WrongIdentifier`] or [`RpcError::IncompatibleVersion`]). Must be called
    /// within a tokio runtime.
    pub async fn connect(self) -> Result<Client<P>, RpcError> {
        if self.keepalive.is_zero() || self.keepalive > MAX_KEEPALIVE {
            return Err(RpcError::Config(format!(
                "keepalive must be more than 0 and at most a day, not {:?}",
                self.keepalive
            )));
        }
        if self.max_hello_size < 256 {
            return Err(RpcError::Config(format!(
                "max_hello_size must be at least 256, not {}",
                self.max_hello_size
            )));
        }
        if self.frame_timeout.is_zero() {
            return Err(RpcError::Config("frame_timeout must be more than 0".into()));
        }
        if self.max_unsent == 0 {
            return Err(RpcError::Config("max_unsent must be more than 0".into()));
        }
        if self.backoff.0.is_zero() || self.backoff.1 < self.backoff.0 {
            return Err(RpcError::Config(format!(
                "backoff {:?} to {:?}: the initial delay must be more than 0 and at most the maximum",
                self.backoff.0, self.backoff.1
            )));
        }
        let identity = Identity::new(
            self.identifier.as_deref(),
            self.version.as_deref(),
            self.accept.as_deref(),
            (P::IDENTIFIER, P::VERSION),
        )
        .map_err(RpcError::Config)?;
        let tls = match &self.tls {
            Some(tls) => Some(tls.connector(&self.addr)?),
            None => None,
        };
        let connector = Connector {
            addr: self.addr.clone(),
            tls,
            identity,
            connect_timeout: self.connect_timeout,
            max_hello_size: self.max_hello_size.min(self.max_frame_size),
        };
        let conn = connector.connect().await?;
        let shared = Arc::new(Shared::new(self.max_unsent));
        let (commands, rx) = mpsc::unbounded_channel();
        shared.connected.store(true, Ordering::Release);
        if let Ok(mut v) = shared.server_version.lock() {
            *v = Some(conn.hello.version.clone());
        }
        if let Some(on_connect) = &self.on_connect {
            on_connect();
        }
        let settings = Settings {
            keepalive: self.keepalive,
            reconnect: self.reconnect,
            backoff: self.backoff,
            max_frame_size: self.max_frame_size,
            frame_timeout: self.frame_timeout,
            on_push: self.on_push,
            on_connect: self.on_connect,
        };
        tokio::spawn(Task::<P>::new(rx, shared.clone(), connector, settings).run(conn));
        Ok(Client {
            inner: Arc::new(Inner {
                addr: self.addr,
                commands,
                shared,
                next_id: AtomicU64::new(1),
                call_timeout: self.call_timeout,
                max_frame_size: self.max_frame_size,
                max_unsent: self.max_unsent,
                reconnect: self.reconnect,
            }),
            _protocol: PhantomData,
        })
    }
}

impl<P: Protocol> fmt::Debug for ClientBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("identifier", &self.identifier)
            .field("version", &self.version)
            .field("accept", &self.accept)
            .field("call_timeout", &self.call_timeout)
            .field("keepalive", &self.keepalive)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("backoff", &self.backoff)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_hello_size", &self.max_hello_size)
            .field("frame_timeout", &self.frame_timeout)
            .field("max_unsent", &self.max_unsent)
            .field("on_push", &self.on_push.is_some())
            .field("on_connect", &self.on_connect.is_some())
            .finish()
    }
}
