//! Building and starting a server: a handler, its options, where to listen, TLS, telemetry.

use std::any::Any;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::acceptor;
use crate::bind::{self, Accepted, Bind, Listener};
use crate::connection;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{Extension, ServerHandle, Spawner};
use crate::handler::Handler;
use crate::moved::{BoxedRun, Resume, Resumed};
use crate::options::ServerOptions;
use crate::shared::Shared;
use crate::telemetry::{Subscriber, Telemetry};
use crate::tls::TlsConfig;

/// A server not yet started: a handler (the initial state of every connection), options,
/// where to listen, and optional TLS.
///
/// ```no_run
/// # async fn run() -> atoll::Result<()> {
/// use atoll::{Server, echo::Echo};
///
/// let handle = Server::new(Echo).name("echo").port(0).start()?;
/// println!("listening on {}", handle.local_addr());
/// let report = handle.stop(std::time::Duration::from_secs(5)).await;
/// println!("{} connections ended by themselves", report.drained);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a server does nothing until started"]
pub struct Server<H> {
    handler: H,
    name: String,
    options: ServerOptions,
    bind: Bind,
    tls: Option<TlsConfig>,
    telemetry: Arc<Telemetry>,
    extension: Option<Extension>,
}

impl<H: Handler> Server<H> {
    /// A server whose connections each start with a clone of `handler`.
    pub fn new(handler: H) -> Self {
        Server {
            handler,
            name: "atoll".to_owned(),
            options: ServerOptions::default(),
            bind: Bind::Tcp,
            tls: None,
            telemetry: Arc::new(Telemetry::default()),
            extension: None,
        }
    }

    /// Names the listener, in telemetry and in a [`Registry`](crate::Registry).
    /// Default is `"atoll"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The listener's name.
    pub fn listener_name(&self) -> &str {
        &self.name
    }

    /// Replaces all options. Default is [`ServerOptions::default()`].
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Changes options in place: `server.configure(|o| o.max_connections = 10)`.
    pub fn configure(mut self, change: impl FnOnce(&mut ServerOptions)) -> Self {
        change(&mut self.options);
        self
    }

    /// The TCP port. Default is 4000; 0 picks a free port.
    pub fn port(mut self, port: u16) -> Self {
        self.options.port = port;
        self
    }

    /// The IP address. Default is `::` (all interfaces).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.options.ip = ip;
        self
    }

    /// Serves TLS on every connection. Default is plain TCP.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Listens on a Unix socket at `path` instead of TCP.
    pub fn unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.bind = Bind::Unix(path.into());
        self
    }

    /// Listens on an already bound TCP listener (port 0 in a test, an inherited socket).
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.bind = Bind::TcpListeners(vec![listener]);
        self
    }

    /// Chooses where the listening sockets come from. Default is [`Bind::Tcp`].
    pub fn bind(mut self, bind: Bind) -> Self {
        self.bind = bind;
        self
    }

    /// Uses this telemetry hub (shared with other listeners, say). Default is a hub of the
    /// server's own.
    pub fn telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Attaches a value to the server's handle, for the protocol layer that built the handler
    /// to find again by type ([`ServerHandle::extension`]): an HTTP listener keeps its routes
    /// there, so they can be swapped while it runs. Default is none.
    pub fn extension(mut self, value: Arc<dyn Any + Send + Sync>) -> Self {
        self.extension = Some(value);
        self
    }

    /// Attaches a telemetry subscriber before start, so it sees `listener.start` too.
    pub fn subscribe(self, subscriber: impl Subscriber) -> Self {
        self.telemetry.attach(subscriber);
        self
    }

    /// Binds and starts accepting. Must be called inside a tokio runtime.
    ///
    /// Errors name the listener and the fault: invalid options, TLS over a Unix socket, an
    /// address in use.
    pub fn start(self) -> Result<ServerHandle> {
        let ctx = format!("listener `{}`", self.name);
        self.options
            .validate()
            .map_err(|why| Error::with_source(ErrorKind::Config, why).context(ctx.clone()))?;
        if self.tls.is_some() && matches!(self.bind, Bind::Unix(_) | Bind::UnixListener(_)) {
            return Err(Error::with_source(
                ErrorKind::Config,
                "TLS over a Unix socket is not supported",
            )
            .context(ctx));
        }
        let listeners = bind::listeners(self.bind, &self.options).map_err(|e| e.context(ctx))?;
        let listeners: Vec<Arc<Listener>> = listeners.into_iter().map(Arc::new).collect();
        let shared = Arc::new(Shared::new(
            self.name,
            self.options,
            self.telemetry,
            self.tls,
        ));
        let initial = Mutex::new(self.handler.clone());
        let resume: Resume = Box::new(move |state| {
            // Cloned out, so that no lock is held while the handler's own code runs.
            let initial = initial.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let handler = initial.restore(state)?;
            Ok(Box::new(move |tcp, conn, unread| {
                Box::pin(connection::run(
                    handler,
                    Accepted::Tcp(tcp),
                    conn,
                    Some(unread),
                )) as BoxedRun
            }) as Resumed)
        });
        let handler = Mutex::new(self.handler);
        let spawner: Spawner = Box::new(move |listener, shared, index| {
            let handler = handler.lock().unwrap_or_else(|p| p.into_inner()).clone();
            acceptor::spawn(handler, listener, shared, index)
        });
        ServerHandle::launch(shared, listeners, spawner, resume, self.extension)
    }
}
