//! Shared test helpers: a server on 127.0.0.1:0 stopped on drop, an event collector, generated
//! certificates and a TLS client, and a bound on every wait.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll::telemetry::{Event, EventKind};
use atoll::{Handler, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod control;
pub mod h2load;
pub mod http;
pub mod kv_load;
pub mod process;
pub mod prometheus;
pub mod rng;

/// Every wait in a test is bounded by this, so a hang fails fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A server on 127.0.0.1:0, stopped (with a short timeout) when dropped.
pub struct TestServer {
    pub handle: ServerHandle,
    pub events: Events,
}

impl TestServer {
    pub fn start<H: Handler>(server: Server<H>) -> Self {
        let events = Events::default();
        let handle = server
            .ip(LOCALHOST)
            .port(0)
            .subscribe(events.clone())
            .start()
            .expect("server starts");
        TestServer { handle, events }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr().inet().expect("an IP listener")
    }

    pub async fn connect(&self) -> TcpStream {
        within("connect", TcpStream::connect(self.addr()))
            .await
            .expect("connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                handle.stop(Duration::from_millis(100)).await;
            });
        }
    }
}

/// An echo server named `name` on 127.0.0.1:0 that takes one connection at a time: a second
/// waits once, 50 ms, for a place, then is refused (`MaxConnectionsExceeded`). `subscriber`
/// sees its events too.
pub fn echo_one_at_a_time(name: &str, subscriber: impl atoll::telemetry::Subscriber) -> TestServer {
    TestServer::start(
        Server::new(atoll::echo::Echo)
            .name(name)
            .configure(|o| {
                o.max_connections = 1;
                o.max_connections_retry_wait = Duration::from_millis(50);
                o.max_connections_retry_count = 1;
            })
            .subscribe(subscriber),
    )
}

/// Collects every event, in order.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<Recorded>>>);

#[derive(Debug, Clone)]
pub struct Recorded {
    pub kind: EventKind,
    pub connection: Option<u64>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    pub recv_bytes: Option<u64>,
    pub peer: Option<String>,
}

impl atoll::telemetry::Subscriber for Events {
    fn on_event(&self, e: &Event<'_>) {
        self.0.lock().unwrap().push(Recorded {
            kind: e.kind,
            connection: e.connection,
            bytes: e.bytes,
            error: e.error.map(|e| e.to_string()),
            recv_bytes: e.stats.map(|s| s.recv_bytes),
            peer: e.peer.map(|p| p.to_string()),
        });
    }
}

impl Events {
    pub fn kinds(&self) -> Vec<EventKind> {
        self.0.lock().unwrap().iter().map(|r| r.kind).collect()
    }

    pub fn count(&self, kind: EventKind) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().clone()
    }

    /// The error text of the first event of `kind`.
    pub fn first_error(&self, kind: EventKind) -> Option<String> {
        self.all()
            .into_iter()
            .find(|e| e.kind == kind)
            .and_then(|e| e.error)
    }

    /// Waits until at least `n` events of `kind` were seen.
    pub async fn wait_for(&self, kind: EventKind, n: usize) {
        within(&format!("{n} x {kind}"), async {
            while self.count(kind) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// Sends `msg` and reads back as many bytes.
pub async fn echo_roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> Vec<u8> {
    within("echo", async {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).await.expect("read echo");
        back
    })
    .await
}

/// Sends `msg` on a blocking stream and asserts the same bytes come back within [`WAIT`].
pub fn echo_sync(stream: &mut std::net::TcpStream, msg: &[u8]) {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// Connects to the echo listener at `addr`, checks one round trip of `msg`, and returns the
/// connection, still open.
pub fn echo_at(addr: SocketAddr, msg: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    echo_sync(&mut s, msg);
    s
}

/// One round trip on a new echo connection.
pub fn echo_once(addr: SocketAddr, n: u64) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    let msg = format!("probe {n:012}\n");
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    match back == msg.as_bytes() {
        true => Ok(()),
        false => Err(format!("echoed {:?}", String::from_utf8_lossy(&back))),
    }
}

/// True when the connection was closed by the server (EOF or reset) within the wait.
pub async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

/// A CA, a server certificate for `localhost` and a client certificate, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let make_ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca, ca_key) = make_ca("atoll test CA");
        let (other, other_key) = make_ca("some other CA");
        let leaf = |names: Vec<String>, issuer: &rcgen::Certificate, issuer_key: &KeyPair| {
            let p = CertificateParams::new(names).unwrap();
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, issuer, issuer_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca, &ca_key);
        let (client_cert, client_key) = leaf(vec!["client".into()], &ca, &ca_key);
        let (rogue_cert, rogue_key) = leaf(vec!["rogue".into()], &other, &other_key);
        Pki {
            ca: write("ca.pem", ca.pem()),
            other_ca: write("other-ca.pem", other.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            rogue_cert: write("rogue.pem", rogue_cert),
            rogue_key: write("rogue-key.pem", rogue_key),
            dir,
        }
    }

    /// TLS options for a server with this PKI's server certificate that verifies client
    /// certificates against its CA: `auth` says whether one is required or optional, and
    /// `None` leaves the default (required).
    pub fn verifying_clients(&self, auth: Option<atoll::ClientAuth>) -> atoll::TlsOptions {
        let tls = atoll::TlsOptions::new(&self.server_cert, &self.server_key).client_ca(&self.ca);
        match auth {
            Some(auth) => tls.client_auth(auth),
            None => tls,
        }
    }

    /// A TLS client trusting the test CA, optionally presenting a certificate.
    pub fn connector(
        &self,
        client: Option<(&PathBuf, &PathBuf)>,
        alpn: &[&str],
    ) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// What `tracing` logs on this thread, at DEBUG and above, from [`capture_logs`] until the
/// guard drops.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's `tracing` output (a current-thread test runtime's tasks included).
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}
