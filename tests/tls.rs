//! TLS: client certificates required and verified, stalled handshakes closed, SNI, STARTTLS.

mod common;

use std::time::Duration;

use atoll::echo::Echo;
use atoll::telemetry::EventKind;
use atoll::{Action, Handler, Server, Socket, TlsConfig, TlsOptions};
use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Reports the client certificate's size back, to show the handler sees it.
#[derive(Clone)]
struct WhoAmI;

impl Handler for WhoAmI {
    async fn handle_connection(&mut self, socket: &mut Socket) -> Action {
        let n = socket.peer_certificates().map_or(0, |c| c.len());
        let _ = socket.send(format!("certs={n}\n").as_bytes()).await;
        Action::Close
    }
}

#[tokio::test]
async fn client_certificate_required_and_verified() {
    let pki = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .client_ca(&pki.ca)
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(WhoAmI).tls(tls));

    // A client with a certificate from the trusted CA gets through, and the handler sees it.
    let good = pki.connector(Some((&pki.client_cert, &pki.client_key)), &[]);
    let mut s = within("mtls", good.connect(localhost(), server.connect().await))
        .await
        .expect("handshake with a valid client certificate");
    let mut text = String::new();
    within("read", s.read_to_string(&mut text)).await.ok();
    assert_eq!(text, "certs=1\n");

    // Talks to the server and reads all it says: an error when the handshake is refused
    // (TLS 1.3 clients learn it on their first read).
    let server = &server;
    let talk = |connector: tokio_rustls::TlsConnector| async move {
        let mut s = connector
            .connect(localhost(), server.connect().await)
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    // No certificate: refused.
    let bare = pki.connector(None, &[]);
    assert!(within("bare client", talk(bare)).await.is_err());
    // A certificate from another CA: refused too.
    let rogue = pki.connector(Some((&pki.rogue_cert, &pki.rogue_key)), &[]);
    assert!(within("rogue client", talk(rogue)).await.is_err());
    server.events.wait_for(EventKind::HandshakeError, 2).await;
}

#[tokio::test]
async fn stalled_handshake_is_closed_and_reported() {
    let pki = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .load()
        .unwrap();
    let server = TestServer::start(
        Server::new(Echo)
            .tls(tls)
            .configure(|o| o.handshake_timeout = Duration::from_millis(200)),
    );
    // Connect and say nothing: the server must give up on the handshake and close.
    let mut silent = server.connect().await;
    assert!(
        closed_by_server(&mut silent).await,
        "stalled handshake left open"
    );
    server.events.wait_for(EventKind::HandshakeError, 1).await;
    let err = server
        .events
        .first_error(EventKind::HandshakeError)
        .unwrap();
    assert!(err.contains("not finished within"), "{err}");
    // The listener goes on.
    let tls = pki
        .connector(None, &[])
        .connect(localhost(), server.connect().await);
    let mut s = within("handshake", tls).await.unwrap();
    assert_eq!(echo_roundtrip(&mut s, b"still here").await, b"still here");
}

#[tokio::test]
async fn sni_picks_the_certificate_by_name() {
    let pki = Pki::new();
    let alt = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .sni("localhost", &alt.server_cert, &alt.server_key)
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(Echo).tls(tls));
    // Asking for `localhost` gets the SNI certificate, signed by the other CA: only a client
    // trusting that CA completes the handshake.
    let trusting_alt = alt.connector(None, &[]);
    let mut s = within(
        "sni",
        trusting_alt.connect(localhost(), server.connect().await),
    )
    .await
    .expect("SNI certificate served");
    assert_eq!(echo_roundtrip(&mut s, b"sni").await, b"sni");
    let trusting_default = pki.connector(None, &[]);
    assert!(within(
        "sni",
        trusting_default.connect(localhost(), server.connect().await)
    )
    .await
    .is_err());
    // Asking for an IP (no SNI) gets the default certificate.
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    let mut s = within(
        "default",
        trusting_default.connect(ip, server.connect().await),
    )
    .await
    .expect("default certificate served");
    assert_eq!(echo_roundtrip(&mut s, b"default").await, b"default");
}

#[tokio::test]
async fn bad_certificate_files_name_the_file() {
    let pki = Pki::new();
    let missing = pki.dir.path().join("nope.pem");
    let err = TlsOptions::new(&missing, &pki.server_key)
        .load()
        .unwrap_err();
    assert_eq!(err.kind(), atoll::ErrorKind::Certificate);
    assert!(err.to_string().contains("nope.pem"), "{err}");
    // A key that does not belong to the certificate.
    let err = TlsOptions::new(&pki.server_cert, &pki.client_key)
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // A file that is not PEM at all.
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = TlsOptions::new(&junk, &pki.server_key).load().unwrap_err();
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

/// A line protocol that switches to TLS on `STARTTLS`, then echoes.
#[derive(Clone)]
struct StartTls {
    tls: TlsConfig,
    secure: bool,
}

impl Handler for StartTls {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        if !self.secure && data == b"STARTTLS\n" {
            if socket.send(b"GO\n").await.is_err() {
                return Action::Close;
            }
            self.secure = true;
            return Action::StartTls(self.tls.clone());
        }
        let reply = if socket.is_secure() {
            data.to_vec()
        } else {
            b"PLAIN\n".to_vec()
        };
        match socket.send(&reply).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }
}

#[tokio::test]
async fn starttls_upgrades_a_live_connection() {
    let pki = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(StartTls { tls, secure: false }));
    let mut tcp = server.connect().await;
    assert_eq!(echo_roundtrip(&mut tcp, b"hello\n").await, b"PLAIN\n");
    tcp.write_all(b"STARTTLS\n").await.unwrap();
    let mut go = [0u8; 3];
    within("GO", tcp.read_exact(&mut go)).await.unwrap();
    assert_eq!(&go, b"GO\n");
    let mut s = within(
        "upgrade",
        pki.connector(None, &[]).connect(localhost(), tcp),
    )
    .await
    .expect("STARTTLS handshake");
    assert_eq!(
        echo_roundtrip(&mut s, b"now secret\n").await,
        b"now secret\n"
    );
}
