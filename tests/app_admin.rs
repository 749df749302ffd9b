//! `atoll serve` with an admin listener: `/livez`, `/readyz` and `/metrics` (build info,
//! reloads), `[app] drain_delay`: on SIGTERM `/readyz` answers 503 at once while the other
//! listeners still answer, then the process stops; and an upgrade, after which the new
//! process answers on the same port with its own counters.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use ::http::StatusCode;
use common::control::ctl;
use common::http::Client;
use common::process::{terminate, Atoll, Reaper};
use common::prometheus::{sample, scrape, value};
use common::{within, WAIT};
use prometheus_parse::{Sample, Value};

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

/// `atoll upgrade --path BINARY`: the admin listener answers `/livez` and `/readyz` from the
/// new process on the same port, and `/metrics` is the new process's. The upgrade is counted
/// by the process it was asked of, which hands everything over and exits: once it has, no
/// scrape of the admin port sees that count, not even one on a connection kept alive across
/// the upgrade (it moves to the new process), and the new process starts its counters afresh,
/// as Prometheus expects of a new process, without `atoll_upgrades_total` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_from_the_new_process_after_an_upgrade() {
    let Served {
        _dir,
        config,
        mut atoll,
        web,
        admin,
    } = serve("0s");
    let reaper = Reaper::default();
    reaper.add(atoll.pid());
    let old_pid = atoll.pid();
    let upgrades = |samples: &[Sample], outcome: &str| {
        sample(samples, "atoll_upgrades_total", &[("outcome", outcome)]).map(|s| s.value.clone())
    };

    // A failed upgrade: the process that was asked goes on serving, and shows it.
    ctl(&config, &["upgrade", "--path", "/no/such/atoll"]).fails();
    let mut kept = Client::h1(admin).await;
    let before = scrape(&mut kept).await;
    assert_eq!(upgrades(&before, "failed"), Some(Value::Counter(1.0)));
    assert_eq!(upgrades(&before, "ok"), None);

    let binary = env!("CARGO_BIN_EXE_atoll");
    let answer = ctl(&config, &["upgrade", "--path", binary, "--json"]).json();
    let new_pid = answer["pid"].as_u64().expect("the new pid") as u32;
    reaper.add(new_pid);
    assert_eq!(answer["old_pid"], old_pid, "{answer}");
    assert_ne!(new_pid, old_pid);
    // The old process drains and exits: from then on, only the new one can answer.
    let status = within(
        "the old process to exit",
        tokio::task::spawn_blocking(move || atoll.exited()),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(ctl(&config, &["status", "--json"]).json()["pid"], new_pid);

    // The scraper's kept-alive connection moved to the new process between two requests:
    // its next scrape shows none of the old process's counts, neither the failed upgrade nor
    // this one.
    let moved = scrape(&mut kept).await;
    assert_eq!(
        value(
            &moved,
            "atoll_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        sample(&moved, "atoll_upgrades_total", &[]).is_none(),
        "{moved:?}"
    );

    let mut client = Client::h1(admin).await;
    for (path, body) in [("/livez", "ok\n"), ("/readyz", "ready\n")] {
        let r = client.get(path).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, body),
            "{path}"
        );
    }
    let mut web = Client::h1(web).await;
    assert_eq!(web.get("/health").await.status, StatusCode::OK);

    // The new process counts from its start: the web request just made, and no upgrade.
    let after = scrape(&mut client).await;
    let ok = [("listener", "web"), ("status", "2xx")];
    assert_eq!(value(&after, "atoll_http_requests_total", &ok), 1.0);
    assert!(
        sample(&after, "atoll_upgrades_total", &[]).is_none(),
        "{after:?}"
    );
    // The new process is the one to stop now; the reaper kills it if this fails first.
    drop((kept, client, web));
    terminate(new_pid);
}
