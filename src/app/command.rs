//! What travels over the control socket: one [`Request`] as a line of JSON, answered by one
//! [`Answer`] as a line of JSON. The answer carries both the text `atoll` prints and the data
//! it prints with `--json`, so the two never disagree.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The running listeners: name, kind, address, uptime, live connections.
    Listeners,
    /// How long the listener `name` has been running.
    Uptime {
        /// The listener.
        name: String,
    },
    /// Stops the listener `name`, draining its connections up to its shutdown timeout.
    Stop {
        /// The listener.
        name: String,
    },
    /// Re-reads the config file and applies the difference.
    Reload {
        /// The config file the client was given, absolute. A server started with another
        /// file refuses, naming both: a reload always re-reads the server's own file, the one
        /// SIGHUP, an upgrade and a restart read too. Absent from older clients: no check.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<PathBuf>,
    },
    /// Replaces the running process with another binary, handing it every listening socket.
    Upgrade {
        /// `latest`, `next` or a regular expression over the installed versions.
        to: Option<String>,
        /// A binary to run instead of an installed release.
        path: Option<PathBuf>,
        /// How long the new process may take to report ready, in milliseconds. Default is
        /// [`DEFAULT_UPGRADE_TIMEOUT`].
        timeout_ms: Option<u64>,
    },
    /// The process: pid, version, binary, config file, uptime.
    Status,
}

/// How long `atoll upgrade` waits for the new process to report ready: 30 s.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether the command did what it was asked.
    pub ok: bool,
    /// What `atoll` prints: the result, or the error on one line.
    pub text: String,
    /// What `atoll --json` prints: the result as data, or `{"error": text}`.
    pub data: serde_json::Value,
}

impl Answer {
    /// A success.
    pub fn done(text: impl Into<String>, data: serde_json::Value) -> Answer {
        Answer {
            ok: true,
            text: text.into(),
            data,
        }
    }

    /// A failure, with why on one line.
    pub fn failed(why: impl Into<String>) -> Answer {
        let text = crate::error::one_line(&why.into());
        Answer {
            ok: false,
            data: serde_json::json!({ "error": text }),
            text,
        }
    }
}

/// A table for people: the header, then a line per row, each column as wide as its widest
/// cell, two spaces apart, no spaces at a line's end.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let header = header.map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text += cells.join("  ").trim_end();
        text.push('\n');
    }
    text
}

/// `1d 2h 3m 4s`, `5m 0s`, `12.3s`: an uptime for people.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m {seconds}s"),
        (0, _) => format!("{hours}h {minutes}m {seconds}s"),
        _ => format!("{days}d {hours}h {minutes}m {seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_tagged_json() {
        let r: Request = serde_json::from_str(r#"{"command":"uptime","name":"web"}"#).unwrap();
        assert_eq!(r, Request::Uptime { name: "web".into() });
        let text = serde_json::to_string(&Request::Listeners).unwrap();
        assert_eq!(text, r#"{"command":"listeners"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"command":"explode"}"#).is_err());
    }

    #[test]
    fn durations_read_for_people() {
        assert_eq!(human_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m 0s");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 61)),
            "3h 1m 1s"
        );
        assert_eq!(
            human_duration(Duration::from_secs(86_400 + 3661)),
            "1d 1h 1m 1s"
        );
    }

    #[test]
    fn a_failure_is_one_line_with_an_error_field() {
        let a = Answer::failed("no such\nlistener");
        assert!(!a.ok);
        assert!(!a.text.contains('\n'));
        assert_eq!(a.data["error"], a.text.as_str());
    }
}
