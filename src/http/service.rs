//! The hyper service of one connection: route each request on the listener's current routes,
//! read the body within its limit, call the resource or mounted service, report the answer.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use arc_swap::Cache;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Limited;
use hyper::body::Incoming;
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

use super::activity::Activity;
use super::body::Body;
use super::dispatch::{Endpoint, Responding};
use super::fault::Fault;
use super::handlers::Mounted;
use super::listener::HttpShared;
use super::path::Bindings;
use super::request::{find_header, Request};
use super::request_body::{read_whole, TimedBody};
use super::request_rules::{self, Refused};
use super::router::{Found, Router};
use super::websocket::io::Link;
use super::websocket::session::Upgrade;
use crate::connections::Slot;
use crate::shared::Shared;
use crate::telemetry::{Event, EventKind};

/// One connection's service; hyper calls it once per request.
pub(crate) struct HttpService {
    pub(crate) http: Arc<HttpShared>,
    /// The listener's routes as this connection last saw them: checking that they are still
    /// current is one load, where loading them afresh takes a few dozen instructions. A swap
    /// reaches the connection at its next request; until then the connection holds the old
    /// routes (and their resources) alive.
    routes: RefCell<Cache<RoutesOf, Arc<Router>>>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) server: Arc<Shared>,
    pub(crate) slot: Arc<Slot>,
    /// The client's certificate chain, copied once per connection for its requests.
    peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The allocation of the last resource future that answered within `call`, for the next
    /// request's.
    spare: Cell<Option<Responding>>,
}

/// A listener's current routes, as [`Cache`] reads them.
#[derive(Clone)]
struct RoutesOf(Arc<HttpShared>);

impl std::ops::Deref for RoutesOf {
    type Target = arc_swap::ArcSwap<Router>;

    fn deref(&self) -> &Self::Target {
        &self.0.routes
    }
}

impl hyper::service::Service<http::Request<Incoming>> for HttpService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: http::Request<Incoming>) -> Answer {
        self.activity.begin();
        // Boxed: it is needed only while someone listens, and keeps `Answer` small to move.
        let report = self.server.telemetry.is_active().then(|| {
            Box::new(Report {
                started: Instant::now(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                server: self.server.clone(),
                slot: self.slot.clone(),
            })
        });
        // Once the listener stops and this connection's turn has come, an HTTP/1 answer says
        // `connection: close`, so the client takes its next request elsewhere instead of
        // finding the connection closed.
        let close = req.version() < http::Version::HTTP_2 && self.activity.closing();
        if let Some(refused) = request_rules::check(&req, self.http.options.max_headers) {
            return self.refuse(refused, &req, report);
        }
        // Routed here rather than in a method of its own: passing the request on by value
        // would copy its 264 bytes once more. (The rarer requests with a body, and those for
        // a mounted service, do go on to methods of their own.)
        let mut cache = self.routes.borrow_mut();
        let routes = cache.load();
        let inner = match routes.find(|| host_of(&req), req.uri().path()) {
            Found::Endpoint(endpoint, bindings, rest) => {
                let endpoint = endpoint.clone();
                let path_info = rest.to_owned();
                drop(cache);
                let (mut parts, body) = req.into_parts();
                if !body.is_end_stream() {
                    let request = self.request(parts, bindings, path_info);
                    self.with_body(endpoint, request, body)
                } else if parts.version >= http::Version::HTTP_2 {
                    if parts.method == http::Method::CONNECT {
                        // An extended CONNECT may open a WebSocket on this connection.
                        let link = Link::of_stream(self.slot.clone(), self.server.clone());
                        parts.extensions.insert(link);
                    }
                    // Each HTTP/2 request runs on a task of its own, in parallel with the
                    // connection's others: its future goes there whole.
                    Inner::Waiting(endpoint.call(self.request(parts, bindings, path_info), None))
                } else {
                    // Built in the call, not before it: one copy fewer on the way.
                    let spare = self.spare.take();
                    let future = endpoint.call(self.request(parts, bindings, path_info), spare);
                    self.answer_now(future)
                }
            }
            Found::Service(service) => {
                let service = service.clone();
                drop(cache);
                self.mounted(service, req)
            }
            Found::Nothing => {
                drop(cache);
                if !req.body().is_end_stream() {
                    self.activity.body_opened();
                }
                Inner::Ready(not_found())
            }
        };
        Answer {
            inner,
            activity: self.activity.clone(),
            report,
            close,
        }
    }
}

impl HttpService {
    pub(crate) fn new(
        http: Arc<HttpShared>,
        activity: Arc<Activity>,
        server: Arc<Shared>,
        slot: Arc<Slot>,
        peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    ) -> Self {
        HttpService {
            routes: RefCell::new(Cache::new(RoutesOf(http.clone()))),
            http,
            activity,
            server,
            slot,
            peer_certificates,
            spare: Cell::new(None),
        }
    }

    /// A request that breaks the rules every request must keep: answered, and its HTTP/1
    /// connection closed. Out of line: the common request never comes here.
    #[cold]
    #[inline(never)]
    fn refuse(
        &self,
        refused: Refused,
        req: &http::Request<Incoming>,
        report: Option<Box<Report>>,
    ) -> Answer {
        if !req.body().is_end_stream() {
            self.activity.body_opened();
        }
        tracing::debug!(target: "atoll::http", peer = %self.slot.peer(), ?refused, "request refused");
        Answer {
            inner: Inner::Ready(refused.response()),
            activity: self.activity.clone(),
            report,
            close: true,
        }
    }

    /// A resource's request whose body is still to come: read it within `max_body_size`
    /// (413 past it) and `body_read_timeout` (408), then call the resource.
    fn with_body(
        &self,
        endpoint: Arc<dyn Endpoint>,
        mut request: Request,
        body: Incoming,
    ) -> Inner {
        self.activity.body_opened();
        let max = self.http.options.max_body_size;
        if declared_length(&request.parts.headers).is_some_and(|n| n > max as u64) {
            return Inner::Ready(status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let activity = self.activity.clone();
        let body = TimedBody::new(body, self.http.options.body_read_timeout);
        Inner::Waiting(Box::pin(async move {
            match read_whole(body, max).await {
                Ok(bytes) => {
                    activity.body_read();
                    request.body = bytes;
                    endpoint.call(request, None).await
                }
                // The rest of the body is not read: hyper closes the connection after this.
                Err(code) => status(code),
            }
        }))
    }

    /// A request for a mounted service, its body limited to `max_body_size`.
    fn mounted(&self, service: Mounted, req: http::Request<Incoming>) -> Inner {
        if !req.body().is_end_stream() {
            // The service reads as much of it as it likes; hyper may still be reading the
            // rest after the answer.
            self.activity.body_opened();
        }
        let max = self.http.options.max_body_size as u64;
        if declared_length(req.headers()).is_some_and(|n| n > max) {
            return Inner::Ready(status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        let timeout = self.http.options.body_read_timeout;
        let req = req.map(|body| Limited::new(TimedBody::new(body, timeout), max as usize));
        Inner::Waiting(Box::pin(async move {
            // Logged by the answer, within the listener's failure log budget.
            service
                .oneshot(req)
                .await
                .unwrap_or_else(|e| Fault::Mounted(e.to_string()).response())
        }))
    }

    /// The request a resource sees, its body not read yet.
    #[inline(always)]
    fn request(
        &self,
        parts: http::request::Parts,
        bindings: Bindings,
        path_info: String,
    ) -> Request {
        Request {
            parts,
            body: Bytes::new(),
            bindings,
            path_info,
            peer: self.slot.peer().clone(),
            peer_certificates: self.peer_certificates.clone(),
        }
    }

    /// Polls an HTTP/1 request's future once, here. One that answers without waiting (most
    /// do) leaves its allocation to the connection's next request, which then allocates
    /// nothing for its own; hyper would not call the service again before this answer is sent
    /// anyway. One that waits goes on in the [`Answer`], polled from then on with the
    /// connection's waker: a future registers the waker of its latest poll, so this poll's
    /// no-op waker is never the one woken.
    fn answer_now(&self, mut future: Responding) -> Inner {
        let mut cx = Context::from_waker(Waker::noop());
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(response)) => {
                self.spare.set(Some(future));
                Inner::Ready(response)
            }
            Ok(Poll::Pending) => Inner::Waiting(future),
            Err(_) => Inner::Ready(status(StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form), else `Host`.
fn host_of<B>(req: &http::Request<B>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    find_header(req.headers(), &header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub(crate) fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

fn not_found() -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(b"not found\n")));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What the `http.request` event needs, captured only when someone listens.
struct Report {
    started: Instant,
    method: Method,
    uri: Uri,
    server: Arc<Shared>,
    slot: Arc<Slot>,
}

/// A request being answered: marks the connection busy until it resolves or is dropped.
pub(crate) struct Answer {
    inner: Inner,
    activity: Arc<Activity>,
    report: Option<Box<Report>>,
    /// Add `connection: close` to the response.
    close: bool,
}

/// Where the response of an [`Answer`] comes from.
enum Inner {
    /// Answered already (by the resource in its first poll, or by the service itself).
    Ready(Response<Body>),
    /// Still to answer.
    Waiting(Responding),
    /// Sent.
    Done,
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A resource or service that panics answers 500: one bad request is a 500, not a
        // dead connection.
        let mut response = match std::mem::replace(&mut self.inner, Inner::Done) {
            Inner::Ready(r) => r,
            Inner::Waiting(mut future) => {
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Ready(r)) => r,
                    Ok(Poll::Pending) => {
                        self.inner = Inner::Waiting(future);
                        return Poll::Pending;
                    }
                    Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
                }
            }
            // hyper polls no answer again once it is ready.
            Inner::Done => return Poll::Pending,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let session = response.extensions_mut().remove::<Upgrade>();
            self.activity.switched(session.and_then(|u| u.take()));
            // The connection is the new protocol's now: no `connection: close`.
            self.close = false;
        } else if response.status() == StatusCode::OK && !response.extensions().is_empty() {
            // An HTTP/2 stream a WebSocket route opened (RFC 8441): it runs beside the
            // connection's other streams, on a task of its own.
            if let Some(session) = response.extensions_mut().remove::<Upgrade>() {
                if let Some(session) = session.take() {
                    session.spawn();
                }
            }
        }
        if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
            if let Some(logs) = self.activity.failure_logs() {
                Fault::log_from(&mut response, logs);
            }
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.body_mut().watch(&self.activity);
        if let Some(r) = self.report.take() {
            let code = response.status().as_u16();
            r.server.telemetry.emit(|| {
                Event::new(EventKind::HttpRequest, &r.server.name)
                    .connection(r.slot.id, r.slot.peer())
                    .duration(r.started.elapsed())
                    .request(r.method.as_str(), r.uri.path(), code)
            });
        }
        Poll::Ready(Ok(response))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.activity.end();
    }
}
