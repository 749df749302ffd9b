//! HTTP/2 (h2c, and h2 over TLS) and HTTP/1.1 over TLS across upgrades, measured by a real
//! load generator: h2load (Debian's `nghttp2-client`, which `.ci/run` installs). Each upgrade
//! lands while three h2load runs are busy, one per client kind.
//!
//! What counts is in `tests/common/h2load.rs`: for HTTP/2 every request that reached the wire
//! must succeed, for HTTP/1.1 every request.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::control::ctl;
use common::h2load::{self, Run};
use common::process::{wait_exit, Atoll, Reaper};
use common::{Pki, WAIT};

/// The number of upgrades under load.
const UPGRADES: usize = 3;

fn config(pki: &Pki) -> PathBuf {
    let path = pki.dir.path().join("atoll.toml");
    let listener = |name: &str, kind: &str, tls: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nkind = \"{kind}\"\nip = \"127.0.0.1\"\nport = 0\n\
             shutdown_timeout = \"30s\"\n{tls}\n[[listener.handlers]]\nhost = \"_\"\n\
             resources = [\"health\"]\n\n"
        )
    };
    let text = format!(
        "[app]\nnode = \"t\"\n\n{}{}",
        listener("web", "http", ""),
        listener(
            "tls",
            "https",
            "[listener.tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n"
        ),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn h2load_loses_no_request_across_upgrades() {
    h2load::require();
    let pki = Pki::new();
    let config = config(&pki);
    let first = Atoll::serve(&config);
    let listening = first.listening(2);
    let addr = |name: &str| -> SocketAddr { listening.iter().find(|l| l.0 == name).unwrap().2 };
    let (web, tls) = (addr("web"), addr("tls"));
    let reaper = Reaper::default();
    reaper.add(first.pid());
    let mut pids = vec![first.pid()];
    let logs = tempfile::tempdir().unwrap();
    // HTTP/2 runs are long enough that the upgrade's GOAWAY always finds them busy (they end
    // at it). The upgrade starts once a run has reported 10% done; the other 90% of 200,000
    // requests take a debug build a few seconds, where an upgrade takes about one (50,000
    // were once all done by then). The HTTP/1.1 run reconnects to the new process and
    // finishes there.
    let kinds: [(&str, Vec<String>); 3] = [
        (
            "h2c",
            vec![
                format!("http://{web}/health"),
                "-n200000".into(),
                "-c4".into(),
                "-m10".into(),
            ],
        ),
        (
            "h2 over TLS",
            vec![
                format!("https://{tls}/health"),
                "-n200000".into(),
                "-c4".into(),
                "-m10".into(),
            ],
        ),
        (
            "HTTP/1.1 over TLS",
            vec![
                format!("https://{tls}/health"),
                "--h1".into(),
                "-n10000".into(),
                "-c4".into(),
                "-m1".into(),
            ],
        ),
    ];
    let mut report = Vec::new();
    for round in 0..UPGRADES {
        let runs: Vec<(Run, Vec<String>)> = kinds
            .iter()
            .enumerate()
            .map(|(i, (what, args))| {
                let log = logs.path().join(format!("{round}-{i}.log"));
                let run = Run::start(what, args, log);
                let mut seen = Vec::new();
                run.wait_busy(&mut seen);
                (run, seen)
            })
            .collect();
        let bin = env!("CARGO_BIN_EXE_atoll");
        let answer = ctl(&config, &["upgrade", "--path", bin, "--json"]).json();
        let pid = answer["pid"].as_u64().unwrap_or_else(|| panic!("{answer}")) as u32;
        reaper.add(pid);
        pids.push(pid);
        for (run, seen) in runs {
            let what = run.what;
            let (out, log) = run.finish(seen);
            let h1 = what.starts_with("HTTP/1.1");
            let verdict = h2load::verdict(what, h1, &out, &log)
                .unwrap_or_else(|why| panic!("upgrade {round}, {why}"));
            // The GOAWAY found an HTTP/2 run busy: some requests were left unsent.
            assert!(
                h1 || verdict.started < verdict.total,
                "upgrade {round}, {}: the upgrade came after the run",
                verdict.line
            );
            report.push(format!("upgrade {round}, {}", verdict.line));
        }
    }
    // The old processes drained and left; the last one serves.
    drop(first);
    for pid in &pids[..pids.len() - 1] {
        wait_exit(*pid, WAIT * 3);
    }
    eprintln!("{}", report.join("\n"));
}
