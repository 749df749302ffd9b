//! A static directory as a route: `prefix/[...]` answered by [`StaticFiles`].

use std::sync::Arc;

use super::body::Body;
use super::dispatch::{fill, Endpoint, Responding};
use super::request::Request;
use super::statics::StaticFiles;

/// Serves `files` under `prefix`.
pub(crate) struct StaticEndpoint {
    prefix: String,
    files: StaticFiles,
}

impl StaticEndpoint {
    pub(crate) fn new(prefix: &str, files: StaticFiles) -> StaticEndpoint {
        StaticEndpoint {
            prefix: prefix.trim_end_matches('/').to_owned(),
            files,
        }
    }
}

impl Endpoint for StaticEndpoint {
    fn call(self: Arc<Self>, req: Request, spare: Option<Responding>) -> Responding {
        fill(spare, req, move |req| async move {
            // The route's remainder drops a trailing slash, which tells a directory asked for
            // properly (`/sub/`, served its index) from one to redirect (`/sub`).
            let mut path = req.path_info;
            if !path.is_empty() && req.parts.uri.path().ends_with('/') {
                path.push('/');
            }
            let response = self
                .files
                .serve(&req.parts.method, &path, &req.parts.headers)
                .await;
            response.map(Body::from)
        })
    }

    fn patterns(&self) -> Vec<String> {
        vec![format!("{}/[...]", self.prefix)]
    }

    fn serves_files(&self) -> bool {
        true
    }
}
