//! The context of the code that started a daemon, which its instances run in when the daemon
//! forwards it ([`Daemon::forward_callers`](super::Daemon::forward_callers), erps's
//! `forward_callers`): that code's `tracing` span, and a value it passed.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

/// A value forwarded to instances.
type Value = Arc<dyn Any + Send + Sync>;

tokio::task_local! {
    /// The value of the daemon whose instance the current task runs.
    static CALLER: Value;
}

/// The value the code that started the daemon passed to
/// [`Daemon::forward_callers`](super::Daemon::forward_callers), read from anywhere in an
/// instance's callbacks (its `init`, `call`, `cast` and `terminate`, and whatever they call
/// and await). `None` outside an instance, in an instance of a daemon that forwards no
/// value, or when the value is not a `T`. Tasks an instance spawns do not inherit it: read
/// it first and move it in.
pub fn caller<T: Send + Sync + 'static>() -> Option<Arc<T>> {
    CALLER
        .try_with(|value| value.clone().downcast::<T>().ok())
        .ok()
        .flatten()
}

/// What a daemon forwards to its instances, captured when it starts.
#[derive(Clone)]
pub(crate) struct Caller {
    span: tracing::Span,
    value: Value,
}

impl Caller {
    /// The span current here, and `value`.
    pub(crate) fn here(value: Value) -> Caller {
        Caller {
            span: tracing::Span::current(),
            value,
        }
    }

    /// `instance`, to run inside this context wherever it is polled.
    pub(crate) fn enter<F: Future>(&self, instance: F) -> impl Future<Output = F::Output> {
        CALLER.scope(self.value.clone(), instance.instrument(self.span.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_value_is_seen_inside_the_context_only() {
        let context = Caller::here(Arc::new(String::from("from the caller")));
        let seen = context
            .enter(async {
                tokio::task::yield_now().await;
                (caller::<String>(), caller::<u32>())
            })
            .await;
        assert_eq!(
            seen.0.as_deref().map(String::as_str),
            Some("from the caller")
        );
        assert_eq!(seen.1, None, "another type");
        assert_eq!(caller::<String>(), None, "outside");
    }
}
