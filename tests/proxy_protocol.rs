//! The PROXY protocol and per-IP limits over real sockets: headers (v1, v2) from a raw client
//! and through a relay that stands for a load balancer; the client they name seen by a
//! handler's `Socket`, an HTTP `Request`, an RPC `Ctx`, telemetry events and log lines;
//! missing, bad, late and untrusted headers refused and counted; `max_connections_per_ip`
//! counting clients after the header.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll::http::{Handlers, HttpListener, Reply, Request, Resource};
use atoll::rpc::{Client, Ctx, Daemon, Protocol, Service};
use atoll::telemetry::{EventKind, TracingLogger};
use atoll::{Action, BoxError, Handler, ProxyProtocol, Server, ServerOptions, Socket};
use common::{capture_logs, within, TestServer, LOCALHOST};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The address every relayed client is said to have: a documentation network, not loopback,
/// so a peer shown as it can only have come from the header.
const CLIENT_IP: &str = "203.0.113.7";

/// Writes its peer (as atoll shows it) on connect, then echoes.
#[derive(Clone)]
struct Peer;

impl Handler for Peer {
    async fn handle_connection(&mut self, socket: &mut Socket) -> Action {
        let line = format!("{}\n", socket.peer_addr());
        match socket.send(line.as_bytes()).await {
            Ok(()) => Action::Continue,
            Err(_) => Action::Close,
        }
    }

    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(_) => Action::Close,
        }
    }
}

fn proxied(change: impl FnOnce(&mut ServerOptions)) -> ServerOptions {
    let mut o = ServerOptions {
        proxy_protocol: ProxyProtocol::Required,
        ..ServerOptions::default()
    };
    change(&mut o);
    o
}

/// A [`Peer`] server named `p` that requires a PROXY header, its options changed by `change`.
fn peer_server(change: impl FnOnce(&mut ServerOptions)) -> TestServer {
    TestServer::start(Server::new(Peer).name("p").options(proxied(change)))
}

/// A new connection to `server` that starts with a v1 header naming `client`.
async fn connect_as(server: &TestServer, client: &str) -> TcpStream {
    let mut c = server.connect().await;
    c.write_all(&v1(client.parse().unwrap(), server.addr()))
        .await
        .unwrap();
    c
}

fn v1(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        to.ip(),
        client.port(),
        to.port()
    )
    .into_bytes()
}

fn v2(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(t)) = (client, to) else {
        panic!("IPv4 only")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&t.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&t.port().to_be_bytes());
    h
}

/// Reads one line.
async fn line(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        let n = within("a line", c.read(&mut b)).await.expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap().trim_end().to_owned()
}

/// Whether the server closed `c` (end of stream or reset) before sending anything.
async fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(within("the close", c.read(&mut b)).await, Ok(0) | Err(_))
}

/// A stand-in for a load balancer: relays each connection to `target` after a version 1
/// header naming [`CLIENT_IP`] with the client's own port.
async fn relay(target: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, from)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                let client = SocketAddr::new(CLIENT_IP.parse().unwrap(), from.port());
                if outbound.write_all(&v1(client, target)).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_handler_sees_the_client_of_a_v1_or_v2_header() {
    let server = peer_server(|_| {});
    let to = server.addr();
    for (version, header) in [
        ("v1", v1("192.0.2.10:51000".parse().unwrap(), to)),
        ("v2", v2("192.0.2.20:52000".parse().unwrap(), to)),
    ] {
        let mut c = server.connect().await;
        // The header and the first message in one write: the handler gets only the message.
        let mut first = header.clone();
        first.extend_from_slice(b"hello\n");
        c.write_all(&first).await.unwrap();
        let peer = line(&mut c).await;
        let want = match version {
            "v1" => "192.0.2.10:51000",
            _ => "192.0.2.20:52000",
        };
        assert_eq!(peer, want, "{version}");
        assert_eq!(line(&mut c).await, "hello", "{version}");
    }
    // Connection events carry the client, not the socket's peer.
    server.events.wait_for(EventKind::ConnectionStart, 2).await;
    let starts: Vec<_> = server
        .events
        .all()
        .into_iter()
        .filter(|e| e.kind == EventKind::ConnectionStart)
        .map(|e| e.peer.unwrap())
        .collect();
    assert_eq!(starts, ["192.0.2.10:51000", "192.0.2.20:52000"]);
}

#[tokio::test]
async fn missing_bad_and_late_headers_are_refused_and_counted() {
    let server = peer_server(|o| o.proxy_header_timeout = Duration::from_millis(300));
    let cases: [(&str, &[u8]); 4] = [
        ("no header", b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
        ("a bad v1 header", b"PROXY TCP4 1.2.3.4 nonsense\r\n"),
        ("a v1 header too long", b"PROXY 1"),
        ("nothing", b""),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut c = server.connect().await;
        let mut bytes = bytes.to_vec();
        if i == 2 {
            bytes.extend_from_slice(&[b'9'; 200]);
        }
        c.write_all(&bytes).await.unwrap();
        assert!(closed(&mut c).await, "{what}: not closed");
        server
            .events
            .wait_for(EventKind::ProxyHeaderError, i + 1)
            .await;
    }
    let errors: Vec<String> = server
        .events
        .all()
        .into_iter()
        .filter(|e| e.kind == EventKind::ProxyHeaderError)
        .map(|e| e.error.unwrap())
        .collect();
    for (error, want) in errors.iter().zip([
        "no PROXY header",
        "bad PROXY v1 header",
        "longer than 107 bytes",
        "proxy_header_timeout",
    ]) {
        assert!(error.contains(want), "{error:?} should say {want:?}");
    }
    // None of them counted as a connection that started; the listener still serves.
    assert_eq!(server.events.count(EventKind::ConnectionStart), 0);
    let mut c = connect_as(&server, "192.0.2.1:1000").await;
    assert_eq!(line(&mut c).await, "192.0.2.1:1000");
}

#[tokio::test]
async fn a_header_from_outside_the_trusted_networks_is_refused() {
    let server = peer_server(|o| {
        o.proxy_trusted = vec!["10.0.0.0/8".parse().unwrap()];
    });
    let mut c = connect_as(&server, "192.0.2.1:1000").await;
    assert!(closed(&mut c).await);
    server.events.wait_for(EventKind::ProxyHeaderError, 1).await;
    let e = server
        .events
        .first_error(EventKind::ProxyHeaderError)
        .unwrap();
    assert!(
        e.contains("127.0.0.1") && e.contains("proxy_trusted"),
        "{e}"
    );

    // Loopback trusted: the same header is taken.
    let server = peer_server(|o| {
        o.proxy_trusted = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let mut c = connect_as(&server, "192.0.2.1:1000").await;
    assert_eq!(line(&mut c).await, "192.0.2.1:1000");
}

#[tokio::test]
async fn the_per_ip_limit_counts_clients_named_by_their_headers() {
    let server = peer_server(|o| o.max_connections_per_ip = Some(2));
    let to = server.addr();
    let open = |ip: &'static str, port: u16| async move {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(&v1(format!("{ip}:{port}").parse().unwrap(), to))
            .await
            .unwrap();
        c
    };
    let mut a1 = open("192.0.2.1", 1).await;
    let mut a2 = open("192.0.2.1", 2).await;
    assert_eq!(line(&mut a1).await, "192.0.2.1:1");
    assert_eq!(line(&mut a2).await, "192.0.2.1:2");
    // A third from the same client is closed at once; another client is not held back.
    let mut a3 = open("192.0.2.1", 3).await;
    assert!(closed(&mut a3).await);
    server
        .events
        .wait_for(EventKind::MaxConnectionsPerIpExceeded, 1)
        .await;
    let mut b1 = open("192.0.2.2", 1).await;
    assert_eq!(line(&mut b1).await, "192.0.2.2:1");
    // A place freed is taken again.
    drop(a1);
    let mut a4 = None;
    for port in 4..200 {
        let mut c = open("192.0.2.1", port).await;
        let mut b = [0u8; 1];
        match within("a line or a close", c.read(&mut b)).await {
            Ok(1) => {
                a4 = Some(c);
                break;
            }
            // Not yet: the server has not seen the first one's close.
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(a4.is_some(), "the freed place was never given again");
    drop((a2, b1));
}

#[tokio::test]
async fn the_per_ip_limit_without_proxy_protocol_counts_the_socket_peer() {
    let opts = ServerOptions {
        max_connections_per_ip: Some(1),
        ..ServerOptions::default()
    };
    let server = TestServer::start(Server::new(Peer).name("p").options(opts));
    let mut first = server.connect().await;
    assert!(line(&mut first).await.starts_with("127.0.0.1:"));
    let mut second = server.connect().await;
    assert!(closed(&mut second).await);
    server
        .events
        .wait_for(EventKind::MaxConnectionsPerIpExceeded, 1)
        .await;
}

/// Answers `GET /peer` with the request's peer.
struct PeerResource;

impl Resource for PeerResource {
    fn routes(&self) -> Vec<String> {
        vec!["/peer".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        req.peer_addr().to_string().into()
    }
}

#[tokio::test]
async fn an_http_request_and_its_log_line_see_the_client() {
    let (out, _guard) = capture_logs();

    let handle = HttpListener::new(Handlers::new().resource(PeerResource))
        .name("web")
        .options(proxied(|_| {}))
        .ip(LOCALHOST)
        .port(0)
        .subscribe(TracingLogger::new(tracing::Level::DEBUG))
        .start()
        .unwrap();
    let target = handle.local_addr().inet().unwrap();
    let front = relay(target).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let port = c.local_addr().unwrap().port();
    c.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    within("the answer", c.read_to_string(&mut response))
        .await
        .unwrap();
    let client = format!("{CLIENT_IP}:{port}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&client), "{response}");
    handle.stop(Duration::from_secs(1)).await;
    let text = out.text();
    assert!(
        text.contains("http.request listener=web") && text.contains(&format!("peer={client}")),
        "{text}"
    );
}

struct PeerProtocol;

impl Protocol for PeerProtocol {
    const IDENTIFIER: &'static str = "test.peer";
    const VERSION: &'static str = "1.0.0";
    type Request = ();
    type Reply = String;
    type Push = ();
}

/// Answers each call with the connection's peer.
struct PeerService;

impl Service for PeerService {
    type Protocol = PeerProtocol;
    type Init = ();

    async fn init(_: &Arc<()>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        Ok(PeerService)
    }

    async fn call(
        &mut self,
        _req: (),
        ctx: &mut Ctx<Self>,
    ) -> Result<atoll::rpc::Reply<String>, BoxError> {
        Ok(ctx.peer().to_string().into())
    }
}

#[tokio::test]
async fn an_rpc_call_sees_the_client() {
    let daemon = Daemon::<PeerService>::new(())
        .plain()
        .ip(LOCALHOST)
        .port(0)
        .options(proxied(|_| {}))
        .start()
        .unwrap();
    let target: SocketAddr = format!("127.0.0.1:{}", daemon.port()).parse().unwrap();
    let front = relay(target).await;
    let client = within(
        "connect",
        Client::<PeerProtocol>::connect(front.to_string()),
    )
    .await
    .unwrap();
    let peer = within("a call", client.call(&())).await.unwrap();
    assert!(
        peer.starts_with(&format!("{CLIENT_IP}:")),
        "the call saw {peer}"
    );
    within("shutdown", daemon.shutdown()).await;
}
