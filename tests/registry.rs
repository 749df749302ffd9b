//! The listener registry: start from a spec, list, uptime, stop by name, typed errors.

mod common;

use std::time::Duration;

use atoll::echo::Echo;
use atoll::telemetry::EventKind;
use atoll::{ErrorKind, ListenerSpec, Registry, Server};
use common::*;
use tokio::net::TcpStream;

fn spec(name: &str) -> ListenerSpec {
    let mut s = ListenerSpec::new(name, "echo");
    s.options.ip = LOCALHOST;
    s.options.port = 0;
    s
}

#[tokio::test]
async fn list_uptime_and_stop_by_name() {
    let registry = Registry::new();
    let a = registry.start_spec(&spec("alpha")).unwrap();
    let b = registry
        .start("echo", Server::new(Echo).name("beta").ip(LOCALHOST).port(0))
        .unwrap();
    let mut client = within(
        "connect",
        TcpStream::connect(a.local_addr().inet().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(echo_roundtrip(&mut client, b"reg").await, b"reg");

    let listed = registry.list();
    let names: Vec<_> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(listed[0].kind, "echo");
    assert_eq!(listed[0].addr, *a.local_addr());
    assert_eq!(listed[0].connections, 1);
    assert_eq!(listed[1].addr, *b.local_addr());

    let before = registry.uptime("alpha").unwrap();
    // leptus's `{Days, {H, M, S}}`, over the whole duration.
    assert_eq!((before.days(), before.hours(), before.minutes()), (0, 0, 0));
    assert!(before.duration() < WAIT);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        registry.uptime("alpha").unwrap() > before,
        "uptime does not advance"
    );

    drop(client);
    let report = within("stop", registry.stop("alpha", Some(WAIT)))
        .await
        .unwrap();
    assert_eq!(report.forced, 0);
    assert_eq!(registry.list().len(), 1);
    assert!(within(
        "connect",
        TcpStream::connect(a.local_addr().inet().unwrap())
    )
    .await
    .is_err());

    // Not found is a typed error, for stop and uptime alike.
    let err = within("stop", registry.stop("alpha", None))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("listener `alpha`"));
    assert_eq!(
        registry.uptime("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let stopped = within("stop all", registry.stop_all()).await;
    assert_eq!(stopped.len(), 1);
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn names_are_unique_and_kinds_must_be_known() {
    let registry = Registry::new();
    registry.start_spec(&spec("one")).unwrap();
    let err = registry.start_spec(&spec("one")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyRunning);

    let mut odd = spec("two");
    odd.kind = "gopher".into();
    let err = registry.start_spec(&odd).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("unknown kind `gopher`"), "{err}");

    // Applications register their own kinds.
    registry.add_kind("gopher", |spec| spec.server(Echo)?.start());
    registry.start_spec(&odd).unwrap();
    assert_eq!(registry.list().len(), 2);
    within("stop all", registry.stop_all()).await;
}

/// Replacing a running listener by one of an unknown kind, or one that cannot start, is an
/// error that leaves the registry answering and the old listener running.
#[tokio::test]
async fn a_failed_replace_leaves_the_registry_usable() {
    let registry = Registry::new();
    let old = registry.start_spec(&spec("one")).unwrap();
    let addr = old.local_addr().to_string();

    let mut odd = spec("one");
    odd.kind = "gopher".into();
    let err = within("replace by an unknown kind", registry.replace(&odd, true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("unknown kind `gopher`"), "{err}");

    registry.add_kind("broken", |spec| {
        Err(atoll::Error::new(ErrorKind::Config).context(format!("{} cannot start", spec.name)))
    });
    let mut broken = spec("one");
    broken.kind = "broken".into();
    let err = within(
        "replace by a kind that fails",
        registry.replace(&broken, true),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("one cannot start"), "{err}");

    // Still answering, and the old listener still serves under its name.
    let list = registry.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].kind, "echo");
    assert_eq!(registry.get("one").unwrap().local_addr().to_string(), addr);
    let mut s = within("connect", TcpStream::connect(addr.as_str()))
        .await
        .unwrap();
    echo_roundtrip(&mut s, b"after").await;
    within("stop all", registry.stop_all()).await;
}

/// ThousandIsland's `[:listener, :error]`: a listener that cannot start emits
/// `listener.error` on its spec's hub, with the error its caller gets: at a start (an address
/// in use) and at a replace, as a reload does (a TLS file that is missing).
#[tokio::test]
async fn a_listener_that_cannot_start_emits_listener_error() {
    let registry = Registry::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut busy = spec("busy");
    busy.options.port = taken.local_addr().unwrap().port();
    let events = Events::default();
    busy.telemetry.attach(events.clone());
    let e = registry.start_spec(&busy).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddressInUse);
    assert_eq!(events.kinds(), [EventKind::ListenerError]);
    assert!(EventKind::ListenerError.is_error());
    assert_eq!(EventKind::ListenerError.name(), "listener.error");
    assert_eq!(
        events.first_error(EventKind::ListenerError),
        Some(e.to_string())
    );
    assert!(registry.list().is_empty());

    let running = registry.start_spec(&spec("alpha")).unwrap();
    let mut tls = spec("alpha");
    tls.tls = Some(atoll::TlsOptions::new(
        "/no/such/cert.pem",
        "/no/such/key.pem",
    ));
    let events = Events::default();
    tls.telemetry.attach(events.clone());
    let e = within("replace", registry.replace(&tls, false))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Certificate);
    assert!(
        e.to_string().contains("/no/such/cert.pem: file not found"),
        "{e}"
    );
    assert_eq!(events.kinds(), [EventKind::ListenerError]);
    // The running listener is left as it was.
    assert_eq!(
        registry.get("alpha").unwrap().local_addr(),
        running.local_addr()
    );
    let _ = within("stop", registry.stop("alpha", Some(WAIT))).await;
}
