//! The client's transport: [`ClientTls`], its settings for mutual TLS, and the stream a
//! connection runs over (plain TCP or TLS), dialled with [`dial`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::RpcError;

/// TLS settings of a [`Client`](super::Client): the CA the server's certificate must be signed
/// by, and the client's own certificate for daemons that require one (mutual TLS).
///
/// ```no_run
/// use atoll::rpc::ClientTls;
///
/// let tls = ClientTls::new("ca.pem")
///     .client_cert("client.pem", "client-key.pem")
///     .server_name("rpc.example.com");
/// ```
#[derive(Clone)]
pub struct ClientTls {
    source: Source,
    server_name: Option<String>,
}

#[derive(Clone)]
enum Source {
    Files {
        ca: PathBuf,
        cert: Option<(PathBuf, PathBuf)>,
    },
    Rustls(Arc<rustls::ClientConfig>),
}

impl ClientTls {
    /// Verifies the server's certificate against the CA certificates in the PEM file `ca_file`.
    /// The files are read when the client connects.
    pub fn new(ca_file: impl Into<PathBuf>) -> ClientTls {
        ClientTls {
            source: Source::Files {
                ca: ca_file.into(),
                cert: None,
            },
            server_name: None,
        }
    }

    /// Uses a rustls configuration built by hand (its roots, client certificate, versions).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            source: Source::Rustls(config),
            server_name: None,
        }
    }

    /// Presents the certificate chain in the PEM file `cert_file` with the private key in
    /// `key_file`, for daemons that require client certificates. Ignored with
    /// [`from_rustls`](ClientTls::from_rustls). Default is no client certificate.
    #[must_use]
    pub fn client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        if let Source::Files { cert, .. } = &mut self.source {
            *cert = Some((cert_file.into(), key_file.into()));
        }
        self
    }

    /// The name the server's certificate must carry (and the SNI sent). Default is the host
    /// part of the client's address (a DNS name or an IP address).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the files and builds the connector for a client of `addr`.
    pub(super) fn connector(&self, addr: &str) -> Result<Tls, RpcError> {
        let config = match &self.source {
            Source::Rustls(config) => config.clone(),
            Source::Files { ca, cert } => Arc::new(load(ca, cert.as_ref())?),
        };
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_owned(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| RpcError::Tls(format!("server name `{name}`: {e}")))?;
        Ok(Tls {
            connector: TlsConnector::from(config),
            server_name,
        })
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientTls");
        match &self.source {
            Source::Files { ca, cert } => d.field("ca", ca).field("client_cert", cert),
            Source::Rustls(_) => d.field("rustls", &"ClientConfig"),
        };
        d.field("server_name", &self.server_name).finish()
    }
}

/// The host part of `host:port`, without the brackets of an IPv6 address.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn load(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Result<rustls::ClientConfig, RpcError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| RpcError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RpcError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| RpcError::Tls(format!("{}: {e}", key.display())))
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(RpcError::Tls(format!(
            "{}: no PEM certificate in file",
            path.display()
        )));
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> RpcError {
    let why = match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    };
    RpcError::Tls(format!("{}: {why}", path.display()))
}

/// A ready TLS connector and the name the server must prove.
#[derive(Clone)]
pub(super) struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// Connects to `addr` (resolving it), then makes the TLS handshake when `tls` is set.
pub(super) async fn dial(addr: &str, tls: Option<&Tls>) -> Result<Io, RpcError> {
    let tcp = TcpStream::connect(addr).await.map_err(RpcError::Connect)?;
    // Calls are small and latency-bound: never wait to fill a segment.
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Io::Plain(tcp)),
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), tcp)
                .await
                .map_err(|e| tls_error(&e).unwrap_or_else(|| RpcError::Tls(e.to_string())))?;
            Ok(Io::Tls(Box::new(stream)))
        }
    }
}

/// The TLS failure inside an I/O error, if it is one (an alert from the server refusing the
/// client's certificate arrives as the first read after the handshake, with TLS 1.3).
pub(super) fn tls_error(e: &io::Error) -> Option<RpcError> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(RpcError::Tls(inner.to_string()))
}

/// The stream of one connection.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(host_of("localhost:7000"), "localhost");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = ClientTls::new("/nonexistent/ca.pem")
            .connector("localhost:1")
            .err()
            .unwrap();
        assert!(
            matches!(&err, RpcError::Tls(m) if m.contains("/nonexistent/ca.pem")),
            "{err}"
        );
    }
}
