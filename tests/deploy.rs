//! The deployment files agree with atoll and with each other: `deploy/kubernetes/` validated
//! offline against Kubernetes' schemas by kubernetes-validate (from PyPI, installed by .ci/run
//! in `target/ci-venv`), its ConfigMap's config read and passed by `atoll check`, its probes
//! pointing at that config's admin listener, and its grace period, like the systemd unit's
//! stop timeout, covering `drain_delay` plus the longest `shutdown_timeout`; the systemd
//! unit's reload checks the config it serves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use atoll::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kubernetes-validate: `$KUBERNETES_VALIDATE`, else .ci/run's venv, else `PATH`.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return path.into();
    }
    let venv = root().join("target/ci-venv/bin/kubernetes-validate");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v kubernetes-validate"])
        .output()
        .expect("sh runs");
    assert!(
        found.status.success(),
        "kubernetes-validate is missing: run .ci/run, or `python3 -m venv target/ci-venv && \
         target/ci-venv/bin/pip install kubernetes-validate`"
    );
    PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}

fn manifest(name: &str) -> String {
    std::fs::read_to_string(root().join("deploy/kubernetes").join(name)).unwrap()
}

/// The value after `key:` on the first line that has it, unquoted.
fn value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no `{key}:`"))
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The text of the ConfigMap's `atoll.toml`, its block's indentation removed.
fn shipped_config_text() -> String {
    let text = manifest("configmap.yaml");
    let start = text.find("atoll.toml: |\n").expect("an atoll.toml key") + 14;
    text[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// The ConfigMap's `atoll.toml`, read.
fn shipped_config() -> Config {
    Config::parse(&shipped_config_text(), Path::new("atoll.toml"))
        .expect("the ConfigMap's config is valid")
}

fn longest_shutdown(config: &Config) -> Duration {
    config
        .listeners
        .iter()
        .map(|l| l.options.shutdown_timeout)
        .max()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_are_valid() {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let out = Command::new(validator())
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed ").count(), 3, "{text}");
}

#[test]
fn the_deployment_agrees_with_the_config_it_runs() {
    let config = shipped_config();
    let deployment = manifest("deployment.yaml");
    // The grace period covers the drain.
    let grace: u64 = value(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let needed = config.drain_delay + longest_shutdown(&config);
    assert!(config.drain_delay > Duration::ZERO, "drain_delay is set");
    assert!(
        Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} does not cover drain_delay + shutdown_timeout ({needed:?})"
    );
    // The probes ask the admin listener, on its port.
    let admin = config
        .listeners
        .iter()
        .find(|l| l.kind == "admin")
        .expect("an admin listener");
    let web = config.listeners.iter().find(|l| l.kind == "http").unwrap();
    assert!(deployment.contains("path: /readyz") && deployment.contains("path: /livez"));
    assert!(
        deployment.contains(&format!(
            "name: admin\n              containerPort: {}",
            admin.options.port
        )),
        "the admin port is not {}",
        admin.options.port
    );
    assert!(
        deployment.contains(&format!(
            "name: http\n              containerPort: {}",
            web.options.port
        )),
        "the http port is not {}",
        web.options.port
    );
    // The readiness probe notices a draining pod within drain_delay.
    let readiness = &deployment[deployment.find("readinessProbe").unwrap()..];
    let period: u64 = value(readiness, "periodSeconds").parse().unwrap();
    let failures: u64 = value(readiness, "failureThreshold").parse().unwrap();
    assert!(
        Duration::from_secs(period * failures) < config.drain_delay,
        "the readiness probe takes {period} s x {failures} to see a drain, drain_delay is {:?}",
        config.drain_delay
    );
}

#[test]
fn the_systemd_unit_waits_for_the_shipped_configs_drain() {
    let unit = std::fs::read_to_string(root().join("dist/systemd/atoll.service")).unwrap();
    let stop = value(&unit.replace('=', ": "), "TimeoutStopSec");
    let stop = atoll::parse_duration(&stop).unwrap();
    let config = Config::parse(
        &std::fs::read_to_string(root().join("atoll.toml")).unwrap(),
        Path::new("atoll.toml"),
    )
    .unwrap();
    let needed = config.drain_delay + longest_shutdown(&config);
    assert!(
        stop > needed,
        "TimeoutStopSec={stop:?} does not cover the shipped config's drain ({needed:?})"
    );
    // And the Kubernetes config's, which the guide says the unit covers too.
    let k8s = shipped_config();
    assert!(stop >= k8s.drain_delay + longest_shutdown(&k8s));
}

#[test]
fn a_systemd_reload_checks_the_served_config_before_it_signals() {
    let unit = std::fs::read_to_string(root().join("dist/systemd/atoll.service")).unwrap();
    let start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let (binary, config) = start.split_once(" serve ").expect("atoll serve");
    let reload: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .collect();
    let check = format!("{binary} check {config}");
    assert_eq!(reload, [check.as_str(), "/bin/kill -HUP $MAINPID"]);
}

#[test]
fn the_kubernetes_config_passes_atoll_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atoll.toml");
    std::fs::write(&config, shipped_config_text()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0.0.0.0:8080") && stdout.contains("0.0.0.0:9090"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("atoll.toml: 2 listeners, all good\n"),
        "{stdout}"
    );
}
