//! WebSocket routes from outside, over real sockets: tokio-tungstenite's client for messages,
//! fragments and close codes, and a raw socket for what a well-behaved client never sends
//! (unmasked frames, silence).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::http::websocket::{Groups, WebSocket, WebSocketHandler, WsAction, WsConn};
use atoll::http::{Handlers, HttpListener, Request, Unauthorized};
use atoll::TlsOptions;
use bytes::Bytes;
use common::http::HttpTest;
use common::{within, Pki, WAIT};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

/// What the handlers saw end, for the tests to check.
type Closes = Arc<Mutex<Vec<(u16, String)>>>;

/// Echoes text and binary, says `bye` when the server stops, joins `room`, and tells
/// `closes` how the connection ended. Refuses `?token=no` (401) and `?deny` (403).
#[derive(Clone, Default)]
struct Echo {
    closes: Closes,
}

impl WebSocketHandler for Echo {
    async fn is_authenticated(&mut self, req: &mut Request) -> Result<(), Unauthorized> {
        match req.query_param("token").as_deref() {
            Some("no") => Err(Unauthorized::new("Bearer")),
            _ => Ok(()),
        }
    }

    async fn has_permission(&mut self, req: &Request) -> bool {
        req.query_param("deny").is_none()
    }

    async fn handle_connection(&mut self, ws: &mut WsConn<'_>) -> WsAction {
        ws.join("room");
        WsAction::Continue
    }

    async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
        if text == "from a task" {
            let sender = ws.sender();
            tokio::spawn(async move { sender.send("sent from a task").await });
            return WsAction::Continue;
        }
        if text == "flood" {
            // Until the peer, which reads nothing, makes a send time out.
            while ws.send(vec![0u8; 64 * 1024]).await.is_ok() {}
            return WsAction::Continue;
        }
        if text == "close please" {
            return WsAction::Close(4001, "as asked".into());
        }
        let _ = ws.send(text).await;
        WsAction::Continue
    }

    async fn handle_binary(&mut self, data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
        let _ = ws.send(data).await;
        WsAction::Continue
    }

    async fn handle_shutdown(&mut self, ws: &mut WsConn<'_>) {
        let _ = ws.send("bye").await;
    }

    async fn handle_close(&mut self, code: u16, reason: &str) {
        self.closes.lock().unwrap().push((code, reason.to_owned()));
    }
}

fn route(echo: &Echo) -> WebSocket<Echo> {
    WebSocket::new("/ws", echo.clone()).max_message_size(1024)
}

fn server(route: WebSocket<Echo>) -> HttpTest {
    HttpTest::start(HttpListener::new(Handlers::new().websocket(route)))
}

type Client<S> = WebSocketStream<S>;

async fn connect(addr: SocketAddr, path: &str) -> Client<TcpStream> {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let url = format!("ws://{addr}{path}");
    within("handshake", client_async(url, tcp)).await.unwrap().0
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>) -> Message {
    within("a message", c.next())
        .await
        .expect("a message")
        .expect("no error")
}

/// Reads until the server's close frame; its code and reason.
async fn close_of<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>) -> (u16, String) {
    loop {
        match next(c).await {
            Message::Close(Some(CloseFrame { code, reason })) => {
                return (code.into(), reason.to_string())
            }
            Message::Close(None) => return (1005, String::new()),
            _ => {}
        }
    }
}

async fn closes_seen(closes: &Closes, n: usize) -> Vec<(u16, String)> {
    within("the handler's close", async {
        loop {
            let seen = closes.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn echoes_text_binary_and_answers_pings() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut c = connect(t.addr(), "/ws").await;
    c.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("hello"));
    c.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(next(&mut c).await, Message::binary(vec![0u8, 1, 2, 255]));
    c.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    assert_eq!(next(&mut c).await, Message::Pong(Bytes::from_static(b"p1")));
    c.send(Message::text("from a task")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("sent from a task"));
    // The client closes with its own code: the server echoes it, the handler hears it.
    c.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_of(&mut c).await, (4000, "done".into()));
    assert_eq!(closes_seen(&echo.closes, 1).await, [(4000, "done".into())]);
}

#[tokio::test]
async fn joins_fragments_with_control_frames_between() {
    let t = server(route(&Echo::default()));
    let mut c = connect(t.addr(), "/ws").await;
    let part = |op, text: &'static str, fin| Message::Frame(Frame::message(text, op, fin));
    c.send(part(OpCode::Data(Data::Text), "frag", false))
        .await
        .unwrap();
    c.send(Message::Ping(Bytes::from_static(b"between")))
        .await
        .unwrap();
    c.send(part(OpCode::Data(Data::Continue), "men", false))
        .await
        .unwrap();
    c.send(part(OpCode::Data(Data::Continue), "ted", true))
        .await
        .unwrap();
    // The pong comes first: the ping was answered while the message was still in pieces.
    assert_eq!(
        next(&mut c).await,
        Message::Pong(Bytes::from_static(b"between"))
    );
    assert_eq!(next(&mut c).await, Message::text("fragmented"));
    // A UTF-8 character split across two fragments is still valid.
    let euro = "€".as_bytes();
    let bin = |op, b: &[u8], fin| Message::Frame(Frame::message(b.to_vec(), op, fin));
    c.send(bin(OpCode::Data(Data::Text), &euro[..1], false))
        .await
        .unwrap();
    c.send(bin(OpCode::Data(Data::Continue), &euro[1..], true))
        .await
        .unwrap();
    assert_eq!(next(&mut c).await, Message::text("€"));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut c = connect(t.addr(), "/ws").await;
    let bad = Frame::message(vec![b'o', b'k', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    c.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(close_of(&mut c).await.0, 1007);
    // The client's answer completes the handshake, and the server ends the connection.
    assert!(within("the end", c.next()).await.is_none());
    assert_eq!(closes_seen(&echo.closes, 1).await[0].0, 1007);
}

#[tokio::test]
async fn too_big_closes_with_1009_whole_or_in_fragments() {
    let t = server(route(&Echo::default()));
    let mut c = connect(t.addr(), "/ws").await;
    c.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert_eq!(next(&mut c).await, Message::binary(vec![7u8; 1024]));
    c.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    assert_eq!(close_of(&mut c).await.0, 1009);
    // Fragments each within the limit, together over it.
    let mut c = connect(t.addr(), "/ws").await;
    let part = |op, fin| Message::Frame(Frame::message(vec![1u8; 600], op, fin));
    c.send(part(OpCode::Data(Data::Binary), false))
        .await
        .unwrap();
    c.send(part(OpCode::Data(Data::Continue), true))
        .await
        .unwrap();
    assert_eq!(close_of(&mut c).await.0, 1009);
}

/// Sends `bytes`, then the client's answer to the server's close, and expects the server to
/// end the connection cleanly: an end of stream, not a reset (which a socket closed with
/// unread bytes sends, and which can throw away what the client had not read yet).
async fn answer_close_and_see_the_end(s: &mut TcpStream, bytes: &[u8]) {
    let mut rest = bytes.to_vec();
    rest.extend(client_frame(0x88, &1009u16.to_be_bytes()));
    s.write_all(&rest).await.unwrap();
    let mut b = [0u8; 64];
    let end = within("the end", s.read(&mut b)).await;
    assert!(matches!(end, Ok(0)), "a clean end of stream, got {end:?}");
}

#[tokio::test]
async fn after_a_1009_the_close_handshake_completes_past_what_the_client_still_sends() {
    let echo = Echo::default();
    let t = server(route(&echo).max_frame_size(1024));
    // A frame whose header announces more than the limit: the server answers before the
    // payload is in, and must skip the rest of it to find the client's close frame.
    let mut s = raw_ws(t.addr(), "/ws").await;
    let big = client_frame(0x82, &[5u8; 4096]);
    s.write_all(&big[..200]).await.unwrap();
    let (op, payload) = raw_frame(&mut s).await;
    assert_eq!(
        (op, u16::from_be_bytes([payload[0], payload[1]])),
        (0x8, 1009)
    );
    answer_close_and_see_the_end(&mut s, &big[200..]).await;
    // Fragments within the frame limit, over the message limit together, and one more
    // fragment the client had sent before it read the close.
    let mut s = raw_ws(t.addr(), "/ws").await;
    s.write_all(&client_frame(0x02, &[1u8; 600])).await.unwrap();
    s.write_all(&client_frame(0x00, &[1u8; 600])).await.unwrap();
    let (op, payload) = raw_frame(&mut s).await;
    assert_eq!(
        (op, u16::from_be_bytes([payload[0], payload[1]])),
        (0x8, 1009)
    );
    answer_close_and_see_the_end(&mut s, &client_frame(0x80, &[1u8; 600])).await;
    let closes = closes_seen(&echo.closes, 2).await;
    assert!(closes.iter().all(|c| c.0 == 1009), "{closes:?}");
}

#[tokio::test]
async fn handler_closes_with_its_code() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut c = connect(t.addr(), "/ws").await;
    c.send(Message::text("close please")).await.unwrap();
    assert_eq!(close_of(&mut c).await, (4001, "as asked".into()));
    // The client's answer completes the handshake; the handler hears its own code.
    assert!(within("the end", c.next()).await.is_none());
    assert_eq!(
        closes_seen(&echo.closes, 1).await,
        [(4001, "as asked".into())]
    );
}

#[tokio::test]
async fn stop_says_goodbye_with_1001_and_waits_for_the_close() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut c = connect(t.addr(), "/ws").await;
    c.send(Message::text("ready")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("ready"));
    let handle = t.handle.clone();
    let stopping = tokio::spawn(async move { handle.stop(WAIT).await });
    assert_eq!(next(&mut c).await, Message::text("bye"));
    assert_eq!(close_of(&mut c).await, (1001, "server stopping".into()));
    // The stop waits for the client's close frame, which this read sends.
    assert!(!stopping.is_finished() || closes_seen(&echo.closes, 1).await.len() == 1);
    assert!(within("the end", c.next()).await.is_none());
    within("the stop", stopping).await.unwrap();
    assert_eq!(closes_seen(&echo.closes, 1).await[0].0, 1001);
}

#[tokio::test]
async fn groups_broadcast_to_every_member() {
    let groups = Groups::new();
    let t = server(route(&Echo::default()).groups(groups.clone()));
    let mut a = connect(t.addr(), "/ws").await;
    let mut b = connect(t.addr(), "/ws").await;
    within("both joined", async {
        while groups.len("room") < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(groups.broadcast("room", "to all"), 2);
    assert_eq!(next(&mut a).await, Message::text("to all"));
    assert_eq!(next(&mut b).await, Message::text("to all"));
    a.close(None).await.unwrap();
    within("a's end", async { while a.next().await.is_some() {} }).await;
    within("a left", async {
        while groups.len("room") > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(groups.broadcast("room", "to b"), 1);
    assert_eq!(next(&mut b).await, Message::text("to b"));
}

#[tokio::test]
async fn refused_handshakes() {
    let t = server(route(&Echo::default()).origins(["https://app.example.com"]));
    let upgrade = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\n\r\n"
        )
    };
    let status = |text: String| text.lines().next().unwrap_or("").to_owned();
    let raw = |addr, req: &[u8]| head_of(addr, req.to_vec());
    let ok = upgrade("/ws", "https://app.example.com");
    let answer = raw(t.addr(), ok.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{answer}");
    let evil = upgrade("/ws", "https://evil.example");
    assert_eq!(
        status(raw(t.addr(), evil.as_bytes()).await),
        "HTTP/1.1 403 Forbidden"
    );
    let no_token = upgrade("/ws?token=no", "https://app.example.com");
    let answer = raw(t.addr(), no_token.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );
    let denied = upgrade("/ws?deny", "https://app.example.com");
    assert!(raw(t.addr(), denied.as_bytes())
        .await
        .starts_with("HTTP/1.1 403"));
    let plain = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw(t.addr(), plain.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(
        answer.to_lowercase().contains("sec-websocket-version: 13"),
        "{answer}"
    );
}

/// The head of the answer to `req` on a new connection (which may stay open).
async fn head_of(addr: SocketAddr, req: Vec<u8>) -> String {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    s.write_all(&req).await.unwrap();
    read_head(&mut s).await
}

/// Reads an answer's head, byte by byte, so that nothing after it is taken.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        within("an answer", s.read_exact(&mut b)).await.unwrap();
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A raw socket past the handshake, for frames a client library will not send.
async fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 101"));
    s
}

/// One frame from the server (never masked, payload under 126 bytes here): opcode, payload.
async fn raw_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    within("a frame", s.read_exact(&mut h)).await.unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let mut payload = vec![0u8; (h[1] & 0x7f) as usize];
    within("a payload", s.read_exact(&mut payload))
        .await
        .unwrap();
    (h[0] & 0x0f, payload)
}

#[tokio::test]
async fn messages_that_come_in_one_piece_are_each_answered_in_order() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut s = raw_ws(t.addr(), "/ws").await;
    // A hundred messages and a ping in one write: a read of the server's brings many at once.
    let mut burst = Vec::new();
    for i in 0..100u8 {
        burst.extend(client_frame(0x82, &[i; 3]));
        if i == 50 {
            burst.extend(client_frame(0x89, b"p"));
        }
    }
    s.write_all(&burst).await.unwrap();
    let mut echoed = Vec::new();
    let mut pongs = 0;
    while echoed.len() < 100 {
        match raw_frame(&mut s).await {
            (0x2, payload) => {
                assert_eq!(payload, [echoed.len() as u8; 3]);
                echoed.push(payload);
            }
            (0xA, payload) => {
                assert_eq!(payload, b"p");
                assert_eq!(
                    echoed.len(),
                    51,
                    "the pong comes right after the echo before it"
                );
                pongs += 1;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(pongs, 1);
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let t = server(route(&Echo::default()));
    let mut s = raw_ws(t.addr(), "/ws").await;
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let (op, payload) = raw_frame(&mut s).await;
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
}

#[tokio::test]
async fn peer_that_reads_nothing_is_cut_off_at_send_timeout() {
    let echo = Echo::default();
    let listener = HttpListener::new(Handlers::new().websocket(route(&echo)))
        .configure(|o| o.send_timeout = Duration::from_millis(200));
    let t = HttpTest::start(listener);
    let mut s = raw_ws(t.addr(), "/ws").await;
    // "flood", masked with a zero key; then this client reads nothing.
    s.write_all(&[0x81, 0x85, 0, 0, 0, 0, b'f', b'l', b'o', b'o', b'd'])
        .await
        .unwrap();
    let seen = closes_seen(&echo.closes, 1).await;
    assert_eq!(seen, [(1006, "send timeout".into())]);
}

#[tokio::test]
async fn silent_peer_gets_pings_then_a_close() {
    let route = route(&Echo::default())
        .ping_interval(Duration::from_millis(50))
        .read_timeout(Duration::from_millis(300));
    let t = server(route);
    let mut s = raw_ws(t.addr(), "/ws").await;
    let mut pings = 0;
    let code = loop {
        match raw_frame(&mut s).await {
            (0x9, _) => pings += 1,
            (0x8, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
            (op, _) => panic!("unexpected opcode {op}"),
        }
    };
    assert!(pings >= 1);
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn wss_echoes_over_tls() {
    let pki = Pki::new();
    let tls = TlsOptions {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        alpn: vec!["http/1.1".into()],
        ..Default::default()
    }
    .load()
    .expect("TLS loads");
    let echo = Echo::default();
    let t = HttpTest::start(HttpListener::new(Handlers::new().websocket(route(&echo))).tls(tls));
    let tcp = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within("TLS", pki.connector(None, &["http/1.1"]).connect(name, tcp))
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws", t.addr().port());
    let (mut c, _) = within("handshake", client_async(url, tls)).await.unwrap();
    c.send(Message::text("secure")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("secure"));
    c.send(Message::binary(vec![9u8; 2000])).await.unwrap();
    assert_eq!(close_of(&mut c).await.0, 1009);
    assert!(within("the end", c.next()).await.is_none());
    let handle = t.handle.clone();
    let mut c2 = {
        let tcp = within("connect", TcpStream::connect(t.addr()))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = pki.connector(None, &["http/1.1"]).connect(name, tcp);
        let tls = within("TLS", tls).await.unwrap();
        let url = format!("wss://localhost:{}/ws", t.addr().port());
        within("handshake", client_async(url, tls)).await.unwrap().0
    };
    c2.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut c2).await, Message::text("x"));
    let stopping = tokio::spawn(async move { handle.stop(WAIT).await });
    assert_eq!(next(&mut c2).await, Message::text("bye"));
    assert_eq!(close_of(&mut c2).await.0, 1001);
    let end = within("the end", c2.next()).await;
    assert!(end.is_none(), "{end:?}");
    within("the stop", stopping).await.unwrap();
}

/// A mounted tower service upgrades with hyper's own `hyper::upgrade::on`, as axum's
/// WebSocket extractor does: the listener serves HTTP/1.1 with upgrades.
#[tokio::test]
async fn mounted_service_upgrades_through_hyper() {
    use atoll::http::{Body, RequestBody};
    use hyper_util::rt::TokioIo;
    let service = tower::service_fn(|mut req: http::Request<RequestBody>| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 5];
                if io.read_exact(&mut buf).await.is_ok() {
                    let _ = io.write_all(&buf).await;
                }
            }
        });
        let mut r = http::Response::new(Body::empty());
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        Ok::<_, std::convert::Infallible>(r)
    });
    let t = HttpTest::start(HttpListener::new(Handlers::new().service(service)));
    let mut s = within("connect", TcpStream::connect(t.addr()))
        .await
        .unwrap();
    s.write_all(
        b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    within("101 and the echo", async {
        let mut b = [0u8; 256];
        while !got.ends_with(b"hello") {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
    })
    .await;
    assert!(got.starts_with(b"HTTP/1.1 101"));
}

// ===== permessage-deflate (RFC 7692), from a raw socket =====

/// A raw socket past a handshake that offers `extensions`; the 101's head.
async fn raw_ws_offering(addr: SocketAddr, extensions: &str) -> (TcpStream, String) {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, head.to_ascii_lowercase())
}

/// A client frame, masked with a zero key: `first` is its first byte (FIN, RSV1, opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

/// One server frame of any length under 64 KiB: its first byte and payload.
async fn server_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    within("a frame", s.read_exact(&mut h)).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            within("a length", s.read_exact(&mut l)).await.unwrap();
            u16::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    within("a payload", s.read_exact(&mut payload))
        .await
        .unwrap();
    (h[0], payload)
}

/// Raw DEFLATE of `data`, flushed, with the 00 00 ff ff tail taken off (RFC 7692 7.2.1).
fn deflated(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.flush().unwrap();
    let mut out = e.get_ref().clone();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflated(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut all = data.to_vec();
    all.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let _ = flate2::read::DeflateDecoder::new(&all[..]).read_to_end(&mut out);
    out
}

const ACCEPTED: &str =
    "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[tokio::test]
async fn permessage_deflate_is_negotiated_and_messages_go_both_ways_compressed() {
    let t = server(route(&Echo::default()));
    let (mut s, head) =
        raw_ws_offering(t.addr(), "permessage-deflate; client_max_window_bits").await;
    assert!(head.contains(ACCEPTED), "{head}");
    let text = "over and over and over again ".repeat(20);
    // A compressed text message (RSV1 on its frame) comes back compressed.
    s.write_all(&client_frame(0xc1, &deflated(text.as_bytes())))
        .await
        .unwrap();
    let (first, payload) = server_frame(&mut s).await;
    assert_eq!(first, 0xc1, "FIN, RSV1, text");
    assert!(payload.len() < text.len() / 4);
    assert_eq!(inflated(&payload), text.as_bytes());
    // A small message goes plain (under compress_min_size), whichever way it came.
    s.write_all(&client_frame(0xc1, &deflated(b"hi hi")))
        .await
        .unwrap();
    assert_eq!(server_frame(&mut s).await, (0x81, b"hi hi".to_vec()));
    s.write_all(&client_frame(0x81, b"plain")).await.unwrap();
    assert_eq!(server_frame(&mut s).await, (0x81, b"plain".to_vec()));
    // A compressed binary message in two fragments, a ping between them: RSV1 only on the
    // first fragment.
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
    let packed = deflated(&data);
    let (a, b) = packed.split_at(packed.len() / 2);
    let mut wire = client_frame(0x42, a);
    wire.extend(client_frame(0x89, b"ping"));
    wire.extend(client_frame(0x80, b));
    s.write_all(&wire).await.unwrap();
    assert_eq!(server_frame(&mut s).await, (0x8a, b"ping".to_vec()));
    let (first, payload) = server_frame(&mut s).await;
    assert_eq!(first, 0xc2, "FIN, RSV1, binary");
    assert_eq!(inflated(&payload), data);
}

#[tokio::test]
async fn deflate_faults_close_with_their_codes() {
    let t = server(route(&Echo::default()));
    let offer = "permessage-deflate";
    let close_code_of = |(first, payload): (u8, Vec<u8>)| {
        assert_eq!(first & 0x0f, 0x8, "a close frame");
        u16::from_be_bytes([payload[0], payload[1]])
    };
    // 64 KiB of zeros compress to a few dozen bytes; the route's limit is 1 KiB.
    let (mut s, _) = raw_ws_offering(t.addr(), offer).await;
    s.write_all(&client_frame(0xc2, &deflated(&[0u8; 65536])))
        .await
        .unwrap();
    assert_eq!(close_code_of(server_frame(&mut s).await), 1009);
    // Not DEFLATE data.
    let (mut s, _) = raw_ws_offering(t.addr(), offer).await;
    s.write_all(&client_frame(0xc2, b"\xff\xff\xff\xff not deflate"))
        .await
        .unwrap();
    assert_eq!(close_code_of(server_frame(&mut s).await), 1007);
    // Compressed text that is not UTF-8 once inflated.
    let (mut s, _) = raw_ws_offering(t.addr(), offer).await;
    s.write_all(&client_frame(0xc1, &deflated(b"ok\xff\xfe")))
        .await
        .unwrap();
    assert_eq!(close_code_of(server_frame(&mut s).await), 1007);
    // RSV1 on a continuation frame.
    let (mut s, _) = raw_ws_offering(t.addr(), offer).await;
    let mut wire = client_frame(0x01, b"part");
    wire.extend(client_frame(0xc0, b"rest"));
    s.write_all(&wire).await.unwrap();
    assert_eq!(close_code_of(server_frame(&mut s).await), 1002);
    // RSV1 without the extension negotiated.
    let mut s = raw_ws(t.addr(), "/ws").await;
    s.write_all(&client_frame(0xc1, &deflated(b"hello")))
        .await
        .unwrap();
    assert_eq!(close_code_of(server_frame(&mut s).await), 1002);
}

#[tokio::test]
async fn offers_declined_or_compression_off_run_uncompressed() {
    let t = server(route(&Echo::default()));
    // A smaller server window than DEFLATE's full one is not made here.
    let (_, head) = raw_ws_offering(t.addr(), "permessage-deflate; server_max_window_bits=9").await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    let off = server(route(&Echo::default()).compression(false));
    let (mut s, head) = raw_ws_offering(off.addr(), "permessage-deflate").await;
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    let text = "over and over and over again ".repeat(20);
    s.write_all(&client_frame(0x81, text.as_bytes()))
        .await
        .unwrap();
    let (first, payload) = server_frame(&mut s).await;
    assert_eq!((first, payload), (0x81, text.into_bytes()));
}

// ===== over HTTP/2 (RFC 8441's extended CONNECT) =====

/// An HTTP/2 connection (prior knowledge) to `addr`, once the server's SETTINGS, which
/// allow extended CONNECT, have arrived; and a WebSocket opened on it at `/ws`.
/// An HTTP/2 connection to `addr`, driven on a task of its own.
async fn h2_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_websocket(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    addr: SocketAddr,
) -> Client<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let response = within("the 200", async {
        loop {
            let mut req = http::Request::builder()
                .method(http::Method::CONNECT)
                .version(http::Version::HTTP_2)
                .uri(format!("http://{addr}/ws"))
                .header("sec-websocket-version", "13")
                .body(http_body_util::Empty::new())
                .unwrap();
            req.extensions_mut()
                .insert(hyper::ext::Protocol::from_static("websocket"));
            match send.send_request(req).await {
                Ok(r) => return r,
                // The server's SETTINGS, which allow it, are not in yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert_eq!(response.status(), 200);
    let upgraded = within("the stream", hyper::upgrade::on(response))
        .await
        .unwrap();
    WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

#[tokio::test]
async fn websockets_over_http2_share_a_connection_and_hear_1001_at_a_stop() {
    let echo = Echo::default();
    let t = server(route(&echo));
    let mut send = h2_connection(t.addr()).await;
    let mut a = h2_websocket(&mut send, t.addr()).await;
    let mut b = h2_websocket(&mut send, t.addr()).await;
    a.send(Message::text("over h2")).await.unwrap();
    b.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut a).await, Message::text("over h2"));
    assert_eq!(next(&mut b).await, Message::binary(vec![1u8, 2, 3]));
    // A message over the route's limit closes that stream's WebSocket alone.
    a.send(Message::binary(vec![0u8; 2000])).await.unwrap();
    assert_eq!(close_of(&mut a).await.0, 1009);
    drop(a);
    b.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut b).await, Message::text("still here"));
    // A stop: the handler's last word, then 1001.
    let handle = t.handle.clone();
    let stopping = tokio::spawn(async move { handle.stop(WAIT).await });
    assert_eq!(next(&mut b).await, Message::text("bye"));
    assert_eq!(close_of(&mut b).await, (1001, "server stopping".into()));
    // This read sends the client's close frame back; the stream then ends.
    let end = within("the end", b.next()).await;
    assert!(end.is_none(), "{end:?}");
    within("the stop", stopping).await.unwrap();
    let closes = closes_seen(&echo.closes, 2).await;
    assert!(
        closes.contains(&(1001, "server stopping".into())),
        "{closes:?}"
    );
}

#[tokio::test]
async fn a_stream_of_an_http2_connection_gets_its_keepalive_pings() {
    // Each stream of an HTTP/2 connection keeps its own time (a connection with a socket of
    // its own is woken by the listener's sweeper instead, `silent_peer_gets_pings_then_a_close`).
    let t = server(route(&Echo::default()).ping_interval(Duration::from_millis(50)));
    let mut send = h2_connection(t.addr()).await;
    let mut ws = h2_websocket(&mut send, t.addr()).await;
    for _ in 0..3 {
        assert!(matches!(next(&mut ws).await, Message::Ping(_)));
    }
    // Answered (tungstenite sends the pongs), it stays open and echoes.
    ws.send(Message::text("still here")).await.unwrap();
    loop {
        match next(&mut ws).await {
            Message::Ping(_) => continue,
            m => break assert_eq!(m, Message::text("still here")),
        }
    }
}

/// Answers each message with whether `WsConn::received` handed it the very bytes of its
/// argument (`"same"`), and each ping with whether it had none then (`"none"`).
#[derive(Clone)]
struct Received;

impl WebSocketHandler for Received {
    async fn handle_text(&mut self, text: &str, ws: &mut WsConn<'_>) -> WsAction {
        let same = ws
            .received()
            .is_some_and(|m| m.as_text() == Some(text) && m.as_bytes().as_ptr() == text.as_ptr());
        let _ = ws.send(if same { "same" } else { "copy" }).await;
        WsAction::Continue
    }

    async fn handle_binary(&mut self, data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
        let same = ws
            .received()
            .is_some_and(|m| !m.is_text() && m.as_bytes().as_ptr() == data.as_ptr());
        let _ = ws.send(if same { "same" } else { "copy" }).await;
        WsAction::Continue
    }

    async fn handle_ping(&mut self, _data: &[u8], ws: &mut WsConn<'_>) -> WsAction {
        let none = ws.received().is_none();
        let _ = ws.send(if none { "none" } else { "some" }).await;
        WsAction::Continue
    }
}

#[tokio::test]
async fn a_callback_gets_the_message_it_handles_without_a_copy() {
    let t = HttpTest::start(HttpListener::new(
        Handlers::new().websocket(WebSocket::new("/ws", Received)),
    ));
    let mut c = connect(t.addr(), "/ws").await;
    c.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("same"));
    c.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut c).await, Message::text("same"));
    c.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    loop {
        match next(&mut c).await {
            Message::Pong(_) => continue,
            m => break assert_eq!(m, Message::text("none")),
        }
    }
}
