//! The `atoll` binary's RPC side, run for real: `atoll serve` with `rpc` listeners (plain and
//! mutual TLS) running the built-in key-value service, `atoll rpc` calling it, a library client
//! receiving the pushes, and the one-line errors for bad configs and bad calls.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use atoll::rpc::kv::{Kv, KvChange, KvReply, KvRequest};
use atoll::rpc::Client;
use common::process::Atoll;
use common::{within, Pki, WAIT};

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("atoll.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const PLAIN: &str =
    "[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\nshutdown_timeout = \"1s\"\n";

/// Starts `atoll serve` on `text`, which declares one `rpc` listener; returns its address.
fn serve_rpc(dir: &Path, text: &str) -> (Atoll, SocketAddr) {
    let atoll = Atoll::serve(&write_config(dir, text));
    let (name, kind, addr) = atoll.listening(1).remove(0);
    assert_eq!((name.as_str(), kind.as_str()), ("kv", "rpc"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "default ip");
    (atoll, addr)
}

/// Runs `atoll rpc ARGS`; returns the exit code, stdout and stderr.
fn rpc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .arg("rpc")
        .args(args)
        .output()
        .expect("run atoll rpc");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

/// `atoll rpc ARGS`, which must succeed; returns the line it printed.
fn rpc_ok(args: &[&str]) -> String {
    let (code, out, err) = rpc(args);
    assert_eq!(code, 0, "atoll rpc {args:?}: {err}");
    assert!(err.is_empty(), "{err}");
    out.trim_end().to_owned()
}

#[tokio::test]
async fn atoll_rpc_calls_the_kv_service_and_other_clients_get_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut atoll, addr) = serve_rpc(dir.path(), PLAIN);
    let a = addr.to_string();

    // A library client, connected first, hears of every change the command line makes.
    let pushed = Arc::new(Mutex::new(Vec::<KvChange>::new()));
    let sink = pushed.clone();
    let watcher = within(
        "the watcher's connect",
        Client::<Kv>::builder(a.clone())
            .on_push(move |change| sink.lock().unwrap().push(change))
            .connect(),
    )
    .await
    .expect("connect");

    assert_eq!(
        rpc_ok(&[&a, "put", "greeting", "hello"]),
        r#"{"stored":{"previous":null}}"#
    );
    assert_eq!(
        rpc_ok(&[&a, "put", "n", "42"]),
        r#"{"stored":{"previous":null}}"#
    );
    assert_eq!(
        rpc_ok(&[&a, "put", "n", r#"{"deep":[1,2]}"#]),
        r#"{"stored":{"previous":42}}"#
    );
    assert_eq!(rpc_ok(&[&a, "get", "greeting"]), r#"{"value":"hello"}"#);
    assert_eq!(rpc_ok(&[&a, "list"]), r#"{"keys":["greeting","n"]}"#);
    assert_eq!(
        rpc_ok(&[&a, "delete", "n"]),
        r#"{"deleted":{"existed":true}}"#
    );
    assert_eq!(rpc_ok(&[&a, "get", "n"]), r#"{"value":null}"#);

    // The watcher's view through its own calls agrees with the command line's.
    let reply = within("list", watcher.call(&KvRequest::List))
        .await
        .unwrap();
    assert_eq!(reply, KvReply::Keys(vec!["greeting".into()]));
    let deadline = std::time::Instant::now() + WAIT;
    while pushed.lock().unwrap().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let keys: Vec<(String, bool)> = pushed
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.key.clone(), c.value.is_some()))
        .collect();
    let expected = [("greeting", true), ("n", true), ("n", true), ("n", false)];
    let expected: Vec<(String, bool)> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(keys, expected, "one push per change, deletes included");

    watcher.close().await;
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0), "{}", atoll.stderr());
}

#[test]
fn atoll_rpc_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (_atoll, addr) = serve_rpc(dir.path(), PLAIN);
    let a = addr.to_string();

    let (code, out, err) = rpc(&[&a, "incr", "x"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("unknown method `incr`"), "{err}");

    let (code, _, err) = rpc(&[&a, "put", "only-a-key"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`put` takes KEY VALUE, got 1 argument"),
        "{err}"
    );

    // Nothing listens on port 1 of 127.0.0.1.
    let (code, _, err) = rpc(&["127.0.0.1:1", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_rpc_listener_with_mutual_tls_takes_only_clients_with_a_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nshutdown_timeout = \"1s\"\n\
         tls = {{ cert = {:?}, key = {:?}, cacert = {:?} }}\n",
        pki.server_cert, pki.server_key, pki.ca
    );
    let (_atoll, addr) = serve_rpc(dir.path(), &config);
    let port = addr.port().to_string();
    let host = format!("localhost:{port}");
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));

    let with_cert = ["--ca", &ca, "--cert", &cert, "--key", &key];
    let mut args: Vec<&str> = with_cert.to_vec();
    args.extend([host.as_str(), "put", "k", "v"]);
    assert_eq!(rpc_ok(&args), r#"{"stored":{"previous":null}}"#);

    // Without a client certificate: refused at the handshake.
    let (code, _, err) = rpc(&["--ca", &ca, &host, "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    // Plain TCP to a TLS daemon: no hello comes back.
    let (code, _, err) = rpc(&["--timeout", "1s", &host, "list"]);
    assert_eq!(code, 1, "{err}");

    // A certificate from another CA: refused too.
    let (rogue, rogue_key) = (path(&pki.rogue_cert), path(&pki.rogue_key));
    let (code, _, err) = rpc(&[
        "--ca", &ca, "--cert", &rogue, "--key", &rogue_key, &host, "list",
    ]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn bad_rpc_configs_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |text: &str| Atoll::fails_with(&write_config(dir.path(), text));
    let base = "[[listener]]\nname = \"kv\"\nkind = \"rpc\"\n";

    let line = fails(base);
    assert!(line.contains("listener `kv`"), "{line}");
    assert!(
        line.contains("needs a [listener.tls] table, or `plain = true`"),
        "{line}"
    );

    let line = fails(&format!("{base}plain = true\nmax_frame = 10\n"));
    assert!(line.contains("unknown field `max_frame`"), "{line}");

    let line = fails(&format!("{base}plain = true\nservice = \"bank\"\n"));
    assert!(
        line.contains("unknown service \"bank\" (known: kv)"),
        "{line}"
    );

    let line = fails(&format!("{base}plain = true\nversion = \"1.0\"\n"));
    assert!(line.contains("version `1.0`"), "{line}");

    let line = fails(&format!("{base}plain = \"yes\"\n"));
    assert!(line.contains("`plain` must be true or false"), "{line}");
}
