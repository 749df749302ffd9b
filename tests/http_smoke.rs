//! The HTTP listener answers over a real connection.
mod common;

use atoll::http::{Handlers, Health, HttpListener};
use common::http::{Client, HttpTest};

#[tokio::test]
async fn health_answers_over_http1_and_h2c() {
    let t = HttpTest::start(HttpListener::new(
        Handlers::new().resource(Health::default()),
    ));
    let r = t.h1().await.get("/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let mut h2 = Client::h2c(t.addr()).await;
    let r = h2
        .send(
            common::http::req2(http::Method::GET, "/health")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.version), (200, http::Version::HTTP_2));
}
