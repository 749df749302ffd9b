//! The `rpc` kind's key-value store keeps its data in DATA_DIR, run for real with the `atoll`
//! binary: a key put before a restart, a `kill -9`, a reload that replaces the listener and
//! an upgrade is there after it; a store that cannot be opened stops `atoll serve` with one
//! line naming its file.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::control::ctl;
use common::process::Atoll;

/// A config with one plain `rpc` listener on any port; its data in `DIR/data.t`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("atoll.toml");
    std::fs::write(
        &path,
        format!(
            "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\n\
             shutdown_timeout = \"3s\"\n{extra}\n"
        ),
    )
    .unwrap();
    path
}

fn serve(config: &Path) -> (Atoll, SocketAddr) {
    let atoll = Atoll::serve(config);
    let (_, _, addr) = atoll.listening(1).remove(0);
    (atoll, addr)
}

/// `atoll rpc ADDR ARGS`, which must succeed; returns the line it printed.
fn rpc(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["rpc", "--timeout", "5s", &addr.to_string()])
        .args(args)
        .output()
        .expect("run atoll rpc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "atoll rpc {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

fn value(addr: SocketAddr, key: &str) -> String {
    rpc(addr, &["get", key])
}

/// Stops `atoll` with SIGTERM and waits for it.
fn stop(mut atoll: Atoll) {
    atoll.signal("TERM");
    assert!(atoll.exit().success());
}

#[test]
fn a_key_survives_a_restart_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let (atoll, addr) = serve(&config);
    rpc(addr, &["put", "greeting", "hello"]);
    stop(atoll);
    assert!(
        dir.path().join("data.t/kv/kv.redb").is_file(),
        "the store is DATA_DIR/kv/LISTENER.redb"
    );

    let (mut atoll, addr) = serve(&config);
    assert_eq!(value(addr, "greeting"), r#"{"value":"hello"}"#);
    // Acknowledged, then killed at once: the put is on disk.
    rpc(addr, &["put", "n", "42"]);
    atoll.signal("KILL");
    atoll.exited();

    let (atoll, addr) = serve(&config);
    assert_eq!(value(addr, "n"), r#"{"value":42}"#);
    assert_eq!(value(addr, "greeting"), r#"{"value":"hello"}"#);
    stop(atoll);
}

#[test]
fn a_key_survives_a_reload_that_replaces_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "ip = \"127.0.0.1\"\nport = 0\n");
    let (atoll, addr) = serve(&config);
    rpc(addr, &["put", "before", "1"]);
    // A changed option replaces an `rpc` listener: the new one opens the same file while
    // the old one drains.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("shutdown_timeout = \"3s\"", "shutdown_timeout = \"2s\""),
    )
    .unwrap();
    let answer = ctl(&config, &["reload"]).ok();
    assert!(answer.contains("replaced kv"), "{answer}");
    let addr = ctl(&config, &["listeners", "--json"]).json()[0]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(value(addr, "before"), r#"{"value":1}"#);
    rpc(addr, &["put", "after", "2"]);
    stop(atoll);
    let (atoll, addr) = serve(&config);
    assert_eq!(rpc(addr, &["list"]), r#"{"keys":["after","before"]}"#);
    stop(atoll);
}

#[test]
fn a_key_survives_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let (atoll, addr) = serve(&config);
    rpc(addr, &["put", "k0", "0"]);
    let mut pids = vec![atoll.pid()];
    // Each new process opens the store while the one before it still has it open.
    for i in 1..=3u32 {
        let answer = ctl(
            &config,
            &["upgrade", "--path", env!("CARGO_BIN_EXE_atoll"), "--json"],
        )
        .json();
        let pid = answer["pid"].as_u64().expect("the new pid") as u32;
        pids.push(pid);
        // Same listening socket: the address stays.
        for k in 0..i {
            assert_eq!(
                value(addr, &format!("k{k}")),
                format!(r#"{{"value":{k}}}"#),
                "after upgrade {i}"
            );
        }
        rpc(addr, &["put", &format!("k{i}"), &i.to_string()]);
    }
    let keys = rpc(addr, &["list"]);
    assert_eq!(keys, r#"{"keys":["k0","k1","k2","k3"]}"#);
    // The last process: killed, then started afresh.
    let last = *pids.last().unwrap();
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    drop(atoll);
    wait_gone(last);
    let (atoll, addr) = serve(&config);
    assert_eq!(rpc(addr, &["list"]), keys);
    stop(atoll);
}

/// Waits until no process has `pid` (a process that is not our child: polled).
fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + common::WAIT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie holds no file.
        if stat.split(' ').nth(2) == Some("Z") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "pid {pid} still runs");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_corrupt_store_stops_serve_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let store = dir.path().join("data.t/kv/kv.redb");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, vec![0x5a; 64 * 1024]).unwrap();
    let line = Atoll::fails_with(&config);
    assert!(
        line.contains(&format!("listener `kv`: store {}: ", store.display())),
        "{line}"
    );
}

#[test]
fn a_store_folder_that_cannot_be_made_stops_serve_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    // DATA_DIR/kv is a plain file: the store's folder cannot be made (root or not).
    std::fs::create_dir_all(dir.path().join("data.t")).unwrap();
    std::fs::write(dir.path().join("data.t/kv"), b"in the way").unwrap();
    let line = Atoll::fails_with(&config);
    let store = dir.path().join("data.t/kv/kv.redb");
    assert!(
        line.contains(&format!("listener `kv`: store {}: ", store.display())),
        "{line}"
    );
    // A `path` of the operator's choosing is named the same way.
    let config = self::config(dir.path(), "path = \"elsewhere/data.redb\"");
    std::fs::write(dir.path().join("elsewhere"), b"in the way").unwrap();
    let line = Atoll::fails_with(&config);
    let store = dir.path().join("elsewhere/data.redb");
    assert!(
        line.contains(&format!("store {}: ", store.display())),
        "{line}"
    );
}
