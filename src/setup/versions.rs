//! Installed releases: where they live (the lib dirs), what each one is (its manifest), and
//! picking one to run (`latest`, `next`, or by regular expression), as setup's `lib_dirs`,
//! `find_app` and `pick_vsn` do for Erlang applications.
//!
//! A lib dir holds a folder per release; a release folder holds its binary, its priv dir and a
//! `release.toml` manifest:
//!
//! ```toml
//! app = "atoll"              # required
//! version = "1.1.0"          # required, semver
//! binary = "bin/atoll"       # optional, relative to the release folder; default "atoll"
//! priv_dir = "priv"          # optional, relative to the release folder; default "priv"
//! ```
//!
//! Keys a manifest has beyond these are ignored, so an older atoll still lists (and upgrades
//! to) a release whose manifest has grown.
//!
//! ```no_run
//! use atoll::setup::versions::{find_releases, lib_dirs, pick, Which};
//!
//! let installed = find_releases("atoll", &lib_dirs());
//! let which: Which = "^1\\.".parse()?;
//! let release = pick(&installed, &which, None)?;
//! println!("{} at {}", release.version, release.binary.display());
//! # Ok::<(), atoll::setup::versions::PickError>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use regex::Regex;
use semver::Version;
use serde::Deserialize;
use serde_json::json;

use crate::error::one_line;

/// The variable read first for lib dirs, setup's `ERL_SETUP_LIBS`: a root only atoll looks at.
pub const SETUP_LIBS_VAR: &str = super::env::LIB_DIR_VARS[0];
/// The variable read second for lib dirs, setup's `ERL_LIBS`.
pub const LIBS_VAR: &str = super::env::LIB_DIR_VARS[1];
/// The manifest file a release folder must hold to be a release.
pub const MANIFEST_FILE: &str = "release.toml";

const DEFAULT_BINARY: &str = "atoll";
const DEFAULT_PRIV_DIR: &str = "priv";

// ===== lib dirs =====

/// The lib dirs named by the process environment alone: see [`lib_dirs_from`]. A config
/// file's [`AppEnv::lib_dirs`](super::AppEnv) also makes relative entries absolute and falls
/// back to the `[app]` table's `lib_dirs`; the binary uses that one.
pub fn lib_dirs() -> Vec<PathBuf> {
    lib_dirs_from(|name| std::env::var_os(name))
}

/// The lib dirs named by `lookup`: the entries of [`SETUP_LIBS_VAR`], then those of
/// [`LIBS_VAR`], each a colon-separated list; empty entries are ignored and a folder named
/// twice is kept at its first place.
pub fn lib_dirs_from(lookup: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in [SETUP_LIBS_VAR, LIBS_VAR] {
        let Some(value) = lookup(var) else { continue };
        for dir in std::env::split_paths(&value) {
            if !dir.as_os_str().is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

// ===== impl Release =====

/// One installed release of an app, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The app it is a release of (the manifest's `app`).
    pub app: String,
    /// Its version (the manifest's `version`).
    pub version: Version,
    /// The release folder, inside one of the lib dirs.
    pub dir: PathBuf,
    /// The binary to run: the manifest's `binary` joined to `dir`. Default is `dir/atoll`.
    pub binary: PathBuf,
    /// The priv dir (`$PRIV_DIR`): the manifest's `priv_dir` joined to `dir`. Default is
    /// `dir/priv`.
    pub priv_dir: PathBuf,
}

/// The manifest as written; unknown keys are allowed (see the module docs).
#[derive(Deserialize)]
struct Manifest {
    app: String,
    version: String,
    binary: Option<PathBuf>,
    priv_dir: Option<PathBuf>,
}

impl Release {
    /// The release's manifest file.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// Reads the manifest of the release folder `dir`. `Ok(None)` when `dir` has no manifest,
    /// so is no release at all.
    fn read(dir: &Path) -> Result<Option<Release>, Warning> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Warning::new(path, WarningKind::Unreadable, cannot_read(&e))),
        };
        let manifest: Manifest = toml::from_str(&text).map_err(|e| {
            // A missing key spans the whole file: no line to name then.
            let message = match e.span() {
                Some(span) if span.start > 0 || span.end < text.trim_end().len() => {
                    format!("line {}: {}", line_of(&text, span.start), e.message())
                }
                _ => e.message().to_owned(),
            };
            Warning::new(path.clone(), WarningKind::BadManifest, one_line(&message))
        })?;
        let version = Version::parse(manifest.version.trim()).map_err(|e| {
            let message = format!("bad version {:?}: {e}", manifest.version);
            Warning::new(path.clone(), WarningKind::BadVersion, message)
        })?;
        let binary = manifest.binary.unwrap_or_else(|| DEFAULT_BINARY.into());
        let priv_dir = manifest.priv_dir.unwrap_or_else(|| DEFAULT_PRIV_DIR.into());
        Ok(Some(Release {
            app: manifest.app,
            version,
            binary: dir.join(binary),
            priv_dir: dir.join(priv_dir),
            dir: dir.to_owned(),
        }))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.matches('\n').count() + 1
}

fn cannot_read(e: &io::Error) -> String {
    format!("cannot read: {e}")
}

// ===== impl Installed =====

/// What [`find_releases`] found: the releases of one app across the lib dirs, and what it had
/// to skip.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The app looked for.
    pub app: String,
    /// The lib dirs searched, in order.
    pub lib_dirs: Vec<PathBuf>,
    /// Every release of `app`, by ascending version; equal versions keep lib-dir order, so
    /// the first of them is the one [`pick`] takes.
    pub releases: Vec<Release>,
    /// What was skipped or is suspicious, in the order found: lib dirs or manifests that
    /// cannot be read or parsed, bad versions, a version installed twice.
    pub warnings: Vec<Warning>,
}

/// Lists every release of `app` in the release folders directly inside `lib_dirs`: setup's
/// `find_app`, with two differences. The version comes from each folder's `release.toml`
/// (setup's from the `.app` file; neither needs a version in the folder's name); and there is
/// no fallback to an "OTP root": a Rust binary has no system-wide library tree, so only the
/// lib dirs given are searched. The list is sorted by ascending version (setup's is in the
/// order found), so [`pick`] can take the highest of a kind.
///
/// A folder without a [`MANIFEST_FILE`] is not a release and is skipped quietly, as is a
/// release of another app. A lib dir or manifest that cannot be read, a manifest that does not
/// parse and a version that is not semver are skipped with a [`Warning`], so one bad release
/// never hides the others; a version installed twice is listed twice, with a warning.
pub fn find_releases(app: &str, lib_dirs: &[PathBuf]) -> Installed {
    let mut releases = Vec::new();
    let mut warnings = Vec::new();
    for lib_dir in lib_dirs {
        let entries = match std::fs::read_dir(lib_dir) {
            Ok(entries) => entries,
            Err(e) => {
                let message = cannot_read(&e);
                warnings.push(Warning::new(
                    lib_dir.clone(),
                    WarningKind::Unreadable,
                    message,
                ));
                continue;
            }
        };
        // The order of `read_dir` is the file system's; by name, listings are the same
        // everywhere.
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            match Release::read(&dir) {
                Ok(Some(release)) if release.app == app => releases.push(release),
                Ok(_) => {}
                Err(warning) => warnings.push(warning),
            }
        }
    }
    // Stable: equal versions stay in lib-dir order.
    releases.sort_by(|a, b| a.version.cmp(&b.version));
    for pair in releases.windows(2) {
        if pair[0].version == pair[1].version {
            let message = format!(
                "version {} is also installed at {}, which is picked first",
                pair[1].version,
                pair[0].dir.display()
            );
            warnings.push(Warning::new(
                pair[1].dir.clone(),
                WarningKind::Duplicate,
                message,
            ));
        }
    }
    Installed {
        app: app.to_owned(),
        lib_dirs: lib_dirs.to_vec(),
        releases,
        warnings,
    }
}

impl Installed {
    /// The release whose binary is `binary` (both resolved through symlinks), such as
    /// `std::env::current_exe()`: tells the running version when it was started from a lib dir.
    pub fn release_of(&self, binary: &Path) -> Option<&Release> {
        let wanted = binary.canonicalize().ok()?;
        self.releases
            .iter()
            .find(|r| r.binary.canonicalize().is_ok_and(|b| b == wanted))
    }

    /// The lines `atoll versions` prints: `VERSION DIR` per release by ascending version,
    /// marked `*` when it is `running`, then a `warning: ` line per warning. When nothing is
    /// found, one line says so and where it looked.
    pub fn text(&self, running: Option<&Version>) -> String {
        let mut out = String::new();
        if self.releases.is_empty() {
            out.push_str(&format!(
                "no release of {}{}\n",
                self.app,
                where_looked(&self.lib_dirs)
            ));
        }
        let width = self
            .releases
            .iter()
            .map(|r| r.version.to_string().len())
            .max()
            .unwrap_or(0);
        for release in &self.releases {
            let mark = if Some(&release.version) == running {
                '*'
            } else {
                ' '
            };
            out.push_str(&format!(
                "{mark} {:<width$}  {}\n",
                release.version.to_string(),
                release.dir.display()
            ));
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }

    /// The same as [`text`](Installed::text), as JSON:
    /// `{"app", "lib_dirs", "running", "releases": [{"version", "dir", "binary", "priv_dir",
    /// "running"}], "warnings": [{"path", "kind", "message"}]}`, paths as strings and
    /// `running` `null` when not given.
    pub fn json(&self, running: Option<&Version>) -> serde_json::Value {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        json!({
            "app": self.app,
            "lib_dirs": self.lib_dirs.iter().map(|d| path(d)).collect::<Vec<_>>(),
            "running": running.map(Version::to_string),
            "releases": self.releases.iter().map(|r| json!({
                "version": r.version.to_string(),
                "dir": path(&r.dir),
                "binary": path(&r.binary),
                "priv_dir": path(&r.priv_dir),
                "running": Some(&r.version) == running,
            })).collect::<Vec<_>>(),
            "warnings": self.warnings.iter().map(|w| json!({
                "path": path(&w.path),
                "kind": w.kind.as_str(),
                "message": w.message,
            })).collect::<Vec<_>>(),
        })
    }
}

/// ` in /a/lib:/b/lib`, or, without a lib dir, `: no lib dir to look in (...)`.
fn where_looked(lib_dirs: &[PathBuf]) -> String {
    if lib_dirs.is_empty() {
        return format!(
            ": no lib dir to look in ([app] lib_dirs, {SETUP_LIBS_VAR} and {LIBS_VAR} are all \
             empty; install a release there (docs/operations.md), or upgrade with --path)"
        );
    }
    let dirs: Vec<String> = lib_dirs.iter().map(|d| d.display().to_string()).collect();
    format!(" in {}", dirs.join(":"))
}

// ===== impl Warning =====

/// Something [`find_releases`] skipped or found suspicious; its `Display` is one line naming
/// the file or folder, then the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The lib dir, manifest or release folder at fault.
    pub path: PathBuf,
    /// What class of fault it is.
    pub kind: WarningKind,
    /// The fault, on one line.
    pub message: String,
}

/// The class of a [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// A lib dir or a manifest cannot be read (missing lib dir, no permission...). The lib
    /// dir or release is skipped.
    Unreadable,
    /// A manifest is not valid TOML, or lacks `app` or `version`, or has a value of the wrong
    /// type. The release is skipped.
    BadManifest,
    /// A manifest's version is not semver. The release is skipped.
    BadVersion,
    /// A release has the same version as one before it in lib-dir order, which shadows it.
    /// Both are listed.
    Duplicate,
}

impl WarningKind {
    fn as_str(self) -> &'static str {
        match self {
            WarningKind::Unreadable => "unreadable",
            WarningKind::BadManifest => "bad_manifest",
            WarningKind::BadVersion => "bad_version",
            WarningKind::Duplicate => "duplicate",
        }
    }
}

impl Warning {
    fn new(path: PathBuf, kind: WarningKind, message: String) -> Self {
        Warning {
            path,
            kind,
            message,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

// ===== impl Which =====

/// Which release to pick. Parsed from `latest`, `next`, or anything else as a regular
/// expression over the version string (`^1\.2\.`, `rc`).
#[derive(Debug, Clone)]
pub enum Which {
    /// The highest version.
    Latest,
    /// The lowest version above the running one.
    Next,
    /// The highest version whose text (`1.2.0-rc.1`) the expression matches somewhere;
    /// anchor it (`^1\.2\.0$`) to match whole versions.
    Matching(Regex),
}

impl FromStr for Which {
    type Err = PickError;

    /// `latest`, `next`, or a regular expression; an empty text or an invalid expression is
    /// a [`PickErrorKind::InvalidPattern`] naming it.
    fn from_str(text: &str) -> Result<Self, PickError> {
        match text {
            "latest" => Ok(Which::Latest),
            "next" => Ok(Which::Next),
            "" => Err(PickError::invalid_pattern(
                text,
                "empty; use `latest` for the highest version".to_owned(),
            )),
            _ => Regex::new(text).map(Which::Matching).map_err(|e| {
                let reason = match &e {
                    // The syntax message draws the pattern with a caret; its last line says why.
                    regex::Error::Syntax(message) => message
                        .lines()
                        .rev()
                        .find_map(|l| l.trim().strip_prefix("error: "))
                        .map_or_else(|| one_line(message), str::to_owned),
                    _ => one_line(&e.to_string()),
                };
                PickError::invalid_pattern(text, reason)
            }),
        }
    }
}

impl fmt::Display for Which {
    /// `latest`, `next`, or `/PATTERN/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Which::Latest => f.write_str("latest"),
            Which::Next => f.write_str("next"),
            Which::Matching(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

// ===== pick =====

/// Picks a release out of `installed`, as setup's `pick_vsn`: the highest version for
/// [`Which::Latest`], the lowest above `running` for [`Which::Next`] (an error without
/// `running`), the highest matching version for [`Which::Matching`]. Of equal versions, the
/// one in the earliest lib dir is taken.
///
/// # Where atoll differs from setup, and why
///
/// - **A regular expression picks the highest matching version, not the first.** setup's
///   `pick_vsn` returns the first match of a list in ascending order, i.e. the *lowest*
///   matching version, so `"^1\."` would roll back to 1.0.0 rather than to the newest 1.x
///   fix. An operator who names a series wants its newest release; to name one version,
///   anchor the expression (`^1\.2\.0$`). (A regular expression also matches anywhere in
///   the version text, as setup's `re:run` does: `1.1.0` matches `21.1.0` too.)
/// - **`next` with nothing running is an error, not the first version.** setup returns the
///   first entry when the application is not loaded; here `running` is always known to
///   `atoll upgrade` (the running process's version), and a library caller that passes `None`
///   gets [`PickErrorKind::NoRunningVersion`] instead of a silent downgrade to the oldest release.
/// - **Nothing found is an error value** ([`PickError`]), not an exception, and it names the
///   lib dirs and the versions found.
///
/// When nothing fits, the error says what was wanted, where it looked and what it found:
/// `no release of atoll matches /^2\./ in /a/lib:/b/lib (found 1.0.0, 1.1.0)`.
pub fn pick<'a>(
    installed: &'a Installed,
    which: &Which,
    running: Option<&Version>,
) -> Result<&'a Release, PickError> {
    let releases = &installed.releases;
    // `releases` ascends, and equal versions keep lib-dir order: the highest is the first
    // release of the last version.
    let highest = |fits: &dyn Fn(&Release) -> bool| {
        let last = releases.iter().rev().find(|r| fits(r))?;
        releases.iter().find(|r| r.version == last.version)
    };
    let found = match which {
        Which::Latest => highest(&|_| true),
        Which::Next => {
            let Some(running) = running else {
                return Err(PickError::new(
                    PickErrorKind::NoRunningVersion,
                    installed,
                    which,
                    None,
                ));
            };
            releases.iter().find(|r| r.version > *running)
        }
        Which::Matching(re) => highest(&|r| re.is_match(&r.version.to_string())),
    };
    found.ok_or_else(|| PickError::new(PickErrorKind::NoMatch, installed, which, running))
}

// ===== impl PickError =====

/// Why no release could be picked. Its `Display` is one line: what was wanted, where it
/// looked, what it found.
pub struct PickError {
    inner: Box<PickInner>,
}

struct PickInner {
    kind: PickErrorKind,
    app: String,
    /// What was asked for; `None` for an invalid pattern.
    which: Option<Which>,
    /// The pattern, for `InvalidPattern`.
    pattern: String,
    /// Why the pattern is invalid, for `InvalidPattern`.
    reason: String,
    running: Option<Version>,
    lib_dirs: Vec<PathBuf>,
    found: Vec<Version>,
    skipped: usize,
}

/// The class of a [`PickError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PickErrorKind {
    /// The text is neither `latest`, `next` nor a valid regular expression.
    InvalidPattern,
    /// `next` was asked for without a running version to follow.
    NoRunningVersion,
    /// No installed release fits.
    NoMatch,
}

impl PickError {
    fn new(
        kind: PickErrorKind,
        installed: &Installed,
        which: &Which,
        running: Option<&Version>,
    ) -> Self {
        let skipped = installed
            .warnings
            .iter()
            .filter(|w| w.kind != WarningKind::Duplicate)
            .count();
        PickError {
            inner: Box::new(PickInner {
                kind,
                app: installed.app.clone(),
                which: Some(which.clone()),
                pattern: String::new(),
                reason: String::new(),
                running: running.cloned(),
                lib_dirs: installed.lib_dirs.clone(),
                found: installed
                    .releases
                    .iter()
                    .map(|r| r.version.clone())
                    .collect(),
                skipped,
            }),
        }
    }

    fn invalid_pattern(pattern: &str, reason: String) -> Self {
        PickError {
            inner: Box::new(PickInner {
                kind: PickErrorKind::InvalidPattern,
                app: String::new(),
                which: None,
                pattern: pattern.to_owned(),
                reason,
                running: None,
                lib_dirs: Vec::new(),
                found: Vec::new(),
                skipped: 0,
            }),
        }
    }

    /// The class of failure.
    pub fn kind(&self) -> PickErrorKind {
        self.inner.kind
    }

    /// The versions that were installed, ascending (empty for an invalid pattern).
    pub fn found(&self) -> &[Version] {
        &self.inner.found
    }
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        match i.kind {
            PickErrorKind::InvalidPattern => {
                return write!(f, "invalid version pattern /{}/: {}", i.pattern, i.reason)
            }
            PickErrorKind::NoRunningVersion => {
                return write!(
                    f,
                    "cannot pick the next release of {}: no running version to follow",
                    i.app
                )
            }
            PickErrorKind::NoMatch => {}
        }
        write!(f, "no release of {}", i.app)?;
        match (&i.which, &i.running) {
            (Some(Which::Next), Some(running)) => write!(f, " is above {running}")?,
            (Some(which @ Which::Matching(_)), _) => write!(f, " matches {which}")?,
            _ => {}
        }
        f.write_str(&where_looked(&i.lib_dirs))?;
        if i.lib_dirs.is_empty() {
            return Ok(());
        }
        let found: Vec<String> = i.found.iter().map(Version::to_string).collect();
        match found.is_empty() {
            true => f.write_str(" (found none")?,
            false => write!(f, " (found {}", found.join(", "))?,
        }
        match i.skipped {
            0 => {}
            1 => f.write_str("; skipped 1 bad or unreadable entry")?,
            n => write!(f, "; skipped {n} bad or unreadable entries")?,
        }
        f.write_str(")")
    }
}

impl fmt::Debug for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickError")
            .field("kind", &self.inner.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for PickError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn installed(versions: &[&str]) -> Installed {
        Installed {
            app: "atoll".to_owned(),
            lib_dirs: vec!["/a/lib".into(), "/b/lib".into()],
            releases: versions
                .iter()
                .map(|v| Release {
                    app: "atoll".to_owned(),
                    version: Version::parse(v).unwrap(),
                    dir: format!("/a/lib/atoll-{v}").into(),
                    binary: format!("/a/lib/atoll-{v}/atoll").into(),
                    priv_dir: format!("/a/lib/atoll-{v}/priv").into(),
                })
                .collect(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn versions_lib_dirs_union_in_order_without_empties_or_repeats() {
        let lookup = env(&[(SETUP_LIBS_VAR, "/s:/a::/s/"), (LIBS_VAR, ":/a:/b:")]);
        let dirs = lib_dirs_from(lookup);
        let want: Vec<PathBuf> = vec!["/s".into(), "/a".into(), "/b".into()];
        assert_eq!(dirs, want);
        assert!(lib_dirs_from(env(&[])).is_empty());
    }

    #[test]
    fn versions_which_parses_keywords_and_patterns() {
        assert!(matches!("latest".parse::<Which>(), Ok(Which::Latest)));
        assert!(matches!("next".parse::<Which>(), Ok(Which::Next)));
        let which: Which = r"^1\.\d+\.0$".parse().unwrap();
        assert_eq!(which.to_string(), r"/^1\.\d+\.0$/");
        let e = "".parse::<Which>().unwrap_err();
        assert_eq!(e.kind(), PickErrorKind::InvalidPattern);
    }

    #[test]
    fn versions_invalid_pattern_error_is_one_line_naming_it() {
        let e = "1.(".parse::<Which>().unwrap_err();
        assert_eq!(e.kind(), PickErrorKind::InvalidPattern);
        let text = e.to_string();
        assert_eq!(text, "invalid version pattern /1.(/: unclosed group");
    }

    #[test]
    fn versions_latest_takes_first_of_equal_highest() {
        let mut set = installed(&["1.0.0", "1.1.0", "1.1.0"]);
        set.releases[2].dir = "/b/lib/atoll-1.1.0".into();
        let picked = pick(&set, &Which::Latest, None).unwrap();
        assert_eq!(picked.dir, Path::new("/a/lib/atoll-1.1.0"));
    }

    #[test]
    fn versions_next_is_lowest_above_running() {
        let set = installed(&["1.0.0", "1.1.0", "1.2.0"]);
        let running = Version::new(1, 0, 5);
        let picked = pick(&set, &Which::Next, Some(&running)).unwrap();
        assert_eq!(picked.version, Version::new(1, 1, 0));
    }

    #[test]
    fn versions_no_match_messages() {
        let set = installed(&["1.0.0", "1.1.0"]);
        let running = Version::new(1, 1, 0);
        let e = pick(&set, &Which::Next, Some(&running)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no release of atoll is above 1.1.0 in /a/lib:/b/lib (found 1.0.0, 1.1.0)"
        );
        let mut empty = installed(&[]);
        empty.lib_dirs.clear();
        let e = pick(&empty, &Which::Latest, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no release of atoll: no lib dir to look in ([app] lib_dirs, ATOLL_SETUP_LIBS and \
             ATOLL_LIBS are all empty; install a release there (docs/operations.md), or \
             upgrade with --path)"
        );
    }
}
