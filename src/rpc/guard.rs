//! A service callback's panic, caught: one bad call fails its own connection, and the
//! connection's loop still answers it and cleans up.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A panic caught in a service callback.
#[derive(Debug)]
pub(crate) struct Panicked(String);

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the service panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl Panicked {
    fn from_payload(payload: Box<dyn Any + Send>) -> Panicked {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_owned()
        };
        Panicked(message)
    }
}

pin_project_lite::pin_project! {
    /// A service callback's future, with a panic in it caught and returned: one bad call fails
    /// its own connection, and the loop still answers it and cleans up.
    pub(crate) struct Guarded<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Guarded<F> {
    pub(crate) fn new(inner: F) -> Guarded<F> {
        Guarded { inner }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // A future that panicked is never polled again: its result is the panic.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(Panicked::from_payload(payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    #[test]
    fn guarded_turns_a_panic_into_its_message() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut ok = pin!(Guarded::new(async { 5 }));
        assert!(matches!(ok.as_mut().poll(&mut cx), Poll::Ready(Ok(5))));
        let mut bad = pin!(Guarded::new(async {
            let n: u32 = "x".parse().unwrap_or(0);
            if n == 0 {
                panic!("boom {n}");
            }
        }));
        match bad.as_mut().poll(&mut cx) {
            Poll::Ready(Err(p)) => assert_eq!(p.to_string(), "the service panicked: boom 0"),
            other => panic!("{other:?}"),
        }
    }
}
