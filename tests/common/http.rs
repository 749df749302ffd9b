//! HTTP test helpers: an HTTP listener on 127.0.0.1:0 stopped on drop, a hyper client over
//! HTTP/1.1, h2c or TLS, raw-socket requests, and curl.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Output;

use atoll::http::HttpListener;
use atoll::ServerHandle;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, Events, LOCALHOST};

/// An HTTP listener on 127.0.0.1:0, stopped at once when dropped.
pub struct HttpTest {
    pub handle: ServerHandle,
    pub events: Events,
}

impl HttpTest {
    pub fn start(listener: HttpListener) -> Self {
        let events = Events::default();
        let handle = listener
            .ip(LOCALHOST)
            .port(0)
            .subscribe(events.clone())
            .start()
            .expect("http listener starts");
        HttpTest { handle, events }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr().inet().expect("an IP listener")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// A new HTTP/1.1 connection.
    pub async fn h1(&self) -> Client {
        Client::h1(self.addr()).await
    }
}

impl Drop for HttpTest {
    fn drop(&mut self) {
        let h = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { h.stop(std::time::Duration::ZERO).await });
        }
    }
}

/// A response, read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection (HTTP/1.1 keep-alive or HTTP/2).
pub struct Client {
    sender: Sender,
}

impl Client {
    pub async fn h1(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Client::h1_over(stream).await
    }

    pub async fn h1_over<S>(io: S) -> Client
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        Client {
            sender: Sender::H1(sender),
        }
    }

    /// HTTP/2 with prior knowledge (h2c) on a plain connection.
    pub async fn h2c(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Client::h2_over(stream).await
    }

    pub async fn h2_over<S>(io: S) -> Client
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("http2 handshake");
        tokio::spawn(conn);
        Client {
            sender: Sender::H2(sender),
        }
    }

    /// Sends `req`; an error (connection closed...) comes back as `Err`.
    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        within("response", self.try_send(req))
            .await
            .expect("response")
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(req(Method::GET, path).body(Full::default()).unwrap())
            .await
    }
}

/// A request builder for `path` with `Host: localhost` (HTTP/1.1) or that authority (HTTP/2).
pub fn req(method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
}

/// Same, for HTTP/2: the host goes in the URI.
pub fn req2(method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
}

/// Writes `bytes` on a new connection and reads until the server closes (or 10 s).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = within("server close", s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs curl with `args` (adds `--silent --show-error --max-time 10`). curl must be installed:
/// `.ci/run` installs it, and this fails loudly when it is missing.
pub async fn curl(args: &[&str]) -> Output {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl must be installed (apt-get install -y curl)");
    out
}

/// `GET /health` on a kept-alive connection; the version it answers, and whether the server
/// closes the connection after it (`connection: close`).
pub fn health_kept(stream: &mut std::net::TcpStream) -> Result<(String, bool), String> {
    use std::io::Write;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    health_answer(stream)
}

/// Reads a `GET /health` answer from `stream`: the version, and whether it says
/// `connection: close`.
pub fn health_answer(stream: &mut std::net::TcpStream) -> Result<(String, bool), String> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err(format!("closed after {} bytes of the head", head.len())),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("not a 200: {head:?}"));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no length: {head:?}"))?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{e}: {head:?}"))?;
    let version = json["version"].as_str().unwrap_or("").to_owned();
    Ok((version, head.contains("connection: close")))
}
