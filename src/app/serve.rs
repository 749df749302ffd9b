//! `atoll serve`: start the config's listeners (adopting sockets handed over by a previous
//! process or passed by systemd), answer the control socket, reload on SIGHUP, and stop
//! gracefully on SIGINT or SIGTERM (after `[app] drain_delay` with `/readyz` answering 503,
//! cut short by a second signal), or drain and exit once an upgrade has handed over. It
//! installs the process's Prometheus recorder and the `admin` kind, and counts reloads and
//! upgrades.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Mutex};

use super::command::{human_duration, table, Answer, Request, DEFAULT_UPGRADE_TIMEOUT};
use super::control::{self, Commands};
use super::handover::{self, Ready};
use super::made::Made;
use super::priority;
use super::relay::{self, Relay};
use super::standby::{Restart, Standby};
use super::upgrade::{self, Started, Target};
use super::{logs, reload, systemd};
use crate::config::Config;
use crate::handle::ServerHandle;
use crate::http::{Admin, Catalogue, Metrics, Readiness};
use crate::registry::Registry;
use crate::setup::versions::find_releases;
use crate::setup::AppEnv;
use crate::sockets::Origin;

/// The most threads `atoll serve`'s blocking pool runs (tokio's default is 512): static-file
/// work takes at most 16 of them at once, and an upgrade's hand-over and the standby's work
/// a few more. Threads idle for 10 s leave.
const MAX_BLOCKING_THREADS: usize = 24;

/// How long a new process waits for each message of the handover: 10 s.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the serving loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// SIGINT or SIGTERM: stop every listener.
    Stop,
    /// An upgrade handed everything over: drain and exit.
    HandedOver,
}

/// A running `atoll serve`: what control commands act on.
struct App {
    /// The config file, as given on the command line (relative to the working directory,
    /// which never changes).
    config_path: PathBuf,
    /// The config the listeners run. Its lock is held only to read or swap the `Arc`.
    config: StdMutex<Arc<Config>>,
    /// Keeps reloads and upgrades one at a time. It guards no data: it is a queue for the
    /// commands that change what runs, held across their awaits on purpose, and nothing else
    /// takes it (`status` and `listeners` answer while a reload drains).
    changing: Mutex<()>,
    registry: Registry,
    /// The version this process runs: its release's, else the crate's.
    version: Version,
    started: Instant,
    /// A copy of the control socket, for an upgrade to hand over.
    control: StdMutex<Option<OwnedFd>>,
    /// After an upgrade: where the HTTP listeners send their kept-alive connections.
    relay: StdMutex<Option<Arc<Relay>>>,
    /// After an upgrade: the watch over the new process while this one drains.
    standby: StdMutex<Option<Standby>>,
    /// What `admin` listeners answer on `/readyz`: drained at once on SIGTERM or SIGINT,
    /// `drain_delay` before the listeners stop. Not after an upgrade's handover: the new
    /// process serves the same addresses, and a health check that reaches this one on a
    /// kept-alive connection must not take the node out of rotation.
    readiness: Readiness,
    exit: watch::Sender<Option<Exit>>,
}

/// Runs `atoll serve --config path` until stopped or upgraded. Errors are one line.
pub fn serve(path: &Path) -> Result<(), String> {
    // First of all, while fd 3 up are still the ones systemd passed and no other thread
    // reads the environment this clears.
    let registry = Registry::new();
    let activated =
        systemd::adopt_into(registry.sockets()).map_err(|e| format!("{}: {e}", path.display()))?;
    // A process started by an upgrade fetches its sockets first, so that whatever fails
    // after can be reported to the old process, which then keeps serving.
    // Started at idle CPU priority by the old process, to leave it once ready.
    let idle = std::env::var_os(priority::IDLE_VAR).is_some_and(|v| v == "1")
        && std::env::var_os(handover::SOCKET_VAR).is_some();
    let handover = match std::env::var_os(handover::SOCKET_VAR) {
        None => None,
        Some(socket_path) => {
            // Not for this process's own children.
            std::env::remove_var(handover::SOCKET_VAR);
            std::env::remove_var(priority::IDLE_VAR);
            let socket_path = PathBuf::from(socket_path);
            let fetched = handover::fetch(&socket_path, HANDOVER_TIMEOUT).map_err(|e| {
                format!(
                    "cannot fetch the sockets from {}: {e}",
                    socket_path.display()
                )
            })?;
            Some(fetched)
        }
    };
    let (connection, sockets) = match handover {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let connection = connection.as_ref();
    let fail = |why: String| {
        if let Some(c) = connection {
            let _ = handover::report(c, Err(why.clone()));
        }
        why
    };

    let config = Config::load(path).map_err(|e| fail(e.to_string()))?;
    // A start that fails before its listeners run leaves no directory it created.
    let made = Made::before(&config.env);
    config
        .env
        .verify_directories()
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    logs::init(&config.env, config.log_events)
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let signal_error = |e| format!("cannot handle signals: {e}");
        // Before any listener starts, so a signal that comes once they are up stops them
        // instead of killing the process.
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;

        let version = running_version(&config.env);
        crate::http::install(
            &registry,
            Catalogue::builtin_for(&registry, &version.to_string()),
        );
        // Installed whether or not the config has an admin listener yet (a reload may add
        // one); with none, no listener records anything (see `Config::records_metrics`).
        let metrics = Metrics::install().map_err(|e| fail(e.to_string()))?;
        metrics::gauge!("atoll_build_info", "version" => version.to_string()).set(1.0);
        let readiness = Readiness::new();
        crate::http::install_admin(&registry, Admin::new(metrics, readiness.clone()));
        crate::rpc::install(&registry, config.env.data_dir.clone());

        let mut control_fd = None;
        if let Some(sockets) = sockets {
            for (name, fds) in sockets.listeners {
                for fd in fds {
                    registry.sockets().add(name.clone(), fd, Origin::Handover);
                }
            }
            control_fd = sockets.control;
        }
        systemd::check_claimed(&activated, config.listeners.iter().map(|l| l.name.as_str()))
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;

        // Before the listeners, so a second server of the same config starts none.
        let control_path = control::socket_path(&config.env);
        let control_listener = match control_fd {
            Some(fd) => std::os::unix::net::UnixListener::from(fd),
            None => control::bind(&control_path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?,
        };
        let handles = match config.start(&registry).await {
            Ok(handles) => handles,
            Err(e) => {
                if connection.is_none() {
                    let _ = std::fs::remove_file(&control_path);
                }
                return Err(fail(e.to_string()));
            }
        };
        // Sockets of listeners the config no longer has.
        registry.sockets().close_unclaimed();

        let control_copy = OwnedFd::from(
            control_listener
                .try_clone()
                .map_err(|e| fail(format!("cannot copy the control socket: {e}")))?,
        );

        announce(config.listeners.iter().zip(&handles));
        made.keep();

        let (exit, mut exit_rx) = watch::channel(None);
        let control_budget = config.failure_log_budget;
        let app = Arc::new(App {
            config_path: path.to_owned(),
            config: StdMutex::new(Arc::new(config)),
            changing: Mutex::new(()),
            registry: registry.clone(),
            version: version.clone(),
            started: Instant::now(),
            control: StdMutex::new(Some(control_copy)),
            relay: StdMutex::new(None),
            standby: StdMutex::new(None),
            readiness,
            exit,
        });
        let mut control_stop = app.exit.subscribe();
        let control_task = tokio::spawn(control::serve(
            control_listener,
            app.clone(),
            control_budget,
            async move {
                let _ = control_stop.wait_for(|e| e.is_some()).await;
            },
        ));

        if idle {
            priority::leave_idle()
                .map_err(|e| fail(format!("cannot return to normal CPU priority: {e}")))?;
        }
        if let Some(c) = connection {
            let ready = Ready {
                pid: std::process::id(),
                version: version.to_string(),
            };
            match handover::report(c, Ok(ready)) {
                // The old process gave up on us: it kills us, or already has.
                Err(e) => {
                    tracing::error!(target: "atoll", error = %e, "upgrade: cannot report ready")
                }
                // Its kept-alive connections come next, as it drains.
                Ok(()) => match c.try_clone() {
                    Ok(socket) => {
                        let (registry, runtime) =
                            (registry.clone(), tokio::runtime::Handle::current());
                        let spawned = std::thread::Builder::new()
                            .name("atoll-adopt".to_owned())
                            .spawn(move || relay::receive(socket, registry, runtime));
                        if let Err(e) = spawned {
                            tracing::warn!(target: "atoll", error = %e, "upgrade: connections will not be handed over");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target: "atoll", error = %e, "upgrade: connections will not be handed over")
                    }
                },
            }
        }
        let _ = systemd::ready();
        tracing::info!(target: LIFECYCLE, pid = std::process::id(), %version, "serving");

        let reason = loop {
            tokio::select! {
                _ = interrupt.recv() => {
                    tracing::info!(target: LIFECYCLE, "SIGINT received: stopping");
                    break Exit::Stop;
                }
                _ = terminate.recv() => {
                    tracing::info!(target: LIFECYCLE, "SIGTERM received: stopping");
                    break Exit::Stop;
                }
                _ = hangup.recv() => {
                    tracing::info!(target: LIFECYCLE, "SIGHUP received: reloading {}", app.config_path.display());
                    let app = app.clone();
                    tokio::spawn(async move {
                        let answer = app.reload().await;
                        match answer.ok {
                            true => tracing::info!(target: LIFECYCLE, "reload (SIGHUP): {}", answer.text.trim_end().replace('\n', "; ")),
                            false => tracing::error!(target: LIFECYCLE, "reload (SIGHUP) failed: {}", answer.text),
                        }
                    });
                }
                Ok(()) = exit_rx.changed() => {
                    if let Some(reason) = *exit_rx.borrow() {
                        break reason;
                    }
                }
            }
        };
        if reason == Exit::Stop {
            // Balancers polling /readyz see 503 from now on.
            app.readiness.drain();
            let _ = systemd::stopping();
            let delay = app.config().drain_delay;
            if !delay.is_zero() {
                tracing::info!(target: LIFECYCLE, "stopping in {}: /readyz answers 503 while the listeners serve on", human_duration(delay));
                // A second signal (the operator's, or an orchestrator's after a short grace)
                // ends the delay at once.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = interrupt.recv() => tracing::info!(target: LIFECYCLE, "second signal (SIGINT): drain_delay cut short"),
                    _ = terminate.recv() => tracing::info!(target: LIFECYCLE, "second signal (SIGTERM): drain_delay cut short"),
                }
            }
        }
        app.exit.send_replace(Some(reason));
        let _ = control_task.await;
        app.control.lock().unwrap_or_else(|p| p.into_inner()).take();
        if reason == Exit::Stop {
            // The control socket file is ours alone; after a handover it is the new process's.
            let _ = std::fs::remove_file(&control_path);
        }
        let (mut drained, mut forced) = (0, 0);
        for (name, report) in registry.stop_all().await {
            drained += report.drained;
            forced += report.forced;
            tracing::info!(
                target: LIFECYCLE,
                listener = name,
                drained = report.drained,
                forced = report.forced,
                "stopped"
            );
        }
        let how = match reason {
            Exit::Stop => "stopped",
            Exit::HandedOver => "handed over and drained",
        };
        tracing::info!(target: LIFECYCLE, drained, forced, "{how}: exiting");
        // A process started in place of a dead new one gets its sockets before this one goes.
        let standby = app.standby.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(standby) = standby {
            let _ = tokio::task::spawn_blocking(move || standby.close()).await;
        }
        let relay = app.relay.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(relay) = relay {
            let _ = tokio::task::spawn_blocking(move || relay.finish()).await;
        }
        Ok(())
    })
}

/// The target of the lines that say what the process does (serving, a stop and its signal,
/// each listener's drain, a reload, an upgrade): logged at INFO whatever `log_events` is
/// (see `logs`).
pub(crate) const LIFECYCLE: &str = "atoll::app";

/// Prints `listening name=NAME kind=KIND addr=ADDR` on stdout for each listener, at start
/// and for the ones a reload starts or replaces.
fn announce<'a>(
    listeners: impl Iterator<Item = (&'a crate::spec::ListenerSpec, &'a ServerHandle)>,
) {
    let mut text = String::new();
    for (spec, handle) in listeners {
        text += &format!(
            "listening name={} kind={} addr={}\n",
            spec.name,
            spec.kind,
            handle.local_addr()
        );
    }
    // A closed stdout is no reason to stop serving.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// The version of the release whose binary this is, else the crate's.
fn running_version(env: &AppEnv) -> Version {
    let installed = find_releases(&env.name, &env.lib_dirs);
    std::env::current_exe()
        .ok()
        .and_then(|exe| installed.release_of(&exe).map(|r| r.version.clone()))
        .unwrap_or_else(|| {
            Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver")
        })
}

// ===== impl App =====

impl Commands for App {
    async fn run(&self, request: Request) -> Answer {
        match request {
            Request::Listeners => self.listeners(),
            Request::Uptime { name } => match self.registry.uptime(&name) {
                Ok(up) => Answer::done(
                    format!("{name} up {}\n", human_duration(up.duration())),
                    json!({
                        "name": name,
                        "uptime_secs": up.duration().as_secs_f64(),
                        "uptime_dhms": up,
                    }),
                ),
                Err(e) => Answer::failed(e.to_string()),
            },
            Request::Stop { name } => match self.registry.stop(&name, None).await {
                Ok(r) => Answer::done(
                    format!(
                        "stopped {name} ({} drained, {} forced)\n",
                        r.drained, r.forced
                    ),
                    json!({ "name": name, "drained": r.drained, "forced": r.forced }),
                ),
                Err(e) => Answer::failed(e.to_string()),
            },
            Request::Reload { config } => match self.other_file(config.as_deref()) {
                Some(why) => Answer::failed(why),
                None => self.reload().await,
            },
            Request::Upgrade {
                to,
                path,
                timeout_ms,
            } => {
                let target = match (to, path) {
                    (Some(_), Some(_)) => {
                        return Answer::failed("give --to or --path, not both");
                    }
                    (_, Some(path)) => Target::Path(path),
                    (to, None) => Target::Release(to.unwrap_or_else(|| "latest".to_owned())),
                };
                let timeout = timeout_ms.map_or(DEFAULT_UPGRADE_TIMEOUT, Duration::from_millis);
                let answer = self.upgrade(target, timeout).await;
                let outcome = if answer.ok { "ok" } else { "failed" };
                metrics::counter!("atoll_upgrades_total", "outcome" => outcome).increment(1);
                answer
            }
            Request::Status => self.status().await,
        }
    }

    fn answered(&self, request: &Request, answer: &Answer) {
        if matches!(request, Request::Upgrade { .. }) && answer.ok {
            self.exit.send_replace(Some(Exit::HandedOver));
        }
    }
}

impl App {
    fn listeners(&self) -> Answer {
        let list = self.registry.list();
        let rows: Vec<[String; 5]> = list
            .iter()
            .map(|l| {
                [
                    l.name.clone(),
                    l.kind.clone(),
                    l.addr.to_string(),
                    human_duration(l.uptime),
                    l.connections.to_string(),
                ]
            })
            .collect();
        let text = table(["NAME", "KIND", "ADDRESS", "UPTIME", "CONNECTIONS"], &rows);
        let data: Vec<_> = list
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "kind": l.kind,
                    "addr": l.addr.to_string(),
                    "uptime_secs": l.uptime.as_secs_f64(),
                    "uptime_dhms": crate::registry::Uptime::from(l.uptime),
                    "connections": l.connections,
                })
            })
            .collect();
        Answer::done(text, json!(data))
    }

    /// The config the listeners run now.
    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn status(&self) -> Answer {
        let config = self.config();
        let binary = std::env::current_exe().unwrap_or_default();
        // Absolute: the client may run in another directory.
        let config_path = std::path::absolute(&config.path).unwrap_or(config.path.clone());
        let up = self.started.elapsed();
        let text = format!(
            "pid {}\nversion {}\nbinary {}\nconfig {}\nuptime {}\nlisteners {}\n",
            std::process::id(),
            self.version,
            binary.display(),
            config_path.display(),
            human_duration(up),
            self.registry.list().len(),
        );
        let data = json!({
            "pid": std::process::id(),
            "version": self.version.to_string(),
            "binary": binary,
            "config": config_path,
            "uptime_secs": up.as_secs_f64(),
            "listeners": self.registry.list().len(),
        });
        Answer::done(text, data)
    }

    /// Why a reload asked with `--config given` is refused: `given` is not the file this
    /// server runs. Reloading from it instead would last only until the next SIGHUP, upgrade
    /// or restart, which all read the server's own file again.
    fn other_file(&self, given: Option<&Path>) -> Option<String> {
        let given = given?;
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(given, &self.config_path) {
            return None;
        }
        let own = std::path::absolute(&self.config_path).unwrap_or(self.config_path.clone());
        Some(format!(
            "reload: this server (pid {}) runs {}, not {}; a reload re-reads the server's own \
             file: edit {} and reload, or start {} as another server; nothing was changed",
            std::process::id(),
            own.display(),
            given.display(),
            own.display(),
            given.display(),
        ))
    }

    /// Re-reads the config file and applies the difference (see [`reload`]).
    async fn reload(&self) -> Answer {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.config();
        let _ = systemd::reloading();
        let answer = match Config::load(&self.config_path) {
            Err(e) => Answer::failed(format!("{e}; nothing was changed")),
            Ok(new) => match reload::apply(&self.registry, &current, &new).await {
                Ok(report) => {
                    let answer = Answer::done(report.text(), report.json());
                    let fresh: Vec<_> = new
                        .listeners
                        .iter()
                        .filter(|spec| {
                            report.started.contains(&spec.name)
                                || report.replaced.iter().any(|(name, _)| *name == spec.name)
                        })
                        .filter_map(|spec| Some((spec, self.registry.get(&spec.name).ok()?)))
                        .collect();
                    announce(fresh.iter().map(|(spec, handle)| (*spec, handle)));
                    *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                    answer
                }
                Err(why) => Answer::failed(why),
            },
        };
        let outcome = if answer.ok { "ok" } else { "failed" };
        metrics::counter!("atoll_reloads_total", "outcome" => outcome).increment(1);
        let _ = systemd::ready();
        answer
    }

    /// Hands everything to a new process running `target` (see [`upgrade`]); on success,
    /// this process drains and exits once the answer is written.
    async fn upgrade(&self, target: Target, timeout: Duration) -> Answer {
        let _one_at_a_time = self.changing.lock().await;
        let config = self.config();
        // Stopping, or waiting out `drain_delay` before it stops.
        if self.exit.borrow().is_some() || !self.readiness.is_ready() {
            return Answer::failed("this process is already stopping");
        }
        let chosen = match upgrade::choose(&target, &config.env, &self.version) {
            Ok(c) => c,
            Err(why) => return Answer::failed(format!("upgrade: {why}; nothing was changed")),
        };
        let control = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|fd| fd.try_clone().ok());
        let sockets = match upgrade::collect(&self.registry, control.as_ref()).await {
            Ok(s) => s,
            Err(why) => return Answer::failed(format!("upgrade: {why}; nothing was changed")),
        };
        drop(control);
        let socket_path = config
            .env
            .data_dir
            .join(format!("upgrade.{}.sock", std::process::id()));
        let binary = chosen.binary.clone();
        let config_path = self.config_path.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            upgrade::run(&binary, &config_path, &socket_path, &sockets, timeout)
                .map(|started| (started, sockets, socket_path))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the upgrade task failed: {e}")));
        match outcome {
            Ok((
                Started {
                    ready,
                    connection,
                    child,
                },
                sockets,
                socket_path,
            )) => {
                // Connections that can move follow the sockets when this process drains, each
                // at its first moment between requests (kept-alive HTTP/1), or when its
                // handler agrees (see `Handler::handle_move`).
                let relay = match Relay::start(connection) {
                    Ok(relay) => Some(relay),
                    Err(e) => {
                        tracing::warn!(target: "atoll", error = %e, "upgrade: connections will drain here instead of moving");
                        None
                    }
                };
                // New connects go to the new process alone from the moment the command
                // returns: this one closes its copies of the sockets now, and drains once
                // the answer is out.
                for info in self.registry.list() {
                    if let Ok(handle) = self.registry.get(&info.name) {
                        if let Some(relay) = &relay {
                            handle.move_connections(relay.to(&info.name));
                        }
                        let _ = handle.suspend().await;
                    }
                }
                // Until this process exits, a new one that dies is replaced by this version,
                // on the same sockets (see `standby`).
                let restart = Restart {
                    binary: std::env::current_exe()
                        .ok()
                        .filter(|exe| exe.is_file())
                        .unwrap_or_else(|| chosen.binary.clone()),
                    config: self.config_path.clone(),
                    socket_path,
                    timeout,
                    sockets,
                    relay: relay.clone(),
                };
                match Standby::watch(child, restart) {
                    Ok(standby) => {
                        *self.standby.lock().unwrap_or_else(|p| p.into_inner()) = Some(standby)
                    }
                    Err(e) => {
                        tracing::warn!(target: "atoll", error = %e, "upgrade: cannot watch the new process")
                    }
                }
                *self.relay.lock().unwrap_or_else(|p| p.into_inner()) = relay;
                let _ = systemd::main_pid(ready.pid);
                tracing::info!(
                    target: LIFECYCLE,
                    pid = ready.pid,
                    version = ready.version,
                    binary = %chosen.binary.display(),
                    "upgrade: the new process serves; draining"
                );
                Answer::done(
                    format!(
                        "upgraded to {} (pid {}, {}); pid {} drains its connections and exits\n",
                        ready.version,
                        ready.pid,
                        chosen.binary.display(),
                        std::process::id()
                    ),
                    json!({
                        "version": ready.version,
                        "pid": ready.pid,
                        "binary": chosen.binary,
                        "old_pid": std::process::id(),
                        "old_version": self.version.to_string(),
                    }),
                )
            }
            Err(why) => {
                tracing::error!(target: "atoll", "upgrade to {} failed: {why}", chosen.binary.display());
                Answer::failed(format!(
                    "upgrade to {} failed: {why}; this process (pid {}, {}) keeps serving",
                    chosen.binary.display(),
                    std::process::id(),
                    self.version
                ))
            }
        }
    }
}
