//! What `atoll serve` makes on disk before its listeners start: the `data_dir` and `log_dir`
//! it creates when they are missing, and the log file in a new `log_dir`. A start that fails
//! (a listener's bad option, a missing certificate, an address in use) takes them away
//! again if nothing else was put there, so that a bad config leaves the disk as it found it.
//! Only what was missing is touched, and a directory only goes empty.

use std::path::{Path, PathBuf};

use crate::setup::AppEnv;

/// The directories a start is about to create, undone when dropped unless [`kept`](Made::keep).
#[derive(Debug)]
pub(crate) struct Made {
    /// Each missing directory, with the outermost of its missing ancestors (itself, or a
    /// parent that creating it creates too).
    dirs: Vec<(PathBuf, PathBuf)>,
    /// The log file, when its directory is one of those.
    log: Option<PathBuf>,
    keep: bool,
}

impl Made {
    /// Notes which of `env`'s directories are missing, before anything creates them.
    pub(crate) fn before(env: &AppEnv) -> Made {
        let mut dirs = Vec::new();
        for dir in [&env.data_dir, &env.log_dir] {
            if let Some(top) = outermost_missing(dir) {
                if !dirs.iter().any(|(d, _)| d == dir) {
                    dirs.push((dir.clone(), top));
                }
            }
        }
        let log = dirs
            .iter()
            .any(|(d, _)| d == &env.log_dir)
            .then(|| env.log_dir.join(format!("{}.log", env.name)));
        Made {
            dirs,
            log,
            keep: false,
        }
    }

    /// The start went through: what it made stays.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(log) = &self.log {
            if std::fs::metadata(log).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(log);
            }
        }
        // Deepest first, so that a directory made inside another (`log_dir` under
        // `data_dir`) goes before it.
        self.dirs
            .sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
        for (dir, top) in &self.dirs {
            let mut at: &Path = dir;
            // `remove_dir` takes only an empty directory: anything put there stays.
            while std::fs::remove_dir(at).is_ok() && at != top {
                match at.parent() {
                    Some(parent) => at = parent,
                    None => break,
                }
            }
        }
    }
}

/// The outermost missing directory on the way to `dir` (`dir` itself when only it is
/// missing), or `None` when `dir` exists (or cannot be looked at: nothing is undone then).
fn outermost_missing(dir: &Path) -> Option<PathBuf> {
    let mut top = None;
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() {
            break;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => top = Some(path.to_owned()),
            _ => break,
        }
        at = path.parent();
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(home: &Path, data: &str, log: &str) -> AppEnv {
        AppEnv {
            name: "atoll".to_owned(),
            node: "here".to_owned(),
            home: home.to_owned(),
            data_dir: home.join(data),
            log_dir: home.join(log),
            log_max_size: 1 << 20,
            log_files: 0,
            priv_dir: home.to_owned(),
            lib_dirs: Vec::new(),
        }
    }

    #[test]
    fn what_a_failed_start_made_goes_and_what_was_there_stays() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("data")).unwrap();
        std::fs::write(home.path().join("data/kept"), b"x").unwrap();
        let env = env_in(home.path(), "data", "logs/deep/log");
        let made = Made::before(&env);
        std::fs::create_dir_all(&env.log_dir).unwrap();
        std::fs::write(env.log_dir.join("atoll.log"), b"").unwrap();
        drop(made);
        assert!(!home.path().join("logs").exists());
        assert!(home.path().join("data/kept").exists());

        // A log with lines in it, and anything else put there, stays with its directory.
        let made = Made::before(&env);
        std::fs::create_dir_all(&env.log_dir).unwrap();
        std::fs::write(env.log_dir.join("atoll.log"), b"a line\n").unwrap();
        drop(made);
        assert!(env.log_dir.join("atoll.log").exists());
    }

    #[test]
    fn a_start_that_went_through_keeps_what_it_made() {
        let home = tempfile::tempdir().unwrap();
        let env = env_in(home.path(), "data", "log");
        let made = Made::before(&env);
        std::fs::create_dir_all(&env.data_dir).unwrap();
        std::fs::create_dir_all(&env.log_dir).unwrap();
        made.keep();
        assert!(env.data_dir.is_dir() && env.log_dir.is_dir());
    }
}
