//! Sending a file region of a response with `sendfile(2)` on a plain HTTP/1 connection,
//! while hyper still writes everything else.
//!
//! hyper writes a response from the body's frames, so a body that wants the kernel to copy
//! from the file straight to the socket stands in with a *placeholder*: a frame that borrows
//! [`PLACEHOLDER`] (static, never written, never read) and has the region's length. The body
//! notes the region (file, offset, length) in its connection's [`ZeroCopy`] queue at the same
//! time. hyper counts the placeholder against `Content-Length`, queues it as is (its vectored
//! write strategy never copies a body's bytes), and hands it to the connection's socket in a
//! `writev`; the socket wrapper ([`Watched`](super::activity::Watched)) recognizes the
//! placeholder by its address and calls `sendfile` for the region instead. What the peer gets
//! is what hyper meant to send, with the file's bytes where the placeholder stood.
//!
//! Only connections whose writes are sure to come here get a queue: plain TCP, HTTP/1, with
//! vectored writes (see [`conn`](super::conn)). Everywhere else a file body reads the file
//! into memory instead. Each `sendfile` call is counted in the socket's statistics and
//! reported as a [`Sendfile`](crate::telemetry::EventKind::Sendfile) event.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, Interest};

use crate::socket::Socket;
use crate::telemetry::EventKind;

/// The longest placeholder frame: 4 MiB. Static and zeroed, so it costs address space only
/// (the kernel maps its pages on first touch, and nothing touches them).
const PLACEHOLDER_LEN: usize = 4 << 20;

/// What a placeholder frame borrows from. Never read: should a bug ever let hyper copy it,
/// the copy is zeros, and the bookkeeping check in [`ZeroCopy::poll_write`] fails the
/// connection at the next write instead of sending a wrong body silently.
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];

/// The most sent by one `sendfile` call, as Linux caps it (a little under 2 GiB).
const MAX_SENDFILE: usize = 1 << 30;

/// A file region waiting to be sent in place of a placeholder.
#[derive(Debug)]
struct Region {
    /// The file, shared with the body and the cache; only sent from with an offset.
    file: Arc<File>,
    /// Where the region starts in the file.
    offset: u64,
    /// Its length (that of its placeholder).
    len: usize,
    /// How much of it is sent.
    sent: usize,
}

/// One connection's queue of file regions, in the order of their placeholders.
#[derive(Debug, Default)]
pub(crate) struct ZeroCopy {
    /// Whether the queue holds a region: the one check a write without files pays.
    pending: AtomicBool,
    /// The regions; only the connection's task touches it, so the lock is never contended.
    regions: Mutex<VecDeque<Region>>,
}

impl ZeroCopy {
    /// Notes the next `len` bytes of `file` from `offset` (at most [`ZeroCopy::MAX_FRAME`]) and
    /// returns the placeholder frame that stands for them.
    pub(crate) fn push(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len > 0 && len <= Self::MAX_FRAME);
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.push_back(Region {
            file: file.clone(),
            offset,
            len,
            sent: 0,
        });
        self.pending.store(true, Relaxed);
        Bytes::from_static(&PLACEHOLDER[..len])
    }

    /// The longest region one placeholder frame stands for.
    pub(crate) const MAX_FRAME: usize = PLACEHOLDER_LEN;

    /// Whether a region waits: only then may a write hold a placeholder.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Relaxed)
    }

    /// Writes `bufs` to `socket`: the buffers before the first placeholder as they are, then
    /// the region that placeholder stands for with `sendfile`. Returns how many bytes of
    /// `bufs` that accounts for, as `poll_write_vectored` does.
    pub(crate) fn poll_write(
        &self,
        socket: &mut Socket,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| is_placeholder(b)) else {
            return std::pin::Pin::new(socket).poll_write_vectored(cx, bufs);
        };
        if first > 0 {
            // The head (and whatever came before) first; when all of it went, the region
            // starts in the same call, saving a trip through hyper.
            let before = &bufs[..first];
            let total: usize = before.iter().map(|b| b.len()).sum();
            let n = ready!(std::pin::Pin::new(&mut *socket).poll_write_vectored(cx, before))?;
            if n < total {
                return Poll::Ready(Ok(n));
            }
            return match self.poll_region(socket, cx, &bufs[first]) {
                Poll::Ready(Ok(sent)) => Poll::Ready(Ok(n + sent)),
                // The error comes again at the next write, which starts with the region.
                Poll::Ready(Err(_)) | Poll::Pending => Poll::Ready(Ok(n)),
            };
        }
        self.poll_region(socket, cx, &bufs[0])
    }

    /// Sends (part of) the region that `placeholder`, the rest of the first one queued, stands
    /// for.
    fn poll_region(
        &self,
        socket: &mut Socket,
        cx: &mut Context<'_>,
        placeholder: &IoSlice<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(region) = regions.front_mut() else {
            return Poll::Ready(Err(mismatch()));
        };
        // hyper moves through a placeholder exactly as far as the sends went: anything else
        // means the placeholder is not the one this region was noted for.
        let at = placeholder.as_ptr() as usize - PLACEHOLDER.as_ptr() as usize;
        if at != region.sent || placeholder.len() != region.len - region.sent {
            return Poll::Ready(Err(mismatch()));
        }
        let want = placeholder.len().min(MAX_SENDFILE);
        let offset = region.offset + region.sent as u64;
        let n = ready!(poll_sendfile(socket, cx, &region.file, offset, want))?;
        if n == 0 {
            // The file is shorter than when its length was read: fewer bytes than
            // Content-Length promised must not look like a whole response.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ended before the length announced",
            )));
        }
        region.sent += n;
        if region.sent == region.len {
            regions.pop_front();
            if regions.is_empty() {
                self.pending.store(false, Relaxed);
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// Whether `buf` lies in [`PLACEHOLDER`].
fn is_placeholder(buf: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let at = buf.as_ptr() as usize;
    !buf.is_empty() && at >= start && at < start + PLACEHOLDER_LEN
}

/// The error that fails a connection whose placeholders and regions disagree (a bug).
fn mismatch() -> io::Error {
    io::Error::other("a file region and its place in the response disagree")
}

/// One `sendfile` of up to `len` bytes of `file` from `offset` to the socket's TCP stream,
/// when it can take some.
fn poll_sendfile(
    socket: &mut Socket,
    cx: &mut Context<'_>,
    file: &File,
    offset: u64,
    len: usize,
) -> Poll<io::Result<usize>> {
    let Some(tcp) = socket.tcp_stream() else {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "sendfile on a connection that is not plain TCP",
        )));
    };
    let sent = loop {
        ready!(tcp.poll_write_ready(cx))?;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            let mut off = offset as nix::libc::off_t;
            nix::sys::sendfile::sendfile(tcp.as_fd(), file.as_fd(), Some(&mut off), len)
                .map_err(io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => break other?,
        }
    };
    let conn = &mut socket.conn;
    conn.stats.send_bytes += sent as u64;
    conn.stats.send_packets += 1;
    conn.emit(EventKind::Sendfile, |e| e.bytes(sent as u64));
    Poll::Ready(Ok(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_told_apart_from_other_bytes() {
        let queue = ZeroCopy::default();
        assert!(!queue.is_pending());
        let file = Arc::new(File::open("Cargo.toml").unwrap());
        let frame = queue.push(&file, 3, 10);
        assert!(queue.is_pending());
        assert_eq!(frame.len(), 10);
        assert!(is_placeholder(&frame));
        assert!(is_placeholder(&frame[9..]));
        assert!(!is_placeholder(&frame[10..]));
        assert!(!is_placeholder(b"0000000000"));
        assert!(!is_placeholder(&[0u8; 10]));
    }
}
