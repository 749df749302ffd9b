//! A static directory as a route: `prefix/[...]` answered by [`StaticFiles`].

use std::sync::Arc;

use super::body::Body;
use super::dispatch::{Endpoint, Responding};
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
    fn call(self: Arc<Self>, req: Request) -> Responding {
        Box::pin(async move {
            let response = self
                .files
                .serve(&req.parts.method, &req.path_info, &req.parts.headers)
                .await;
            response.map(Body::from)
        })
    }

    fn patterns(&self) -> Vec<String> {
        vec![format!("{}/[...]", self.prefix)]
    }
}
