//! The `atoll` command: `atoll serve [--config FILE]` runs the listeners a config file declares
//! until SIGINT or SIGTERM, then stops them gracefully; `atoll rpc ADDR METHOD [ARGS]` calls the
//! built-in key-value RPC service and prints the reply as JSON; `atoll env` prints the resolved
//! application environment and variables; `atoll versions` lists the installed releases.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atoll::http::Catalogue;
use atoll::rpc::kv::{Kv, KvRequest};
use atoll::rpc::{Client, ClientTls};
use atoll::{Config, LogEvents, Registry};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

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
    /// Prints the application environment and the config's variables, resolved.
    Env {
        /// The config file.
        #[arg(short, long, value_name = "FILE", default_value = "atoll.toml")]
        config: PathBuf,
        /// Print JSON instead of `key = value` lines.
        #[arg(long)]
        json: bool,
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

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve { config } => serve(&config),
        Command::Env { config, json } => env(&config, json),
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
        Err(message) => {
            eprintln!("atoll: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `atoll env`: the resolved environment and variables of the config at `path`.
fn env(path: &Path, json: bool) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let text = if json {
        atoll::setup::describe_json(&config.env, &config.vars)
    } else {
        atoll::setup::describe(&config.env, &config.vars)
    };
    print!("{text}");
    Ok(())
}

/// `atoll versions`: the releases of the app in the config's lib dirs. The running version is
/// the release whose binary this is, else this build's own version.
fn versions(path: &Path, json: bool) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let installed = atoll::setup::versions::find_releases(&config.env.name, &config.env.lib_dirs);
    let running = std::env::current_exe()
        .ok()
        .and_then(|exe| installed.release_of(&exe).map(|r| r.version.clone()))
        .or_else(|| semver::Version::parse(env!("CARGO_PKG_VERSION")).ok());
    if json {
        println!("{:#}", installed.json(running.as_ref()));
    } else {
        print!("{}", installed.text(running.as_ref()));
    }
    Ok(())
}

/// One call to the key-value service; prints the reply as one line of JSON.
fn rpc(
    addr: String,
    method: &str,
    args: &[String],
    tls: Option<ClientTls>,
    timeout: std::time::Duration,
) -> Result<(), String> {
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
        let client = builder
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let reply = client
            .call(&request)
            .await
            .map_err(|e| format!("{method} on {addr} failed: {e}"));
        client.close().await;
        reply
    })?;
    let json = serde_json::to_string(&reply).map_err(|e| format!("cannot print the reply: {e}"))?;
    println!("{json}");
    Ok(())
}

fn serve(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    config
        .env
        .verify_directories()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    init_logging(config.log_events);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // Before any listener starts, so a signal that comes once they are up stops them
        // instead of killing the process.
        let signal_error = |e| format!("cannot handle signals: {e}");
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;

        let registry = Registry::new();
        atoll::http::install(&registry, Catalogue::builtin(&registry));
        atoll::rpc::install(&registry);
        let handles = config.start(&registry).await.map_err(|e| e.to_string())?;
        let mut announce = String::new();
        for (spec, handle) in config.listeners.iter().zip(&handles) {
            announce += &format!(
                "listening name={} kind={} addr={}\n",
                spec.name,
                spec.kind,
                handle.local_addr()
            );
        }
        // A closed stdout is no reason to stop serving.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(announce.as_bytes())
            .and_then(|()| stdout.flush());
        drop(stdout);

        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        for (name, report) in registry.stop_all().await {
            tracing::info!(
                target: "atoll",
                listener = name,
                drained = report.drained,
                forced = report.forced,
                "stopped"
            );
        }
        Ok(())
    })
}

/// Logs to stderr; RUST_LOG, when set, overrides the filter `log_events` implies.
fn init_logging(log_events: LogEvents) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match log_events {
            LogEvents::All(level) => format!("warn,atoll={}", level.as_str().to_lowercase()),
            _ => "warn".to_owned(),
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
