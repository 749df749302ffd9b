//! The binary's environment commands, run for real: `atoll env` and `atoll versions` on config
//! files in a temporary folder, and `atoll serve` creating (or refusing) its directories.

mod common;

use std::path::Path;
use std::process::Command;

use common::process::Atoll;

/// Runs `atoll ARGS` in `dir` with the lib-dir variables set as given; returns the exit code,
/// stdout and stderr.
fn atoll(dir: &Path, args: &[&str], libs: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atoll"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("ATOLL_HOME")
        .env_remove("ATOLL_DATA_DIR")
        .env_remove("ATOLL_LOG_DIR")
        .env_remove("ATOLL_SETUP_LIBS")
        .env_remove("ATOLL_LIBS");
    if let Some(libs) = libs {
        command.env("ATOLL_LIBS", libs);
    }
    let out = command.output().expect("run atoll");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CONFIG: &str = "[app]\nname = \"shop\"\nnode = \"n1\"\n\n[vars]\ncerts = \"$HOME/certs\"\n\n\
    [[listener]]\nname = \"echo\"\nkind = \"echo\"\nip = \"127.0.0.1\"\nport = 0\nshutdown_timeout = \"1s\"\n";

#[test]
fn atoll_env_prints_the_resolved_environment() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().canonicalize().unwrap();
    let config = CONFIG.replace("node = \"n1\"\n", "node = \"n1\"\ndrain_delay = \"2s\"\n");
    std::fs::write(home.join("atoll.toml"), config).unwrap();
    let (code, out, err) = atoll(&home, &["env"], None);
    assert_eq!(code, 0, "{err}");
    let h = home.display();
    for line in [
        "app.name = shop".to_owned(),
        "app.node = n1".to_owned(),
        format!("app.home = {h}"),
        format!("app.data_dir = {h}/data.n1"),
        format!("app.log_dir = {h}/log.n1"),
        "app.drain_delay = 2000ms".to_owned(),
        format!("vars.certs = {h}/certs"),
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    // Every `[app]` value is listed before the variables.
    let keys: Vec<&str> = out.lines().filter_map(|l| l.split(" = ").next()).collect();
    assert_eq!(
        keys,
        [
            "app.name",
            "app.node",
            "app.home",
            "app.data_dir",
            "app.log_dir",
            "app.log_max_size",
            "app.log_files",
            "app.priv_dir",
            "app.lib_dirs",
            "app.drain_delay",
            "vars.certs",
        ],
        "{out}"
    );
    let (code, out, err) = atoll(&home, &["env", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(v.to_string().contains("data.n1"), "{v}");
    assert_eq!(v["app"]["drain_delay"], "2000ms", "{v}");
    // `--find` gives the same value, by its key alone or with its table.
    for key in ["drain_delay", "app.drain_delay"] {
        let (code, out, err) = atoll(&home, &["env", "--find", key], None);
        assert_eq!((code, out.as_str()), (0, "app = 2000ms\n"), "{err}");
    }
    let (code, out, err) = atoll(&home, &["env", "--find", "drain_delay", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!([{ "owner": "app", "value": "2000ms" }])
    );
}

#[test]
fn atoll_versions_lists_the_releases_in_the_lib_dirs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("atoll.toml"), CONFIG).unwrap();
    let libs = dir.path().join("lib");
    for version in ["1.0.0", "1.1.0"] {
        let release = libs.join(format!("shop-{version}"));
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(
            release.join("release.toml"),
            format!("app = \"shop\"\nversion = \"{version}\"\n"),
        )
        .unwrap();
    }
    let (code, out, err) = atoll(dir.path(), &["versions"], Some(&libs));
    assert_eq!(code, 0, "{err}");
    let versions: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start_matches(['*', ' ']).split_whitespace().next())
        .collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"], "{out}");
    let (code, out, _) = atoll(dir.path(), &["versions", "--json"], Some(&libs));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["releases"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn serve_creates_its_directories_or_says_which_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atoll.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut served = Atoll::serve(&config);
    served.listening(1);
    assert!(dir.path().join("data.n1").is_dir());
    assert!(dir.path().join("log.n1").is_dir());
    served.signal("TERM");
    assert_eq!(served.exit().code(), Some(0), "{}", served.stderr());

    // A file where the log dir should be: refused, naming it.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("log.n1"), "not a dir").unwrap();
    let config = other.path().join("atoll.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let line = Atoll::fails_with(&config);
    assert!(line.contains("log.n1"), "{line}");
    assert!(line.contains("not a directory"), "{line}");
}
