//! The resource catalogue: resource types under the names a config file uses, and the `http`
//! and `https` listener kinds that build their handlers from it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::builtin::{Health, Listeners, WebSocketEcho};
use super::dispatch::Endpoint;
use super::handlers::Handlers;
use super::listener::HttpListener;
use super::options::{HttpOptions, DEFAULT_HTTP_PORT};
use super::statics::StaticFiles;
use super::statics_endpoint::StaticEndpoint;
use super::websocket::WebSocket;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::spec::ListenerSpec;
use crate::telemetry::FailureLogBudget;

type Factory = Arc<dyn Fn(&Params) -> std::result::Result<Arc<dyn Endpoint>, String> + Send + Sync>;

/// The settings a config gives one resource: every key of its entry but `name`.
#[derive(Debug, Clone)]
pub struct Params {
    /// The keys.
    pub table: toml::Table,
    /// The config file's folder: relative paths start there.
    pub base: PathBuf,
    /// The listener's failure log budget (its telemetry hub's,
    /// [`Telemetry::failure_log_budget`](crate::telemetry::Telemetry::failure_log_budget)),
    /// for resources that log what a peer can trigger. Default is 10 lines per 10 s.
    pub failure_log_budget: FailureLogBudget,
}

impl Params {
    /// The settings as a serde type; use `#[serde(deny_unknown_fields)]` so a typo is named.
    pub fn parse<T: DeserializeOwned>(&self) -> std::result::Result<T, String> {
        T::deserialize(toml::Value::Table(self.table.clone())).map_err(|e| e.message().to_owned())
    }

    /// A path setting, taken from the config file's folder when relative.
    pub fn path(&self, key: &str) -> std::result::Result<Option<PathBuf>, String> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(p)) => Ok(Some(self.base.join(p))),
            Some(other) => Err(format!("`{key}` must be a path, not {other}")),
        }
    }
}

/// Resource types by name, for `[[listener.handlers]]` tables to use.
///
/// ```toml
/// [[listener]]
/// name = "web"
/// kind = "http"
/// port = 8080
///
/// [[listener.handlers]]
/// host = "_"                      # default
/// resources = ["health", "listeners", { name = "static", dir = "site" }]
/// # a static resource's cache (defaults: 64 MiB, trusted for 1 s, contents up to 256 KiB):
/// # { name = "static", dir = "site", cache = { size = 0 } }
/// ```
#[derive(Clone, Default)]
pub struct Catalogue {
    entries: BTreeMap<String, Factory>,
}

impl fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.keys()).finish()
    }
}

impl Catalogue {
    /// An empty catalogue.
    pub fn new() -> Catalogue {
        Catalogue::default()
    }

    /// The resources the binary ships: `health` (settings `path`, default `/health`, and
    /// `version`), `listeners` (the running listeners of `registry`, setting `prefix`,
    /// default `/listeners`), `static` (the files of `dir` under `prefix`, default `/`) and
    /// `websocket_echo` (a [`WebSocket`] route echoing every message, setting `path`, default
    /// `/ws`, and the route's own: `origins`, `max_message_size`, `max_frame_size`,
    /// `read_timeout`, `ping_interval`, `send_queue`, `compression`, `compress_min_size`).
    pub fn builtin(registry: &Registry) -> Catalogue {
        Catalogue::builtin_for(registry, env!("CARGO_PKG_VERSION"))
    }

    /// [`builtin`](Self::builtin), with `version` as the health check's default version:
    /// `atoll serve` passes the version of the release it runs from.
    pub fn builtin_for(registry: &Registry, version: &str) -> Catalogue {
        let default_version = version.to_owned();
        let mut c = Catalogue::new();
        c.add("health", move |p| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct S {
                path: Option<String>,
                version: Option<String>,
            }
            let s: S = p.parse()?;
            Ok(Health::new(
                s.path.unwrap_or_else(|| "/health".to_owned()),
                s.version.unwrap_or_else(|| default_version.clone()),
            ))
        });
        let registry = registry.clone();
        c.add("listeners", move |p| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct S {
                prefix: Option<String>,
            }
            let s: S = p.parse()?;
            let l = Listeners::new(registry.clone());
            Ok(match s.prefix {
                Some(prefix) => l.at(prefix),
                None => l,
            })
        });
        c.entries.insert(
            "static".to_owned(),
            Arc::new(|p: &Params| {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct S {
                    #[allow(dead_code)] // read through `Params::path`
                    dir: String,
                    prefix: Option<String>,
                    /// The cache's settings, as a listener's `static_cache` gives them for
                    /// its `static_dir`.
                    #[serde(default)]
                    cache: Option<super::CacheOptions>,
                }
                let s: S = p.parse()?;
                let dir = p.path("dir")?.unwrap_or_default();
                let mut files = StaticFiles::new(&dir)
                    .map_err(|e| format!("`dir` `{}`: {e}", dir.display()))?
                    .failure_log_budget(p.failure_log_budget);
                if let Some(cache) = s.cache {
                    files = files.cache(cache);
                }
                let prefix = s.prefix.as_deref().unwrap_or("/");
                Ok(Arc::new(StaticEndpoint::new(prefix, files)) as Arc<dyn Endpoint>)
            }),
        );
        c.entries.insert(
            "websocket_echo".to_owned(),
            Arc::new(|p: &Params| {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct S {
                    path: Option<String>,
                    origins: Option<Vec<String>>,
                    max_message_size: Option<usize>,
                    max_frame_size: Option<usize>,
                    read_timeout: Option<toml::Value>,
                    ping_interval: Option<toml::Value>,
                    send_queue: Option<usize>,
                    compression: Option<bool>,
                    compress_min_size: Option<usize>,
                }
                let s: S = p.parse()?;
                let mut ws = WebSocket::new(s.path.as_deref().unwrap_or("/ws"), WebSocketEcho);
                if let Some(origins) = s.origins {
                    ws = ws.origins(origins);
                }
                if let Some(n) = s.max_message_size {
                    ws = ws.max_message_size(n);
                }
                if let Some(n) = s.max_frame_size {
                    ws = ws.max_frame_size(n);
                }
                if let Some(d) = s.read_timeout {
                    ws = ws.read_timeout(duration("read_timeout", &d)?);
                }
                if let Some(d) = s.ping_interval {
                    ws = ws.ping_interval(duration("ping_interval", &d)?);
                }
                if let Some(n) = s.send_queue {
                    ws = ws.send_queue(n);
                }
                if let Some(on) = s.compression {
                    ws = ws.compression(on);
                }
                if let Some(n) = s.compress_min_size {
                    ws = ws.compress_min_size(n);
                }
                Ok(Arc::new(ws) as Arc<dyn Endpoint>)
            }),
        );
        c
    }

    /// Registers a resource type under `name`; `make` builds one from its config entry's
    /// settings, or says what is wrong with them.
    pub fn add<R, F>(&mut self, name: impl Into<String>, make: F) -> &mut Catalogue
    where
        R: super::Resource,
        F: Fn(&Params) -> std::result::Result<R, String> + Send + Sync + 'static,
    {
        self.entries.insert(
            name.into(),
            Arc::new(move |p: &Params| make(p).map(|r| Arc::new(r) as Arc<dyn Endpoint>)),
        );
        self
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Builds the handlers a listener table's `handlers` array declares, for a listener of
    /// the default failure log budget.
    pub fn handlers(
        &self,
        value: Option<&toml::Value>,
        base: &Path,
    ) -> std::result::Result<Handlers, String> {
        self.handlers_within(value, base, FailureLogBudget::default())
    }

    /// Builds the handlers a listener table's `handlers` array declares, for a listener whose
    /// failure log budget is `budget` ([`Params::failure_log_budget`]).
    pub fn handlers_within(
        &self,
        value: Option<&toml::Value>,
        base: &Path,
        budget: FailureLogBudget,
    ) -> std::result::Result<Handlers, String> {
        let mut handlers = Handlers::new();
        let Some(value) = value else {
            return Ok(handlers);
        };
        let list = value
            .as_array()
            .ok_or("`handlers` must be an array of tables ([[listener.handlers]])")?;
        for (i, entry) in list.iter().enumerate() {
            let at = |why: String| format!("handlers #{}: {why}", i + 1);
            let table = entry
                .as_table()
                .ok_or_else(|| at("must be a table".to_owned()))?;
            for key in table.keys() {
                if key != "host" && key != "resources" {
                    return Err(at(format!(
                        "unknown field `{key}`, expected `host` or `resources`"
                    )));
                }
            }
            let host = match table.get("host") {
                None => "_",
                Some(toml::Value::String(h)) => h,
                Some(other) => return Err(at(format!("`host` must be a string, not {other}"))),
            };
            handlers = handlers.host(host);
            let resources = match table.get("resources") {
                None => return Err(at("missing `resources`".to_owned())),
                Some(toml::Value::Array(r)) => r,
                Some(other) => {
                    return Err(at(format!("`resources` must be an array, not {other}")))
                }
            };
            for r in resources {
                let (name, params) = match r {
                    toml::Value::String(name) => (name.clone(), toml::Table::new()),
                    toml::Value::Table(t) => {
                        let mut t = t.clone();
                        match t.remove("name") {
                            Some(toml::Value::String(name)) => (name, t),
                            _ => return Err(at("a resource table needs `name`".to_owned())),
                        }
                    }
                    other => {
                        return Err(at(format!("a resource is a name or a table, not {other}")))
                    }
                };
                let make = self.entries.get(&name).ok_or_else(|| {
                    at(format!(
                        "unknown resource `{name}` (known: {})",
                        self.names().join(", ")
                    ))
                })?;
                let params = Params {
                    table: params,
                    base: base.to_owned(),
                    failure_log_budget: budget,
                };
                let endpoint = make(&params).map_err(|why| at(format!("`{name}`: {why}")))?;
                handlers = handlers.endpoint(endpoint);
            }
        }
        Ok(handlers)
    }
}

/// Teaches `registry` the `http` and `https` listener kinds, with resources from `catalogue`.
///
/// A listener table of these kinds takes the socket server's options, [`HttpOptions`] keys,
/// and `[[listener.handlers]]` tables. Without `ip` and `port` it listens on
/// `127.0.0.1:8080`. `https` needs a `[listener.tls]` table; its ALPN defaults to `h2` and
/// `http/1.1` (only `http/1.1` when `http2 = false`).
///
/// A reload ([`Registry::update`]) that changes only a listener's `handlers` swaps its routes
/// in place, as [`upgrade_handle`](super::upgrade_handle) does: no connection is touched.
pub fn install(registry: &Registry, catalogue: Catalogue) {
    let c = Arc::new(catalogue);
    for (kind, https) in [("http", false), ("https", true)] {
        let launcher = c.clone();
        registry.add_kind(kind, move |spec| launch(spec, &launcher, https));
        let checker = c.clone();
        registry.add_check(kind, move |spec| {
            plan(spec, &checker, https).map(|(_, _, options)| options)
        });
        let c = c.clone();
        registry.add_updater(kind, move |handle, old, new| update(handle, old, new, &c));
    }
}

/// Swaps the routes of a running listener when its spec changed only in `handlers`.
fn update(
    handle: &ServerHandle,
    old: &ListenerSpec,
    new: &ListenerSpec,
    catalogue: &Catalogue,
) -> Option<Result<()>> {
    let without_handlers = |spec: &ListenerSpec| {
        let mut spec = spec.clone();
        spec.params.remove("handlers");
        spec
    };
    if !without_handlers(old).same_as(&without_handlers(new)) {
        return None;
    }
    // The running listener keeps the budget it started with.
    let budget = handle.telemetry().failure_log_budget();
    let handlers = match catalogue.handlers_within(new.params.get("handlers"), &new.base, budget) {
        Ok(handlers) => handlers,
        Err(why) => {
            return Some(Err(Error::with_source(ErrorKind::Config, why)
                .context(format!("listener `{}`", new.name))))
        }
    };
    Some(super::upgrade_handle(handle, Some(handlers)))
}

fn launch(spec: &ListenerSpec, catalogue: &Catalogue, https: bool) -> Result<ServerHandle> {
    let (listener, http, _) = plan(spec, catalogue, https)?;
    listener.bind(spec.bind()).http_options(http).start()
}

/// What [`launch`] starts, read from `spec`: the listener (handlers, name, options, TLS), its
/// HTTP options, and the server options it binds with. Nothing is bound or spawned: it is
/// also the kinds' check.
fn plan(
    spec: &ListenerSpec,
    catalogue: &Catalogue,
    https: bool,
) -> Result<(HttpListener, HttpOptions, ServerOptions)> {
    let bad = |why: String| {
        Error::with_source(ErrorKind::Config, why).context(format!("listener `{}`", spec.name))
    };
    let mut params = spec.params.clone();
    let handlers_value = params.remove("handlers");
    let mut http = crate::options::from_table::<HttpOptions>(params).map_err(bad)?;
    http.static_dir = http.static_dir.map(|d| spec.base.join(d));
    let budget = spec.telemetry.failure_log_budget();
    let handlers = catalogue
        .handlers_within(handlers_value.as_ref(), &spec.base, budget)
        .map_err(bad)?;
    let mut options = spec.options.clone();
    if let Some(set) = &spec.set_options {
        if !set.contains("port") {
            options.port = DEFAULT_HTTP_PORT;
        }
        if !set.contains("ip") {
            options.ip = std::net::Ipv4Addr::LOCALHOST.into();
        }
    }
    let mut listener = HttpListener::new(handlers)
        .name(spec.name.clone())
        .options(options.clone())
        .telemetry(spec.telemetry.clone());
    match (&spec.tls, https) {
        (Some(tls), true) => {
            let mut tls = tls.clone();
            if tls.alpn.is_empty() {
                if http.http2 {
                    tls.alpn.push("h2".to_owned());
                }
                tls.alpn.push("http/1.1".to_owned());
            }
            let config = tls
                .load()
                .map_err(|e| e.context(format!("listener `{}`", spec.name)))?;
            listener = listener.tls(config);
        }
        (None, true) => return Err(bad("kind `https` needs a [listener.tls] table".to_owned())),
        (Some(_), false) => {
            return Err(bad(
                "kind `http` takes no [listener.tls] table; use kind `https`".to_owned(),
            ))
        }
        (None, false) => {}
    }
    Ok((listener, http, options))
}

/// A duration setting: `"30s"`, `"500ms"`, or a number of milliseconds.
fn duration(key: &str, value: &toml::Value) -> std::result::Result<std::time::Duration, String> {
    let parsed = match value {
        toml::Value::String(s) => crate::parse_duration(s),
        toml::Value::Integer(ms) if *ms >= 0 => Ok(std::time::Duration::from_millis(*ms as u64)),
        other => Err(format!("not a duration: {other}")),
    };
    parsed.map_err(|why| format!("`{key}`: {why}"))
}
