//! [`HttpListener`]: an HTTP or HTTPS listener built on the socket server. Its handler takes
//! every connection over and runs hyper on it; its routes live in an `ArcSwap` that
//! [upgrades](super::upgrade_all) replace.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::handlers::Handlers;
use super::options::{HttpOptions, DEFAULT_HTTP_PORT};
use super::router::Router;
use super::statics::StaticFiles;
use crate::bind::Bind;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::handler::{Action, Handler};
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::server::Server;
use crate::socket::Socket;
use crate::telemetry::{Subscriber, Telemetry};
use crate::tls::TlsConfig;

/// What every connection of one HTTP listener shares.
pub(crate) struct HttpShared {
    /// The current routes; an upgrade stores new ones.
    pub(crate) routes: ArcSwap<Router>,
    pub(crate) options: HttpOptions,
    /// HTTP/1 with answers copied into one write, and with vectored writes (see
    /// [`HttpOptions::vectored_writes`]).
    pub(crate) h1: http1::Builder,
    pub(crate) h1_vectored: http1::Builder,
    pub(crate) h2: http2::Builder<TokioExecutor>,
}

/// The socket server handler of an HTTP listener: it takes every connection over.
#[derive(Clone)]
pub(crate) struct HttpHandler {
    http: Arc<HttpShared>,
}

impl Handler for HttpHandler {
    async fn handle_connection(&mut self, _socket: &mut Socket) -> Action {
        Action::TakeOver
    }

    async fn take_over(self, socket: Socket) -> std::result::Result<(), BoxError> {
        super::conn::serve(self.http, socket, None).await
    }
}

/// An HTTP listener's routes and handlers, kept on its [`ServerHandle`] so an upgrade can
/// find them by listener.
pub(crate) struct HttpControl {
    pub(crate) http: Arc<HttpShared>,
    /// The handlers the current routes were gathered from, for a re-gather.
    pub(crate) handlers: Mutex<Handlers>,
    pub(crate) static_dir: Option<StaticFiles>,
}

impl HttpControl {
    /// Gathers routes from `handlers` (the current ones when `None`) and swaps them in.
    /// On error the running routes stay as they were.
    pub(crate) fn upgrade(&self, handlers: Option<Handlers>) -> Result<()> {
        let mut current = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
        let handlers = handlers.unwrap_or_else(|| current.clone());
        let router = Router::build(&handlers, self.static_dir.as_ref())?;
        self.http.routes.store(Arc::new(router));
        *current = handlers;
        Ok(())
    }
}

/// An HTTP listener, not yet started: handlers, HTTP options, and the socket server's options.
///
/// Defaults differ from a bare [`Server`]'s where leptus's do: the name is `"http"`, the
/// address `127.0.0.1:8080`.
///
/// ```no_run
/// # async fn run() -> atoll::Result<()> {
/// use atoll::http::{Handlers, HttpListener, Reply, Request, Resource};
/// use http::Method;
///
/// struct Hello;
///
/// impl Resource for Hello {
///     fn routes(&self) -> Vec<String> { vec!["/".into()] }
///     fn methods(&self) -> &[Method] { &[Method::GET] }
///     async fn get(&self, _req: &mut Request) -> Reply { "hello\n".into() }
/// }
///
/// let web = HttpListener::new(Handlers::new().resource(Hello)).port(0).start()?;
/// println!("http://{}/", web.local_addr());
/// web.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a listener does nothing until started"]
pub struct HttpListener {
    handlers: Handlers,
    http: HttpOptions,
    name: String,
    options: ServerOptions,
    bind: Bind,
    tls: Option<TlsConfig>,
    telemetry: Arc<Telemetry>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("name", &self.name)
            .field("handlers", &self.handlers)
            .field("http", &self.http)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpListener {
    /// A listener serving `handlers`.
    pub fn new(handlers: Handlers) -> HttpListener {
        let options = ServerOptions {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_HTTP_PORT,
            ..ServerOptions::default()
        };
        HttpListener {
            handlers,
            http: HttpOptions::default(),
            name: "http".to_owned(),
            options,
            bind: Bind::Tcp,
            tls: None,
            telemetry: Arc::default(),
        }
    }

    /// Names the listener. Default is `"http"`.
    pub fn name(mut self, name: impl Into<String>) -> HttpListener {
        self.name = name.into();
        self
    }

    /// The port. Default is 8080; 0 picks a free one.
    pub fn port(mut self, port: u16) -> HttpListener {
        self.options.port = port;
        self
    }

    /// The IP address. Default is `127.0.0.1`.
    pub fn ip(mut self, ip: IpAddr) -> HttpListener {
        self.options.ip = ip;
        self
    }

    /// Replaces the socket server's options. Default is [`ServerOptions::default()`] with
    /// the address above.
    pub fn options(mut self, options: ServerOptions) -> HttpListener {
        self.options = options;
        self
    }

    /// Changes the socket server's options in place.
    pub fn configure(mut self, change: impl FnOnce(&mut ServerOptions)) -> HttpListener {
        change(&mut self.options);
        self
    }

    /// Replaces the HTTP options. Default is [`HttpOptions::default()`].
    pub fn http_options(mut self, http: HttpOptions) -> HttpListener {
        self.http = http;
        self
    }

    /// Changes the HTTP options in place.
    pub fn configure_http(mut self, change: impl FnOnce(&mut HttpOptions)) -> HttpListener {
        change(&mut self.http);
        self
    }

    /// Serves HTTPS. For HTTP/2 over TLS the configuration must offer ALPN `h2`
    /// ([`TlsOptions::alpn`](crate::TlsOptions::alpn)). Default is plain HTTP.
    pub fn tls(mut self, tls: TlsConfig) -> HttpListener {
        self.tls = Some(tls);
        self
    }

    /// Chooses where the listening sockets come from (an already bound listener, say).
    /// Default is [`Bind::Tcp`] on the address above.
    pub fn bind(mut self, bind: Bind) -> HttpListener {
        self.bind = bind;
        self
    }

    /// Uses this telemetry hub. Default is one of the listener's own.
    pub fn telemetry(mut self, telemetry: Arc<Telemetry>) -> HttpListener {
        self.telemetry = telemetry;
        self
    }

    /// Attaches a telemetry subscriber before start.
    pub fn subscribe(self, subscriber: impl Subscriber) -> HttpListener {
        self.telemetry.attach(subscriber);
        self
    }

    /// The kind a registry lists this listener as: `"https"` with TLS, else `"http"`.
    pub fn kind(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Gathers the routes, binds and starts. Errors name the listener and the fault: a bad
    /// host or path pattern, a route declared twice, a missing static directory, an address in
    /// use.
    pub fn start(self) -> Result<ServerHandle> {
        self.into_server()?.start()
    }

    /// Starts the listener and registers it under its name in `registry`.
    pub fn start_in(self, registry: &Registry) -> Result<ServerHandle> {
        let kind = self.kind();
        registry.start(kind, self.into_server()?)
    }

    fn into_server(self) -> Result<Server<HttpHandler>> {
        let ctx = format!("listener `{}`", self.name);
        let config = |why: String| Error::with_source(ErrorKind::Config, why).context(ctx.clone());
        self.http.validate().map_err(config)?;
        let static_dir = match &self.http.static_dir {
            None => None,
            Some(dir) => Some(
                StaticFiles::new(dir)
                    .map_err(|e| config(format!("static_dir `{}`: {e}", dir.display())))?
                    .failure_log_budget(self.telemetry.failure_log_budget())
                    .cache(self.http.static_cache),
            ),
        };
        let router = Router::build(&self.handlers, static_dir.as_ref())
            .map_err(|e| e.context(ctx.clone()))?;
        let http = Arc::new(HttpShared {
            routes: ArcSwap::from_pointee(router),
            h1: http1_builder(&self.http, false),
            h1_vectored: http1_builder(&self.http, true),
            h2: http2_builder(&self.http),
            options: self.http,
        });
        let control = Arc::new(HttpControl {
            http: http.clone(),
            handlers: Mutex::new(self.handlers),
            static_dir,
        });
        let mut server = Server::new(HttpHandler { http })
            .name(self.name)
            .options(self.options)
            .bind(self.bind)
            .telemetry(self.telemetry)
            .extension(control);
        if let Some(tls) = self.tls {
            server = server.tls(tls);
        }
        Ok(server)
    }
}

/// The most bytes an HTTP/1 request head may take: `max_header_size`, at least 8 KiB (hyper's
/// smallest read buffer).
pub(crate) fn head_buffer_limit(opts: &HttpOptions) -> usize {
    opts.max_header_size.max(8192)
}

/// hyper's HTTP/1.1 connection builder for these options, writing answers vectored or not.
fn http1_builder(opts: &HttpOptions, vectored: bool) -> http1::Builder {
    let mut b = http1::Builder::new();
    // Our own timer enforces the header read timeout (hyper's would also cut idle keep-alive
    // connections at the same mark).
    // half_close: a client may shut its sending half once its request is out (`nc -N`, some
    // HTTP/1.0 clients) and still get its answer.
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(head_buffer_limit(opts))
        .half_close(true)
        .writev(vectored);
    // Only a different count is set: hyper then parses headers on the heap.
    if opts.max_headers != super::options::DEFAULT_MAX_HEADERS {
        b.max_headers(opts.max_headers);
    }
    b
}

/// hyper's HTTP/2 connection builder for these options.
fn http2_builder(opts: &HttpOptions) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_size).unwrap_or(u32::MAX))
        // Extended CONNECT (RFC 8441): WebSocket routes over HTTP/2.
        .enable_connect_protocol();
    b
}
