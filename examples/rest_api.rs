//! A REST API of items kept in memory, served by one [`Resource`]: reads are open to anyone,
//! writes need HTTP Basic credentials, and browsers on `http://localhost:3000` or any
//! `*.example.com` site may call it (CORS). Bodies are JSON, or MessagePack when the request
//! says so (`Content-Type`, `Accept`).
//!
//! - `GET /api/items`: every item, by id.
//! - `GET /api/items/:id`: one item, 404 when there is none.
//! - `PUT /api/items/:id`: creates (201) or replaces (200) the item from the body.
//! - `DELETE /api/items/:id`: 204, or 404 when there is none.
//!
//! Run: `cargo run --example rest_api` (listens on 127.0.0.1:8080, or the port in `PORT`),
//! then try the curl lines it prints. The credentials are `admin`/`secret` unless
//! `ATOLL_EXAMPLE_USER` and `ATOLL_EXAMPLE_PASSWORD` say otherwise. Ctrl-C stops it gracefully.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use atoll::http::{Data, Handlers, HttpListener, Reply, Request, Resource, Unauthorized};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

/// One item, as clients send and get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Item {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) quantity: u32,
}

/// The items resource: its state, and the credentials that writes need.
#[derive(Debug)]
pub(crate) struct Items {
    items: Mutex<BTreeMap<String, Item>>,
    user: String,
    password: String,
}

impl Items {
    /// No items yet, and the [`credentials`] from the environment.
    pub(crate) fn from_env() -> Items {
        let (user, password) = credentials();
        Items {
            items: Mutex::default(),
            user,
            password,
        }
    }

    fn items(&self) -> MutexGuard<'_, BTreeMap<String, Item>> {
        // A panicking request is a 500 for that request only; the map it held is still whole.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Resource for Items {
    fn prefix(&self) -> &str {
        "/api/items"
    }

    fn routes(&self) -> Vec<String> {
        vec!["/".into(), "/:id".into()]
    }

    fn methods(&self) -> &[Method] {
        &[Method::GET, Method::PUT, Method::DELETE]
    }

    async fn is_authenticated(&self, req: &mut Request) -> Result<(), Unauthorized> {
        // Reads are open (OPTIONS never gets here: atoll answers it first).
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(());
        }
        match req.basic_auth() {
            Some((user, password)) if user == self.user && password == self.password => Ok(()),
            _ => Err(Unauthorized::basic("items")),
        }
    }

    fn cross_domains(&self, _req: &Request) -> Vec<String> {
        vec!["http://localhost:3000".into(), "[...].example.com".into()]
    }

    async fn get(&self, req: &mut Request) -> Reply {
        let items = self.items();
        let Some(id) = req.binding("id") else {
            return Data(items.clone()).into();
        };
        match items.get(id) {
            Some(item) => Data(item.clone()).into(),
            None => not_found(id),
        }
    }

    async fn put(&self, req: &mut Request) -> Reply {
        let Some(id) = req.binding("id") else {
            return on_the_collection();
        };
        // JSON, or MessagePack by Content-Type; a body that does not decode is a 400 saying why.
        let item: Item = match req.data() {
            Ok(item) => item,
            Err(bad_request) => return bad_request,
        };
        match self.items().insert(id.to_owned(), item.clone()) {
            Some(_) => Data(item).into(),
            None => Reply::from((StatusCode::CREATED, Data(item))).header("location", req.path()),
        }
    }

    async fn delete(&self, req: &mut Request) -> Reply {
        let Some(id) = req.binding("id") else {
            return on_the_collection();
        };
        match self.items().remove(id) {
            Some(_) => StatusCode::NO_CONTENT.into(),
            None => not_found(id),
        }
    }
}

fn not_found(id: &str) -> Reply {
    (StatusCode::NOT_FOUND, format!("no item `{id}`\n")).into()
}

/// `PUT` and `DELETE` name one item; the collection itself is read-only.
fn on_the_collection() -> Reply {
    Reply::new(StatusCode::METHOD_NOT_ALLOWED).header("allow", "GET, HEAD, OPTIONS")
}

/// The user and password that writes need: `ATOLL_EXAMPLE_USER` and `ATOLL_EXAMPLE_PASSWORD`,
/// `admin` and `secret` when unset.
pub(crate) fn credentials() -> (String, String) {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    (
        var("ATOLL_EXAMPLE_USER", "admin"),
        var("ATOLL_EXAMPLE_PASSWORD", "secret"),
    )
}

/// What the listener serves: the items resource on any host.
pub(crate) fn handlers() -> Handlers {
    Handlers::new().host("_").resource(Items::from_env())
}

// ===== main =====

// Unused when tests/example_rest_api.rs includes this file as a module.
#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let port = match std::env::var("PORT") {
        Ok(text) => text
            .parse::<u16>()
            .map_err(|e| format!("PORT `{text}` is not a port number: {e}"))?,
        Err(_) => 8080,
    };
    let web = HttpListener::new(handlers())
        .name("rest_api")
        .port(port)
        .start()?;

    let url = format!("http://{}/api/items", web.local_addr());
    let (user, password) = credentials();
    let auth = format!("{user}:{password}");
    println!("listening on {}; try:", web.local_addr());
    println!("  curl -i {url}");
    println!(
        "  curl -i -u {auth} -X PUT -H 'content-type: application/json' \
         --data '{{\"name\":\"teapot\",\"quantity\":2}}' {url}/1"
    );
    println!("  curl -i {url}/1");
    println!("  curl -i -u {auth} -X DELETE {url}/1");

    tokio::signal::ctrl_c().await?;
    let report = web.shutdown().await;
    println!(
        "stopped: {} drained, {} forced",
        report.drained, report.forced
    );
    Ok(())
}
