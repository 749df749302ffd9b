//! Running one request through a resource: hooks, the method check with its exact `Allow`,
//! HEAD and OPTIONS, CORS. (A resource that panics is a 500: the service sees to that for
//! every route.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::body::Body;
use super::host::HostPattern;
use super::path::Bindings;
use super::reply::Reply;
use super::request::{find_header, Request};
use super::resource::Resource;
use super::websocket::moving::{Arrived, Travel};
use crate::sys;

/// A boxed response future.
pub(crate) type Responding = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// The future `make` returns from `value` (the request, say), in `spare`'s allocation when it
/// has the future's size and alignment (every request to the same resource does), else in a
/// new one.
pub(crate) fn fill<V, F>(
    spare: Option<Responding>,
    value: V,
    make: impl FnOnce(V) -> F,
) -> Responding
where
    F: Future<Output = Response<Body>> + Send + 'static,
{
    match spare {
        Some(old) => sys::refill(old, value, make),
        None => Box::pin(make(value)),
    }
}

/// A resource with its type erased, as the router holds it.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// The future answering one request, in `spare`'s allocation when it fits (see [`fill`]).
    fn call(self: Arc<Self>, req: Request, spare: Option<Responding>) -> Responding;
    /// The full path patterns: each route with the prefix in front.
    fn patterns(&self) -> Vec<String>;
    /// Whether it sends files, whose bodies are large: see
    /// [`HttpOptions::vectored_writes`](super::HttpOptions::vectored_writes).
    fn serves_files(&self) -> bool {
        false
    }
    /// Takes in a WebSocket connection that moved here from another process (see
    /// [`moving`](super::websocket::moving)): the handler restored from its state, ready
    /// for its socket. `None` for routes that serve no WebSocket.
    fn resume(&self, travel: Travel) -> Option<Result<Box<dyn Arrived>, crate::error::BoxError>> {
        let _ = travel;
        None
    }
}

impl<R: Resource> Endpoint for R {
    fn call(self: Arc<Self>, req: Request, spare: Option<Responding>) -> Responding {
        // Owned by the block and only borrowed below: an async fn taking them by value would
        // copy them again into its own state on the first poll.
        fill(spare, req, move |mut req| async move {
            run(&*self, &mut req).await
        })
    }

    fn patterns(&self) -> Vec<String> {
        let prefix = self.prefix().trim_end_matches('/');
        self.routes()
            .into_iter()
            .map(|route| {
                if route == "_" || prefix.is_empty() {
                    route
                } else if route == "/" {
                    prefix.to_owned()
                } else {
                    format!("{prefix}{route}")
                }
            })
            .collect()
    }
}

async fn run<R: Resource>(resource: &R, req: &mut Request) -> Response<Body> {
    let origin = allowed_origin(resource, req);
    let (reply, head) = respond(resource, req, origin.as_ref()).await;
    let status = reply.status;
    let mut response = reply.into_response(&req.parts.headers);
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if head {
        // hyper sends no body for HEAD but keeps Content-Length; drop the bytes early.
        let len = http_body::Body::size_hint(response.body()).exact();
        *response.body_mut() = Body::empty();
        if let Some(len) = len {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    resource.terminate(req, status);
    response
}

/// The reply, and whether it answers a HEAD.
async fn respond<R: Resource>(
    resource: &R,
    req: &mut Request,
    origin: Option<&HeaderValue>,
) -> (Reply, bool) {
    if let Err(reply) = resource.init(req).await {
        return (reply, false);
    }
    let method = req.parts.method.clone();
    let methods = resource.methods();
    if method == Method::OPTIONS {
        return (options(methods, req, origin), false);
    }
    let head = method == Method::HEAD;
    let wanted = if head { &Method::GET } else { &method };
    if !methods.contains(wanted) {
        let reply = Reply::new(StatusCode::METHOD_NOT_ALLOWED);
        return (with_allow(reply, methods), false);
    }
    if let Err(denied) = resource.is_authenticated(req).await {
        let mut reply = denied
            .body
            .unwrap_or_else(|| Reply::new(StatusCode::UNAUTHORIZED))
            .with_status(StatusCode::UNAUTHORIZED);
        match HeaderValue::try_from(denied.challenge) {
            Ok(v) => {
                reply.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Err(_) => tracing::warn!(target: "atoll::http", "invalid WWW-Authenticate dropped"),
        }
        return (reply, head);
    }
    if !resource.has_permission(req).await {
        return (Reply::new(StatusCode::FORBIDDEN), head);
    }
    let reply = match method {
        Method::GET | Method::HEAD => resource.get(req).await,
        Method::PUT => resource.put(req).await,
        Method::POST => resource.post(req).await,
        Method::DELETE => resource.delete(req).await,
        Method::PATCH => resource.patch(req).await,
        _ => with_allow(Reply::new(StatusCode::METHOD_NOT_ALLOWED), methods),
    };
    (reply, head)
}

/// OPTIONS: the Allow list, and for a CORS preflight from an allowed origin, what it may send.
fn options(methods: &[Method], req: &Request, origin: Option<&HeaderValue>) -> Reply {
    let mut reply = with_allow(Reply::new(StatusCode::NO_CONTENT), methods);
    let preflight = req
        .parts
        .headers
        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && origin.is_some() {
        let allow = reply.headers().get(header::ALLOW).cloned();
        let h = reply.headers_mut();
        if let Some(allow) = allow {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
        }
        if let Some(asked) = req
            .parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    reply
}

/// `Allow`: the resource's verbs in its order, HEAD after GET, OPTIONS last.
fn with_allow(mut reply: Reply, methods: &[Method]) -> Reply {
    let mut allow = String::new();
    for m in methods {
        if !allow.is_empty() {
            allow.push_str(", ");
        }
        allow.push_str(m.as_str());
        if *m == Method::GET && !methods.contains(&Method::HEAD) {
            allow.push_str(", HEAD");
        }
    }
    if !methods.contains(&Method::OPTIONS) {
        if !allow.is_empty() {
            allow.push_str(", ");
        }
        allow.push_str("OPTIONS");
    }
    if let Ok(v) = HeaderValue::try_from(allow) {
        reply.headers_mut().insert(header::ALLOW, v);
    }
    reply
}

/// The request's `Origin`, when the resource's `cross_domains` allows it.
fn allowed_origin<R: Resource>(resource: &R, req: &Request) -> Option<HeaderValue> {
    // Asked first: most resources allow none (the default is an empty list, which costs
    // nothing), and then the headers need no look.
    let allowed = resource.cross_domains(req);
    if allowed.is_empty() {
        return None;
    }
    let origin = find_header(&req.parts.headers, &header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let host = text.split_once("://").map_or(text, |(_, rest)| rest);
    let hit = allowed.iter().any(|pattern| {
        if pattern.contains("://") {
            pattern.eq_ignore_ascii_case(text)
        } else {
            HostPattern::parse(pattern)
                .map(|p| p.matches(host, &mut Bindings::default()))
                .unwrap_or(false)
        }
    });
    hit.then(|| origin.clone())
}
