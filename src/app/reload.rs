//! Reloading the config file of a running server: the difference between the config it runs
//! and the one on disk, applied so that nothing changes unless everything can.
//!
//! New listeners start; listeners whose table changed are updated in place when their kind
//! can (an HTTP listener whose `handlers` alone changed swaps its routes), else replaced by a
//! new listener that adopts the old one's listening sockets when the address is the same, so
//! no connect is refused; removed and replaced listeners then drain and stop. When a start or
//! an update fails, what this reload started is stopped, what it updated is put back, and the
//! error says which listener failed and why.

use std::time::Duration;

use serde_json::json;

use crate::config::Config;
use crate::config_check::same_place;
use crate::handle::{ServerHandle, StopReport};
use crate::registry::Registry;
use crate::spec::ListenerSpec;

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Listeners started.
    pub started: Vec<String>,
    /// Listeners updated in place.
    pub updated: Vec<String>,
    /// Listeners replaced by a new one, with how the old one's connections ended.
    pub replaced: Vec<(String, StopReport)>,
    /// Listeners stopped, with how their connections ended.
    pub stopped: Vec<(String, StopReport)>,
    /// Listeners left as they were.
    pub unchanged: Vec<String>,
    /// Changes a reload does not apply, said so.
    pub notes: Vec<String>,
}

impl ReloadReport {
    /// One line per change, for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for name in &self.started {
            out += &format!("started {name}\n");
        }
        for name in &self.updated {
            out += &format!("updated {name} in place\n");
        }
        for (name, r) in &self.replaced {
            out += &format!(
                "replaced {name} (the old one: {} drained, {} forced)\n",
                r.drained, r.forced
            );
        }
        for (name, r) in &self.stopped {
            out += &format!(
                "stopped {name} ({} drained, {} forced)\n",
                r.drained, r.forced
            );
        }
        if !self.unchanged.is_empty() {
            out += &format!("unchanged: {}\n", self.unchanged.join(", "));
        }
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }

    /// The same, as data.
    pub fn json(&self) -> serde_json::Value {
        let ended = |list: &[(String, StopReport)]| {
            list.iter()
                .map(|(n, r)| json!({ "name": n, "drained": r.drained, "forced": r.forced }))
                .collect::<Vec<_>>()
        };
        json!({
            "started": self.started,
            "updated": self.updated,
            "replaced": ended(&self.replaced),
            "stopped": ended(&self.stopped),
            "unchanged": self.unchanged,
            "notes": self.notes,
        })
    }
}

/// What this reload has done so far, to undo on failure.
#[derive(Default)]
struct Undo {
    started: Vec<ServerHandle>,
    replaced: Vec<(String, ServerHandle, ServerHandle)>,
    updated: Vec<(ListenerSpec, ListenerSpec)>,
}

impl Undo {
    async fn run(self, registry: &Registry) {
        for (old, new) in self.updated.into_iter().rev() {
            if let Some(Err(e)) = registry.update(&new, &old) {
                tracing::error!(target: "atoll", listener = old.name, error = %e, "reload: cannot put the old routes back");
            }
        }
        for (kind, new, old) in self.replaced {
            new.stop(Duration::ZERO).await;
            registry.reinstate(&kind, old);
        }
        for handle in self.started {
            let _ = registry.stop(handle.name(), Some(Duration::ZERO)).await;
        }
    }
}

/// Applies `new` to `registry`, which runs `old`. On error nothing has changed, and the
/// message names the listener at fault.
pub async fn apply(
    registry: &Registry,
    old: &Config,
    new: &Config,
) -> Result<ReloadReport, String> {
    // Everything the new config says is checked before anything changes.
    new.verify(registry)
        .map_err(|e| format!("{e}; nothing was changed"))?;
    let mut report = ReloadReport::default();
    let mut undo = Undo::default();
    let running = |name: &str| registry.get(name).is_ok();
    for spec in &new.listeners {
        let before = old.listeners.iter().find(|o| o.name == spec.name);
        let result = match before {
            // A listener stopped by hand since is started again, as the config says.
            Some(o) if running(&o.name) && o.same_as(spec) && o.tls_stamp == spec.tls_stamp => {
                report.unchanged.push(spec.name.clone());
                Ok(())
            }
            Some(o) if running(&o.name) => {
                let in_place = match o.tls_stamp == spec.tls_stamp {
                    true => registry.update(o, spec),
                    false => None,
                };
                match in_place {
                    Some(Ok(())) => {
                        undo.updated.push((o.clone(), spec.clone()));
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => start(new, spec, || registry.replace(spec, o.same_address(spec)))
                        .await
                        .map(|(fresh, was)| undo.replaced.push((o.kind.clone(), fresh, was))),
                }
            }
            _ => {
                // A listener renamed on the same address takes over the sockets of the one
                // that leaves: binding afresh would fail, or, with SO_REUSEPORT, leave the
                // connects queued at the old socket to be reset when it closes.
                let leaving = old.listeners.iter().find(|o| {
                    new.listeners.iter().all(|n| n.name != o.name)
                        && running(&o.name)
                        && same_place(registry, o, spec)
                });
                start(new, spec, || async {
                    match leaving {
                        Some(o) => registry.start_spec_taking_over(spec, &o.name).await,
                        None => registry.start_spec(spec),
                    }
                })
                .await
                .map(|handle| undo.started.push(handle))
            }
        };
        if let Err(e) = result {
            undo.run(registry).await;
            return Err(format!("{}: {e}; nothing was changed", new.path.display()));
        }
    }

    // Everything new runs: now the old goes.
    report.started = undo.started.iter().map(|h| h.name().to_owned()).collect();
    report.updated = undo.updated.iter().map(|(o, _)| o.name.clone()).collect();
    let mut drains = Vec::new();
    for (_, _, was) in undo.replaced {
        drains.push((
            true,
            tokio::spawn(async move { (was.name().to_owned(), was.shutdown().await) }),
        ));
    }
    for o in &old.listeners {
        if new.listeners.iter().all(|n| n.name != o.name) && running(&o.name) {
            let registry = registry.clone();
            let name = o.name.clone();
            drains.push((
                false,
                tokio::spawn(async move {
                    let r = registry.stop(&name, None).await.unwrap_or_default();
                    (name, r)
                }),
            ));
        }
    }
    for (replaced, task) in drains {
        if let Ok(done) = task.await {
            match replaced {
                true => report.replaced.push(done),
                false => report.stopped.push(done),
            }
        }
    }
    report.replaced.sort_by(|a, b| a.0.cmp(&b.0));
    report.stopped.sort_by(|a, b| a.0.cmp(&b.0));
    if old.env != new.env {
        report.notes.push(
            "the [app] settings changed; they take effect at the next start or upgrade".to_owned(),
        );
    }
    if old.log_events != new.log_events {
        report
            .notes
            .push("log_events applies to listeners started from now on".to_owned());
    }
    if old.records_metrics() != new.records_metrics() {
        report.notes.push(match new.records_metrics() {
            true => "metrics are recorded for listeners started or replaced from now on (an admin listener was added)",
            false => "listeners started before keep recording metrics (no admin listener is left)",
        }.to_owned());
    }
    if old.failure_log_budget != new.failure_log_budget {
        report.notes.push(format!(
            "failure_log_lines and failure_log_window ({}) apply to listeners started or replaced from now on; the others keep {}",
            new.failure_log_budget, old.failure_log_budget
        ));
    }
    Ok(report)
}

/// Starts a listener with `launch`, its events logged and recorded as `config` says; the
/// subscribers go again when the start fails.
async fn start<T, F>(
    config: &Config,
    spec: &ListenerSpec,
    launch: impl FnOnce() -> F,
) -> crate::Result<T>
where
    F: std::future::Future<Output = crate::Result<T>>,
{
    let attached = config.attach(spec);
    let outcome = launch().await;
    if outcome.is_err() {
        for id in attached {
            spec.telemetry.detach(id);
        }
    }
    outcome
}
