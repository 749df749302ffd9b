//! `atoll serve` with an admin listener: `/livez`, `/readyz` and `/metrics` (build info,
//! reloads), and `[app] drain_delay`: on SIGTERM `/readyz` answers 503 at once while the
//! other listeners still answer, then the process stops.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use ::http::StatusCode;
use common::control::ctl;
use common::http::Client;
use common::process::Atoll;
use common::{within, WAIT};

fn config(drain_delay: &str) -> String {
    format!(
        r#"[app]
node = "t"
drain_delay = "{drain_delay}"

[[listener]]
name = "web"
kind = "http"
ip = "127.0.0.1"
port = 0
shutdown_timeout = "2s"
[[listener.handlers]]
resources = ["health"]

[[listener]]
name = "admin"
kind = "admin"
ip = "127.0.0.1"
port = 0
shutdown_timeout = "2s"
"#
    )
}

struct Served {
    _dir: tempfile::TempDir,
    config: PathBuf,
    atoll: Atoll,
    web: SocketAddr,
    admin: SocketAddr,
}

fn serve(drain_delay: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&config, self::config(drain_delay)).unwrap();
    let atoll = Atoll::serve(&config);
    let listening = atoll.listening(2);
    let addr = |name: &str| {
        listening
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, a)| *a)
            .unwrap()
    };
    Served {
        web: addr("web"),
        admin: addr("admin"),
        _dir: dir,
        config,
        atoll,
    }
}

/// Asks `/readyz` until it answers 503, within the wait.
async fn until_draining(admin: &mut Client) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = admin.get("/readyz").await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.text(), "draining\n");
            return;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(Instant::now() < deadline, "/readyz never answered 503");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let s = serve("0s");
    let mut admin = Client::h1(s.admin).await;
    let live = admin.get("/livez").await;
    assert_eq!((live.status, live.text()), (StatusCode::OK, "ok\n".into()));
    assert_eq!(admin.get("/readyz").await.status, StatusCode::OK);

    let mut web = Client::h1(s.web).await;
    assert_eq!(web.get("/health").await.status, StatusCode::OK);
    ctl(&s.config, &["reload"]).ok();
    let text = admin.get("/metrics").await.text();
    let version = env!("CARGO_PKG_VERSION");
    for line in [
        format!("atoll_build_info{{version=\"{version}\"}} 1"),
        "atoll_reloads_total{outcome=\"ok\"} 1".to_owned(),
        "atoll_http_requests_total{listener=\"web\",status=\"2xx\"} 1".to_owned(),
        "# TYPE atoll_http_request_duration_seconds histogram".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readiness_first_then_stops() {
    let mut s = serve("2s");
    let mut admin = Client::h1(s.admin).await;
    let mut kept = Client::h1(s.web).await;
    assert_eq!(kept.get("/health").await.status, StatusCode::OK);
    assert_eq!(admin.get("/readyz").await.status, StatusCode::OK);

    s.atoll.signal("TERM");
    until_draining(&mut admin).await;
    // Still serving: a kept-alive connection and a new one.
    assert_eq!(kept.get("/health").await.status, StatusCode::OK);
    let mut fresh = Client::h1(s.web).await;
    assert_eq!(fresh.get("/health").await.status, StatusCode::OK);
    assert!(s.atoll.is_running());
    drop((admin, kept, fresh));

    let status = within(
        "atoll to exit",
        tokio::task::spawn_blocking(move || s.atoll.exit()),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_delay_short() {
    let mut s = serve("1h");
    let mut admin = Client::h1(s.admin).await;
    s.atoll.signal("TERM");
    until_draining(&mut admin).await;
    let mut web = Client::h1(s.web).await;
    assert_eq!(web.get("/health").await.status, StatusCode::OK);
    drop((admin, web));

    s.atoll.signal("TERM");
    let status = within(
        "atoll to exit",
        tokio::task::spawn_blocking(move || s.atoll.exit()),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
}
