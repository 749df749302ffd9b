//! `atoll check`: a config file checked as `atoll serve` would start it, without starting
//! anything. Every listener's kind, settings and TLS files are read as the start reads them,
//! its address worked out (a kind's own default port included), and two listeners that would
//! share an address are refused ([`Config::check`]). Nothing is bound and nothing is
//! created: not the data or log directory, not a store (the running server holds it), not
//! the control socket; so it runs beside the server it checks a new config for, before a
//! reload or an upgrade.

use std::path::Path;

use serde_json::json;

use super::command::table;
use crate::config::{Config, ConfigError};
use crate::config_check::ListenerCheck;
use crate::http::Catalogue;
use crate::registry::Registry;

/// What `atoll check` found in a config file.
#[derive(Debug)]
pub struct CheckReport {
    /// The file, as given.
    pub file: String,
    /// Each listener, in file order.
    pub listeners: Vec<ListenerCheck>,
}

/// Reads the config at `path` and checks every listener. `Err` when the file itself does not
/// load (syntax, an unknown key, a variable that does not expand, a duplicate name).
pub fn check(path: &Path) -> Result<CheckReport, ConfigError> {
    let config = Config::load(path)?;
    let registry = Registry::new();
    crate::http::install(&registry, Catalogue::builtin(&registry));
    registry.add_check("admin", crate::http::admin_check);
    crate::rpc::install(&registry, config.env.data_dir.clone());
    Ok(CheckReport {
        file: path.display().to_string(),
        listeners: config.check(&registry),
    })
}

impl CheckReport {
    /// How many listeners have a fault.
    pub fn failed(&self) -> usize {
        self.listeners.iter().filter(|l| l.error.is_some()).count()
    }

    /// What `atoll check` prints: a table of the listeners, then each fault on a line of its
    /// own, or a last line saying all is well.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .listeners
            .iter()
            .map(|l| {
                let status = match (&l.error, l.settings_checked) {
                    (Some(_), _) => "failed",
                    (None, true) => "ok",
                    (None, false) => "ok (kind only)",
                };
                let at = l.at.as_ref().map_or("-".to_owned(), ToString::to_string);
                [status.to_owned(), l.name.clone(), l.kind.clone(), at]
            })
            .collect();
        let mut text = table(["STATUS", "NAME", "KIND", "ADDRESS"], &rows);
        for l in &self.listeners {
            if let Some(e) = &l.error {
                text += &format!("{e}\n");
            }
        }
        if self.failed() == 0 {
            let n = self.listeners.len();
            let listeners = if n == 1 { "listener" } else { "listeners" };
            text += &format!("{}: {n} {listeners}, all good\n", self.file);
        }
        text
    }

    /// The same, as data: `{"file", "ok", "listeners": [{"name", "kind", "address",
    /// "settings_checked", "error"}]}`.
    pub fn json(&self) -> serde_json::Value {
        let listeners: Vec<_> = self
            .listeners
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "kind": l.kind,
                    "address": l.at.as_ref().map(ToString::to_string),
                    "settings_checked": l.settings_checked,
                    "error": l.error.as_ref().map(ToString::to_string),
                })
            })
            .collect();
        json!({ "file": self.file, "ok": self.failed() == 0, "listeners": listeners })
    }
}
