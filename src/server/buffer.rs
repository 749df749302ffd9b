//! Read buffers lent to connections for one read and handed back while they are idle, so an
//! idle connection holds no buffer.
//!
//! Each thread keeps a small stack of buffers; taking and returning one is a thread-local push
//! or pop, with no lock and, once warm, no allocation.

use std::cell::RefCell;

/// Buffers kept per thread; more than this many lent at once are allocated and freed.
const KEEP_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least `size` bytes, from this thread's pool when one of that size is there.
pub(crate) fn take(size: usize) -> Box<[u8]> {
    let pooled = POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.last() {
            Some(b) if b.len() == size => p.pop(),
            _ => None,
        }
    });
    pooled.unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
}

/// Hands a buffer back to this thread's pool.
pub(crate) fn give(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP_PER_THREAD {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_returned_buffer_is_lent_again() {
        let a = super::take(4096);
        let ptr = a.as_ptr();
        super::give(a);
        let b = super::take(4096);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(super::take(100).len(), 100);
    }
}
