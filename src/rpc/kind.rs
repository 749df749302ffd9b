//! The `rpc` kind of the config file: a daemon running the built-in key-value service, its
//! store in a file under the data directory.

use std::path::{Path, PathBuf};

use super::daemon::Daemon;
use super::kv::{KvService, KvStore};
use super::options::{RpcOptions, DEFAULT_RPC_PORT};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::spec::ListenerSpec;
use crate::tls::TlsConfig;

/// The services the `rpc` kind can run, by the name its `service` key takes.
const SERVICES: &[&str] = &["kv"];

/// The folder under the data directory that holds the stores: `kv`.
const STORE_FOLDER: &str = "kv";

/// Teaches `registry` the `rpc` listener kind: the built-in key-value service
/// ([`KvService`]) on a daemon, its store kept in `data_dir`.
///
/// A listener table of this kind takes the socket server's options, [`RpcOptions`] keys,
/// `service = "kv"` (the default, and the only one built in), the store's file `path` (see
/// [`KvStore::open`]; default is `DATA_DIR/kv/NAME.redb`, NAME the listener's; a relative
/// path is taken from the config file's folder), its bounds `max_value_size` and
/// `max_store_size` (see [`KvStore`]) and `plain = true` for plain TCP. Without `plain` it
/// needs a `[listener.tls]` table: RPC is TLS by default, and with a `cacert` in it, clients
/// must present a certificate that CA signed (or may present none, with
/// `client_auth = "optional"`). Without `ip` and
/// `port` it listens on 127.0.0.1 on any free port, which `atoll serve` prints.
/// The store is opened when the listener starts: a file that cannot be opened (its folder
/// not writable, not a redb file, corrupt) fails the start with an error naming it.
pub fn install(registry: &Registry, data_dir: impl Into<PathBuf>) {
    let data_dir = data_dir.into();
    let dir = data_dir.clone();
    registry.add_kind("rpc", move |spec| launch(spec, &dir));
    // The store is not opened: the running server holds it, locked.
    registry.add_check("rpc", move |spec| plan(spec, &data_dir).map(|p| p.options));
}

/// What an `rpc` listener of a spec runs with, read and checked before anything is opened.
struct Plan {
    /// The store's file.
    path: PathBuf,
    value_size: Option<usize>,
    store_size: Option<usize>,
    rpc: RpcOptions,
    tls: Option<TlsConfig>,
    options: ServerOptions,
}

fn launch(spec: &ListenerSpec, data_dir: &Path) -> Result<ServerHandle> {
    let plan = plan(spec, data_dir)?;
    // Last, once everything else in the table is known good: a mistake there leaves no file.
    let mut store =
        KvStore::open(&plan.path).map_err(|e| e.context(format!("listener `{}`", spec.name)))?;
    if let Some(bytes) = plan.value_size {
        store = store.max_value_size(bytes);
    }
    if let Some(bytes) = plan.store_size {
        store = store.max_store_size(bytes);
    }
    let mut daemon = Daemon::<KvService>::new(store)
        .name(spec.name.clone())
        .options(plan.options)
        .rpc_options(plan.rpc)
        .telemetry(spec.telemetry.clone());
    daemon = match plan.tls {
        Some(config) => daemon.tls(config),
        None => daemon.plain(),
    };
    daemon = daemon.bind(spec.bind());
    Ok(daemon.start()?.server().clone())
}

/// Reads `spec`'s table: every key but the store's file, which only the start opens.
fn plan(spec: &ListenerSpec, data_dir: &Path) -> Result<Plan> {
    let bad = |why: String| {
        Error::with_source(ErrorKind::Config, why).context(format!("listener `{}`", spec.name))
    };
    let mut params = spec.params.clone();
    match params.remove("service") {
        None => {}
        Some(toml::Value::String(s)) if SERVICES.contains(&s.as_str()) => {}
        Some(other) => {
            return Err(bad(format!(
                "unknown service {other} (known: {})",
                SERVICES.join(", ")
            )))
        }
    }
    let plain = match params.remove("plain") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(other) => return Err(bad(format!("`plain` must be true or false, not {other}"))),
    };
    let path = match params.remove("path") {
        None => data_dir
            .join(STORE_FOLDER)
            .join(format!("{}.redb", spec.name)),
        Some(toml::Value::String(p)) if !p.is_empty() => spec.base.join(p),
        Some(other) => return Err(bad(format!("`path` must be a file path, not {other}"))),
    };
    let value_size = take_size(&mut params, "max_value_size").map_err(&bad)?;
    let store_size = take_size(&mut params, "max_store_size").map_err(&bad)?;
    let rpc = crate::options::from_table::<RpcOptions>(params).map_err(bad)?;
    let tls = match (&spec.tls, plain) {
        (Some(tls), false) => Some(
            tls.load()
                .map_err(|e| e.context(format!("listener `{}`", spec.name)))?,
        ),
        (None, true) => None,
        (Some(_), true) => {
            return Err(bad(
                "`plain = true` and a [listener.tls] table: choose one".to_owned()
            ))
        }
        (None, false) => {
            return Err(bad(
                "kind `rpc` needs a [listener.tls] table, or `plain = true` for plain TCP"
                    .to_owned(),
            ))
        }
    };
    let mut options = spec.options.clone();
    if let Some(set) = &spec.set_options {
        if !set.contains("port") {
            options.port = DEFAULT_RPC_PORT;
        }
        if !set.contains("ip") {
            options.ip = std::net::Ipv4Addr::LOCALHOST.into();
        }
    }
    Ok(Plan {
        path,
        value_size,
        store_size,
        rpc,
        tls,
        options,
    })
}

/// Takes the size `name` out of a listener table: a number of bytes, 0 or more.
fn take_size(params: &mut toml::Table, name: &str) -> std::result::Result<Option<usize>, String> {
    match params.remove(name) {
        None => Ok(None),
        Some(toml::Value::Integer(n)) if n >= 0 => usize::try_from(n)
            .map(Some)
            .map_err(|_| format!("`{name}` is too large: {n}")),
        Some(other) => Err(format!("`{name}` must be a number of bytes, not {other}")),
    }
}
