//! A fault of the server's side that answers a request `500`: noted on the response where it
//! happens (a resource, a reply, a mounted service, none of which knows its listener), then
//! logged by the connection's [`Answer`](super::service::Answer) within its listener's
//! failure log budget. A peer can ask for the same fault as often as it likes, so one line per
//! request would be one line per request it sends.

use std::sync::Arc;

use http::{Method, Response, StatusCode};

use super::body::Body;
use crate::telemetry::failure_log::FailureLogs;

/// What went wrong, carried in the response's extensions.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// A resource lists `Method` in `methods()` but left its handler to the default.
    Unimplemented(Method),
    /// A reply's value could not be encoded.
    Encode(String),
    /// A mounted service returned an error.
    Mounted(String),
}

impl Fault {
    /// A `500` with an empty body that carries the fault.
    pub(crate) fn response(self) -> Response<Body> {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r.extensions_mut().insert(self);
        r
    }

    /// Logs the fault `response` carries, if any, within `logs`' budget.
    #[cold]
    #[inline(never)]
    pub(crate) fn log_from(response: &mut Response<Body>, logs: &Arc<FailureLogs>) {
        let Some(fault) = response.extensions_mut().remove::<Fault>() else {
            return;
        };
        match fault {
            Fault::Unimplemented(method) => {
                const WHAT: &str = "the resource lists this method but does not implement it";
                logs.record(WHAT, || {
                    tracing::error!(target: "atoll::http", %method, "{WHAT}");
                });
            }
            Fault::Encode(error) => logs.record("reply failed to encode", || {
                tracing::warn!(target: "atoll::http", %error, "reply failed to encode");
            }),
            Fault::Mounted(error) => logs.record("mounted service failed", || {
                tracing::warn!(target: "atoll::http", %error, "mounted service failed");
            }),
        }
    }
}
