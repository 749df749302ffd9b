//! HTTP and HTTPS listeners, leptus's way on hyper: named listeners serving host-matched REST
//! resources, static files and mounted `tower` services, whose routes can be swapped while
//! they run.
//!
//! An HTTP listener is a socket server listener whose handler takes every connection over and
//! runs hyper on it (HTTP/1.1, and HTTP/2 through ALPN or prior knowledge), so acceptors,
//! connection limits, TLS, telemetry, the registry and the graceful stop are the same as for
//! any listener.
//!
//! ```no_run
//! # async fn run() -> atoll::Result<()> {
//! use atoll::http::{Data, Handlers, HttpListener, Reply, Request, Resource};
//! use http::Method;
//!
//! struct Greeting;
//!
//! impl Resource for Greeting {
//!     fn routes(&self) -> Vec<String> { vec!["/hello/:name".into()] }
//!     fn methods(&self) -> &[Method] { &[Method::GET] }
//!     async fn get(&self, req: &mut Request) -> Reply {
//!         Data(format!("hello, {}", req.binding("name").unwrap_or("you"))).into()
//!     }
//! }
//!
//! let web = HttpListener::new(Handlers::new().host("_").resource(Greeting))
//!     .name("web")
//!     .start()?; // 127.0.0.1:8080
//! # web.shutdown().await; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `host`, `path`: host and path patterns (cowboy's syntax) and their matching.
//! - `request`, `reply`, `body`: what a resource reads and answers, and the response body.
//! - `request_body`: a request body read under a deadline, and within what arrived.
//! - `fault`: why a request was answered 500, carried on the answer so that the connection
//!   logs it within its listener's failure log budget.
//! - `request_rules`: what every request must satisfy before routing (RFC 9112's Host rules,
//!   `max_headers`).
//! - `resource`: the [`Resource`] trait; `dispatch` runs one through its hooks.
//! - `statics`, `mime`, `statics_endpoint`: [`StaticFiles`], and a directory as a route.
//! - `encoding`, `conditional`: what a static file request negotiates: the precompressed
//!   variant, and the validators, preconditions and byte range.
//! - `file_body`: [`FileBody`], a file's response body: in memory, sent with `sendfile`, or
//!   read in chunks.
//! - `file_cache`: what [`StaticFiles`] remembers between requests ([`CacheOptions`]: budget
//!   and freshness bound); `file_work`: the bound on blocking-pool threads doing file work.
//! - `zero_copy`: a file region sent with `sendfile` in the middle of what hyper writes.
//! - `handlers`, `router`: [`Handlers`] (hosts and their resources) compiled to routes.
//! - `options`: [`HttpOptions`], each with its default.
//! - `activity`, `service`, `conn`: one connection: its timeouts, the per-request service,
//!   hyper driven on the socket.
//! - `listener`: [`HttpListener`], the builder, and the routes kept for upgrades.
//! - `upgrade`: [`upgrade_all`], [`upgrade()`], [`upgrade_listener`]: swap routes live.
//! - `builtin`, `catalogue`: the shipped resources, and the [`Catalogue`] the `http` and
//!   `https` config kinds build handlers from ([`install`]).
//! - [`websocket`]: WebSocket routes ([`websocket::WebSocket`]), their handlers and groups;
//!   `conn` hands an upgraded connection to its session.
//! - `admin`: the `admin` kind ([`install_admin`]): `/metrics` from the Prometheus recorder
//!   ([`Metrics`]), `/livez`, and `/readyz` from a [`Readiness`] that drains.

mod activity;
mod admin;
mod body;
mod builtin;
mod catalogue;
mod conditional;
mod conn;
mod dispatch;
mod encoding;
mod fault;
mod file_body;
mod file_cache;
mod file_work;
mod handlers;
pub(crate) mod handoff;
mod host;
mod listener;
mod mime;
mod options;
mod path;
mod reply;
mod request;
mod request_body;
mod request_rules;
mod resource;
mod router;
mod service;
mod statics;
mod statics_endpoint;
mod upgrade;
pub mod websocket;
mod zero_copy;

pub(crate) use admin::check as admin_check;
pub use admin::{install_admin, Admin, Metrics, Readiness, DEFAULT_ADMIN_PORT, DURATION_BUCKETS};
pub use body::Body;
pub use builtin::{Health, Listeners, WebSocketEcho};
pub use catalogue::{install, Catalogue, Params};
pub use file_body::FileBody;
pub use file_cache::CacheOptions;
pub use handlers::{Handlers, RequestBody};
pub use listener::HttpListener;
pub use options::{HttpOptions, DEFAULT_HTTP_PORT, DEFAULT_MAX_HEADERS, MAX_TIMEOUT};
pub use reply::{Data, Reply, MSGPACK};
pub use request::Request;
pub use request_body::{BodyTimeout, TimedBody};
pub use resource::{Resource, Unauthorized};
pub use statics::StaticFiles;
pub use upgrade::{upgrade, upgrade_all, upgrade_handle, upgrade_listener};
