//! RPC calls through `atoll upgrade` and `atoll reload`, with real processes: eight tasks
//! share one `atoll::rpc::Client` of an `atoll serve`'s plain `rpc` listener (the kv
//! service), each putting values of its own and getting each back, without pause, while the
//! listener moves to a new process three times, or is replaced by a reload three times. No
//! call may fail, and no answer may be one that a call lost or run twice would give.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::control::ctl;
use common::kv_load::KvLoad;
use common::process::{terminate, wait_exit, Atoll, Reaper};
use common::WAIT;

/// The tasks sharing the client.
const TASKS: usize = 8;

/// A config with one plain `rpc` listener, `kv`, whose connections may drain for
/// `shutdown_timeout`. Long, so a connection the client does not leave keeps the old
/// process (or listener) from finishing within the test's waits instead of being cut.
fn config_text(shutdown_timeout: &str) -> String {
    format!(
        "[app]\nnode = \"t\"\n\n[[listener]]\nname = \"kv\"\nkind = \"rpc\"\nplain = true\n\
         shutdown_timeout = \"{shutdown_timeout}\"\n"
    )
}

/// `atoll serve` on [`config_text`]; the config's path and the listener's address.
fn serve(dir: &Path) -> (Atoll, PathBuf, SocketAddr) {
    let path = dir.canonicalize().unwrap().join("atoll.toml");
    std::fs::write(&path, config_text("20s")).unwrap();
    let atoll = Atoll::serve(&path);
    let (name, kind, addr) = atoll.listening(1).remove(0);
    assert_eq!((name.as_str(), kind.as_str()), ("kv", "rpc"));
    (atoll, path, addr)
}

#[test]
fn rpc_calls_ride_through_three_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, config, addr) = serve(dir.path());
    let reaper = Reaper::default();
    reaper.add(first.pid());
    let load = KvLoad::start(addr, TASKS);
    load.progress("before the first upgrade");

    let mut old_pid = first.pid();
    for i in 0..3 {
        let answer = ctl(
            &config,
            &["upgrade", "--path", env!("CARGO_BIN_EXE_atoll"), "--json"],
        )
        .json();
        assert_eq!(answer["old_pid"], old_pid, "upgrade {i}: {answer}");
        let new_pid = answer["pid"].as_u64().unwrap() as u32;
        reaper.add(new_pid);
        // The old process exits once the client has left it: its connection drains well
        // before `shutdown_timeout` would cut it.
        if i == 0 {
            assert!(first.exited().success(), "{}", first.stderr());
        } else {
            wait_exit(old_pid, WAIT);
        }
        // The calls go on, in the new process alone.
        load.progress(&format!("after upgrade {i}"));
        old_pid = new_pid;
    }
    let status = ctl(&config, &["status", "--json"]).json();
    assert_eq!(status["pid"], old_pid, "{status}");
    load.finish();

    terminate(old_pid);
}

#[test]
fn rpc_calls_ride_through_three_reloads_that_replace_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (mut atoll, config, addr) = serve(dir.path());
    let load = KvLoad::start(addr, TASKS);
    load.progress("before the first reload");

    // `shutdown_timeout` is a socket-server option: an `rpc` listener whose options change
    // is replaced by a new one on the same sockets, and the old one drains.
    for (i, timeout) in ["21s", "22s", "23s"].into_iter().enumerate() {
        std::fs::write(&config, config_text(timeout)).unwrap();
        let report = ctl(&config, &["reload", "--json"]).json();
        assert_eq!(report["replaced"][0]["name"], "kv", "reload {i}: {report}");
        // The client's connection left the old listener, which cut none.
        let old = &report["replaced"][0];
        assert_eq!(
            (&old["drained"], &old["forced"]),
            (&1.into(), &0.into()),
            "reload {i}: {report}"
        );
        load.progress(&format!("after reload {i}"));
    }
    let listeners = ctl(&config, &["listeners", "--json"]).json();
    assert_eq!(listeners[0]["addr"], addr.to_string(), "{listeners}");
    load.finish();

    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0), "{}", atoll.stderr());
}
