//! The control socket of a running `atoll serve`: a Unix socket in the data dir, mode 0600,
//! that answers only processes of the user it runs as. Each connection carries one
//! [`Request`] line and gets one [`Answer`] line. The client side checks the socket's owner
//! before it talks to it, so a socket planted by another user is never trusted.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{UnixListener, UnixStream};

use super::command::{Answer, Request};
use crate::setup::AppEnv;
use crate::telemetry::budget::{Clock, LogBudget};
use crate::telemetry::FailureLogBudget;

/// The control socket's file name, in the data dir.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line the server reads: 64 KiB.
const MAX_REQUEST: usize = 64 * 1024;

/// How long a client may take to send its request line: 10 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control socket of the app `env` describes lives: `DATA_DIR/control.sock`.
pub fn socket_path(env: &AppEnv) -> PathBuf {
    env.data_dir.join(SOCKET_NAME)
}

/// Why the control socket could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlError {
    /// No server answers at the path: none is running for this config and environment.
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket belongs to another user, so it is not trusted.
    NotOwner {
        /// The socket path.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Something other than a socket is at the path.
    NotSocket {
        /// The path.
        path: PathBuf,
    },
    /// Another server already answers at the path.
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path is longer than a Unix socket address may be (107 bytes).
    PathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// Reading, writing or binding failed.
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The other side sent something that is not an answer.
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotRunning { path } => write!(
                f,
                "no atoll serve is running for this config (nothing answers at {})",
                path.display()
            ),
            ControlError::NotOwner { path, owner, me } => write!(
                f,
                "control socket {} belongs to uid {owner}, not to you (uid {me}); refusing to use it",
                path.display()
            ),
            ControlError::NotSocket { path } => {
                write!(f, "{} is not a socket", path.display())
            }
            ControlError::InUse { path } => write!(
                f,
                "another atoll serve is running with this data dir (its control socket {} answers)",
                path.display()
            ),
            ControlError::PathTooLong { path } => write!(
                f,
                "control socket path {} is longer than the 107 bytes a Unix socket allows; use a shorter data_dir",
                path.display()
            ),
            ControlError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ControlError::Protocol { path, why } => {
                write!(f, "{}: bad answer: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn check_length(path: &Path) -> Result<(), ControlError> {
    if path.as_os_str().len() > 107 {
        return Err(ControlError::PathTooLong {
            path: path.to_owned(),
        });
    }
    Ok(())
}

// ===== client =====

/// Sends `request` to the server at `path` and returns its answer, waiting up to `timeout`
/// for it. Refuses a socket owned by another user before connecting.
pub fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Answer, ControlError> {
    check_length(path)?;
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NotRunning {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotSocket {
            path: path.to_owned(),
        });
    }
    if meta.uid() != euid() {
        return Err(ControlError::NotOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            me: euid(),
        });
    }
    let mut stream = match StdUnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ControlError::NotRunning {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io)?;
    let mut line = serde_json::to_string(request).expect("a request always serializes");
    line.push('\n');
    // A server that refuses answers at once and closes: its answer may be there to read
    // even when the request could not be written.
    let written = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )),
            _ => io(e),
        })?;
    if answer.is_empty() {
        written.map_err(io)?;
        return Err(ControlError::Protocol {
            path: path.to_owned(),
            why: "the server closed the connection without answering".to_owned(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The longest answer the client reads: 16 MiB (a listing of many listeners).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

// ===== server =====

/// What the control server asks of the application.
pub trait Commands: Send + Sync + 'static {
    /// Runs `request`.
    fn run(&self, request: Request) -> impl Future<Output = Answer> + Send;

    /// Called once the answer to `request` has been written, or could not be (the client
    /// left, or stopped reading for the request timeout): the command took effect either way.
    fn answered(&self, _request: &Request, _answer: &Answer) {}
}

/// Binds the control socket at `path`, mode 0600. A stale socket file (nothing answers) is
/// replaced; a live one is [`ControlError::InUse`].
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    check_length(path)?;
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotSocket {
                path: path.to_owned(),
            });
        }
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// Answers control connections on `listener` until `stop` resolves, each in its own task.
/// Its accept failures are logged within `budget` (the config's `failure_log_lines` and
/// `failure_log_window` when `atoll serve` starts).
pub async fn serve<C: Commands>(
    listener: std::os::unix::net::UnixListener,
    commands: Arc<C>,
    budget: FailureLogBudget,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    tokio::pin!(stop);
    // Out of file descriptors (peers of the listeners can cause it), accept fails every
    // pause: logged like a listener's failures, within the budget, then a count.
    let (clock, failures) = (Clock::new(), LogBudget::new(budget));
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let commands = commands.clone();
                    tokio::spawn(async move { connection(stream, commands).await });
                }
                Err(e) => {
                    let verdict = failures.take(clock.now());
                    if let Some(s) = verdict.summary {
                        tracing::warn!(target: "atoll", suppressed = s.count, total = s.total, "control socket: accept failures not logged");
                    }
                    if verdict.log {
                        tracing::warn!(target: "atoll", error = %e, "control socket: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection<C: Commands>(stream: UnixStream, commands: Arc<C>) {
    let me = euid();
    let (read, mut write) = stream.into_split();
    let peer = write.as_ref().peer_cred().ok();
    let refused = match peer {
        Some(cred) if cred.uid() == me => None,
        Some(cred) => Some(format!(
            "refused: uid {} is not the user this server runs as (uid {me})",
            cred.uid()
        )),
        None => Some("refused: cannot tell who is asking".to_owned()),
    };
    if let Some(why) = refused {
        tracing::warn!(target: "atoll", "control socket: {why}");
        let _ = reply(&mut write, &Answer::failed(why)).await;
        return;
    }
    let mut line = Vec::new();
    let mut reader = TokioBufReader::new(read).take(MAX_REQUEST as u64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let request = match read {
        Ok(Ok(_)) => {
            serde_json::from_slice::<Request>(&line).map_err(|e| format!("bad request: {e}"))
        }
        Ok(Err(e)) => Err(format!("bad request: {e}")),
        Err(_) => Err(format!(
            "bad request: no request line within {REQUEST_TIMEOUT:?}"
        )),
    };
    match request {
        Ok(request) => {
            let answer = commands.run(request.clone()).await;
            // Bounded: a client that stops reading cannot hold what follows the answer.
            let written = tokio::time::timeout(REQUEST_TIMEOUT, reply(&mut write, &answer)).await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::debug!(target: "atoll", "control socket: the client left before its answer");
            }
            // What the command did stands whether or not its client is still there to read
            // the answer: an upgrade that succeeded hands over even if its client was killed.
            commands.answered(&request, &answer);
        }
        Err(why) => {
            let _ = reply(&mut write, &Answer::failed(why)).await;
        }
    }
}

async fn reply(write: &mut tokio::net::unix::OwnedWriteHalf, answer: &Answer) -> io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await?;
    write.shutdown().await
}
