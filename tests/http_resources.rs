//! REST resources over real connections: routing and its precedence, host matching (HTTP/1.1
//! and h2c), the status codes the dispatcher produces (405, HEAD, OPTIONS, 401, 403, 500,
//! `init` and `terminate`), bodies in and out (text, bytes, JSON, MessagePack), the body and
//! header limits, CORS, a mounted axum router, curl, and the `http.request` event.
//!
//! Every listener binds 127.0.0.1:0 through [`HttpTest`]; every wait is bounded by
//! [`common::WAIT`].
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use atoll::http::{Data, Handlers, HttpListener, Reply, Request, Resource, Unauthorized};
use atoll::telemetry::{Event, EventKind, FailureLogBudget, Subscriber, Telemetry};
use bytes::Bytes;
use common::http::{curl, raw, req, Client, HttpTest, Resp};
use common::within;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ===== helpers =====

/// An empty request body.
fn empty() -> Full<Bytes> {
    Full::default()
}

/// GET `path` on `client` with this `Host`.
async fn get_on(client: &mut Client, host: &str, path: &str) -> Resp {
    client
        .send(
            http::Request::get(path)
                .header("host", host)
                .body(empty())
                .unwrap(),
        )
        .await
}

/// Sends `method path` with these headers and no body.
async fn send_with(
    client: &mut Client,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let mut b = req(method, path);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    client.send(b.body(empty()).unwrap()).await
}

/// POSTs `body` to `path` with this `Content-Type`.
async fn post(client: &mut Client, path: &str, content_type: &str, body: impl Into<Bytes>) -> Resp {
    client
        .send(
            req(Method::POST, path)
                .header("content-type", content_type)
                .body(Full::new(body.into()))
                .unwrap(),
        )
        .await
}

/// A raw HTTP/1.1 response: status, headers with lower-cased names, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn parse(text: &str) -> RawResponse {
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        RawResponse {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a routing resource saw of a request, as JSON.
fn seen(resource: &str, req: &Request) -> Reply {
    let bindings: Vec<(String, String)> = req
        .bindings()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Data(json!({
        "resource": resource,
        "bindings": bindings,
        "path_info": req.path_info(),
    }))
    .into()
}

// ===== test resources =====

/// `/items/new`, `/items/:id` and `/items/[...]`: reports its bindings and path info.
struct Items;

impl Resource for Items {
    fn routes(&self) -> Vec<String> {
        vec![
            "/items/new".into(),
            "/items/:id".into(),
            "/items/[...]".into(),
        ]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        seen("items", req)
    }
}

/// `/[...]`: takes whatever no other route of its host takes.
struct CatchAll;

impl Resource for CatchAll {
    fn routes(&self) -> Vec<String> {
        vec!["/[...]".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        seen("catch-all", req)
    }
}

/// `/` and `/users/:user` under the prefix `/api/v1/`.
struct Api;

impl Resource for Api {
    fn prefix(&self) -> &str {
        "/api/v1/"
    }
    fn routes(&self) -> Vec<String> {
        vec!["/".into(), "/users/:user".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        seen("api", req)
    }
}

/// `/who`: names the host section it was added to, and the `tenant` host binding.
struct Who(&'static str);

impl Resource for Who {
    fn routes(&self) -> Vec<String> {
        vec!["/who".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        Data(json!({ "section": self.0, "tenant": req.binding("tenant") })).into()
    }
}

/// `/verbs` with GET and PUT: for 405, HEAD and OPTIONS.
struct Verbs;

impl Resource for Verbs {
    fn routes(&self) -> Vec<String> {
        vec!["/verbs".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::PUT]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        "hello head".into()
    }
    async fn put(&self, _req: &mut Request) -> Reply {
        StatusCode::NO_CONTENT.into()
    }
}

/// `/guarded`: Basic auth, `ann:secret` and `bob:hunter2` are known, only ann may read.
struct Guarded;

impl Resource for Guarded {
    fn routes(&self) -> Vec<String> {
        vec!["/guarded".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn is_authenticated(&self, req: &mut Request) -> Result<(), Unauthorized> {
        match req.basic_auth() {
            Some((u, p)) if (u == "ann" && p == "secret") || (u == "bob" && p == "hunter2") => {
                Ok(())
            }
            _ => Err(Unauthorized::basic("atoll")),
        }
    }
    async fn has_permission(&self, req: &Request) -> bool {
        req.basic_auth().is_some_and(|(u, _)| u == "ann")
    }
    async fn get(&self, req: &mut Request) -> Reply {
        format!("welcome {}", req.basic_auth().unwrap().0).into()
    }
}

/// `/panic` panics in GET; `/unimplemented` lists PATCH without implementing it.
struct Faulty;

impl Resource for Faulty {
    fn routes(&self) -> Vec<String> {
        vec!["/panic".into(), "/unimplemented".into(), "/fine".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::PATCH]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        if req.path() == "/panic" {
            panic!("a resource bug (expected by this test)");
        }
        "fine".into()
    }
}

/// `/slow/:ms`: waits that many milliseconds (on the runtime's timer), then answers `slow`.
struct Slow;

impl Resource for Slow {
    fn routes(&self) -> Vec<String> {
        vec!["/slow/:ms".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        let ms = req.binding("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        "slow".into()
    }
}

/// `/hooked`: `init` stops a request carrying `x-stop` with 418; GET counts its calls;
/// `terminate` records every final status.
#[derive(Default)]
struct Hooked {
    gets: AtomicUsize,
    statuses: Mutex<Vec<u16>>,
}

impl Resource for Hooked {
    fn routes(&self) -> Vec<String> {
        vec!["/hooked".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn init(&self, req: &mut Request) -> Result<(), Reply> {
        if req.header("x-stop").is_some() {
            return Err((StatusCode::IM_A_TEAPOT, "stopped in init").into());
        }
        Ok(())
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        self.gets.fetch_add(1, Ordering::SeqCst);
        "got".into()
    }
    fn terminate(&self, _req: &Request, status: StatusCode) {
        self.statuses.lock().unwrap().push(status.as_u16());
    }
}

/// A value sent and received as JSON or MessagePack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
    tags: Vec<String>,
    n: u32,
}

fn sample() -> Item {
    Item {
        name: "atoll".into(),
        tags: vec!["a".into(), "b".into()],
        n: 7,
    }
}

/// Every kind of reply body, by path, and the body readers on POST.
struct Bodies;

impl Resource for Bodies {
    fn routes(&self) -> Vec<String> {
        [
            "/text",
            "/bytes",
            "/data",
            "/created",
            "/accepted",
            "/echo/json",
            "/echo/data",
        ]
        .map(String::from)
        .to_vec()
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::POST]
    }
    async fn get(&self, req: &mut Request) -> Reply {
        match req.path() {
            "/text" => "plain text".into(),
            "/bytes" => vec![0u8, 1, 2, 255].into(),
            "/data" => Data(sample()).into(),
            "/created" => (StatusCode::CREATED, "made").into(),
            "/accepted" => {
                let mut h = HeaderMap::new();
                h.insert("x-extra", HeaderValue::from_static("yes"));
                (StatusCode::ACCEPTED, h, Data(sample())).into()
            }
            _ => StatusCode::NOT_FOUND.into(),
        }
    }
    async fn post(&self, req: &mut Request) -> Reply {
        match req.path() {
            "/echo/json" => req.json::<Item>().map(Data).into(),
            "/echo/data" => req.data::<Item>().map(Data).into(),
            _ => StatusCode::NOT_FOUND.into(),
        }
    }
}

/// `/sink`: POST answers how many body bytes arrived.
struct Sink;

impl Resource for Sink {
    fn routes(&self) -> Vec<String> {
        vec!["/sink".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::POST]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        "ok".into()
    }
    async fn post(&self, req: &mut Request) -> Reply {
        format!("{} bytes", req.body().len()).into()
    }
}

/// `/cors` with GET and PUT, callable from `http://localhost:3000` and any `example.com` host.
struct Cors;

impl Resource for Cors {
    fn routes(&self) -> Vec<String> {
        vec!["/cors".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::PUT]
    }
    fn cross_domains(&self, _req: &Request) -> Vec<String> {
        vec!["http://localhost:3000".into(), "[...].example.com".into()]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        "shared".into()
    }
    async fn put(&self, _req: &mut Request) -> Reply {
        StatusCode::NO_CONTENT.into()
    }
}

/// `/mine` and `/both`, next to a mounted axum router that also has `/both`.
struct Mine;

impl Resource for Mine {
    fn routes(&self) -> Vec<String> {
        vec!["/mine".into(), "/both".into()]
    }
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }
    async fn get(&self, _req: &mut Request) -> Reply {
        "from the resource".into()
    }
}

/// One `http.request` event as a subscriber saw it.
#[derive(Debug, Clone, PartialEq)]
struct SeenRequest {
    method: String,
    path: String,
    status: u16,
    connection: Option<u64>,
}

/// Records the method, path and status of every `http.request` event.
#[derive(Clone, Default)]
struct Requests(Arc<Mutex<Vec<SeenRequest>>>);

impl Subscriber for Requests {
    fn on_event(&self, e: &Event<'_>) {
        if e.kind == EventKind::HttpRequest {
            self.0.lock().unwrap().push(SeenRequest {
                method: e.method.unwrap_or("?").to_owned(),
                path: e.path.unwrap_or("?").to_owned(),
                status: e.status.unwrap_or(0),
                connection: e.connection,
            });
        }
    }
}

impl Requests {
    /// Waits (bounded) until `n` requests were reported, and returns them.
    async fn wait_for(&self, n: usize) -> Vec<SeenRequest> {
        within(&format!("{n} http.request events"), async {
            loop {
                let seen = self.0.lock().unwrap().clone();
                if seen.len() >= n {
                    return seen;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

// ===== 1. routing =====

/// Hosts `bare.test` (no catch-all) and `_` (items, catch-all, prefixed api).
fn routing_app() -> Handlers {
    Handlers::new()
        .host("bare.test")
        .resource(Api)
        .host("_")
        .resource(Items)
        .resource(CatchAll)
        .resource(Api)
}

#[tokio::test]
async fn literal_beats_binding_beats_wildcard_over_a_connection() {
    let t = HttpTest::start(HttpListener::new(routing_app()));
    let mut c = t.h1().await;
    let cases = [
        ("/items/new", "items", json!([]), ""),
        ("/items/42", "items", json!([["id", "42"]]), ""),
        ("/items/42/x/y", "items", json!([]), "42/x/y"),
        ("/items", "items", json!([]), ""),
        ("/other/z", "catch-all", json!([]), "other/z"),
        ("/", "catch-all", json!([]), ""),
    ];
    for (path, resource, bindings, path_info) in cases {
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({ "resource": resource, "bindings": bindings, "path_info": path_info }),
            "{path}"
        );
    }
}

#[tokio::test]
async fn trailing_slash_and_percent_encoding() {
    let t = HttpTest::start(HttpListener::new(routing_app()));
    let mut c = t.h1().await;
    // A trailing slash is the same path.
    let r = c.get("/items/42/").await;
    assert_eq!(r.json()["bindings"], json!([["id", "42"]]));
    assert_eq!(r.json()["path_info"], "");
    let r = c.get("/items/new/").await;
    assert_eq!(r.json()["bindings"], json!([]));
    assert_eq!(r.json()["path_info"], "");
    // A binding is decoded; the wildcard's rest is handed back as sent.
    let r = c.get("/items/a%20b").await;
    assert_eq!(r.json()["bindings"], json!([["id", "a b"]]));
    let r = c.get("/items/a%2Fb").await;
    assert_eq!(r.json()["bindings"], json!([["id", "a/b"]]));
    let r = c.get("/items/a%20b/c%2Fd").await;
    assert_eq!(r.json()["path_info"], "a%20b/c%2Fd");
    // A percent-encoded literal is still the literal.
    let r = c.get("/items/n%65w").await;
    assert_eq!(r.json()["bindings"], json!([]));
    assert_eq!(r.json()["path_info"], "");
}

#[tokio::test]
async fn prefix_is_applied_and_a_host_without_catch_all_gives_404() {
    let t = HttpTest::start(HttpListener::new(routing_app()));
    let mut c = t.h1().await;
    let r = c.get("/api/v1").await;
    assert_eq!(r.json()["resource"], "api");
    let r = c.get("/api/v1/users/ann").await;
    assert_eq!(r.json()["resource"], "api");
    assert_eq!(r.json()["bindings"], json!([["user", "ann"]]));
    // Without the prefix the route is not the api's.
    let r = c.get("/users/ann").await;
    assert_eq!(r.json()["resource"], "catch-all");
    assert_eq!(r.json()["path_info"], "users/ann");

    let r = get_on(&mut c, "bare.test", "/api/v1/users/bob").await;
    assert_eq!(r.json()["bindings"], json!([["user", "bob"]]));
    // The host matched, no route did: 404, and no fall-through to the `_` host.
    let r = get_on(&mut c, "bare.test", "/other").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "not found\n");
    let r = get_on(&mut c, "bare.test", "/users/ann").await;
    assert_eq!(r.status, 404);
}

// ===== 2. hosts =====

fn hosts_app() -> Handlers {
    Handlers::new()
        .host("api.example.com")
        .resource(Who("api"))
        .host(":tenant.example.com")
        .resource(Who("tenant"))
        .host("[...].example.org")
        .resource(Who("org"))
        .host("_")
        .resource(Who("fallback"))
}

/// The host sections the `Host` values go to, in order, with the tenant bound.
const HOST_CASES: [(&str, &str, Option<&str>); 10] = [
    ("api.example.com", "api", None),
    ("api.example.com.", "api", None),
    ("api.example.com:8443", "api", None),
    ("API.Example.COM", "api", None),
    ("acme.example.com", "tenant", Some("acme")),
    ("ACME.example.com:8080", "tenant", Some("acme")),
    ("example.org", "org", None),
    ("a.b.example.org:81", "org", None),
    ("a.b.example.com", "fallback", None),
    ("elsewhere.test", "fallback", None),
];

#[tokio::test]
async fn hosts_are_tried_in_order_over_http1() {
    let t = HttpTest::start(HttpListener::new(hosts_app()));
    let mut c = t.h1().await;
    for (host, section, tenant) in HOST_CASES {
        let r = get_on(&mut c, host, "/who").await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(
            r.json(),
            json!({ "section": section, "tenant": tenant }),
            "Host: {host}"
        );
    }
}

#[tokio::test]
async fn hosts_match_the_h2_authority() {
    let t = HttpTest::start(HttpListener::new(hosts_app()));
    let mut c = Client::h2c(t.addr()).await;
    for (host, section, tenant) in HOST_CASES {
        let r = c
            .send(
                http::Request::get(format!("http://{host}/who"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!(
            r.json(),
            json!({ "section": section, "tenant": tenant }),
            ":authority {host}"
        );
    }
}

#[tokio::test]
async fn absolute_form_authority_wins_over_host_header() {
    let t = HttpTest::start(HttpListener::new(hosts_app()));
    let text = raw(
        t.addr(),
        b"GET http://acme.example.com/who HTTP/1.1\r\nHost: elsewhere.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = RawResponse::parse(&text);
    assert_eq!(r.status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
        json!({ "section": "tenant", "tenant": "acme" })
    );
}

// ===== 3. statuses =====

#[tokio::test]
async fn method_not_allowed_lists_the_exact_allow() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Verbs)));
    let mut c = t.h1().await;
    for method in [Method::POST, Method::DELETE, Method::PATCH] {
        let r = send_with(&mut c, method.clone(), "/verbs", &[]).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(
            r.header("allow"),
            Some("GET, HEAD, PUT, OPTIONS"),
            "{method}"
        );
    }
    let r = send_with(&mut c, Method::PUT, "/verbs", &[]).await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn head_sends_headers_and_length_but_no_body() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Verbs)));
    let text = raw(
        t.addr(),
        b"HEAD /verbs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = RawResponse::parse(&text);
    assert_eq!(r.status, 200, "{text}");
    assert_eq!(r.header("content-length"), Some("10"), "{text}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{text}"
    );
    assert_eq!(r.body, "", "HEAD must send no body: {text}");
    // The same GET does send the 10 bytes.
    let r = t.h1().await.get("/verbs").await;
    assert_eq!(r.text(), "hello head");
}

#[tokio::test]
async fn options_without_cors_is_204_with_allow() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Verbs)));
    let r = send_with(&mut t.h1().await, Method::OPTIONS, "/verbs", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, OPTIONS"));
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-methods"), None);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn basic_auth_gives_401_403_or_200() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Guarded)));
    let mut c = t.h1().await;
    let r = c.get("/guarded").await;
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Basic realm=\"atoll\""),
        "{challenge}"
    );
    // ann:wrong
    let r = send_with(
        &mut c,
        Method::GET,
        "/guarded",
        &[("authorization", "Basic YW5uOndyb25n")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // ann:secret
    let r = send_with(
        &mut c,
        Method::GET,
        "/guarded",
        &[("authorization", "Basic YW5uOnNlY3JldA==")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "welcome ann"));
    // bob:hunter2 is known but may not read.
    let r = send_with(
        &mut c,
        Method::GET,
        "/guarded",
        &[("authorization", "Basic Ym9iOmh1bnRlcjI=")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("www-authenticate"), None);
}

#[tokio::test]
async fn a_panicking_verb_is_a_500_and_the_connection_lives_on() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Faulty)));
    // One HTTP/1.1 connection: the client does not reconnect, so the answers after the 500
    // prove the server kept it open.
    let mut c = t.h1().await;
    let r = c.get("/panic").await;
    assert_eq!(r.status, 500);
    let r = c.get("/fine").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "fine"));
    let r = c.get("/panic").await;
    assert_eq!(r.status, 500);
    let r = c.get("/fine").await;
    assert_eq!(r.status, 200);
    // And the listener takes new connections.
    let r = t.h1().await.get("/fine").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn one_connection_mixes_resources_that_answer_at_once_wait_or_panic() {
    // Over HTTP/1.1, a resource's future that answers in its first poll leaves its memory to
    // the connection's next request: the sequence below crosses every kind of hand-over
    // (same resource, another resource type, a future that waits, one that panics).
    let app = Handlers::new()
        .resource(Items)
        .resource(Slow)
        .resource(Faulty);
    let t = HttpTest::start(HttpListener::new(app));
    for (protocol, mut c) in [("h1", t.h1().await), ("h2c", Client::h2c(t.addr()).await)] {
        let steps = [
            ("/items/1", 200, "items"),
            ("/items/2", 200, "items"),
            ("/slow/20", 200, "slow"),
            ("/items/3", 200, "items"),
            ("/fine", 200, "fine"),
            ("/panic", 500, ""),
            ("/items/4", 200, "items"),
            ("/slow/0", 200, "slow"),
            ("/slow/5", 200, "slow"),
            ("/fine", 200, "fine"),
            ("/items/5", 200, "items"),
        ];
        for (path, code, what) in steps {
            let r = c.get(path).await;
            assert_eq!(r.status, code, "{protocol} {path}: {}", r.text());
            match what {
                "items" => assert_eq!(r.json()["resource"], "items", "{protocol} {path}"),
                "" => {}
                text => assert_eq!(r.text(), text, "{protocol} {path}"),
            }
        }
    }
}

#[tokio::test]
async fn a_listed_but_unimplemented_verb_is_a_500() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Faulty)));
    let mut c = t.h1().await;
    let r = send_with(&mut c, Method::PATCH, "/unimplemented", &[]).await;
    assert_eq!(r.status, 500);
    // Not a 405: PATCH is listed.
    assert_eq!(r.header("allow"), None);
    assert_eq!(c.get("/unimplemented").await.status, 200);
}

#[tokio::test]
async fn init_short_circuits_and_terminate_sees_the_final_status() {
    let hooked = Arc::new(Hooked::default());
    let t = HttpTest::start(HttpListener::new(Handlers::new().shared(hooked.clone())));
    let mut c = t.h1().await;
    let r = c.get("/hooked").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "got"));
    let r = send_with(&mut c, Method::GET, "/hooked", &[("x-stop", "1")]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (418, "stopped in init")
    );
    let r = send_with(&mut c, Method::DELETE, "/hooked", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        hooked.gets.load(Ordering::SeqCst),
        1,
        "init's answer must keep GET from running"
    );
    assert_eq!(*hooked.statuses.lock().unwrap(), [200, 418, 405]);
}

// ===== 4. bodies =====

#[tokio::test]
async fn text_bytes_and_tuples() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Bodies)));
    let mut c = t.h1().await;
    let r = c.get("/text").await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "plain text");
    let r = c.get("/bytes").await;
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(&r.body[..], [0u8, 1, 2, 255]);
    let r = c.get("/created").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (201, "made"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = c.get("/accepted").await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("x-extra"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Item>(&r.body).unwrap(), sample());
}

#[tokio::test]
async fn data_is_json_by_default_and_msgpack_when_accepted() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Bodies)));
    let mut c = t.h1().await;
    let r = c.get("/data").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Item>(&r.body).unwrap(), sample());

    let r = send_with(
        &mut c,
        Method::GET,
        "/data",
        &[("accept", "application/msgpack")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/msgpack"));
    let back: Item = rmp_serde::from_slice(&r.body).expect("a MessagePack body");
    assert_eq!(back, sample());

    // JSON first in Accept: JSON.
    let r = send_with(
        &mut c,
        Method::GET,
        "/data",
        &[("accept", "application/json, application/msgpack")],
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn request_bodies_as_json_and_msgpack() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Bodies)));
    let mut c = t.h1().await;
    let json_body = serde_json::to_vec(&sample()).unwrap();
    let r = post(&mut c, "/echo/json", "application/json", json_body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(serde_json::from_slice::<Item>(&r.body).unwrap(), sample());

    let packed = rmp_serde::to_vec_named(&sample()).unwrap();
    let r = post(&mut c, "/echo/data", "application/msgpack", packed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(serde_json::from_slice::<Item>(&r.body).unwrap(), sample());

    // `data` without a MessagePack type reads JSON.
    let r = post(&mut c, "/echo/data", "application/json", json_body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn undecodable_bodies_are_400_naming_the_fault() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Bodies)));
    let mut c = t.h1().await;
    let r = post(&mut c, "/echo/json", "application/json", "{\"name\": 1}").await;
    assert_eq!(r.status, 400);
    let text = r.text();
    assert!(text.starts_with("bad JSON body:"), "{text}");
    assert!(text.contains("invalid type"), "{text}");
    let r = post(&mut c, "/echo/json", "application/json", "not json").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("line 1 column"), "{}", r.text());
    let r = post(&mut c, "/echo/data", "application/msgpack", vec![0xc1u8]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("bad MessagePack body:"),
        "{}",
        r.text()
    );
}

// ===== 5. limits =====

fn small_body_listener() -> HttpListener {
    HttpListener::new(Handlers::new().resource(Sink)).configure_http(|o| o.max_body_size = 1024)
}

#[tokio::test]
async fn body_over_max_body_size_with_content_length_is_413() {
    let t = HttpTest::start(small_body_listener());
    let mut c = t.h1().await;
    let r = post(
        &mut c,
        "/sink",
        "application/octet-stream",
        vec![b'x'; 1024],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "1024 bytes"));
    let text = raw(
        t.addr(),
        format!(
            "POST /sink HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1025\r\nConnection: close\r\n\r\n{}",
            "x".repeat(1025)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(RawResponse::parse(&text).status, 413, "{text}");
}

#[tokio::test]
async fn chunked_body_over_max_body_size_is_413() {
    let t = HttpTest::start(small_body_listener());
    let chunk = "y".repeat(500);
    let chunked = |n: usize| {
        let mut s = String::from(
            "POST /sink HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..n {
            s.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        s.push_str("0\r\n\r\n");
        s
    };
    let text = raw(t.addr(), chunked(2).as_bytes()).await;
    let r = RawResponse::parse(&text);
    assert_eq!((r.status, r.body.as_str()), (200, "1000 bytes"), "{text}");
    let text = raw(t.addr(), chunked(3).as_bytes()).await;
    assert_eq!(RawResponse::parse(&text).status, 413, "{text}");
}

#[tokio::test]
async fn headers_over_max_header_size_are_431() {
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().resource(Sink))
            .configure_http(|o| o.max_header_size = 8192),
    );
    let request = |size: usize| {
        format!(
            "GET /sink HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        )
    };
    let text = raw(t.addr(), request(4 * 1024).as_bytes()).await;
    assert_eq!(RawResponse::parse(&text).status, 200, "{text}");
    let text = raw(t.addr(), request(20 * 1024).as_bytes()).await;
    assert_eq!(RawResponse::parse(&text).status, 431, "{text}");
}

// ===== 6. CORS =====

#[tokio::test]
async fn cors_echoes_allowed_origins_only() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Cors)));
    let mut c = t.h1().await;
    for origin in [
        "http://localhost:3000",
        "https://x.example.com:8443",
        "http://example.com",
        "https://a.b.example.com",
    ] {
        let r = send_with(&mut c, Method::GET, "/cors", &[("origin", origin)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{origin}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{origin}");
    }
    for origin in [
        "http://localhost:3001",
        "https://localhost:3000",
        "http://evil.test",
        "http://example.com.evil.test",
    ] {
        let r = send_with(&mut c, Method::GET, "/cors", &[("origin", origin)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
    // No Origin at all: plain answer.
    assert_eq!(
        c.get("/cors").await.header("access-control-allow-origin"),
        None
    );
}

#[tokio::test]
async fn cors_preflight_from_an_allowed_origin() {
    let t = HttpTest::start(HttpListener::new(Handlers::new().resource(Cors)));
    let mut c = t.h1().await;
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ]
    };
    let r = send_with(
        &mut c,
        Method::OPTIONS,
        "/cors",
        &preflight("http://localhost:3000"),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, PUT, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, OPTIONS"));

    let r = send_with(
        &mut c,
        Method::OPTIONS,
        "/cors",
        &preflight("https://x.example.com:8443"),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://x.example.com:8443")
    );
    assert!(r.header("access-control-allow-methods").is_some());

    // Refused origin: a plain OPTIONS answer, nothing granted.
    let r = send_with(
        &mut c,
        Method::OPTIONS,
        "/cors",
        &preflight("http://evil.test"),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-methods"), None);
    assert_eq!(r.header("access-control-allow-headers"), None);
}

// ===== 7. mounted tower service =====

fn mounted_app() -> Handlers {
    let router = axum::Router::new()
        .route("/x", axum::routing::get(|| async { "from axum" }))
        .route("/both", axum::routing::get(|| async { "axum's both" }));
    Handlers::new().host("_").resource(Mine).service(router)
}

#[tokio::test]
async fn mounted_axum_router_takes_what_resources_leave() {
    let t = HttpTest::start(HttpListener::new(mounted_app()));
    let mut c = t.h1().await;
    let r = c.get("/mine").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "from the resource")
    );
    let r = c.get("/both").await;
    assert_eq!(r.text(), "from the resource", "resource routes win");
    let r = c.get("/x").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "from axum"));
    // axum's own 404 (empty), not atoll's ("not found\n").
    let r = c.get("/nowhere").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "");
    // Same over h2c.
    let mut h2 = Client::h2c(t.addr()).await;
    let r = h2
        .send(common::http::req2(Method::GET, "/x").body(empty()).unwrap())
        .await;
    assert_eq!(
        (r.version, r.text().as_str()),
        (http::Version::HTTP_2, "from axum")
    );
}

#[tokio::test]
async fn a_panicking_mounted_service_is_a_500_and_the_connection_lives_on() {
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("the mounted handler fails");
                }
                "unreachable"
            }),
        )
        .route("/calm", axum::routing::get(|| async { "calm" }));
    let t = HttpTest::start(HttpListener::new(Handlers::new().service(router)));
    let mut c = t.h1().await;
    assert_eq!(c.get("/boom").await.status, 500);
    let r = c.get("/calm").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "calm"));
}

#[tokio::test]
async fn mounted_service_bodies_obey_max_body_size_too() {
    let router = axum::Router::new().route(
        "/upload",
        axum::routing::post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
    );
    let t = HttpTest::start(
        HttpListener::new(Handlers::new().service(router))
            .configure_http(|o| o.max_body_size = 1024),
    );
    let mut c = t.h1().await;
    let r = post(
        &mut c,
        "/upload",
        "application/octet-stream",
        vec![b'x'; 1000],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "1000 bytes"));
    let r = post(
        &mut c,
        "/upload",
        "application/octet-stream",
        vec![b'x'; 1500],
    )
    .await;
    assert_eq!(r.status, 413, "declared length over the limit");
    let chunk = "y".repeat(500);
    let mut chunked = String::from(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
    );
    for _ in 0..3 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let text = raw(t.addr(), chunked.as_bytes()).await;
    assert_eq!(
        RawResponse::parse(&text).status,
        413,
        "a chunked 1500-byte body to a mounted service, limit 1024: {text}"
    );
}

// ===== 8. curl =====

fn curl_app() -> Handlers {
    Handlers::new().resource(Bodies).resource(Guarded)
}

#[tokio::test]
async fn curl_gets_json_over_http1() {
    let t = HttpTest::start(HttpListener::new(curl_app()));
    let out = curl(&["-i", &t.url("/data")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = RawResponse::parse(&text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{text}");
    assert_eq!(serde_json::from_str::<Item>(&r.body).unwrap(), sample());

    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &t.url("/guarded")]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out = curl(&["-u", "ann:secret", &t.url("/guarded")]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "welcome ann");
}

#[tokio::test]
async fn curl_speaks_h2_with_prior_knowledge() {
    let t = HttpTest::start(HttpListener::new(curl_app()));
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &t.url("/text"),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plain text\n2 200");
}

// ===== 9. telemetry =====

#[tokio::test]
async fn each_request_is_reported_with_method_path_and_status() {
    let requests = Requests::default();
    let t = HttpTest::start(HttpListener::new(routing_app()).subscribe(requests.clone()));
    let mut c = t.h1().await;
    assert_eq!(c.get("/items/42?q=1").await.status, 200);
    assert_eq!(
        send_with(&mut c, Method::POST, "/items/42", &[])
            .await
            .status,
        405
    );
    assert_eq!(get_on(&mut c, "bare.test", "/nothing").await.status, 404);
    let seen = requests.wait_for(3).await;
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.status))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/items/42", 200),
            ("POST", "/items/42", 405),
            ("GET", "/nothing", 404)
        ]
    );
    // One keep-alive connection, named in every event.
    assert!(seen[0].connection.is_some());
    assert!(seen.iter().all(|s| s.connection == seen[0].connection));
    // The helper's own subscriber sees the same kind.
    t.events.wait_for(EventKind::HttpRequest, 3).await;
}

// ===== 8. failures a peer can repeat, logged within the listener's budget =====

/// The lines logged on this thread (the test's current-thread runtime included).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn containing(&self, text: &str) -> Vec<String> {
        let all = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        all.lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// A listener whose failure log budget is 3 lines per hour.
fn within_three_lines(handlers: Handlers) -> HttpListener {
    let budget = FailureLogBudget::new(3, std::time::Duration::from_secs(3600)).unwrap();
    HttpListener::new(handlers).telemetry(Arc::new(Telemetry::with_failure_log_budget(budget)))
}

#[tokio::test]
async fn a_failing_mounted_service_is_logged_within_the_listener_budget() {
    const REQUESTS: usize = 50;
    let lines = Lines::default();
    let _guard = lines.install();
    let failing = tower::service_fn(|_req: http::Request<atoll::http::RequestBody>| async {
        Err::<http::Response<Full<Bytes>>, _>(std::io::Error::other("the backend is down"))
    });
    let t = HttpTest::start(within_three_lines(Handlers::new().service(failing)));
    let mut c = t.h1().await;
    for _ in 0..REQUESTS {
        assert_eq!(c.get("/any").await.status, 500);
    }
    let logged = lines.containing("mounted service failed");
    assert_eq!(logged.len(), 3, "{logged:#?}");
    assert!(logged[0].contains("the backend is down"), "{}", logged[0]);
    // The stop sums up the rest.
    drop(c);
    within("the stop", t.handle.stop(std::time::Duration::from_secs(5))).await;
    drop(t);
    let logged = lines.containing("mounted service failed");
    assert_eq!(logged.len(), 4, "{logged:#?}");
    assert!(
        logged[3].ends_with(&format!(
            "WARN atoll: mounted service failed: listener=http suppressed={} total={REQUESTS} limit=\"3 lines per 3600s\"",
            REQUESTS - 3
        )),
        "{}",
        logged[3]
    );
}

/// Lists PUT, implements only GET.
struct Forgetful;

impl Resource for Forgetful {
    fn routes(&self) -> Vec<String> {
        vec!["/forgetful".into()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::PUT]
    }

    async fn get(&self, _req: &mut Request) -> Reply {
        Reply::text("here")
    }
}

#[tokio::test]
async fn a_method_listed_but_not_implemented_is_logged_within_the_listener_budget() {
    const REQUESTS: usize = 20;
    let lines = Lines::default();
    let _guard = lines.install();
    let t = HttpTest::start(within_three_lines(Handlers::new().resource(Forgetful)));
    let mut c = t.h1().await;
    for _ in 0..REQUESTS {
        let r = c
            .send(
                req(Method::PUT, "/forgetful")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 500);
    }
    const WHAT: &str = "the resource lists this method but does not implement it";
    let logged = lines.containing(WHAT);
    assert_eq!(logged.len(), 3, "{logged:#?}");
    assert!(logged[0].contains("method=PUT"), "{}", logged[0]);
    drop(c);
    within("the stop", t.handle.stop(std::time::Duration::from_secs(5))).await;
    drop(t);
    let logged = lines.containing(WHAT);
    assert_eq!(logged.len(), 4, "{logged:#?}");
    assert!(
        logged[3].contains(&format!("suppressed={} total={REQUESTS}", REQUESTS - 3)),
        "{}",
        logged[3]
    );
}
