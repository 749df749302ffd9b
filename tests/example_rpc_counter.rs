//! The RPC counter example (`examples/rpc_counter.rs`), run as the program `cargo test` built:
//! a daemon, two clients, a deferred reply and pushes, all over real sockets.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The example's executable, built by `cargo test` beside this test's own.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = target.join("examples").join("rpc_counter");
    assert!(
        path.exists(),
        "{} is missing: run this through `cargo test`, which builds the examples",
        path.display()
    );
    path
}

#[test]
fn the_counter_example_adds_pushes_and_answers_a_held_call() {
    let mut child = Command::new(example())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);

    let lines: Vec<&str> = stdout.lines().collect();
    let adds: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("adder: add 3 -> "))
        .collect();
    assert_eq!(adds, ["3", "6", "9", "12"], "{stdout}");
    let mut pushes: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("watcher: pushed, the counter is now "))
        .collect();
    pushes.sort_by_key(|v| v.parse::<u64>().unwrap());
    assert_eq!(pushes, ["3", "6", "9", "12"], "one push per add: {stdout}");
    assert!(
        lines.contains(&"watcher: wait_for 10 answered with 12"),
        "the held call was answered when the counter passed 10: {stdout}"
    );
    assert!(lines.contains(&"adder: get -> 12"), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("daemon: 2 instances live")),
        "{stdout}"
    );
}
