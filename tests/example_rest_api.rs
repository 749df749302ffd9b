//! The REST API example's resource, served on 127.0.0.1:0 and driven over real connections.
mod common;

#[path = "../examples/rest_api.rs"]
mod rest_api;

use atoll::http::HttpListener;
use base64::Engine;
use bytes::Bytes;
use common::http::{req, Client, HttpTest, Resp};
use http::Method;
use http_body_util::Full;
use rest_api::Item;

/// The `Authorization` value for the example's default credentials.
fn admin() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("admin:secret");
    format!("Basic {token}")
}

fn start() -> HttpTest {
    HttpTest::start(HttpListener::new(rest_api::handlers()))
}

async fn put_json(c: &mut Client, path: &str, auth: Option<&str>, body: &str) -> Resp {
    let mut r = req(Method::PUT, path).header("content-type", "application/json");
    if let Some(auth) = auth {
        r = r.header("authorization", auth);
    }
    c.send(r.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
}

async fn delete(c: &mut Client, path: &str, auth: Option<&str>) -> Resp {
    let mut r = req(Method::DELETE, path);
    if let Some(auth) = auth {
        r = r.header("authorization", auth);
    }
    c.send(r.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn reads_are_open_and_writes_need_basic_auth() {
    let t = start();
    let mut c = t.h1().await;

    let r = c.get("/api/items").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({}));

    let body = r#"{"name":"teapot","quantity":2}"#;
    let r = put_json(&mut c, "/api/items/1", None, body).await;
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Basic realm=\"items\""),
        "{challenge}"
    );

    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:guess")
    );
    let r = put_json(&mut c, "/api/items/1", Some(&wrong), body).await;
    assert_eq!(r.status, 401);

    let r = delete(&mut c, "/api/items/1", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        c.get("/api/items/1").await.status,
        404,
        "nothing was written"
    );
}

#[tokio::test]
async fn put_get_list_delete() {
    let t = start();
    let mut c = t.h1().await;
    let teapot = Item {
        name: "teapot".into(),
        quantity: 2,
    };

    let r = put_json(
        &mut c,
        "/api/items/1",
        Some(&admin()),
        r#"{"name":"teapot","quantity":1}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/api/items/1"));
    let r = put_json(
        &mut c,
        "/api/items/1",
        Some(&admin()),
        r#"{"name":"teapot","quantity":2}"#,
    )
    .await;
    assert_eq!(r.status, 200, "a second PUT replaces");

    let r = c.get("/api/items/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "teapot", "quantity": 2})
    );

    let r = c
        .send(
            req(Method::GET, "/api/items/1")
                .header("accept", "application/msgpack")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/msgpack"));
    let decoded: Item = rmp_serde::from_slice(&r.body).expect("a MessagePack item");
    assert_eq!(decoded, teapot);

    let r = c.get("/api/items").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"1": {"name": "teapot", "quantity": 2}})
    );

    assert_eq!(
        delete(&mut c, "/api/items/1", Some(&admin())).await.status,
        204
    );
    assert_eq!(c.get("/api/items/1").await.status, 404);
    assert_eq!(
        delete(&mut c, "/api/items/1", Some(&admin())).await.status,
        404
    );
    assert_eq!(c.get("/api/items").await.json(), serde_json::json!({}));
}

#[tokio::test]
async fn a_messagepack_body_is_decoded_by_its_content_type() {
    let t = start();
    let mut c = t.h1().await;
    let kettle = Item {
        name: "kettle".into(),
        quantity: 3,
    };
    let body = rmp_serde::to_vec_named(&kettle).unwrap();
    let r = c
        .send(
            req(Method::PUT, "/api/items/k")
                .header("authorization", admin())
                .header("content-type", "application/msgpack")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        c.get("/api/items/k").await.json(),
        serde_json::json!({"name": "kettle", "quantity": 3})
    );
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_400() {
    let t = start();
    let mut c = t.h1().await;
    for body in [r#"{"name": "#, r#"{"nmae":"typo"}"#, "[]"] {
        let r = put_json(&mut c, "/api/items/1", Some(&admin()), body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().starts_with("bad JSON body"), "{}", r.text());
    }
    assert_eq!(c.get("/api/items/1").await.status, 404);
}

#[tokio::test]
async fn writes_on_the_collection_are_405() {
    let t = start();
    let mut c = t.h1().await;
    let r = put_json(&mut c, "/api/items", Some(&admin()), r#"{"name":"x"}"#).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[tokio::test]
async fn cors_preflight_from_allowed_origins_only() {
    let t = start();
    let mut c = t.h1().await;
    let preflight = |origin: &str| {
        req(Method::OPTIONS, "/api/items/1")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Full::default())
            .unwrap()
    };

    for origin in ["http://localhost:3000", "https://app.example.com"] {
        let r = c.send(preflight(origin)).await;
        assert_eq!(r.status, 204, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        assert!(methods.contains("PUT"), "{methods}");
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("authorization, content-type")
        );
    }

    let r = c.send(preflight("http://localhost:4000")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // The simple request that follows carries the header too.
    let r = c
        .send(
            req(Method::GET, "/api/items")
                .header("origin", "http://localhost:3000")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
}

#[tokio::test]
async fn curl_puts_with_basic_auth() {
    let t = start();
    let url = t.url("/api/items/from-curl");
    let out = common::http::curl(&[
        "-u",
        "admin:secret",
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "--data",
        r#"{"name":"mug","quantity":6}"#,
        "--write-out",
        "\n%{http_code}",
        &url,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').expect("a status line");
    assert_eq!(code, "201", "{stdout}");
    let item: serde_json::Value = serde_json::from_str(body).expect("the item back as JSON");
    assert_eq!(item, serde_json::json!({"name": "mug", "quantity": 6}));

    let r = t.h1().await.get("/api/items/from-curl").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "mug");
}
