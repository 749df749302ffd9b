//! TLS: client certificates required or optional and verified, stalled handshakes closed, SNI,
//! STARTTLS.

mod common;

use std::time::Duration;

use ::http::Method;
use atoll::echo::Echo;
use atoll::http::{Handlers, HttpListener, Reply, Request, Resource};
use atoll::telemetry::EventKind;
use atoll::{Action, ClientAuth, Handler, Server, Socket, TlsConfig, TlsOptions};
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
    let tls = pki.verifying_clients(None).load().unwrap();
    let server = TestServer::start(Server::new(WhoAmI).tls(tls));

    // A client with a certificate from the trusted CA gets through, and the handler sees it.
    let good = pki.connector(Some((&pki.client_cert, &pki.client_key)), &[]);
    let mut s = within("mtls", good.connect(localhost(), server.connect().await))
        .await
        .expect("handshake with a valid client certificate");
    let mut text = String::new();
    within("read", s.read_to_string(&mut text)).await.ok();
    assert_eq!(text, "certs=1\n");

    // No certificate: refused.
    let bare = pki.connector(None, &[]);
    assert!(within("bare client", talk(&server, bare)).await.is_err());
    // A certificate from another CA: refused too.
    let rogue = pki.connector(Some((&pki.rogue_cert, &pki.rogue_key)), &[]);
    assert!(within("rogue client", talk(&server, rogue)).await.is_err());
    server.events.wait_for(EventKind::HandshakeError, 2).await;
}

/// Talks to `server` through `connector` and reads all it says: an error when the handshake is
/// refused (TLS 1.3 clients learn it on their first read).
async fn talk(
    server: &TestServer,
    connector: tokio_rustls::TlsConnector,
) -> std::io::Result<String> {
    let mut s = connector
        .connect(localhost(), server.connect().await)
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

#[tokio::test]
async fn optional_client_auth_sees_a_certificate_when_given_and_accepts_none() {
    let pki = Pki::new();
    let tls = pki
        .verifying_clients(Some(ClientAuth::Optional))
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(WhoAmI).tls(tls));

    let good = pki.connector(Some((&pki.client_cert, &pki.client_key)), &[]);
    let text = within("client with a certificate", talk(&server, good)).await;
    assert_eq!(
        text.unwrap(),
        "certs=1
"
    );

    let bare = pki.connector(None, &[]);
    let text = within("client without a certificate", talk(&server, bare)).await;
    assert_eq!(
        text.expect("accepted without a certificate"),
        "certs=0
"
    );

    // A certificate that is presented is still verified.
    let rogue = pki.connector(Some((&pki.rogue_cert, &pki.rogue_key)), &[]);
    assert!(within("rogue client", talk(&server, rogue)).await.is_err());
    server.events.wait_for(EventKind::HandshakeError, 1).await;
}

#[tokio::test]
async fn optional_client_auth_echoes_for_clients_with_and_without_certificates() {
    let pki = Pki::new();
    let tls = pki
        .verifying_clients(Some(ClientAuth::Optional))
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(Echo).tls(tls));
    for client in [None, Some((&pki.client_cert, &pki.client_key))] {
        let connect = pki
            .connector(client, &[])
            .connect(localhost(), server.connect().await);
        let mut s = within("handshake", connect).await.expect("accepted");
        assert_eq!(echo_roundtrip(&mut s, b"hello").await, b"hello");
    }
}

/// `GET /who` answers `certs=N`, N the length of the client's certificate chain.
struct Who;

impl Resource for Who {
    fn routes(&self) -> Vec<String> {
        vec!["/who".to_owned()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        let n = req.peer_certificates().map_or(0, <[_]>::len);
        format!("certs={n}").into()
    }
}

#[tokio::test]
async fn optional_client_auth_shows_https_requests_the_certificate_when_there_is_one() {
    let pki = Pki::new();
    let tls = pki
        .verifying_clients(Some(ClientAuth::Optional))
        .alpn(["http/1.1"])
        .load()
        .unwrap();
    let server = HttpListener::new(Handlers::new().resource(Who))
        .ip(std::net::Ipv4Addr::LOCALHOST.into())
        .port(0)
        .tls(tls)
        .start()
        .unwrap();
    let addr = server.local_addr().inet().unwrap();
    let get = |connector: tokio_rustls::TlsConnector| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut s = connector.connect(localhost(), tcp).await?;
        s.write_all(b"GET /who HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let good = pki.connector(Some((&pki.client_cert, &pki.client_key)), &["http/1.1"]);
    let text = within("a request with a certificate", get(good))
        .await
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("certs=1"), "{text}");
    let bare = pki.connector(None, &["http/1.1"]);
    let text = within("a request without a certificate", get(bare)).await;
    let text = text.expect("accepted without a certificate");
    assert!(text.ends_with("certs=0"), "{text}");
    let rogue = pki.connector(Some((&pki.rogue_cert, &pki.rogue_key)), &["http/1.1"]);
    assert!(within("a rogue request", get(rogue)).await.is_err());
    within("stop", server.shutdown()).await;
}

#[tokio::test]
async fn required_client_auth_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let tls = pki
        .verifying_clients(Some(ClientAuth::Required))
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(WhoAmI).tls(tls));
    let bare = pki.connector(None, &[]);
    assert!(within("bare client", talk(&server, bare)).await.is_err());
    let good = pki.connector(Some((&pki.client_cert, &pki.client_key)), &[]);
    let text = within("client with a certificate", talk(&server, good)).await;
    assert_eq!(
        text.unwrap(),
        "certs=1
"
    );
    server.events.wait_for(EventKind::HandshakeError, 1).await;
}

#[tokio::test]
async fn an_echo_listener_from_a_config_file_takes_client_auth() {
    let pki = Pki::new();
    let text = |name: &str, auth: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\n\
             [listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n\
             cacert = \"ca.pem\"\n{auth}"
        )
    };
    let registry = atoll::Registry::new();
    let start = |name: &str, auth: &str| {
        let path = pki.dir.path().join("atoll.toml");
        let config = atoll::Config::parse(&text(name, auth), &path).expect("the config parses");
        let handle = registry
            .start_spec(&config.listeners[0])
            .expect("it starts");
        handle.local_addr().inet().unwrap()
    };
    let optional = start("optional", "client_auth = \"optional\"\n");
    let tcp = within("connect", tokio::net::TcpStream::connect(optional)).await;
    let connect = pki.connector(None, &[]).connect(localhost(), tcp.unwrap());
    let mut s = within("handshake", connect).await.expect("accepted");
    assert_eq!(echo_roundtrip(&mut s, b"anonymous").await, b"anonymous");

    // Without the key, as before: a certificate is required.
    let required = start("required", "");
    let talk = async {
        let tcp = tokio::net::TcpStream::connect(required).await?;
        let mut s = pki.connector(None, &[]).connect(localhost(), tcp).await?;
        s.write_all(b"hello").await?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    assert!(within("a client without a certificate", talk)
        .await
        .is_err());
    for name in ["optional", "required"] {
        within("stop", registry.get(name).unwrap().shutdown()).await;
    }

    // client_auth without cacert: the start fails, naming the listener and the fault.
    let lone = text("lone", "client_auth = \"optional\"\n").replace("cacert = \"ca.pem\"\n", "");
    let config = atoll::Config::parse(&lone, &pki.dir.path().join("atoll.toml")).unwrap();
    let err = registry.start_spec(&config.listeners[0]).unwrap_err();
    assert_eq!(err.kind(), atoll::ErrorKind::Config);
    let message = err.to_string();
    assert!(message.contains("listener `lone`"), "{message}");
    assert!(message.contains("needs a cacert"), "{message}");
}

#[test]
fn client_auth_is_read_from_toml_and_needs_a_cacert() {
    let read = |text: &str| toml::from_str::<TlsOptions>(text);
    let base = "cert = \"c.pem\"\nkey = \"k.pem\"\n";
    assert_eq!(read(base).unwrap().client_auth, None, "the default");
    for (value, auth) in [
        ("optional", ClientAuth::Optional),
        ("required", ClientAuth::Required),
    ] {
        let text = format!("{base}cacert = \"ca.pem\"\nclient_auth = \"{value}\"\n");
        assert_eq!(read(&text).unwrap().client_auth, Some(auth));
    }
    let err = read(&format!("{base}client_auth = \"sometimes\"\n")).unwrap_err();
    assert!(err.to_string().contains("sometimes"), "{err}");

    let pki = Pki::new();
    let err = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .client_auth(ClientAuth::Optional)
        .load()
        .unwrap_err();
    assert_eq!(err.kind(), atoll::ErrorKind::Config);
    assert!(err.to_string().contains("needs a cacert"), "{err}");
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

#[tokio::test]
async fn sessions_resume_for_more_clients_than_a_session_cache_holds() {
    use rustls::HandshakeKind;
    let pki = Pki::new();
    let tls = TlsOptions::new(&pki.server_cert, &pki.server_key)
        .load()
        .unwrap();
    let server = TestServer::start(Server::new(Echo).tls(tls));
    // 300 clients, each with a session store of its own: more than the 256 sessions rustls's
    // default server cache holds: with it, a second pass in the same order resumed none.
    let clients: Vec<_> = (0..300).map(|_| pki.connector(None, &[])).collect();
    for round in ["first", "again"] {
        let mut resumed = 0;
        for client in &clients {
            let mut s = within(round, client.connect(localhost(), server.connect().await))
                .await
                .expect("handshake");
            // A round trip: the client takes in the ticket the server sent after the handshake.
            assert_eq!(echo_roundtrip(&mut s, b"hi").await, b"hi");
            if s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                resumed += 1;
            }
        }
        let expected = if round == "first" { 0 } else { clients.len() };
        assert_eq!(resumed, expected, "{round}: sessions resumed");
    }
}
