//! The bound on the threads that do static-file work: resolving a path the cache does not
//! know, and reading a large file through memory (on a connection that cannot `sendfile`).
//! Such work runs on tokio's blocking pool, which grows to 512 threads by default when work
//! piles up; here at most [`MAX_FILE_THREADS`] run at once, process-wide, and the rest wait
//! their turn without a thread. A request answered from the cache, or a body sent with
//! `sendfile`, does no such work.

use std::io;

use tokio::sync::Semaphore;

/// The most blocking-pool threads doing static-file work at once: 16, enough to keep a few
/// disks busy, and few next to connections.
pub(crate) const MAX_FILE_THREADS: usize = 16;

static TURNS: Semaphore = Semaphore::const_new(MAX_FILE_THREADS);

/// Runs `work` on the blocking pool when a turn is free.
pub(crate) async fn run<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The semaphore is never closed, so acquiring only waits.
    let turn = TURNS.acquire().await.map_err(io::Error::other)?;
    let done = tokio::task::spawn_blocking(work).await;
    drop(turn);
    done.map_err(io::Error::other)
}

/// Takes every turn, for tests that need file work to wait until they let it go (other
/// tests' file work waits too, for that long).
#[cfg(test)]
pub(crate) async fn hold_all() -> tokio::sync::SemaphorePermit<'static> {
    TURNS
        .acquire_many(MAX_FILE_THREADS as u32)
        .await
        .expect("never closed")
}
