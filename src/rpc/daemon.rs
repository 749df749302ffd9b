//! [`Daemon`]: the builder that starts an RPC daemon, a socket server listener whose handler
//! takes every connection over and serves it with an instance of the [`Service`]; and its
//! running [`DaemonHandle`].

use std::any::Any;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::caller::Caller;
use super::options::{RpcOptions, DEFAULT_RPC_PORT};
use super::protocol::Protocol;
use super::serve::serve;
use super::service::Service;
use super::state::DaemonState;
use super::supervisor::{InstanceInfo, Supervisor};
use super::wire::HEADER_LEN;
use crate::addr::Addr;
use crate::bind::Bind;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::handle::{ServerHandle, StopReport};
use crate::handler::{Action, Handler};
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::server::Server;
use crate::socket::Socket;
use crate::telemetry::{Subscriber, Telemetry};
use crate::tls::TlsConfig;

/// The kind a registry lists RPC daemons as.
const KIND: &str = "rpc";

/// The socket server handler of a daemon: it takes every connection over.
struct RpcHandler<S: Service> {
    daemon: Arc<DaemonState<S>>,
}

impl<S: Service> Clone for RpcHandler<S> {
    fn clone(&self) -> Self {
        RpcHandler {
            daemon: self.daemon.clone(),
        }
    }
}

impl<S: Service> Handler for RpcHandler<S> {
    async fn handle_connection(&mut self, _socket: &mut Socket) -> Action {
        Action::TakeOver
    }

    async fn take_over(self, socket: Socket) -> std::result::Result<(), BoxError> {
        serve(self.daemon, socket).await
    }
}

/// What a daemon keeps on its [`ServerHandle`], so a handle found in a registry leads back to
/// its instances.
struct DaemonControl {
    supervisor: Supervisor,
    token: u64,
}

/// An RPC daemon, not yet started: the service's initial data, the RPC options, and the
/// socket server's options.
///
/// Its defaults differ from a bare [`Server`]'s: the name is `"rpc"`, the address
/// `127.0.0.1`, any free port, and TLS is required: [`start`](Daemon::start) refuses to run
/// without [`tls`](Daemon::tls) unless [`plain`](Daemon::plain) says plain TCP is meant.
///
/// ```no_run
/// # async fn run() -> atoll::Result<()> {
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use atoll::rpc::{Ctx, Daemon, Protocol, Reply, Service};
/// use atoll::BoxError;
///
/// struct Greeting;
///
/// impl Protocol for Greeting {
///     const IDENTIFIER: &'static str = "example.greeting";
///     const VERSION: &'static str = "1.0.0";
///     type Request = String;
///     type Reply = String;
///     type Push = ();
/// }
///
/// struct Greeter { greeting: Arc<String> }
///
/// impl Service for Greeter {
///     type Protocol = Greeting;
///     type Init = String;
///
///     async fn init(init: &Arc<String>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
///         Ok(Greeter { greeting: init.clone() })
///     }
///
///     async fn call(&mut self, name: String, _ctx: &mut Ctx<Self>)
///         -> Result<Reply<String>, BoxError>
///     {
///         Ok(format!("{}, {name}", self.greeting).into())
///     }
/// }
///
/// let daemon = Daemon::<Greeter>::new("hello".to_owned()).plain().start()?;
/// println!("greeting on {}", daemon.local_addr());
/// daemon.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a daemon does nothing until started"]
pub struct Daemon<S: Service> {
    init: S::Init,
    name: String,
    options: ServerOptions,
    rpc: RpcOptions,
    tls: Option<TlsConfig>,
    plain: bool,
    supervisor: Supervisor,
    /// The value forwarded to instances, with the span current at `start`.
    forwarded: Option<Arc<dyn Any + Send + Sync>>,
    telemetry: Arc<Telemetry>,
    bind: Bind,
}

impl<S: Service> fmt::Debug for Daemon<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("name", &self.name)
            .field("identifier", &S::Protocol::IDENTIFIER)
            .field("rpc", &self.rpc)
            .field("tls", &self.tls.is_some())
            .field("plain", &self.plain)
            .field("forward_callers", &self.forwarded.is_some())
            .finish()
    }
}

impl<S: Service> Daemon<S> {
    /// A daemon whose instances are each seeded with `init`.
    pub fn new(init: S::Init) -> Daemon<S> {
        let options = ServerOptions {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_RPC_PORT,
            ..ServerOptions::default()
        };
        Daemon {
            init,
            name: KIND.to_owned(),
            options,
            rpc: RpcOptions::default(),
            tls: None,
            plain: false,
            supervisor: Supervisor::new(),
            forwarded: None,
            telemetry: Arc::default(),
            bind: Bind::Tcp,
        }
    }

    /// Names the listener, in telemetry, in a [`Registry`] and in
    /// [`InstanceInfo::listener`]. Default is `"rpc"`.
    pub fn name(mut self, name: impl Into<String>) -> Daemon<S> {
        self.name = name.into();
        self
    }

    /// The IP address. Default is `127.0.0.1`.
    pub fn ip(mut self, ip: IpAddr) -> Daemon<S> {
        self.options.ip = ip;
        self
    }

    /// The port; 0 picks a free one, read back with [`DaemonHandle::port`]. Default is 0.
    pub fn port(mut self, port: u16) -> Daemon<S> {
        self.options.port = port;
        self
    }

    /// Replaces the socket server's options (acceptors, connection limit, shutdown timeout,
    /// address...). Default is [`ServerOptions::default()`] with the address above.
    pub fn options(mut self, options: ServerOptions) -> Daemon<S> {
        self.options = options;
        self
    }

    /// Changes the socket server's options in place. Default is as for
    /// [`options`](Daemon::options).
    pub fn configure(mut self, change: impl FnOnce(&mut ServerOptions)) -> Daemon<S> {
        change(&mut self.options);
        self
    }

    /// Replaces the RPC options (identifier, versions, frame size, timeouts). Default is
    /// [`RpcOptions::default()`].
    pub fn rpc_options(mut self, rpc: RpcOptions) -> Daemon<S> {
        self.rpc = rpc;
        self
    }

    /// Changes the RPC options in place: `daemon.configure_rpc(|o| o.idle_timeout = d)`.
    /// Default is as for [`rpc_options`](Daemon::rpc_options).
    pub fn configure_rpc(mut self, change: impl FnOnce(&mut RpcOptions)) -> Daemon<S> {
        change(&mut self.rpc);
        self
    }

    /// Serves TLS with this configuration; with a client CA in it
    /// ([`TlsOptions::client_ca`](crate::TlsOptions::client_ca)), clients must present a
    /// certificate (or may, with [`ClientAuth::Optional`](crate::ClientAuth::Optional)),
    /// which instances read with
    /// [`Ctx::peer_certificates`](super::Ctx::peer_certificates). Replaces an earlier
    /// [`plain`](Daemon::plain). Default is none, and a daemon without TLS or `plain` does
    /// not start.
    pub fn tls(mut self, tls: TlsConfig) -> Daemon<S> {
        self.tls = Some(tls);
        self.plain = false;
        self
    }

    /// Serves plain TCP (or a Unix socket), on purpose. Replaces an earlier
    /// [`tls`](Daemon::tls). Default is TLS required.
    pub fn plain(mut self) -> Daemon<S> {
        self.tls = None;
        self.plain = true;
        self
    }

    /// Keeps the daemon's instances in this table, which other daemons may share; made with
    /// [`Supervisor::with`], it hands them to a supervisor of yours to run (erps's
    /// `server_supervisor`, see [`Supervise`](super::Supervise)). Default is a table of the
    /// daemon's own, each instance running on its connection's task.
    pub fn supervisor(mut self, supervisor: Supervisor) -> Daemon<S> {
        self.supervisor = supervisor;
        self
    }

    /// Runs every instance inside the context of the code that calls
    /// [`start`](Daemon::start) (erps's `forward_callers`): the `tracing` span current there,
    /// so what instances log carries its fields, and `value`, which their callbacks read with
    /// [`Ctx::caller`](super::Ctx::caller) or [`caller`](super::caller). It holds wherever
    /// the instance runs, a [`Supervise`](super::Supervise)'s task included.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use atoll::rpc::{Ctx, Daemon, Protocol, Reply, Service};
    /// use atoll::BoxError;
    ///
    /// /// Who started the daemon, for its instances.
    /// struct Tenant(String);
    ///
    /// struct Whoami;
    ///
    /// impl Protocol for Whoami {
    ///     const IDENTIFIER: &'static str = "example.whoami";
    ///     const VERSION: &'static str = "1.0.0";
    ///     type Request = ();
    ///     type Reply = String;
    ///     type Push = ();
    /// }
    ///
    /// struct Instance;
    ///
    /// impl Service for Instance {
    ///     type Protocol = Whoami;
    ///     type Init = ();
    ///
    ///     async fn init(_: &Arc<()>, _: &mut Ctx<Self>) -> Result<Self, BoxError> {
    ///         // Logged inside the `tenant` span of the code that started the daemon.
    ///         tracing::info!("instance started");
    ///         Ok(Instance)
    ///     }
    ///
    ///     async fn call(&mut self, _: (), ctx: &mut Ctx<Self>) -> Result<Reply<String>, BoxError> {
    ///         let tenant = ctx.caller::<Tenant>().ok_or("no tenant")?;
    ///         Ok(tenant.0.clone().into())
    ///     }
    /// }
    ///
    /// # async {
    /// let span = tracing::info_span!("tenant", name = "blue");
    /// let daemon = span.in_scope(|| {
    ///     Daemon::<Instance>::new(())
    ///         .plain()
    ///         .forward_callers(Tenant("blue".into()))
    ///         .start()
    /// })?;
    /// # daemon.shutdown().await;
    /// # Ok::<(), atoll::Error>(())
    /// # };
    /// ```
    ///
    /// Default is none: instances run in no span of their starter's, and see no value.
    pub fn forward_callers<T: Send + Sync + 'static>(mut self, value: T) -> Daemon<S> {
        self.forwarded = Some(Arc::new(value));
        self
    }

    /// Uses this telemetry hub. Default is one of the daemon's own.
    pub fn telemetry(mut self, telemetry: Arc<Telemetry>) -> Daemon<S> {
        self.telemetry = telemetry;
        self
    }

    /// Attaches a telemetry subscriber before start, so it sees `listener.start` too.
    /// Default is none.
    pub fn subscribe(self, subscriber: impl Subscriber) -> Daemon<S> {
        self.telemetry.attach(subscriber);
        self
    }

    /// Chooses where the listening sockets come from (an already bound listener, a Unix
    /// socket, inherited descriptors). Default is [`Bind::Tcp`] on the address above.
    pub fn bind(mut self, bind: Bind) -> Daemon<S> {
        self.bind = bind;
        self
    }

    /// The kind a registry lists this daemon as: `"rpc"`.
    pub fn kind(&self) -> &'static str {
        KIND
    }

    /// Binds and starts. Must be called inside a tokio runtime. Errors name the listener and
    /// the fault: no TLS and no [`plain`](Daemon::plain), a bad version or version
    /// requirement, an invalid option, an address in use.
    pub fn start(self) -> Result<DaemonHandle> {
        let (server, control) = self.into_server()?;
        let handle = server.start()?;
        Ok(DaemonHandle::new(handle, &control))
    }

    /// Starts the daemon and registers it under its name in `registry`, as kind `"rpc"`.
    pub fn start_in(self, registry: &Registry) -> Result<DaemonHandle> {
        let (server, control) = self.into_server()?;
        let handle = registry.start(KIND, server)?;
        Ok(DaemonHandle::new(handle, &control))
    }

    fn into_server(self) -> Result<(Server<RpcHandler<S>>, Arc<DaemonControl>)> {
        let ctx = format!("listener `{}`", self.name);
        let config = |why: String| Error::with_source(ErrorKind::Config, why).context(ctx.clone());
        if self.tls.is_none() && !self.plain {
            return Err(config(
                "an RPC daemon needs TLS: give it a TlsConfig with .tls(..), or call .plain() \
                 for plain TCP"
                    .to_owned(),
            ));
        }
        check(&self.rpc).map_err(config)?;
        let mut daemon =
            DaemonState::<S>::new(self.init, &self.rpc, self.supervisor.clone()).map_err(config)?;
        daemon.caller = self.forwarded.map(Caller::here);
        let token = daemon.token;
        let daemon = Arc::new(daemon);
        let control = Arc::new(DaemonControl {
            supervisor: self.supervisor,
            token,
        });
        let mut server = Server::new(RpcHandler { daemon })
            .name(self.name)
            .options(self.options)
            .bind(self.bind)
            .telemetry(self.telemetry)
            .extension(control.clone());
        if let Some(tls) = self.tls {
            server = server.tls(tls);
        }
        Ok((server, control))
    }
}

/// Checks the RPC options a daemon cannot run with.
fn check(rpc: &RpcOptions) -> std::result::Result<(), String> {
    // Room for a hello or an error with its message; and the length field is 32 bits.
    const MIN_FRAME: usize = 256;
    if rpc.max_frame_size < MIN_FRAME || rpc.max_frame_size > u32::MAX as usize - HEADER_LEN {
        return Err(format!(
            "max_frame_size {} is out of range ({MIN_FRAME} to {})",
            rpc.max_frame_size,
            u32::MAX as usize - HEADER_LEN
        ));
    }
    if rpc.max_hello_size < MIN_FRAME {
        return Err(format!(
            "max_hello_size {} is too small (at least {MIN_FRAME})",
            rpc.max_hello_size
        ));
    }
    for (name, value) in [
        ("frame_timeout", rpc.frame_timeout),
        ("idle_timeout", rpc.idle_timeout),
    ] {
        if value == Duration::ZERO {
            return Err(format!("{name} must be over zero"));
        }
    }
    Ok(())
}

/// A running daemon: its socket server's handle, and its instances. Clones control the same
/// daemon.
#[derive(Clone, Debug)]
pub struct DaemonHandle {
    server: ServerHandle,
    supervisor: Supervisor,
    token: u64,
}

impl DaemonHandle {
    fn new(server: ServerHandle, control: &DaemonControl) -> DaemonHandle {
        DaemonHandle {
            server,
            supervisor: control.supervisor.clone(),
            token: control.token,
        }
    }

    /// The handle of a daemon's listener, as a registry lists it; `None` when it is no RPC
    /// daemon.
    pub fn from_server(server: &ServerHandle) -> Option<DaemonHandle> {
        let control = server.extension::<DaemonControl>()?;
        Some(DaemonHandle::new(server.clone(), &control))
    }

    /// The socket server's handle: connections, suspend and resume, stop, telemetry.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> &Addr {
        self.server.local_addr()
    }

    /// The port actually bound (0 on a Unix socket).
    pub fn port(&self) -> u16 {
        self.local_addr().inet().map_or(0, |a| a.port())
    }

    /// The table the daemon keeps its instances in (maybe shared with other daemons).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// This daemon's live instances, by connection id.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.supervisor.instances_of(self.token)
    }

    /// How many instances of this daemon are live.
    pub fn instance_count(&self) -> usize {
        self.supervisor.count_of(self.token)
    }

    /// Stops the daemon with its `shutdown_timeout` (see [`ServerHandle::stop`]): no new
    /// connections, no new frames; calls in progress and deferred calls are answered, then
    /// every connection closes.
    pub async fn shutdown(&self) -> StopReport {
        self.server.shutdown().await
    }

    /// Stops the daemon, waiting up to `timeout` before closing the connections still open.
    pub async fn stop(&self, timeout: Duration) -> StopReport {
        self.server.stop(timeout).await
    }
}
