//! The `atoll` command, a thin shell over the library:
//!
//! - `atoll serve [--config FILE]` runs the listeners a config file declares until SIGINT or
//!   SIGTERM ([`atoll::app::serve`]);
//! - `atoll check [--config FILE]` checks a config file without starting anything
//!   ([`atoll::app::check`]);
//! - `atoll listeners|uptime NAME|stop NAME|reload|upgrade|status` talk to that server over
//!   its control socket ([`atoll::app::control`]);
//! - `atoll rpc ADDR METHOD [ARGS]` calls the built-in key-value RPC service;
//! - `atoll env` prints the resolved application environment and variables;
//! - `atoll versions` lists the installed releases.
//!
//! # Output
//!
//! Every subcommand but `serve` writes its answer through [`print`]: when stdout is a pipe
//! whose reader has gone (`atoll listeners | head -1`), the command stops there, prints
//! nothing more, and exits with status 141, what a shell reports for a command ended by
//! SIGPIPE. Errors go to stderr through [`fail`], which never panics either.
//!
//! SIGPIPE itself stays ignored, as Rust sets it: restoring its default for the client
//! subcommands would end them silently on any closed socket too (the control socket, the
//! RPC connection), with no error naming what closed; and `serve` must never die of a peer
//! that closes its socket.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use atoll::app::command::Request;
use atoll::rpc::kv::{Kv, KvRequest};
use atoll::rpc::{Client, ClientTls};
use atoll::Config;
use clap::{Parser, Subcommand};

/// See the `mimalloc` feature in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "atoll", version, about = "Supervised network listeners")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the listeners of a config file until SIGINT or SIGTERM.
    Serve {
        /// The config file.
        #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
        config: PathBuf,
    },
    /// Checks a config file as `atoll serve` would start it, without starting anything: every
    /// listener's kind, settings and TLS files, and the address it would listen on (two
    /// listeners may not share one). Binds nothing and creates nothing, so it runs beside the
    /// server, before a reload or an upgrade. Exits 1 when any listener fails.
    Check {
        /// The config file.
        #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lists the running listeners of the `atoll serve` of this config: name, kind, address,
    /// uptime, live connections.
    Listeners {
        #[command(flatten)]
        target: Target,
    },
    /// Prints how long the listener NAME has been running.
    Uptime {
        /// The listener.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Stops the listener NAME, draining its connections up to its shutdown timeout.
    Stop {
        /// The listener.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Re-reads the server's own config file and applies the difference, as SIGHUP does: new
    /// listeners start, removed ones drain and stop, changed ones are updated or replaced
    /// without refusing a connection. A config that fails to load changes nothing. `--config`
    /// must name the file the server was started with (its home holds the control socket):
    /// another file with the same home is refused, naming both; one with another home finds
    /// no server there.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Replaces the running process with another version without refusing a connection: the
    /// new one gets every listening socket, and the old one drains and exits once the new
    /// one is ready. If the new one fails, the old one keeps serving.
    ///
    /// The new process is not a child of the shell: after an `atoll serve` started in a
    /// terminal is upgraded, Ctrl-C there no longer reaches the server, and its output goes to
    /// the log file (LOG_DIR/APP.log) instead of the terminal. Stop it with `kill -TERM PID`,
    /// PID as printed here or by `atoll status`.
    Upgrade {
        /// The installed release to run: `latest` (the default), `next`, or a regular
        /// expression over the versions.
        #[arg(long, value_name = "VERSION", conflicts_with = "path")]
        to: Option<String>,
        /// A binary to run instead of an installed release.
        #[arg(long, value_name = "BINARY")]
        path: Option<PathBuf>,
        /// How long the new process may take to report ready (`30s`, `500ms`).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = atoll::parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Prints the running process's pid, version, binary, config and uptime.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Prints the application environment and the config's variables, resolved.
    Env {
        /// The config file.
        #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
        config: PathBuf,
        /// Print JSON instead of `key = value` lines.
        #[arg(long)]
        json: bool,
        /// Print only where the key KEY is set, expanded: `[app]` (resolved) and each listener
        /// that sets it (`atoll env --find port`, `--find tls.cert`), one `OWNER = VALUE` line
        /// each. Exits 1 when no table has it.
        #[arg(long, value_name = "KEY")]
        find: Option<String>,
    },
    /// Lists the releases installed in the lib dirs (ATOLL_SETUP_LIBS, ATOLL_LIBS), the running
    /// one marked with `*`.
    Versions {
        /// The config file.
        #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
        config: PathBuf,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Calls the built-in key-value RPC service (kind `rpc`) and prints the reply as JSON.
    ///
    /// Methods: `get KEY`, `put KEY VALUE` (VALUE as JSON when it reads as JSON, else a
    /// string), `delete KEY`, `list`.
    Rpc {
        /// The daemon's address, `HOST:PORT`.
        addr: String,
        /// The method: get, put, delete or list.
        method: String,
        /// The method's arguments.
        args: Vec<String>,
        /// Speak TLS, verifying the daemon against the CA certificates in this PEM file.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// With --ca: present this client certificate (PEM), for daemons that require one.
        #[arg(long, value_name = "FILE", requires_all = ["ca", "key"])]
        cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["ca", "cert"])]
        key: Option<PathBuf>,
        /// With --ca: the name the daemon's certificate must carry. Default is ADDR's host.
        #[arg(long, value_name = "NAME", requires = "ca")]
        server_name: Option<String>,
        /// How long to wait for the reply, connecting included (`5s`, `500ms`).
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = atoll::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// Which running `atoll serve` a control command talks to, and how it prints.
#[derive(clap::Args)]
struct Target {
    /// The config file the server was started with; its data dir holds the control socket.
    #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` (to stdout, exit 0) or a usage error (to stderr, exit 2);
        // only a closed stdout gets the SIGPIPE status, as for the other output.
        Err(e) => {
            return match e.print() {
                Err(p) if p.kind() == io::ErrorKind::BrokenPipe && !e.use_stderr() => {
                    ExitCode::from(BROKEN_PIPE)
                }
                _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
            };
        }
    };
    let result = match cli.command {
        Command::Serve { config } => atoll::app::serve(&config).map_err(Failure::from),
        Command::Check { config, json } => check(&config, json),
        Command::Listeners { target } => control(&target, Request::Listeners),
        Command::Uptime { name, target } => control(&target, Request::Uptime { name }),
        Command::Stop { name, target } => control(&target, Request::Stop { name }),
        Command::Reload { target } => {
            let config = Some(absolute(target.config.clone()));
            control(&target, Request::Reload { config })
        }
        Command::Status { target } => control(&target, Request::Status),
        Command::Upgrade {
            to,
            path,
            timeout,
            target,
        } => control(
            &target,
            Request::Upgrade {
                to,
                path: path.map(absolute),
                timeout_ms: Some(timeout.as_millis().min(u64::MAX as u128) as u64),
            },
        ),
        Command::Env { config, json, find } => env(&config, json, find.as_deref()),
        Command::Versions { config, json } => versions(&config, json),
        Command::Rpc {
            addr,
            method,
            args,
            ca,
            cert,
            key,
            server_name,
            timeout,
        } => {
            let tls = ca.map(|ca| {
                let mut tls = ClientTls::new(ca);
                if let (Some(cert), Some(key)) = (cert, key) {
                    tls = tls.client_cert(cert, key);
                }
                if let Some(name) = server_name {
                    tls = tls.server_name(name);
                }
                tls
            });
            rpc(addr, &method, &args, tls, timeout)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BrokenPipe) => ExitCode::from(BROKEN_PIPE),
        Err(Failure::Message(message)) => fail(&message),
    }
}

// ===== output =====

/// The exit status of a command whose stdout was closed by its reader: 128 + SIGPIPE, what a
/// shell shows for a program that SIGPIPE ended.
const BROKEN_PIPE: u8 = 141;

/// Why a subcommand stopped.
enum Failure {
    /// The reader of stdout has gone; nothing more is printed.
    BrokenPipe,
    /// An error, printed on stderr as `atoll: MESSAGE`.
    Message(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

/// Writes `text` to stdout, whole, and flushes it. A closed pipe is
/// [`Failure::BrokenPipe`]; another write error is a message naming stdout.
fn print(text: impl fmt::Display) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    write!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::BrokenPipe,
            _ => Failure::Message(format!("cannot write to stdout: {e}")),
        })
}

/// Prints `atoll: MESSAGE` on stderr, if stderr is still there, and returns exit status 1.
fn fail(message: &str) -> ExitCode {
    let _ = writeln!(io::stderr().lock(), "atoll: {message}");
    ExitCode::FAILURE
}

/// Sends `request` to the control socket of the server `target` names, and prints the
/// answer. A failed command prints its error and exits 1 (with `--json`, the error as JSON
/// on stdout too).
fn control(target: &Target, request: Request) -> Result<(), Failure> {
    // Only the environment: a reload must reach the server to be told what is wrong with
    // the rest of the file.
    let env = Config::load_env(&target.config).map_err(|e| failed(target.json, e.to_string()))?;
    let path = atoll::app::control::socket_path(&env);
    // Long enough for a drain or an upgrade; the server bounds those itself.
    let wait = match &request {
        Request::Upgrade { timeout_ms, .. } => {
            Duration::from_millis(timeout_ms.unwrap_or(0)) + Duration::from_secs(60)
        }
        Request::Stop { .. } | Request::Reload { .. } => Duration::from_secs(3600),
        _ => Duration::from_secs(10),
    };
    let answer = atoll::app::control::call(&path, &request, wait)
        .map_err(|e| failed(target.json, e.to_string()))?;
    if target.json {
        print(format_args!("{:#}\n", answer.data))?;
    } else if answer.ok {
        print(&answer.text)?;
    }
    match answer.ok {
        true => Ok(()),
        false => Err(Failure::Message(answer.text)),
    }
}

/// A command's failure before any answer: with `--json`, `{"error": MESSAGE}` on stdout
/// first, as a failed answer prints, so a program reading JSON always gets JSON.
fn failed(json: bool, message: String) -> Failure {
    if json {
        if let Err(Failure::BrokenPipe) = print(format_args!(
            "{:#}\n",
            serde_json::json!({ "error": message })
        )) {
            return Failure::BrokenPipe;
        }
    }
    Failure::Message(message)
}

/// `path` from the working directory, as the server (which may run elsewhere) needs it.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// `atoll env`: the resolved environment and variables of the config at `path`.
/// `atoll check`: the report on stdout; exit 1, with the sum on stderr, when a listener
/// failed.
fn check(path: &Path, json: bool) -> Result<(), Failure> {
    let report = atoll::app::check::check(path).map_err(|e| failed(json, e.to_string()))?;
    if json {
        print(format_args!("{:#}\n", report.json()))?;
    } else {
        print(report.text())?;
    }
    match report.failed() {
        0 => Ok(()),
        bad => Err(Failure::Message(format!(
            "{}: {bad} of {} listeners failed the check",
            path.display(),
            report.listeners.len()
        ))),
    }
}

fn env(path: &Path, json: bool, find: Option<&str>) -> Result<(), Failure> {
    let config = Config::load(path).map_err(|e| failed(json, e.to_string()))?;
    if let Some(key) = find {
        let found = config.find_env_vars(key);
        if found.is_empty() {
            return Err(failed(
                json,
                format!("{}: no table sets `{key}`", path.display()),
            ));
        }
        return if json {
            let list: Vec<_> = found
                .iter()
                .map(|f| serde_json::json!({ "owner": f.owner, "value": f.value }))
                .collect();
            print(format_args!("{:#}\n", serde_json::Value::Array(list)))
        } else {
            let lines: String = found
                .iter()
                .map(|f| match &f.value {
                    toml::Value::String(s) => format!("{} = {s}\n", f.owner),
                    other => format!("{} = {other}\n", f.owner),
                })
                .collect();
            print(lines)
        };
    }
    let text = if json {
        config.describe_json()
    } else {
        config.describe()
    };
    print(text)
}

/// `atoll versions`: the releases of the app in the config's lib dirs. The running version is
/// the release whose binary this is, else this build's own version.
fn versions(path: &Path, json: bool) -> Result<(), Failure> {
    let config = Config::load(path).map_err(|e| failed(json, e.to_string()))?;
    let installed = atoll::setup::versions::find_releases(&config.env.name, &config.env.lib_dirs);
    let running = std::env::current_exe()
        .ok()
        .and_then(|exe| installed.release_of(&exe).map(|r| r.version.clone()))
        .or_else(|| semver::Version::parse(env!("CARGO_PKG_VERSION")).ok());
    if json {
        print(format_args!("{:#}\n", installed.json(running.as_ref())))
    } else {
        print(installed.text(running.as_ref()))
    }
}

/// One call to the key-value service; prints the reply as one line of JSON.
fn rpc(
    addr: String,
    method: &str,
    args: &[String],
    tls: Option<ClientTls>,
    timeout: std::time::Duration,
) -> Result<(), Failure> {
    check_host_port(&addr)?;
    let plain = tls.is_none();
    let request = KvRequest::from_args(method, args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let reply = runtime.block_on(async {
        let mut builder = Client::<Kv>::builder(addr.clone())
            .connect_timeout(timeout)
            .call_timeout(timeout)
            .reconnect(false);
        if let Some(tls) = tls {
            builder = builder.tls(tls);
        }
        let client = match builder.connect().await {
            Ok(client) => client,
            Err(e) if plain && not_rpc(&e) => return Err(not_an_rpc_listener(&addr, &e)),
            Err(e) => return Err(format!("cannot connect to {addr}: {e}")),
        };
        let reply = match client.call(&request).await {
            Ok(reply) => Ok(reply),
            // A peer that took the hello but breaks at the first call: an echo listener
            // sends the hello back, and then the call.
            Err(e) if plain && not_rpc(&e) => Err(not_an_rpc_listener(&addr, &e)),
            Err(e) => Err(format!("{method} on {addr} failed: {e}")),
        };
        client.close().await;
        reply
    })?;
    let json = serde_json::to_string(&reply).map_err(|e| format!("cannot print the reply: {e}"))?;
    print(format_args!("{json}\n"))
}

/// Refuses an RPC address without a port (`localhost`) before any lookup, which would only
/// say "invalid socket address".
fn check_host_port(addr: &str) -> Result<(), String> {
    let port = addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(()),
        _ => Err(format!(
            "`{addr}` is not an RPC address: expected HOST:PORT, such as 127.0.0.1:4040 or localhost:4040"
        )),
    }
}

/// Whether `e` says the peer does not speak atoll's RPC protocol (rather than being down,
/// slow or refusing).
fn not_rpc(e: &atoll::rpc::RpcError) -> bool {
    use atoll::rpc::RpcError;
    matches!(
        e,
        RpcError::Protocol(_)
            | RpcError::Decode(_)
            | RpcError::WrongIdentifier(_)
            | RpcError::IncompatibleVersion(_)
            | RpcError::Disconnected
    )
}

/// `ADDR is not an atoll RPC listener`, with what a short probe of it gets back: the probe
/// sends the RPC magic and a line, and reads for up to a second.
fn not_an_rpc_listener(addr: &str, e: &atoll::rpc::RpcError) -> String {
    use std::io::Read;
    use std::net::{TcpStream, ToSocketAddrs};
    const PROBE: &[u8] = b"\xa7\x11 atoll rpc probe\r\n\r\n";
    let wait = Duration::from_secs(1);
    let got: Option<String> = (|| {
        let to = addr.to_socket_addrs().ok()?.next()?;
        let mut stream = TcpStream::connect_timeout(&to, wait).ok()?;
        stream.set_read_timeout(Some(wait)).ok()?;
        stream.set_write_timeout(Some(wait)).ok()?;
        stream.write_all(PROBE).ok()?;
        let mut buf = [0u8; 256];
        Some(match stream.read(&mut buf) {
            Ok(0) => "it closes the connection without a word".to_owned(),
            // An RPC listener after all (it answers with a frame): the failure was another.
            Ok(n) if n >= 2 && buf[..2] == PROBE[..2] && !PROBE.starts_with(&buf[..n]) => {
                return None
            }
            Ok(n) if PROBE.starts_with(&buf[..n]) => {
                "it sends back what it is sent (an echo listener?)".to_owned()
            }
            Ok(n) => {
                let first = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
                let text = String::from_utf8_lossy(first);
                format!("it answers {:?}", text.trim_end())
            }
            Err(_) => "it sends nothing".to_owned(),
        })
    })();
    match got {
        Some(got) => format!("{addr} is not an atoll RPC listener ({e}); {got}"),
        None => format!("{addr}: {e}"),
    }
}
