//! [`Handlers`]: leptus's `[{HostMatch, [{Module, State}]}]`, built in Rust: host patterns,
//! each with its resources, static directories and an optional mounted `tower::Service`.

use std::fmt;
use std::sync::Arc;

use http::Response;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use super::body::Body;
use super::dispatch::Endpoint;
use super::request_body::TimedBody;
use super::resource::Resource;
use super::statics::StaticFiles;
use super::statics_endpoint::StaticEndpoint;
use super::websocket::{WebSocket, WebSocketHandler};
use crate::error::BoxError;

/// The request body a mounted service reads: hyper's, cut off at the listener's
/// `max_body_size` (reading past it fails with `http_body_util::LengthLimitError`, which axum
/// answers with 413), and ended with a [`BodyTimeout`](super::BodyTimeout) error when it
/// stops arriving for `body_read_timeout`.
pub type RequestBody = http_body_util::Limited<TimedBody>;

/// A `tower::Service` mounted on a host, with request and response types fixed.
pub(crate) type Mounted = BoxCloneSyncService<http::Request<RequestBody>, Response<Body>, BoxError>;

/// What a listener serves, by host: `Handlers::new().host("_").resource(a).resource(b)`.
///
/// Hosts are tried in the order they were added; the first whose pattern matches the request's
/// host serves it. Patterns are cowboy's: `_` (any host), `example.com`, `:sub.example.com`
/// (binds `sub`), `[...].example.com` (any subdomains); a port in the request's host is
/// ignored. Resources, static directories and a mounted service added before any `host` go to
/// a `_` host. Clones share the same resources.
///
/// ```
/// use atoll::http::{Handlers, Reply, Request, Resource, StaticFiles};
/// use http::Method;
///
/// struct Hello;
///
/// impl Resource for Hello {
///     fn routes(&self) -> Vec<String> { vec!["/hello/:name".into()] }
///     fn methods(&self) -> &[Method] { &[Method::GET] }
///     async fn get(&self, req: &mut Request) -> Reply {
///         format!("hello, {}", req.binding("name").unwrap_or("you")).into()
///     }
/// }
///
/// # fn build() -> std::io::Result<()> {
/// let handlers = Handlers::new()
///     .host("api.example.com")
///     .resource(Hello)
///     .host("_")
///     .files("/", StaticFiles::new("site")?);
/// # let _ = handlers; Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    pub(crate) hosts: Vec<Host>,
}

/// One host pattern and what it serves.
#[derive(Clone)]
pub(crate) struct Host {
    pub(crate) pattern: String,
    pub(crate) endpoints: Vec<Arc<dyn Endpoint>>,
    pub(crate) service: Option<Mounted>,
}

impl Handlers {
    /// No hosts yet.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Starts the section of host `pattern`: what is added next serves that host.
    pub fn host(mut self, pattern: impl Into<String>) -> Handlers {
        self.push_host(pattern.into());
        self
    }

    fn push_host(&mut self, pattern: String) {
        self.hosts.push(Host {
            pattern,
            endpoints: Vec::new(),
            service: None,
        });
    }

    fn current(&mut self) -> &mut Host {
        if self.hosts.is_empty() {
            self.push_host("_".to_owned());
        }
        self.hosts.last_mut().expect("a host was just added")
    }

    /// Adds a resource to the current host.
    pub fn resource(mut self, resource: impl Resource) -> Handlers {
        self.current().endpoints.push(Arc::new(resource));
        self
    }

    /// Adds a resource that is already shared (kept by the application too, say).
    pub fn shared(mut self, resource: Arc<impl Resource>) -> Handlers {
        self.current().endpoints.push(resource);
        self
    }

    /// Serves the files of `files` under the path `prefix` (`"/"` for the whole site) of the
    /// current host, as the route `prefix/[...]`.
    pub fn files(mut self, prefix: &str, files: StaticFiles) -> Handlers {
        self.current()
            .endpoints
            .push(Arc::new(StaticEndpoint::new(prefix, files)));
        self
    }

    /// Mounts a `tower::Service` (an axum `Router`, say) on the current host: it answers every
    /// request no resource route of this host matches. Its errors, and its panics, become 500
    /// answers. The body it reads is limited to `max_body_size` ([`RequestBody`]).
    pub fn service<S, B>(mut self, service: S) -> Handlers
    where
        S: tower::Service<http::Request<RequestBody>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mounted = service
            .map_response(|r: Response<B>| r.map(Body::new))
            .map_err(Into::<BoxError>::into);
        self.current().service = Some(BoxCloneSyncService::new(mounted));
        self
    }

    /// Adds a WebSocket route to the current host (see [`WebSocket`]).
    pub fn websocket<H: WebSocketHandler>(mut self, route: WebSocket<H>) -> Handlers {
        self.current().endpoints.push(Arc::new(route));
        self
    }

    /// Adds an already type-erased endpoint (the catalogue's).
    pub(crate) fn endpoint(mut self, endpoint: Arc<dyn Endpoint>) -> Handlers {
        self.current().endpoints.push(endpoint);
        self
    }

    /// Whether nothing at all was added.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for h in &self.hosts {
            list.entry(&format_args!(
                "{} ({} resources{})",
                h.pattern,
                h.endpoints.len(),
                if h.service.is_some() {
                    ", a service"
                } else {
                    ""
                }
            ));
        }
        list.finish()
    }
}
