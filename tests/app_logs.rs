//! The log file of `atoll serve`, run for real: lines go to `LOG_DIR/APP.log` as well as to
//! stderr, rotated past `[app] log_max_size` with `[app] log_files` copies kept; a log file
//! that cannot be opened stops the start with one line.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::process::Atoll;
use common::WAIT;

const MAX_SIZE: u64 = 2000;

/// An echo listener logging every event at info, into `DIR/logs`, rotated past
/// [`MAX_SIZE`] with two copies kept.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("atoll.toml");
    let text = format!(
        "log_events = \"info\"\n\n[app]\nlog_dir = \"{}/logs\"\nlog_max_size = {MAX_SIZE}\n\
         log_files = 2\n\n[[listener]]\nname = \"echo\"\nkind = \"echo\"\nip = \"127.0.0.1\"\n\
         port = 0\nshutdown_timeout = \"1s\"\n",
        dir.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// A log line without its timestamp, which each copy takes on its own.
fn untimed(line: &str) -> &str {
    line.split_once(' ')
        .map_or(line, |(_, rest)| rest.trim_start())
}

#[test]
fn serve_logs_to_a_rotated_file_and_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut atoll = Atoll::serve(&config);
    let addr = atoll.listening(1)[0].2;

    // Each connection logs a few lines at info: 200 of them are many times MAX_SIZE.
    for _ in 0..200 {
        let mut client = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        client.set_read_timeout(Some(WAIT)).unwrap();
        client.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).expect("echo");
        assert_eq!(&back, b"ping");
    }
    atoll.signal("TERM");
    assert_eq!(atoll.exit().code(), Some(0), "{}", atoll.stderr());
    let stderr = atoll.stderr();

    let logs = dir.path().join("logs");
    let read = |name: &str| std::fs::read_to_string(logs.join(name));
    let files: Vec<String> = ["atoll.log.2", "atoll.log.1", "atoll.log"]
        .iter()
        .map(|name| read(name).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect();
    assert!(
        !logs.join("atoll.log.3").exists(),
        "a third copy was kept: {:?}",
        std::fs::read_dir(&logs).unwrap().collect::<Vec<_>>()
    );

    let longest = files
        .iter()
        .flat_map(|f| f.split_inclusive('\n'))
        .map(str::len)
        .max()
        .unwrap() as u64;
    for (name, text) in ["atoll.log.2", "atoll.log.1", "atoll.log"]
        .iter()
        .zip(&files)
    {
        let size = text.len() as u64;
        assert!(size > 0, "{name} is empty");
        assert!(
            size <= MAX_SIZE + longest,
            "{name} has {size} bytes, more than {MAX_SIZE} and a line"
        );
        assert!(text.ends_with('\n'), "{name} ends within a line");
        assert!(!text.contains('\x1b'), "ANSI escapes in {name}: {text:?}");
    }

    // Every line of the files was printed on stderr too; the files hold the newest ones.
    let printed: HashSet<&str> = stderr.lines().map(untimed).collect();
    let kept: Vec<&str> = files.iter().flat_map(|f| f.lines()).collect();
    for line in &kept {
        assert!(
            printed.contains(untimed(line)),
            "not on stderr: {line:?}\nstderr: {stderr}"
        );
    }
    assert!(
        kept.iter().any(|l| l.contains("connection.")),
        "no connection event in the files"
    );
    assert!(
        files[2].lines().any(|l| l.contains("stopped")),
        "the last line logged is not in atoll.log: {}",
        files[2]
    );
    // The oldest lines went with the dropped copies.
    let first = stderr.lines().next().expect("stderr has log lines");
    assert!(
        stderr.len() as u64 > 3 * (MAX_SIZE + longest),
        "too little was logged to rotate three times: {} bytes",
        stderr.len()
    );
    assert!(
        !kept.iter().any(|l| untimed(l) == untimed(first)),
        "the first line is still kept: {first:?}"
    );
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let in_the_way = dir.path().join("logs/atoll.log");
    std::fs::create_dir_all(&in_the_way).unwrap();
    let line = Atoll::fails_with(&config);
    assert!(
        line.ends_with(&format!(
            "log file {}: cannot open it: it is a directory",
            in_the_way.display()
        )),
        "{line}"
    );
}
