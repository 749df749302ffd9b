//! Echo over TCP, TLS and a Unix socket, through real sockets.

mod common;

use atoll::echo::Echo;
use atoll::telemetry::EventKind;
use atoll::{Server, TlsOptions};
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn echoes_over_tcp_to_two_clients_at_once() {
    let server = TestServer::start(Server::new(Echo).name("tcp-echo"));
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    assert_eq!(echo_roundtrip(&mut a, b"hello").await, b"hello");
    assert_eq!(echo_roundtrip(&mut b, b"world").await, b"world");
    assert_eq!(
        echo_roundtrip(&mut a, &[7u8; 100_000]).await,
        vec![7u8; 100_000]
    );
    assert_eq!(server.handle.connection_count(), 2);
}

#[tokio::test]
async fn echoes_over_tls_with_alpn() {
    let pki = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .alpn(["echo/1"])
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(Echo).tls(tls));
    let tcp = server.connect().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = within(
        "handshake",
        pki.connector(None, &["echo/1"]).connect(name, tcp),
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"echo/1"[..]));
    assert_eq!(echo_roundtrip(&mut tls, b"secret").await, b"secret");
    server.events.wait_for(EventKind::Handshake, 1).await;
}

#[tokio::test]
async fn echoes_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let handle = Server::new(Echo).unix(&path).start().unwrap();
    assert_eq!(
        handle.local_addr().to_string(),
        format!("unix:{}", path.display())
    );
    let mut s = within("connect", tokio::net::UnixStream::connect(&path))
        .await
        .unwrap();
    assert_eq!(echo_roundtrip(&mut s, b"over unix").await, b"over unix");
    s.shutdown().await.unwrap();
    let report = within("stop", handle.stop(WAIT)).await;
    assert_eq!(report.forced, 0);
}

#[tokio::test]
async fn the_default_address_serves_ipv4_and_ipv6() {
    // Default ip is `::` with IPv6-only off: one socket for both families.
    let handle = Server::new(Echo).port(0).start().unwrap();
    let port = handle.local_addr().inet().unwrap().port();
    for host in ["127.0.0.1", "[::1]"] {
        let addr = format!("{host}:{port}");
        let mut s = within("connect", tokio::net::TcpStream::connect(&addr))
            .await
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(
            echo_roundtrip(&mut s, host.as_bytes()).await,
            host.as_bytes()
        );
    }
    within("stop", handle.stop(WAIT)).await;
}
