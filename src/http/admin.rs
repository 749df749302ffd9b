//! The `admin` listener kind: what a load balancer, an orchestrator and Prometheus ask a node.
//!
//! - `GET /metrics`: every metric in Prometheus's text format (version 0.0.4), rendered by
//!   the `metrics-exporter-prometheus` recorder ([`Metrics`]) that the listeners'
//!   [`MetricsRecorder`](crate::telemetry::MetricsRecorder)s feed. The metrics are listed on
//!   [`MetricsRecorder`](crate::telemetry::MetricsRecorder) and in docs/operations.md. Durations are histograms with buckets from 100 µs to 1 h
//!   ([`DURATION_BUCKETS`]).
//! - `GET /livez`: 200 `ok` while the process runs (a liveness probe).
//! - `GET /readyz`: 200 `ready` while the node takes new work, 503 `draining` once it is
//!   stopping ([`Readiness::drain`]): `atoll serve` drains on SIGTERM or SIGINT, `drain_delay`
//!   before its listeners stop (see docs/operations.md).
//!
//! ```toml
//! [[listener]]
//! name = "admin"
//! kind = "admin"
//! port = 9464        # default; the address defaults to 127.0.0.1
//! ```
//!
//! The kind takes the socket server's options and the HTTP options of the `http` kind
//! (timeouts, keep-alive...), but no `handlers`, `static_dir` or TLS: serve it on a loopback
//! or private address. From code, [`Admin::listener`] gives the same listener.
//!
//! ```no_run
//! # async fn run() -> atoll::Result<()> {
//! use atoll::http::{Admin, Metrics, Readiness};
//!
//! let readiness = Readiness::new();
//! let admin = Admin::new(Metrics::install()?, readiness.clone());
//! let listener = admin.listener().port(0).start()?;
//! // ... on SIGTERM:
//! readiness.drain(); // /readyz answers 503 from now on
//! # listener.shutdown().await; Ok(()) }
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::handlers::Handlers;
use super::listener::HttpListener;
use super::options::HttpOptions;
use super::reply::Reply;
use super::request::Request;
use super::resource::Resource;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::options::ServerOptions;
use crate::registry::Registry;
use crate::spec::ListenerSpec;
use crate::telemetry::MetricsRecorder;

/// The port of an `admin` listener when none is given: 9464.
pub const DEFAULT_ADMIN_PORT: u16 = 9464;

/// The upper bounds, in seconds, of the buckets of every `_seconds` histogram: 100 µs to 1 h,
/// so that one set fits a request's handling and a connection's life.
pub const DURATION_BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// How often the samples histograms hold are folded into their buckets, so that memory stays
/// bounded between scrapes: 5 s.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// `Content-Type` of Prometheus's text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

// ===== impl Metrics =====

/// The process's Prometheus recorder: the global `metrics` recorder, installed once, and the
/// handle `/metrics` renders from. Clones render the same metrics.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Installs the Prometheus recorder as the process's global `metrics` recorder, with
    /// [`DURATION_BUCKETS`] for every `_seconds` histogram and the help text of atoll's
    /// metrics, and starts a thread that keeps its histograms' memory bounded. Installed once
    /// per process: later calls return the same recorder. Fails when another global `metrics`
    /// recorder was installed first.
    pub fn install() -> Result<Metrics> {
        static INSTALLED: OnceLock<std::result::Result<Metrics, String>> = OnceLock::new();
        INSTALLED
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".to_owned()),
                        &DURATION_BUCKETS,
                    )
                    .map_err(|e| e.to_string())?;
                let handle = builder.install_recorder().map_err(|e| e.to_string())?;
                MetricsRecorder::describe();
                let upkeep = handle.clone();
                std::thread::Builder::new()
                    .name("atoll-metrics".to_owned())
                    .spawn(move || loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    })
                    .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
                Ok(Metrics { handle })
            })
            .clone()
            .map_err(|why| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("cannot install the Prometheus recorder: {why}"),
                )
            })
    }

    /// Every metric, in Prometheus's text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

// ===== impl Readiness =====

/// Whether the node takes new work, as `/readyz` tells: ready until [`drain`](Self::drain).
/// Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// From now on `/readyz` answers 503: a load balancer stops sending new connections
    /// while the listeners still serve.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// False once [`drain`](Self::drain) was called.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }
}

// ===== impl Admin =====

/// What an `admin` listener serves: `/metrics` from `metrics`, `/readyz` from `readiness`,
/// and `/livez`. Clones serve the same state.
#[derive(Debug, Clone)]
pub struct Admin {
    metrics: Metrics,
    readiness: Readiness,
}

impl Admin {
    /// Serves `metrics` and `readiness`.
    pub fn new(metrics: Metrics, readiness: Readiness) -> Admin {
        Admin { metrics, readiness }
    }

    /// The readiness `/readyz` answers from.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The three resources, on any host.
    pub fn handlers(&self) -> Handlers {
        Handlers::new()
            .resource(MetricsPage(self.metrics.clone()))
            .resource(Livez)
            .resource(Readyz(self.readiness.clone()))
    }

    /// An HTTP listener serving [`handlers`](Self::handlers), named `"admin"`, on
    /// `127.0.0.1:9464` ([`DEFAULT_ADMIN_PORT`]) unless told otherwise.
    pub fn listener(&self) -> HttpListener {
        HttpListener::new(self.handlers())
            .name("admin")
            .port(DEFAULT_ADMIN_PORT)
    }
}

struct MetricsPage(Metrics);

impl Resource for MetricsPage {
    fn routes(&self) -> Vec<String> {
        vec!["/metrics".to_owned()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        Reply::text(self.0.render()).header("content-type", TEXT_FORMAT)
    }
}

struct Livez;

impl Resource for Livez {
    fn routes(&self) -> Vec<String> {
        vec!["/livez".to_owned()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        "ok\n".into()
    }
}

struct Readyz(Readiness);

impl Resource for Readyz {
    fn routes(&self) -> Vec<String> {
        vec!["/readyz".to_owned()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        match self.0.is_ready() {
            true => "ready\n".into(),
            false => Reply::text("draining\n").with_status(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

// ===== the admin kind =====

/// Teaches `registry` the `admin` listener kind, serving `admin`'s state (see the module
/// docs for its settings).
pub fn install_admin(registry: &Registry, admin: Admin) {
    registry.add_kind("admin", move |spec| launch(spec, &admin));
    registry.add_check("admin", check);
}

fn launch(spec: &ListenerSpec, admin: &Admin) -> Result<ServerHandle> {
    let (options, http) = plan(spec)?;
    admin
        .listener()
        .name(spec.name.clone())
        .options(options)
        .telemetry(spec.telemetry.clone())
        .bind(spec.bind())
        .http_options(http)
        .start()
}

/// The `admin` kind's check (see [`Registry::add_check`]): its settings, and the server
/// options it binds with. Needs no [`Admin`], so a check can run without a recorder.
pub(crate) fn check(spec: &ListenerSpec) -> Result<ServerOptions> {
    plan(spec).map(|(options, _)| options)
}

/// The server and HTTP options an `admin` listener of `spec` runs with.
fn plan(spec: &ListenerSpec) -> Result<(ServerOptions, HttpOptions)> {
    let bad = |why: String| {
        Error::with_source(ErrorKind::Config, why).context(format!("listener `{}`", spec.name))
    };
    if spec.params.contains_key("handlers") || spec.params.contains_key("static_dir") {
        return Err(bad(
            "kind `admin` serves /metrics, /livez and /readyz alone: no `handlers` or `static_dir`"
                .to_owned(),
        ));
    }
    if spec.tls.is_some() {
        return Err(bad(
            "kind `admin` takes no [listener.tls] table; serve it on a loopback or private address"
                .to_owned(),
        ));
    }
    let http = crate::options::from_table::<HttpOptions>(spec.params.clone()).map_err(bad)?;
    let mut options = spec.options.clone();
    if let Some(set) = &spec.set_options {
        if !set.contains("port") {
            options.port = DEFAULT_ADMIN_PORT;
        }
        if !set.contains("ip") {
            options.ip = Ipv4Addr::LOCALHOST.into();
        }
    }
    Ok((options, http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_shared_by_clones() {
        let r = Readiness::new();
        let seen = r.clone();
        assert!(seen.is_ready());
        r.drain();
        assert!(!seen.is_ready());
    }
}
