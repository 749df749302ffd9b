//! The resource trait, leptus's callback module in Rust: routes with an optional prefix, the
//! verbs it implements, and the optional hooks around them.

use std::future::Future;

use http::{Method, StatusCode};

use super::reply::Reply;
use super::request::Request;

/// A REST resource: a type holding the resource's state (shared by every request, so interior
/// mutability for what changes), its routes, and the verbs it supports.
///
/// The call order for one request is leptus's: [`init`](Resource::init), then the method
/// check (405 with an exact `Allow` for a verb not in [`methods`](Resource::methods); `HEAD`
/// runs `get` without sending the body; `OPTIONS` answers by itself, CORS preflights
/// included), [`is_authenticated`](Resource::is_authenticated) (401),
/// [`has_permission`](Resource::has_permission) (403), the verb, then
/// [`terminate`](Resource::terminate) with the final status. A panic anywhere is a 500 for
/// this request only.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use atoll::http::{Data, Reply, Request, Resource};
/// use http::{Method, StatusCode};
///
/// #[derive(Default)]
/// struct Notes(Mutex<BTreeMap<String, String>>);
///
/// impl Resource for Notes {
///     fn prefix(&self) -> &str { "/notes" }
///     fn routes(&self) -> Vec<String> { vec!["/".into(), "/:id".into()] }
///     fn methods(&self) -> &[Method] { &[Method::GET, Method::PUT] }
///
///     async fn get(&self, req: &mut Request) -> Reply {
///         let notes = self.0.lock().unwrap();
///         match req.binding("id") {
///             None => Data(notes.clone()).into(),
///             Some(id) => match notes.get(id) {
///                 Some(text) => text.clone().into(),
///                 None => StatusCode::NOT_FOUND.into(),
///             },
///         }
///     }
///
///     async fn put(&self, req: &mut Request) -> Reply {
///         let (Some(id), Ok(text)) = (req.binding("id"), req.text()) else {
///             return StatusCode::BAD_REQUEST.into();
///         };
///         self.0.lock().unwrap().insert(id.to_owned(), text.to_owned());
///         StatusCode::NO_CONTENT.into()
///     }
/// }
/// ```
pub trait Resource: Send + Sync + 'static {
    /// Prepended to every route. Default is none.
    fn prefix(&self) -> &str {
        ""
    }

    /// The path patterns this resource answers: `/items`, `/items/:id` (a binding),
    /// `/files/[...]` (the rest of the path, see [`Request::path_info`]). Literal segments win
    /// over bindings, bindings over wildcards. Read again on every
    /// [upgrade](super::upgrade_all), so they may change while the listener runs.
    fn routes(&self) -> Vec<String>;

    /// The verbs this resource implements, among `GET`, `PUT`, `POST`, `DELETE`, `PATCH`.
    /// They make the `Allow` header; a request with another verb gets 405 without reaching the
    /// resource. `HEAD` comes with `GET`, and `OPTIONS` is always answered.
    fn methods(&self) -> &[Method];

    /// Runs first, for every request: prepare per-request state (in
    /// [`Request::extensions_mut`]), or answer at once with `Err(reply)`. Default does nothing.
    fn init(&self, req: &mut Request) -> impl Future<Output = Result<(), Reply>> + Send {
        let _ = req;
        async { Ok(()) }
    }

    /// Whether the client is who it says. `Err` answers 401 with the challenge in
    /// `WWW-Authenticate`. Default lets everyone in.
    fn is_authenticated(
        &self,
        req: &mut Request,
    ) -> impl Future<Output = Result<(), Unauthorized>> + Send {
        let _ = req;
        async { Ok(()) }
    }

    /// Whether the (authenticated) client may do this; `false` answers 403.
    /// Default is `true`.
    fn has_permission(&self, req: &Request) -> impl Future<Output = bool> + Send {
        let _ = req;
        async { true }
    }

    /// The origins allowed to call this resource from a browser (CORS). Each entry is either a
    /// full origin, `https://app.example.com:8443`, compared exactly, or a host pattern
    /// (`example.com`, `[...].example.com`, `_` for any) matched against the origin's host,
    /// whatever its scheme and port. A matching `Origin` is echoed in
    /// `Access-Control-Allow-Origin`, and preflight `OPTIONS` requests are answered. Asked on
    /// every request, before the request's `Origin` is looked at. Default is none.
    fn cross_domains(&self, req: &Request) -> Vec<String> {
        let _ = req;
        Vec::new()
    }

    /// `GET` (and `HEAD`).
    fn get(&self, req: &mut Request) -> impl Future<Output = Reply> + Send {
        let _ = req;
        async { not_implemented(Method::GET) }
    }

    /// `PUT`.
    fn put(&self, req: &mut Request) -> impl Future<Output = Reply> + Send {
        let _ = req;
        async { not_implemented(Method::PUT) }
    }

    /// `POST`.
    fn post(&self, req: &mut Request) -> impl Future<Output = Reply> + Send {
        let _ = req;
        async { not_implemented(Method::POST) }
    }

    /// `DELETE`.
    fn delete(&self, req: &mut Request) -> impl Future<Output = Reply> + Send {
        let _ = req;
        async { not_implemented(Method::DELETE) }
    }

    /// `PATCH`.
    fn patch(&self, req: &mut Request) -> impl Future<Output = Reply> + Send {
        let _ = req;
        async { not_implemented(Method::PATCH) }
    }

    /// Runs last, with the status sent (also after a 401, 403 or 405). Default does nothing.
    fn terminate(&self, req: &Request, status: StatusCode) {
        let _ = (req, status);
    }
}

/// A verb listed in `methods` but left to its default: a bug in the resource, said plainly
/// (logged by the connection, within its listener's failure log budget).
fn not_implemented(method: Method) -> Reply {
    let mut reply = Reply::new(StatusCode::INTERNAL_SERVER_ERROR);
    reply.body = super::reply::Content::Unimplemented(method);
    reply
}

/// A 401 answer: the `WWW-Authenticate` challenge and an optional body.
#[derive(Debug)]
pub struct Unauthorized {
    pub(crate) challenge: String,
    pub(crate) body: Option<Reply>,
}

impl Unauthorized {
    /// A 401 with this `WWW-Authenticate` value.
    pub fn new(challenge: impl Into<String>) -> Unauthorized {
        Unauthorized {
            challenge: challenge.into(),
            body: None,
        }
    }

    /// A 401 asking for HTTP Basic credentials for `realm`.
    pub fn basic(realm: &str) -> Unauthorized {
        let realm = realm.replace(['"', '\\'], "");
        Unauthorized::new(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
    }

    /// Sends this body with the 401 (its status is replaced by 401).
    pub fn with_body(mut self, body: impl Into<Reply>) -> Unauthorized {
        self.body = Some(body.into());
        self
    }
}
