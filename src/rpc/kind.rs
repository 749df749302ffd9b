//! The `rpc` kind of the config file: a daemon running the built-in key-value service.

use super::daemon::Daemon;
use super::kv::{KvService, KvStore};
use super::options::{RpcOptions, DEFAULT_RPC_PORT};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::registry::Registry;
use crate::spec::ListenerSpec;

/// The services the `rpc` kind can run, by the name its `service` key takes.
const SERVICES: &[&str] = &["kv"];

/// Teaches `registry` the `rpc` listener kind: the built-in key-value service
/// ([`KvService`]) on a daemon.
///
/// A listener table of this kind takes the socket server's options, [`RpcOptions`] keys,
/// `service = "kv"` (the default, and the only one built in), the store's bounds
/// `max_value_size` and `max_store_size` (see [`KvStore`]) and `plain = true` for plain
/// TCP. Without `plain` it needs a `[listener.tls]` table: RPC is TLS by default, and with a
/// `cacert` in it, clients must present a certificate that CA signed. Without `ip` and
/// `port` it listens on 127.0.0.1 on any free port, which `atoll serve` prints.
pub fn install(registry: &Registry) {
    registry.add_kind("rpc", launch);
}

fn launch(spec: &ListenerSpec) -> Result<ServerHandle> {
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
    let mut store = KvStore::new();
    if let Some(bytes) = take_size(&mut params, "max_value_size").map_err(&bad)? {
        store = store.max_value_size(bytes);
    }
    if let Some(bytes) = take_size(&mut params, "max_store_size").map_err(&bad)? {
        store = store.max_store_size(bytes);
    }
    let rpc = crate::options::from_table::<RpcOptions>(params).map_err(bad)?;
    let mut options = spec.options.clone();
    if let Some(set) = &spec.set_options {
        if !set.contains("port") {
            options.port = DEFAULT_RPC_PORT;
        }
        if !set.contains("ip") {
            options.ip = std::net::Ipv4Addr::LOCALHOST.into();
        }
    }
    let mut daemon = Daemon::<KvService>::new(store)
        .name(spec.name.clone())
        .options(options)
        .rpc_options(rpc)
        .telemetry(spec.telemetry.clone());
    daemon = match (&spec.tls, plain) {
        (Some(tls), false) => daemon.tls(
            tls.load()
                .map_err(|e| e.context(format!("listener `{}`", spec.name)))?,
        ),
        (None, true) => daemon.plain(),
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
    daemon = daemon.bind(spec.bind());
    Ok(daemon.start()?.server().clone())
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
