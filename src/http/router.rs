//! The compiled routes of one listener: host patterns in order, each with a path router, built
//! from [`Handlers`] and swapped whole on an upgrade.

use std::fmt;
use std::sync::Arc;

use super::dispatch::Endpoint;
use super::handlers::{Handlers, Mounted};
use super::host::HostPattern;
use super::path::{Bindings, PathRouter};
use super::statics::StaticFiles;
use super::statics_endpoint::StaticEndpoint;
use crate::error::{Error, ErrorKind, Result};

/// Routes, ready to match requests.
pub(crate) struct Router {
    hosts: Vec<HostRoutes>,
    /// Some route sends files.
    serves_files: bool,
}

struct HostRoutes {
    pattern: HostPattern,
    paths: PathRouter<Arc<dyn Endpoint>>,
    service: Option<Mounted>,
}

/// Where a request goes.
pub(crate) enum Found<'r, 'p> {
    /// A resource (or static directory), with what its patterns bound and the wildcard rest.
    Endpoint(&'r Arc<dyn Endpoint>, Bindings, &'p str),
    /// The host's mounted service.
    Service(&'r Mounted),
    /// No host or no route matched.
    Nothing,
}

impl Router {
    /// Gathers the routes of every resource in `handlers` (calling their `routes` and `prefix`
    /// now). `static_dir`, when given, serves every host's paths no route takes. Errors name
    /// the host and the pattern at fault: a bad pattern, or one route twice.
    pub(crate) fn build(handlers: &Handlers, static_dir: Option<&StaticFiles>) -> Result<Router> {
        let fallback: Option<Arc<dyn Endpoint>> =
            static_dir.map(|f| Arc::new(StaticEndpoint::new("/", f.clone())) as _);
        let mut hosts = Vec::with_capacity(handlers.hosts.len().max(1));
        let mut serves_files = fallback.is_some();
        let mut declared = handlers.hosts.clone();
        if declared.is_empty() && fallback.is_some() {
            declared = Handlers::new().host("_").hosts;
        }
        for host in &declared {
            let bad = |why: String| {
                Error::with_source(ErrorKind::Config, why)
                    .context(format!("host `{}`", host.pattern))
            };
            let pattern = HostPattern::parse(&host.pattern).map_err(bad)?;
            let mut paths = PathRouter::new();
            for endpoint in &host.endpoints {
                serves_files |= endpoint.serves_files();
                for p in endpoint.patterns() {
                    paths.insert(&p, endpoint.clone()).map_err(bad)?;
                }
            }
            if let Some(fallback) = &fallback {
                // Taken already when a resource claims `/[...]`: the resource wins.
                let _ = paths.insert("/[...]", fallback.clone());
            }
            hosts.push(HostRoutes {
                pattern,
                paths,
                service: host.service.clone(),
            });
        }
        Ok(Router {
            hosts,
            serves_files,
        })
    }

    /// Whether some route sends files (a static directory or a [`StaticFiles`] route).
    pub(crate) fn serves_files(&self) -> bool {
        self.serves_files
    }

    /// Finds the route for `host` (the request's, port and all) and `path` (raw). `host` is
    /// asked for only when a pattern other than `_` has to look at it, so a listener whose
    /// routes all take any host never looks up the `Host` header.
    pub(crate) fn find<'r, 'p, 'h>(
        &'r self,
        host: impl FnOnce() -> &'h str,
        path: &'p str,
    ) -> Found<'r, 'p> {
        let mut bindings = Bindings::default();
        let mut ask = Some(host);
        let mut host = None;
        for h in &self.hosts {
            if !h.pattern.is_any() {
                let host = *host.get_or_insert_with(|| ask.take().map_or("", |f| f()));
                if !h.pattern.matches(host, &mut bindings) {
                    continue;
                }
            }
            if let Some((endpoint, rest)) = h.paths.find(path, &mut bindings) {
                return Found::Endpoint(endpoint, bindings, rest);
            }
            return match &h.service {
                Some(s) => Found::Service(s),
                None => Found::Nothing,
            };
        }
        Found::Nothing
    }

    /// Every host with its path patterns, for diagnostics.
    pub(crate) fn describe(&self) -> Vec<(String, Vec<String>)> {
        self.hosts
            .iter()
            .map(|h| (h.pattern.as_str().to_owned(), h.paths.patterns()))
            .collect()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.describe()).finish()
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::http::{Reply, Request, Resource};

    struct Plain;

    impl Resource for Plain {
        fn routes(&self) -> Vec<String> {
            vec!["/plain".into()]
        }
        fn methods(&self) -> &[Method] {
            &[Method::GET]
        }
        async fn get(&self, _req: &mut Request) -> Reply {
            "plain".into()
        }
    }

    /// What decides a connection's unset `vectored_writes`.
    #[test]
    fn knows_whether_a_route_serves_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = StaticFiles::new(dir.path()).unwrap();
        let plain = Handlers::new().resource(Plain);
        assert!(!Router::build(&plain, None).unwrap().serves_files());
        let with_files = plain
            .clone()
            .host("files.example")
            .files("/f", files.clone());
        assert!(Router::build(&with_files, None).unwrap().serves_files());
        assert!(Router::build(&plain, Some(&files)).unwrap().serves_files());
    }
}
