//! The running application, as `atoll serve` runs it: the layer above the config file that
//! turns listeners into a service operators can control, reload and upgrade without downtime
//! (Erlang setup's `reload_app`, the Rust way).
//!
//! [`serve`] is the whole of `atoll serve`; programs that embed atoll can call it, or use the
//! parts.
//!
//! # Layout
//!
//! - [`logs`]: logging to stderr and to a size-rotated file in the log dir.
//! - [`systemd`]: socket activation (`LISTEN_FDS`) and readiness notification (`NOTIFY_SOCKET`).
//! - [`command`]: the control requests and answers, one line of JSON each.
//! - [`check`]: `atoll check`, a config checked without starting anything.
//! - [`control`]: the control socket: the server (owner-only) and the client.
//! - [`reload`]: applying the difference between the running config and the file.
//! - [`handover`]: passing listening sockets to a new process over a Unix socket.
//! - [`upgrade`]: the old process's side of an upgrade: choose, start, hand over, wait.
//! - [`priority`]: the new process starts at idle CPU priority, and leaves it when ready.
//! - `relay`: connections that move (kept-alive HTTP/1, and those whose handler agrees) sent
//!   from the old process to the new one while the old one drains, and adopted there.
//! - `standby`: while the old process drains, it watches the new one and starts a process in
//!   place of one that dies, on the same sockets.
//! - `made`: the directories a start creates, taken away again when it fails.
//! - `serve`: the serving loop: start, answer control commands, reload on SIGHUP, stop on
//!   SIGINT or SIGTERM, drain and exit after an upgrade.

pub mod check;
pub mod command;
pub mod control;
pub mod handover;
pub mod logs;
mod made;
pub mod priority;
mod relay;
pub mod reload;
mod serve;
mod standby;
pub mod systemd;
pub mod upgrade;

pub use serve::serve;
