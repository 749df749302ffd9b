//! The hyper service of one connection: route each request on the listener's current routes,
//! read the body within its limit, call the resource or mounted service, report the answer.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::Cache;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::activity::Activity;
use super::body::Body;
use super::dispatch::Responding;
use super::listener::HttpShared;
use super::request::{find_header, Request};
use super::router::{Found, Router};
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
        Answer {
            inner: self.route(req),
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
    ) -> Self {
        HttpService {
            routes: RefCell::new(Cache::new(RoutesOf(http.clone()))),
            http,
            activity,
            server,
            slot,
        }
    }

    fn route(&self, req: http::Request<Incoming>) -> Responding {
        let mut cache = self.routes.borrow_mut();
        let routes = cache.load();
        match routes.find(|| host_of(&req), req.uri().path()) {
            Found::Endpoint(endpoint, bindings, rest) => {
                let endpoint = endpoint.clone();
                let path_info = rest.to_owned();
                drop(cache);
                let (parts, body) = req.into_parts();
                let mut request = Request {
                    parts,
                    body: Bytes::new(),
                    bindings,
                    path_info,
                    peer: self.slot.peer.clone(),
                };
                if body.is_end_stream() {
                    return endpoint.call(request);
                }
                self.activity.body_opened();
                let max = self.http.options.max_body_size;
                if declared_length(&request.parts.headers).is_some_and(|n| n > max as u64) {
                    return ready(status(StatusCode::PAYLOAD_TOO_LARGE));
                }
                let activity = self.activity.clone();
                Box::pin(async move {
                    match Limited::new(body, max).collect().await {
                        Ok(collected) => {
                            activity.body_read();
                            request.body = collected.to_bytes();
                            endpoint.call(request).await
                        }
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            status(StatusCode::PAYLOAD_TOO_LARGE)
                        }
                        Err(_) => status(StatusCode::BAD_REQUEST),
                    }
                })
            }
            Found::Service(service) => {
                let service = service.clone();
                drop(cache);
                if !req.body().is_end_stream() {
                    // The service reads as much of it as it likes; hyper may still be
                    // reading the rest after the answer.
                    self.activity.body_opened();
                }
                let max = self.http.options.max_body_size as u64;
                if declared_length(req.headers()).is_some_and(|n| n > max) {
                    return ready(status(StatusCode::PAYLOAD_TOO_LARGE));
                }
                let req = req.map(|body| Limited::new(body, max as usize));
                Box::pin(async move {
                    service.oneshot(req).await.unwrap_or_else(|e| {
                        tracing::warn!(target: "atoll::http", error = %e, "mounted service failed");
                        status(StatusCode::INTERNAL_SERVER_ERROR)
                    })
                })
            }
            Found::Nothing => {
                if !req.body().is_end_stream() {
                    self.activity.body_opened();
                }
                ready(not_found())
            }
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

fn ready(response: Response<Body>) -> Responding {
    Box::pin(std::future::ready(response))
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
    inner: Responding,
    activity: Arc<Activity>,
    report: Option<Box<Report>>,
    /// Add `connection: close` to the response.
    close: bool,
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A resource or service that panics answers 500: one bad request is a 500, not a
        // dead connection.
        let inner = &mut self.inner;
        let mut response = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => r,
            Ok(Poll::Pending) => return Poll::Pending,
            Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
        };
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
                    .connection(r.slot.id, &r.slot.peer)
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
