//! A listener described as data: name, kind, options and TLS files, as a `[[listener]]` table
//! of a config file declares it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use crate::bind::Bind;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::Handler;
use crate::options::ServerOptions;
use crate::server::Server;
use crate::sockets::Carried;
use crate::telemetry::Telemetry;
use crate::tls::TlsOptions;

/// Everything needed to start a listener of a registered kind.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// The listener's name, unique within a registry.
    pub name: String,
    /// The handler kind, as registered in a [`Registry`](crate::Registry) (`"echo"`, ...).
    pub kind: String,
    /// Server options.
    pub options: ServerOptions,
    /// TLS files, for a TLS listener.
    pub tls: Option<TlsOptions>,
    /// A Unix socket path to listen on instead of TCP.
    pub unix: Option<PathBuf>,
    /// The keys of the listener table that are not server options: settings of the kind,
    /// which its launcher reads (and rejects when unknown). Default is empty.
    pub params: toml::Table,
    /// The folder relative paths in `params` start from: the config file's. Default is the
    /// working directory (empty).
    pub base: PathBuf,
    /// The server options the listener table set, so a kind can tell a default from a
    /// choice (an HTTP listener's default port is 8080); `None` for a spec built in code,
    /// whose options are taken as they are.
    pub set_options: Option<BTreeSet<String>>,
    /// The telemetry hub the listener will use: subscribers attached here before the start
    /// see the listener's first events too.
    pub telemetry: Arc<Telemetry>,
    /// Listening sockets to adopt instead of binding, set by the registry from its
    /// [`SocketPool`](crate::SocketPool); see [`bind`](Self::bind).
    pub(crate) carried: Carried,
    /// The size and modification time of each TLS file when the spec was read, so a reload
    /// tells renewed certificates from unchanged ones (the paths alone are the same).
    pub(crate) tls_stamp: Vec<Option<(u64, SystemTime)>>,
}

impl ListenerSpec {
    /// A spec with default options.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        ListenerSpec {
            name: name.into(),
            kind: kind.into(),
            options: ServerOptions::default(),
            tls: None,
            unix: None,
            params: toml::Table::new(),
            base: PathBuf::new(),
            set_options: None,
            telemetry: Arc::default(),
            carried: Carried::default(),
            tls_stamp: Vec::new(),
        }
    }

    /// Reads a spec from one `[[listener]]` table. `name` and `kind` are required; `tls` and
    /// `unix` are optional; a [`ServerOptions`] field goes to `options`, any other key to
    /// `params`, for the kind to read. Relative file paths
    /// are taken from `base` (the config file's folder). Errors name the field at fault.
    pub fn from_toml(table: &toml::Table, base: &Path) -> std::result::Result<Self, String> {
        let mut rest = table.clone();
        let mut text = |key: &str| -> std::result::Result<String, String> {
            match rest.remove(key) {
                Some(toml::Value::String(s)) if !s.is_empty() => Ok(s),
                Some(other) => Err(format!("`{key}` must be a non-empty string, not {other}")),
                None => Err(format!("missing `{key}`")),
            }
        };
        let name = text("name")?;
        let kind = text("kind")?;
        let tls = match rest.remove("tls") {
            None => None,
            Some(v) => {
                let mut t = TlsOptions::deserialize(v).map_err(|e| format!("in `tls`: {e}"))?;
                t.cert = base.join(&t.cert);
                t.key = base.join(&t.key);
                t.cacert = t.cacert.map(|p| base.join(p));
                for s in &mut t.sni {
                    s.cert = base.join(&s.cert);
                    s.key = base.join(&s.key);
                }
                Some(t)
            }
        };
        let unix = match rest.remove("unix") {
            None => None,
            Some(toml::Value::String(p)) => Some(base.join(p)),
            Some(other) => return Err(format!("`unix` must be a path, not {other}")),
        };
        let fields = crate::options::field_names();
        let kind_keys: Vec<String> = rest
            .keys()
            .filter(|k| !fields.contains(&k.as_str()))
            .cloned()
            .collect();
        let params: toml::Table = kind_keys
            .into_iter()
            .filter_map(|k| rest.remove(&k).map(|v| (k, v)))
            .collect();
        let set_options = Some(rest.keys().cloned().collect());
        let options = crate::options::from_table::<ServerOptions>(rest)?;
        options.validate()?;
        Ok(ListenerSpec {
            name,
            kind,
            options,
            unix,
            params,
            base: base.to_owned(),
            set_options,
            telemetry: Arc::default(),
            carried: Carried::default(),
            tls_stamp: tls.as_ref().map(stamp_files).unwrap_or_default(),
            tls,
        })
    }

    /// Fails, naming the first key, when the spec has `params`: for kinds that take none.
    pub fn expect_no_params(&self) -> Result<()> {
        match self.params.keys().next() {
            None => Ok(()),
            Some(key) => Err(Error::with_source(
                ErrorKind::Config,
                format!("unknown field `{key}` for kind `{}`", self.kind),
            )
            .context(format!("listener `{}`", self.name))),
        }
    }

    /// Where the listener gets its sockets: the ones the registry found waiting for it, when
    /// they fit its address (taken once: a second call binds); else a Unix socket at
    /// [`unix`](Self::unix); else TCP.
    pub fn bind(&self) -> Bind {
        match (self.carried.take(), &self.unix) {
            (Some(sockets), unix) => Bind::Inherited {
                sockets,
                unix: unix.clone(),
            },
            (None, Some(path)) => Bind::Unix(path.clone()),
            (None, None) => Bind::Tcp,
        }
    }

    /// Whether `other` describes the same listener: same name, kind, options, TLS files, Unix
    /// path and kind settings.
    pub fn same_as(&self, other: &ListenerSpec) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.options == other.options
            && self.tls == other.tls
            && self.unix == other.unix
            && self.params == other.params
            && self.base == other.base
    }

    /// Whether `other` binds the same address: same `ip`, `port` and `unix`.
    pub fn same_address(&self, other: &ListenerSpec) -> bool {
        self.options.ip == other.options.ip
            && self.options.port == other.options.port
            && self.unix == other.unix
    }

    /// A server for this spec, running `handler`: name, options, Unix path and TLS (files read
    /// now) applied.
    pub fn server<H: Handler>(&self, handler: H) -> Result<Server<H>> {
        let mut server = Server::new(handler)
            .name(self.name.clone())
            .options(self.options.clone())
            .telemetry(self.telemetry.clone());
        server = server.bind(self.bind());
        if let Some(tls) = &self.tls {
            let config = tls
                .load()
                .map_err(|e| e.context(format!("listener `{}`", self.name)))?;
            server = server.tls(config);
        }
        Ok(server)
    }
}

fn stamp_files(tls: &TlsOptions) -> Vec<Option<(u64, SystemTime)>> {
    let mut files = vec![&tls.cert, &tls.key];
    files.extend(&tls.cacert);
    for sni in &tls.sni {
        files.push(&sni.cert);
        files.push(&sni.key);
    }
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        })
        .collect()
}

pub(crate) fn unknown_kind(spec: &ListenerSpec, known: &[String]) -> Error {
    Error::with_source(
        ErrorKind::Config,
        format!("unknown kind `{}` (known: {})", spec.kind, known.join(", ")),
    )
    .context(format!("listener `{}`", spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<ListenerSpec, String> {
        ListenerSpec::from_toml(
            &text.parse::<toml::Table>().unwrap(),
            Path::new("/etc/atoll"),
        )
    }

    #[test]
    fn reads_a_listener_table() {
        let s = parse(
            "name = \"e\"\nkind = \"echo\"\nport = 0\nip = \"127.0.0.1\"\n[tls]\ncert = \"c.pem\"\nkey = \"/k.pem\"",
        )
        .unwrap();
        assert_eq!(
            (s.name.as_str(), s.kind.as_str(), s.options.port),
            ("e", "echo", 0)
        );
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/atoll/c.pem"));
        assert_eq!(tls.key, Path::new("/k.pem"));
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(parse("kind = \"echo\"").unwrap_err(), "missing `name`");
        let e = parse("name = \"e\"\nkind = \"echo\"\nport = 70000").unwrap_err();
        assert!(e.contains("70000") || e.contains("u16"), "{e}");
        let s = parse("name = \"e\"\nkind = \"echo\"\nprot = 1").unwrap();
        let e = s.expect_no_params().unwrap_err().to_string();
        assert!(e.contains("unknown field `prot`"), "{e}");
        let e = parse("name = \"e\"\nkind = \"echo\"\nnum_acceptors = 0").unwrap_err();
        assert!(e.contains("num_acceptors"), "{e}");
        let e = parse("name = \"e\"\nkind = \"echo\"\n[tls]\ncert = \"c\"").unwrap_err();
        assert!(e.contains("missing field `key`"), "{e}");
    }
}
