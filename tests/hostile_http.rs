//! The HTTP attacks of issue 18, kept as a regression suite over real sockets: request bodies
//! sent a byte at a time or stopped halfway, many stalled bodies against a connection limit,
//! requests that break RFC 9112's Host rules, and too many header fields.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use atoll::http::{Handlers, Health, HttpListener, Reply, Request, Resource};
use bytes::Bytes;
use common::http::{raw, HttpTest};
use common::process::Atoll;
use common::within;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Answers a POST with the length of its body.
struct Length;

impl Resource for Length {
    fn routes(&self) -> Vec<String> {
        vec!["/len".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::POST]
    }
    async fn post(&self, req: &mut Request) -> Reply {
        format!("{}", req.body().len()).into()
    }
}

fn listener(change: impl FnOnce(&mut atoll::http::HttpOptions)) -> HttpTest {
    let handlers = Handlers::new()
        .resource(Health::default())
        .resource(Length)
        .service(axum::Router::new().route(
            "/axum",
            axum::routing::post(|body: axum::body::Bytes| async move { format!("{}", body.len()) }),
        ));
    HttpTest::start(HttpListener::new(handlers).configure_http(change))
}

/// The status code at the head of a raw answer.
fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

// ===== Request bodies =====

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Four clients announce 8 MB bodies and send 3,000 bytes each, one byte per write. Before
/// bodies were copied as they arrived, each byte held on to one of hyper's read buffers: the
/// server grew by some 48 MB here. Now it grows by about what arrived (12 KB), plus noise.
#[test]
fn a_body_sent_a_byte_at_a_time_costs_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atoll.toml");
    std::fs::write(
        &config,
        "[[listener]]\nname = \"web\"\nkind = \"http\"\nip = \"127.0.0.1\"\nport = 0\n\
         [[listener.handlers]]\nhost = \"_\"\nresources = [\"health\"]\n",
    )
    .unwrap();
    let atoll = Atoll::serve(&config);
    let addr = atoll.listening(1)[0].2;
    // A first request, so what every connection needs once is counted before.
    let mut warm = StdTcpStream::connect(addr).unwrap();
    warm.write_all(b"GET /health HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    warm.set_read_timeout(Some(common::WAIT)).unwrap();
    let _ = warm.read(&mut [0; 512]).unwrap();

    let mut clients: Vec<StdTcpStream> = (0..4)
        .map(|_| {
            let mut s = StdTcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            // POST to a GET-only resource: the body is read before the 405, as before.
            s.write_all(b"POST /health HTTP/1.1\r\nhost: a\r\ncontent-length: 8000000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let before = rss_kib(atoll.pid());
    for _ in 0..3000 {
        for c in &mut clients {
            c.write_all(b"x").unwrap();
        }
        // Paced, so that the bytes arrive as separate segments, as a slow client sends them.
        std::thread::sleep(Duration::from_micros(400));
    }
    // The server reads what was sent; look a few times over a moment for the highest mark.
    let mut after = 0;
    for _ in 0..10 {
        after = after.max(rss_kib(atoll.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown = after.saturating_sub(before);
    assert!(
        grown < 12 * 1024,
        "the server grew by {grown} KiB for 12 KB of request bodies"
    );
}

/// Headers announcing 10 bytes, then 2, then silence: answered 408 and closed once
/// `body_read_timeout` passes, for a resource, for a route that answers 405, and for a mounted
/// service (which sees the read fail).
#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_closed() {
    let t = listener(|o| o.body_read_timeout = Duration::from_millis(500));
    for path in ["/len", "/health"] {
        let head = format!("POST {path} HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nab");
        let answer = raw(t.addr(), head.as_bytes()).await;
        assert_eq!(status_of(&answer), "408", "{path}: {answer}");
    }
    // axum answers a body it could not read with a 4xx of its own; the connection closes.
    let head = "POST /axum HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nab";
    let answer = raw(t.addr(), head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");

    // A body that keeps arriving, however slowly, is read whole.
    let mut s = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    s.write_all(b"POST /len HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n")
        .await
        .unwrap();
    for b in [b"a", b"b", b"c"] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b).await.unwrap();
    }
    let mut answer = vec![0; 512];
    let n = within("answer", s.read(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n3"),
        "{answer}"
    );
}

/// The same over HTTP/2: the stalled stream is answered 408; the connection serves on.
#[tokio::test]
async fn an_http2_body_that_stops_arriving_is_answered_408() {
    let t = listener(|o| o.body_read_timeout = Duration::from_millis(500));
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(t.addr()).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Bytes::from_static(b"ab")).await.unwrap();
    let req = http::Request::post("http://a/len")
        .header("content-length", "10")
        .body(ChannelBody(rx))
        .unwrap();
    let resp = within("408", send.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);

    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let req = http::Request::get("http://a/health")
        .body(ChannelBody(rx))
        .unwrap();
    drop(_tx);
    let resp = within("health", send.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.into_body().collect().await;
}

/// A request body whose bytes come from a channel, as the test sends them.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// As many stalled bodies as the listener takes connections: once they time out, the
/// listener serves again. Before, they held every slot for as long as they liked.
#[tokio::test]
async fn stalled_bodies_do_not_hold_a_listener_full() {
    const LIMIT: usize = 40;
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Health::default()).resource(Length))
            .configure(|o| {
                o.max_connections = LIMIT;
                o.max_connections_retry_count = 100;
                o.max_connections_retry_wait = Duration::from_millis(50);
            })
            .configure_http(|o| o.body_read_timeout = Duration::from_millis(500)),
    );
    let mut stalled = Vec::new();
    for _ in 0..LIMIT {
        let mut s = within("connect", TcpStream::connect(t.addr()))
            .await
            .unwrap();
        s.write_all(b"POST /len HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nab")
            .await
            .unwrap();
        stalled.push(s);
    }
    for s in &mut stalled {
        let mut out = Vec::new();
        within("stalled body closed", s.read_to_end(&mut out))
            .await
            .unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&out)), "408");
    }
    let answer = raw(
        t.addr(),
        b"GET /health HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
}

// ===== Host rules (RFC 9112, section 3.2) =====

#[tokio::test]
async fn requests_that_break_the_host_rules_get_400_and_a_close() {
    let t = listener(|_| {});
    for (what, request) in [
        (
            "two Host lines",
            "GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        ),
        ("no Host on HTTP/1.1", "GET /health HTTP/1.1\r\n\r\n"),
        (
            "a Host with spaces",
            "GET /health HTTP/1.1\r\nhost: a b c\r\n\r\n",
        ),
        (
            "a Host with a path",
            "GET /health HTTP/1.1\r\nhost: a/b\r\n\r\n",
        ),
        (
            "a Host with two ports",
            "GET /health HTTP/1.1\r\nhost: a:1:2\r\n\r\n",
        ),
        (
            "two Host lines on HTTP/1.0",
            "GET /health HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
        ),
    ] {
        // No `connection: close` from the client: the server closes on its own.
        let answer = raw(t.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "{what}: {answer}");
        assert!(answer.contains("Host"), "{what}: {answer}");
    }
    for (what, request) in [
        (
            "one Host",
            "GET /health HTTP/1.1\r\nhost: a:8080\r\nconnection: close\r\n\r\n",
        ),
        (
            "an IPv6 Host",
            "GET /health HTTP/1.1\r\nhost: [::1]:80\r\nconnection: close\r\n\r\n",
        ),
        (
            "an empty Host",
            "GET /health HTTP/1.1\r\nhost:\r\nconnection: close\r\n\r\n",
        ),
        ("HTTP/1.0 without Host", "GET /health HTTP/1.0\r\n\r\n"),
        (
            "the absolute form",
            "GET http://a/health HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
        ),
    ] {
        let answer = raw(t.addr(), request.as_bytes()).await;
        assert_eq!(status_of(&answer), "200", "{what}: {answer}");
    }
}

// ===== Header fields =====

fn with_headers(n: usize) -> String {
    let mut request = String::from("GET /health HTTP/1.1\r\nhost: a\r\nconnection: close\r\n");
    for i in 0..n.saturating_sub(2) {
        request += &format!("x-h{i}: {i}\r\n");
    }
    request + "\r\n"
}

#[tokio::test]
async fn the_header_count_limit_is_documented_and_settable() {
    let default = listener(|_| {});
    let answer = raw(default.addr(), with_headers(100).as_bytes()).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let answer = raw(default.addr(), with_headers(101).as_bytes()).await;
    assert_eq!(status_of(&answer), "431", "{answer}");

    let more = listener(|o| o.max_headers = 200);
    let answer = raw(more.addr(), with_headers(200).as_bytes()).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let answer = raw(more.addr(), with_headers(201).as_bytes()).await;
    assert_eq!(status_of(&answer), "431", "{answer}");

    // HTTP/2 keeps the same count.
    let fewer = listener(|o| o.max_headers = 10);
    let mut h2 = common::http::Client::h2c(fewer.addr()).await;
    let mut req = common::http::req2(Method::GET, "/health");
    for i in 0..12 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let resp = h2.send(req.body(Default::default()).unwrap()).await;
    assert_eq!(resp.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let resp = h2.get("/health").await;
    assert_eq!(resp.status, StatusCode::OK);
}

/// Silence after the head's first bytes is cut at `header_read_timeout`, as before; kept here
/// with the other slow-client attacks.
#[tokio::test]
async fn a_head_that_stops_arriving_is_closed() {
    let t = listener(|o| o.header_read_timeout = Duration::from_millis(300));
    let answer = raw(t.addr(), b"GET /health HTTP/1.1\r\nhost: a\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ===== A client that stops reading =====

/// Answers with 16 MiB.
struct Big;

impl Resource for Big {
    fn routes(&self) -> Vec<String> {
        vec!["/big".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        vec![b'x'; 16 << 20].into()
    }
}

/// A client that asks for a large answer and never reads it is cut off once nothing has gone
/// out for `send_timeout`, instead of holding its connection (and the answer) forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_at_the_send_timeout() {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Big))
            .configure(|o| o.send_timeout = Duration::from_millis(300))
            .configure_http(|o| o.header_read_timeout = Duration::from_millis(200)),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = within("connect", socket.connect(t.addr())).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // Not reading, for longer than the send timeout and a check interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = Vec::new();
    let _ = within("the server's close", s.read_to_end(&mut got)).await;
    assert!(
        got.len() < 16 << 20,
        "the whole answer came: the connection was not cut off"
    );
}

/// RFC 9113 8.3.1: an HTTP/2 request whose Host names another authority than its
/// `:authority` is malformed, answered 400; the same Host as `:authority` is fine.
#[tokio::test]
async fn an_http2_host_that_differs_from_the_authority_gets_400() {
    let t = listener(|_| {});
    let mut h2 = common::http::Client::h2c(t.addr()).await;
    let req = common::http::req2(Method::GET, "/health")
        .header("host", "elsewhere.example")
        .body(Default::default())
        .unwrap();
    let resp = h2.send(req).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text());
    let req = common::http::req2(Method::GET, "/health")
        .header("host", "localhost")
        .body(Default::default())
        .unwrap();
    assert_eq!(h2.send(req).await.status, StatusCode::OK);
}
