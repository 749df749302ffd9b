//! `atoll reload` and SIGHUP on a running `atoll serve`: listeners added, removed, updated in
//! place and replaced without refusing a connect; a config that fails changes nothing.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::control::ctl;
use common::process::Atoll;

fn listener(name: &str, kind: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"2s\"\n{extra}\n"
    )
}

fn web(resources: &str) -> String {
    listener(
        "web",
        "http",
        &format!("[[listener.handlers]]\nhost = \"_\"\nresources = [{resources}]\n"),
    )
}

const HEAD: &str = "[app]\nnode = \"t\"\n\n";

struct Served {
    _dir: tempfile::TempDir,
    config: PathBuf,
    atoll: Atoll,
}

fn serve(text: &str, n: usize) -> (Served, BTreeMap<String, SocketAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&config, text).unwrap();
    let atoll = Atoll::serve(&config);
    let addrs = atoll
        .listening(n)
        .into_iter()
        .map(|(name, _, addr)| (name, addr))
        .collect();
    (
        Served {
            _dir: dir,
            config,
            atoll,
        },
        addrs,
    )
}

fn addrs(config: &Path) -> BTreeMap<String, SocketAddr> {
    let json = ctl(config, &["listeners", "--json"]).json();
    json.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["addr"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// `GET path` on a keep-alive connection; returns the status code.
fn get(stream: &mut TcpStream, path: &str) -> u16 {
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

#[test]
fn reload_starts_stops_updates_and_replaces_listeners() {
    let before = format!(
        "{HEAD}{}{}{}{}",
        listener("keep", "echo", ""),
        listener("gone", "echo", ""),
        listener("tuned", "echo", "max_connections = 100"),
        web("\"health\""),
    );
    let (served, start) = serve(&before, 4);
    let config = &served.config;
    let mut kept = TcpStream::connect(start["keep"]).unwrap();
    common::echo_sync(&mut kept, b"a");
    let mut browser = TcpStream::connect(start["web"]).unwrap();
    assert_eq!(get(&mut browser, "/health"), 200);
    assert_eq!(get(&mut browser, "/listeners"), 404);

    let after = format!(
        "{HEAD}{}{}{}{}",
        listener("keep", "echo", ""),
        listener("tuned", "echo", "max_connections = 200"),
        listener("added", "echo", ""),
        web("\"health\", \"listeners\""),
    );
    std::fs::write(config, after).unwrap();
    let report = ctl(config, &["reload", "--json"]).json();
    assert_eq!(report["started"], serde_json::json!(["added"]), "{report}");
    assert_eq!(report["updated"], serde_json::json!(["web"]), "{report}");
    assert_eq!(report["replaced"][0]["name"], "tuned", "{report}");
    assert_eq!(report["stopped"][0]["name"], "gone", "{report}");
    assert_eq!(report["unchanged"], serde_json::json!(["keep"]), "{report}");

    let now = addrs(config);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        ["added", "keep", "tuned", "web"]
    );
    // Unchanged: the same socket, the same connection.
    assert_eq!(now["keep"], start["keep"]);
    common::echo_sync(&mut kept, b"b");
    // Updated in place: the same keep-alive connection sees the new routes.
    assert_eq!(now["web"], start["web"]);
    assert_eq!(get(&mut browser, "/listeners"), 200);
    // Replaced on the same address (port 0 kept the port it had).
    assert_eq!(now["tuned"], start["tuned"]);
    common::echo_sync(&mut TcpStream::connect(now["tuned"]).unwrap(), b"c");
    common::echo_sync(&mut TcpStream::connect(now["added"]).unwrap(), b"d");
    assert!(
        TcpStream::connect(start["gone"]).is_err(),
        "a removed listener accepts"
    );

    // The same config again changes nothing.
    let report = ctl(config, &["reload", "--json"]).json();
    assert_eq!(
        report["unchanged"],
        serde_json::json!(["keep", "tuned", "added", "web"]),
        "{report}"
    );
}

#[test]
fn a_replaced_http_listener_fails_no_request() {
    let web_with = |n: usize| {
        listener(
            "web",
            "http",
            &format!("max_connections = {n}\n[[listener.handlers]]\nhost = \"_\"\nresources = [\"health\"]\n"),
        )
    };
    let (served, start) = serve(&format!("{HEAD}{}", web_with(100)), 1);
    let addr = start["web"];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    // A request on a new connection at a time, all through the reloads; each must be
    // answered 200.
    let client = std::thread::spawn(move || {
        let mut done = 0u32;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && done < 100_000 {
            let mut s = TcpStream::connect(addr).expect("a connect was refused");
            assert_eq!(get(&mut s, "/health"), 200);
            done += 1;
        }
        done
    });
    for i in 0..5 {
        std::fs::write(&served.config, format!("{HEAD}{}", web_with(101 + i))).unwrap();
        let report = ctl(&served.config, &["reload", "--json"]).json();
        assert_eq!(report["replaced"][0]["name"], "web", "{report}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = client.join().expect("a request failed");
    assert!(done > 0);
    assert_eq!(addrs(&served.config)["web"], addr);
}

/// A listener renamed on its address takes over the old one's sockets. Before, the new one
/// bound afresh: without SO_REUSEPORT that failed ("address in use") and the reload changed
/// nothing; with it, connects queued at the old socket would be reset as it closed.
#[test]
fn a_listener_renamed_on_its_address_takes_over_refusing_no_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let at_port =
        |name: &str| listener(name, "echo", "").replace("port = 0", &format!("port = {port}"));
    let (served, start) = serve(&format!("{HEAD}{}", at_port("old")), 1);
    let addr = start["old"];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    // An echo on a new connection at a time, all through the reload.
    let client = std::thread::spawn(move || {
        let mut done = 0u32;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && done < 100_000 {
            common::echo_at(addr, b"x");
            done += 1;
        }
        done
    });
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&served.config, format!("{HEAD}{}", at_port("new"))).unwrap();
    let report = ctl(&served.config, &["reload", "--json"]).json();
    assert_eq!(report["started"], serde_json::json!(["new"]), "{report}");
    assert_eq!(report["stopped"][0]["name"], "old", "{report}");
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = client.join().expect("an echo failed");
    assert!(done > 0);
    assert_eq!(
        addrs(&served.config),
        BTreeMap::from([("new".to_owned(), addr)])
    );
}

#[test]
fn a_config_that_fails_changes_nothing() {
    let good = format!("{HEAD}{}{}", listener("e", "echo", ""), web("\"health\""));
    let (served, start) = serve(&good, 2);
    let config = served.config.clone();

    // A syntax error: the server is not even asked.
    std::fs::write(&config, format!("{good}\n[[listener]\n")).unwrap();
    let line = ctl(&config, &["reload"]).fails();
    assert!(line.contains("atoll.toml: line"), "{line}");

    // It loads, but a listener cannot start: a new one and a changed one, in one reload.
    let bad = format!(
        "{HEAD}{}{}{}",
        listener("e", "echo", ""),
        listener("new", "echo", ""),
        web("\"health\", \"no-such-resource\""),
    );
    std::fs::write(&config, bad).unwrap();
    let line = ctl(&config, &["reload"]).fails();
    assert!(
        line.contains("no-such-resource") && line.contains("nothing was changed"),
        "{line}"
    );
    assert_eq!(
        addrs(&config),
        start,
        "the failed reload left something behind"
    );
    let mut browser = TcpStream::connect(start["web"]).unwrap();
    assert_eq!(get(&mut browser, "/health"), 200);

    // An unknown key in a listener table.
    std::fs::write(
        &config,
        format!("{HEAD}{}", listener("e", "echo", "prot = 1")),
    )
    .unwrap();
    let line = ctl(&config, &["reload"]).fails();
    assert!(line.contains("prot"), "{line}");
    assert_eq!(addrs(&config), start);

    // SIGHUP with a bad config: logged, and nothing changes.
    served.atoll.signal("HUP");
    served.atoll.wait_for_log("reload (SIGHUP) failed");
    assert_eq!(addrs(&config), start);
}

#[test]
fn sighup_reloads() {
    let (served, _) = serve(&format!("{HEAD}{}", listener("e", "echo", "")), 1);
    let more = format!(
        "{HEAD}{}{}",
        listener("e", "echo", ""),
        listener("f", "echo", "")
    );
    std::fs::write(&served.config, more).unwrap();
    served.atoll.signal("HUP");
    let deadline = Instant::now() + common::WAIT;
    loop {
        let now = addrs(&served.config);
        if let Some(addr) = now.get("f") {
            common::echo_sync(&mut TcpStream::connect(addr).unwrap(), b"hup");
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not start `f`");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every way a reload can fail answers with its one line, changes nothing, and leaves the
/// server serving, answering control commands, and stopping on SIGTERM.
#[test]
fn every_failing_reload_leaves_the_server_serving_and_controllable() {
    let pki = common::Pki::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let good = format!("{HEAD}{}{}", listener("e", "echo", ""), web("\"health\""));
    let (mut served, start) = serve(&good, 2);
    let config = served.config.clone();
    let tls = |cert: &Path| {
        format!(
            "[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            pki.server_key.display()
        )
    };
    let cases = [
        // An existing listener whose kind changes to one nobody registered.
        (
            "changed to an unknown kind",
            format!("{HEAD}{}{}", listener("e", "echoo", ""), web("\"health\"")),
            "listener `e`: invalid configuration: unknown kind `echoo`",
        ),
        (
            "a new listener of an unknown kind",
            format!("{good}{}", listener("n", "echoo", "")),
            "echoo",
        ),
        // A kind that is known, but not what the listener's table says.
        (
            "changed kind with bad settings",
            format!(
                "{HEAD}{}{}",
                listener(
                    "e",
                    "http",
                    "[[listener.handlers]]\nhost = \"_\"\nresources = [\"nope\"]\n"
                ),
                web("\"health\"")
            ),
            "nope",
        ),
        (
            "a changed listener's certificate is missing",
            format!(
                "{HEAD}{}{}",
                listener("e", "echo", &tls(&pki.dir.path().join("missing.pem"))),
                web("\"health\"")
            ),
            "missing.pem",
        ),
        (
            "a changed listener's certificate is not a certificate",
            format!(
                "{HEAD}{}{}",
                listener("e", "echo", &tls(&pki.server_key)),
                web("\"health\"")
            ),
            "server-key.pem",
        ),
        (
            "a changed listener's port is taken",
            format!(
                "{HEAD}{}{}",
                listener("e", "echo", "").replace("port = 0", &format!("port = {taken_port}")),
                web("\"health\"")
            ),
            "listener `e`: cannot listen on",
        ),
        (
            "bad handlers",
            format!("{HEAD}{}{}", listener("e", "echo", ""), web("\"no-such\"")),
            "no-such",
        ),
        (
            "a listener renamed onto a taken port",
            format!(
                "{HEAD}{}{}",
                listener("e2", "echo", "").replace("port = 0", &format!("port = {taken_port}")),
                web("\"health\"")
            ),
            "listener `e2`: cannot listen on",
        ),
    ];
    for (what, text, named) in &cases {
        std::fs::write(&config, text).unwrap();
        let line = ctl(&config, &["reload"]).fails();
        assert!(
            line.contains(named) && line.contains("nothing was changed"),
            "{what}: {line}"
        );
        assert_eq!(
            addrs(&config),
            start,
            "{what}: the failed reload left a change"
        );
        common::echo_sync(&mut TcpStream::connect(start["e"]).unwrap(), b"still");
        let mut browser = TcpStream::connect(start["web"]).unwrap();
        assert_eq!(get(&mut browser, "/health"), 200, "{what}");
        ctl(&config, &["status"]).ok();
    }

    // The same through SIGHUP: logged, and the server still answers.
    std::fs::write(&config, &cases[0].1).unwrap();
    served.atoll.signal("HUP");
    served.atoll.wait_for_log("reload (SIGHUP) failed");
    assert_eq!(addrs(&config), start);

    // And SIGTERM still stops it.
    served.atoll.signal("TERM");
    assert!(served.atoll.exit().success());
    drop(taken);
}
