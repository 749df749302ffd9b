//! The `atoll` command: `atoll serve [--config FILE]` runs the listeners a config file declares
//! until SIGINT or SIGTERM, then stops them gracefully.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atoll::http::Catalogue;
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
}

fn main() -> ExitCode {
    let Cli {
        command: Command::Serve { config },
    } = Cli::parse();
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("atoll: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
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
