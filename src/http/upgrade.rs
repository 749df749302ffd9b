//! leptus's `upgrade/0,1,2`: re-gather and swap the routes of running HTTP listeners. The swap
//! is one atomic store: requests in flight finish on the routes they started with, the next
//! request on any connection sees the new ones, and no connection is touched.

use crate::error::{Error, ErrorKind, Result};
use crate::handle::ServerHandle;
use crate::registry::Registry;

use super::handlers::Handlers;
use super::listener::HttpControl;

/// Re-gathers the routes of every running HTTP listener in `registry` from their handlers
/// (calling each resource's `routes` and `prefix` again) and swaps them in. Returns the
/// listeners upgraded. Stops at the first listener whose routes fail to build, naming it;
/// that one and the rest keep their routes.
pub fn upgrade_all(registry: &Registry) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for info in registry.list() {
        if let Ok(handle) = registry.get(&info.name) {
            if let Some(control) = handle.extension::<HttpControl>() {
                control
                    .upgrade(None)
                    .map_err(|e| e.context(format!("listener `{}`", info.name)))?;
                done.push(info.name);
            }
        }
    }
    Ok(done)
}

/// Re-gathers and swaps the routes of the listeners `names`. Errors when one is not a running
/// HTTP listener ([`NotFound`](ErrorKind::NotFound)) before changing any.
pub fn upgrade(registry: &Registry, names: &[&str]) -> Result<()> {
    let handles = names
        .iter()
        .map(|name| registry.get(name))
        .collect::<Result<Vec<_>>>()?;
    let controls = handles.iter().map(control_of).collect::<Result<Vec<_>>>()?;
    for (control, name) in controls.iter().zip(names) {
        control
            .upgrade(None)
            .map_err(|e| e.context(format!("listener `{name}`")))?;
    }
    Ok(())
}

/// Replaces the handlers of the running HTTP listener `name` and swaps in their routes.
/// Errors: [`NotFound`](ErrorKind::NotFound), or [`Config`](ErrorKind::Config) for a bad
/// pattern or a duplicate route (the old routes stay).
pub fn upgrade_listener(registry: &Registry, name: &str, handlers: Handlers) -> Result<()> {
    upgrade_handle(&registry.get(name)?, Some(handlers))
}

/// Swaps the routes of the HTTP listener behind `handle`: re-gathered from its handlers when
/// `handlers` is `None`, else from these.
pub fn upgrade_handle(handle: &ServerHandle, handlers: Option<Handlers>) -> Result<()> {
    control_of(handle)?
        .upgrade(handlers)
        .map_err(|e| e.context(format!("listener `{}`", handle.name())))
}

fn control_of(handle: &ServerHandle) -> Result<std::sync::Arc<HttpControl>> {
    handle.extension::<HttpControl>().ok_or_else(|| {
        Error::with_source(ErrorKind::NotFound, "not an HTTP listener")
            .context(format!("listener `{}`", handle.name()))
    })
}
