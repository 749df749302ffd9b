//! The process a libFuzzer target runs in: SIGPIPE ignored, and one tokio thread for client
//! and server alike, so a run is the same run every time (the server reads exactly what the
//! client has written when the client pauses). Included by each listener target.

use tokio::runtime::Runtime;

/// The runtime and what the target started on it, once per process.
pub struct Fixture<T> {
    pub runtime: Runtime,
    pub target: T,
}

/// Ignores SIGPIPE, builds the runtime and runs `start` inside it; call it once, before any
/// other thread runs.
pub fn start<T>(start: impl FnOnce() -> T) -> Fixture<T> {
    // libFuzzer's `main` is not Rust's, which would have ignored SIGPIPE: without this, a
    // server answering a client that hung up would kill the process.
    // SAFETY: setting a signal's disposition to SIG_IGN, before any other thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target = runtime.block_on(async { start() });
    Fixture { runtime, target }
}
