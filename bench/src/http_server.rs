//! The three HTTP servers under test. Each answers `GET /` with the 13 bytes `Hello, World!`
//! as `text/plain; charset=utf-8`, and sends the same headers: `date`, `content-length`,
//! `content-type`.
//!
//! - `atoll`: an [`HttpListener`] with one [`Resource`] on `/`, every option at its default:
//!   routing, timeouts, HTTP/2 detection, and the telemetry hub with no subscriber.
//! - `hyper`: bare hyper, as its hello-world example writes it: an accept loop, one task per
//!   connection running `http1::Builder` with a `service_fn`.
//! - `axum`: a `Router` with `.route("/", get(handler))`, run by `axum::serve`.
//!
//! The peers listen with the options atoll sets by default ([`listen`]), so only the server code
//! differs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use atoll::http::{Handlers, HttpListener, Reply, Request, Resource};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::server::listen;

/// What every server answers.
pub(crate) const BODY: &str = "Hello, World!";
/// Its content type: what atoll and axum send for a `&str`, and what the hyper peer sets.
pub(crate) const CONTENT: &str = "text/plain; charset=utf-8";

/// Starts the server `implementation` on `addr`, prints `ready` and serves until killed.
pub(crate) async fn serve(implementation: &str, addr: SocketAddr) -> Result<(), String> {
    let cannot_listen = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    // Held to the end; atoll documents that dropping it leaves the listener running anyway.
    let _atoll = match implementation {
        "atoll" => Some(
            HttpListener::new(Handlers::new().resource(Hello))
                .name("bench")
                .ip(addr.ip())
                .port(addr.port())
                .start()
                .map_err(|e| e.to_string())?,
        ),
        "hyper" => {
            tokio::spawn(hyper_accept_loop(
                listen(addr, false).map_err(cannot_listen)?,
            ));
            None
        }
        "axum" => {
            let app = axum::Router::new().route("/", axum::routing::get(hello_axum));
            let listener = listen(addr, false).map_err(cannot_listen)?;
            tokio::spawn(async move { axum::serve(listener, app).await });
            None
        }
        other => return Err(format!("unknown --impl `{other}` (atoll, hyper or axum)")),
    };
    println!("ready");
    std::future::pending().await
}

// ===== atoll =====

/// atoll's hello-world resource.
struct Hello;

impl Resource for Hello {
    fn routes(&self) -> Vec<String> {
        vec!["/".into()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        // A `&'static str` is sent as is, with `text/plain; charset=utf-8`.
        BODY.into()
    }
}

// ===== hyper =====

async fn hyper_accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A client that resets or sends garbage ends its own connection only.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(hello_hyper))
                        .await;
                });
            }
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would fail again.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn hello_hyper(_req: hyper::Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    Ok(response)
}

// ===== axum =====

/// axum sends a `&'static str` with `text/plain; charset=utf-8`.
async fn hello_axum() -> &'static str {
    BODY
}
