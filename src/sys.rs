//! The one module of atoll with `unsafe` code: taking ownership of file descriptors that come
//! from outside the program, either inherited at start (socket activation) or received over a
//! Unix socket with `SCM_RIGHTS` (a live upgrade), setting a thread's CPU scheduling policy
//! (an upgrade's new process starts at idle priority), and building a value in the allocation
//! of a box that is done with (an HTTP connection's request futures, one after the other), and
//! a read into the first bytes of a buffer only (an HTTP request head held to its size limit).
//! Everything else goes through safe APIs.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::ptr;

use nix::cmsg_space;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD` is 253).
pub(crate) const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached over the Unix socket `socket`. Each call is one message on
/// a `SOCK_SEQPACKET` socket.
pub(crate) fn send_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let iov = [IoSlice::new(data)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() {
        &[]
    } else {
        &[ControlMessage::ScmRights(&raw)]
    };
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message sent in part",
        ));
    }
    Ok(())
}

/// Receives one message into `buf`, with the descriptors attached to it (close-on-exec set).
/// Returns the length read (0 at end of stream) and the descriptors. A message cut short, or
/// whose descriptors did not fit, is an error; the descriptors that did come are closed.
pub(crate) fn recv_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel has just installed these descriptors in this process for
                // this message; nothing else knows them, so this is their only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or its descriptors cut short",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Takes ownership of the descriptor `fd` inherited from the parent process (systemd passes
/// listening sockets from 3 up), marking it close-on-exec so it does not leak further. Errors
/// when `fd` is not open.
pub(crate) fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors 0 to 2 are not sockets to take",
        ));
    }
    // Fails with EBADF when nothing is open there.
    fcntl(fd, FcntlArg::F_GETFD)?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: `fd` is open (checked above) and was given to this process at start to own;
    // the caller takes each inherited number once (the environment naming them is cleared).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the CPU scheduling policy of thread `tid` of this process (0: the calling thread):
/// `SCHED_IDLE` when `idle`, else the normal `SCHED_OTHER`. Leaving `SCHED_IDLE` takes
/// `CAP_SYS_NICE` or an `RLIMIT_NICE` of at least 20.
pub(crate) fn set_idle_policy(tid: i32, idle: bool) -> io::Result<()> {
    let param = nix::libc::sched_param { sched_priority: 0 };
    let policy = match idle {
        true => nix::libc::SCHED_IDLE,
        false => nix::libc::SCHED_OTHER,
    };
    // SAFETY: a plain system call; `param` is a valid `sched_param` that outlives it.
    match unsafe { nix::libc::sched_setscheduler(tid, policy, &param) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The value `make` returns from `value`, in `old`'s allocation when their sizes and
/// alignments are the same (`old`'s value is dropped where it is first), else in a new one.
/// `make` builds its value straight into the allocation, where moving a value into a box would
/// copy it once or twice more on the way; `value` is handed to it apart, so that a large one
/// is copied once, from where the caller has it, instead of first into a closure. Should
/// dropping the old value or `make` panic, the allocation is leaked, not freed.
pub(crate) fn refill<T: ?Sized, V, U>(
    old: Pin<Box<T>>,
    value: V,
    make: impl FnOnce(V) -> U,
) -> Pin<Box<U>> {
    if Layout::for_value::<T>(&old) != Layout::new::<U>() {
        drop(old);
        return Box::pin(make(value));
    }
    // SAFETY: the old value is dropped where it lies, never moved, as its pin asks. The
    // allocation then holds nothing; it has `U`'s layout, so a `U` written there may be owned
    // by a `Box<U>`, which frees it with that same layout.
    unsafe {
        let raw = Box::into_raw(Pin::into_inner_unchecked(old));
        ptr::drop_in_place(raw);
        let raw = raw.cast::<U>();
        raw.write(make(value));
        Box::into_pin(Box::from_raw(raw))
    }
}

/// Polls `io` to read into at most `limit` bytes of `buf`'s unfilled part (tokio's `Take` does
/// the same for a whole stream): a caller that must not let one read pass a bound hands the
/// reader a shorter buffer.
pub(crate) fn poll_read_at_most<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut std::task::Context<'_>,
    buf: &mut tokio::io::ReadBuf<'_>,
    limit: usize,
) -> std::task::Poll<io::Result<()>> {
    let mut short = buf.take(limit);
    let polled = Pin::new(io).poll_read(cx, &mut short);
    let n = short.filled().len();
    // SAFETY: `short` covers the first `limit` bytes of `buf`'s unfilled part, and the reader
    // filled (so initialized) its first `n` bytes; those are the next `n` of `buf`.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    polled
}

#[cfg(test)]
mod refill_tests {
    use std::any::Any;
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Counts its drops.
    struct Counted(Rc<Cell<u32>>, u64);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn address<T: ?Sized>(b: &Pin<Box<T>>) -> *const u8 {
        &**b as *const T as *const u8
    }

    #[test]
    fn the_same_layout_takes_the_old_allocation_once_the_old_value_is_dropped() {
        let drops = Rc::new(Cell::new(0));
        let old: Pin<Box<dyn Any>> = Box::pin(Counted(drops.clone(), 1));
        let at = address(&old);
        let new = refill(old, 2, |n| Counted(drops.clone(), n));
        assert_eq!(drops.get(), 1, "the old value is dropped");
        assert_eq!(address(&new), at, "in the same allocation");
        assert_eq!(new.1, 2);
        drop(new);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn another_layout_gets_a_new_allocation() {
        let drops = Rc::new(Cell::new(0));
        let old: Pin<Box<dyn Any>> = Box::pin(Counted(drops.clone(), 1));
        let new = refill(old, 5u8, |b| [b; 3]);
        assert_eq!(drops.get(), 1, "the old value is dropped");
        assert_eq!(*new, [5, 5, 5]);
    }
}
