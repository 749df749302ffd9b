//! TLS settings: certificate chains and keys from PEM files, client-certificate verification
//! against a CA file (required or optional), ALPN, and SNI with several certificates.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// TLS settings as written in code or in a config file's `tls` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file of CA certificates. When set, clients are asked for a certificate, which must
    /// be signed by one of them or the handshake fails; whether a client may present none is
    /// [`client_auth`](TlsOptions::client_auth)'s choice. Default is unset (no client
    /// certificates asked).
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Whether a client must present a certificate (`"required"`) or may connect without one
    /// (`"optional"`); a certificate that is presented is verified either way, and the
    /// connection's handler reads it
    /// ([`Socket::peer_certificates`](crate::Socket::peer_certificates)). Only meaningful with
    /// `cacert`: setting it without one is an error. Default is unset, which is
    /// [`ClientAuth::Required`] when `cacert` is set.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// ALPN protocols offered, most preferred first (e.g. `["h2", "http/1.1"]`). Default is
    /// none.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// More certificates, chosen by the server name the client asks for (SNI). A client that
    /// names none of them gets `cert`. Default is none.
    #[serde(default)]
    pub sni: Vec<SniCert>,
}

/// Whether a TLS listener with a client CA ([`TlsOptions::cacert`]) lets clients connect
/// without a certificate; written `"required"` or `"optional"` in a config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client must present a certificate signed by the CA; one without is refused in the
    /// handshake. The default.
    #[default]
    Required,
    /// A client is asked for a certificate and may present none; one it presents must still be
    /// signed by the CA, or the handshake fails.
    Optional,
}

/// A certificate served to clients that ask for `host` through SNI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// The server name, such as `api.example.com`.
    pub host: String,
    /// PEM file with the certificate chain.
    pub cert: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
}

impl TlsOptions {
    /// Options serving the chain in `cert` with the key in `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsOptions {
            cert: cert.into(),
            key: key.into(),
            ..TlsOptions::default()
        }
    }

    /// Asks clients for certificates signed by a CA in `cacert`; they must present one unless
    /// [`client_auth`](TlsOptions::client_auth) says [`ClientAuth::Optional`]. Default is
    /// none (no client certificates asked).
    #[must_use]
    pub fn client_ca(mut self, cacert: impl Into<PathBuf>) -> Self {
        self.cacert = Some(cacert.into());
        self
    }

    /// Whether clients must present a certificate or may connect without one; needs
    /// [`client_ca`](TlsOptions::client_ca).
    ///
    /// ```
    /// use atoll::{ClientAuth, TlsOptions};
    ///
    /// // Clients with a certificate from ca.pem are known by it; the others still connect.
    /// let options = TlsOptions::new("cert.pem", "key.pem")
    ///     .client_ca("ca.pem")
    ///     .client_auth(ClientAuth::Optional);
    /// assert_eq!(options.client_auth, Some(ClientAuth::Optional));
    /// ```
    ///
    /// Default is unset: [`ClientAuth::Required`] when there is a client CA.
    #[must_use]
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = Some(auth);
        self
    }

    /// Offers these ALPN protocols.
    #[must_use]
    pub fn alpn<I: IntoIterator<Item = S>, S: Into<String>>(mut self, protocols: I) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Serves another certificate to clients asking for `host`.
    #[must_use]
    pub fn sni(
        mut self,
        host: impl Into<String>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.sni.push(SniCert {
            host: host.into(),
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Reads every file and builds the TLS configuration; errors name the file at fault, or
    /// say that `client_auth` is set without `cacert`.
    ///
    /// Sessions resume from stateless tickets (one sent per handshake, its keys rotated every
    /// 6 hours), so any number of clients can resume; each `load` makes keys of its own.
    pub fn load(&self) -> Result<TlsConfig> {
        if let (Some(auth), None) = (self.client_auth, &self.cacert) {
            return Err(Error::with_source(
                ErrorKind::Config,
                format!(
                    "client_auth = \"{}\" needs a cacert to verify client certificates against",
                    auth.name()
                ),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let default = certified_key(&provider, &self.cert, &self.key)?;
        let mut by_name = HashMap::new();
        for s in &self.sni {
            by_name.insert(
                s.host.to_ascii_lowercase(),
                certified_key(&provider, &s.cert, &s.key)?,
            );
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::with_source(ErrorKind::Certificate, e))?;
        let builder = match &self.cacert {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| cert_error(ca, e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_auth.unwrap_or_default() {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| cert_error(ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver { by_name, default }));
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // Sessions resume from stateless tickets, under keys that rotate every 6 hours (as
        // nginx's default does): any number of clients can come back without a full
        // handshake, where rustls's default session cache holds 256. One ticket per
        // handshake, as OpenSSL's server sends on a resumption: a second costs both sides a
        // key derivation on every new connection.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("no session ticket keys: {e}"))
        })?;
        config.send_tls13_tickets = 1;
        Ok(TlsConfig::from_rustls(Arc::new(config)))
    }
}

impl ClientAuth {
    /// The name a config file uses.
    fn name(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// A ready TLS server configuration, cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsConfig {
    /// Wraps a rustls configuration built by hand.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsConfig {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        self.acceptor.config()
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &self.rustls().alpn_protocols)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

fn cert_error(path: &Path, why: impl Into<String>) -> Error {
    Error::with_source(ErrorKind::Certificate, why.into()).context(path.display().to_string())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| cert_error(path, pem_reason(e)))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cert_error(path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(cert_error(path, "no PEM certificate in file"));
    }
    Ok(certs)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| cert_error(key, pem_reason(e)))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| cert_error(key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| cert_error(key, format!("key does not match {}: {e}", cert.display())))?;
    Ok(Arc::new(certified))
}
