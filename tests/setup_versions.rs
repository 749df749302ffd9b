//! Finding installed releases in temporary lib dirs, and picking one.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use atoll::setup::versions::{
    find_releases, lib_dirs_from, pick, Installed, PickErrorKind, WarningKind, Which, LIBS_VAR,
    MANIFEST_FILE, SETUP_LIBS_VAR,
};
use semver::Version;
use tempfile::TempDir;

/// An environment holding only `ATOLL_SETUP_LIBS` and `ATOLL_LIBS`.
fn env(setup_libs: &str, libs: &str) -> impl Fn(&str) -> Option<OsString> {
    let (setup_libs, libs) = (OsString::from(setup_libs), OsString::from(libs));
    move |name| match name {
        SETUP_LIBS_VAR => Some(setup_libs.clone()),
        LIBS_VAR => Some(libs.clone()),
        _ => None,
    }
}

fn join(dirs: &[&Path]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(":")
}

/// Writes `lib_dir/folder/release.toml` with `manifest`, and returns the folder.
fn release(lib_dir: &Path, folder: &str, manifest: &str) -> PathBuf {
    let dir = lib_dir.join(folder);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
    dir
}

fn atoll(lib_dir: &Path, version: &str) -> PathBuf {
    let manifest = format!("app = \"atoll\"\nversion = \"{version}\"\n");
    release(lib_dir, &format!("atoll-{version}"), &manifest)
}

fn versions(installed: &Installed) -> Vec<String> {
    installed
        .releases
        .iter()
        .map(|r| r.version.to_string())
        .collect()
}

/// Two lib dirs, `a` with 1.0.0 and `b` with 1.1.0, named by the two variables.
fn two_lib_dirs() -> (TempDir, PathBuf, PathBuf, Installed) {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    atoll(&a, "1.0.0");
    atoll(&b, "1.1.0");
    let dirs = lib_dirs_from(env(&join(&[&a]), &join(&[&b])));
    let installed = find_releases("atoll", &dirs);
    (tmp, a, b, installed)
}

#[test]
fn finds_releases_across_lib_dirs_from_both_variables() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    atoll(&a, "1.0.0");
    release(
        &b,
        "atoll-1.1.0",
        "app = \"atoll\"\nversion = \"1.1.0\"\nbinary = \"bin/atoll\"\npriv_dir = \"share\"\n\
         notes = \"keys the manifest does not know are ignored\"\n",
    );
    atoll(&b, "0.9.0");

    let dirs = lib_dirs_from(env(&join(&[&a]), &join(&[&b])));
    assert_eq!(dirs, vec![a.clone(), b.clone()]);
    let installed = find_releases("atoll", &dirs);
    assert!(installed.warnings.is_empty(), "{:?}", installed.warnings);
    assert_eq!(installed.app, "atoll");
    assert_eq!(versions(&installed), ["0.9.0", "1.0.0", "1.1.0"]);

    let r = &installed.releases[1];
    assert_eq!(r.app, "atoll");
    assert_eq!(r.dir, a.join("atoll-1.0.0"));
    assert_eq!(r.binary, a.join("atoll-1.0.0/atoll"));
    assert_eq!(r.priv_dir, a.join("atoll-1.0.0/priv"));
    assert_eq!(r.manifest(), a.join("atoll-1.0.0").join(MANIFEST_FILE));

    let r = &installed.releases[2];
    assert_eq!(r.dir, b.join("atoll-1.1.0"));
    assert_eq!(r.binary, b.join("atoll-1.1.0/bin/atoll"));
    assert_eq!(r.priv_dir, b.join("atoll-1.1.0/share"));
}

#[test]
fn lib_dirs_keep_order_and_drop_repeats_and_empty_entries() {
    let tmp = TempDir::new().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    atoll(&a, "1.0.0");
    let setup_libs = format!("{}::{}", b.display(), a.display());
    let libs = format!(":{}:{}:{}/:", a.display(), c.display(), b.display());
    let dirs = lib_dirs_from(env(&setup_libs, &libs));
    assert_eq!(dirs, vec![b.clone(), a.clone(), c.clone()]);

    // Only one variable set, or neither.
    let only_libs = |name: &str| (name == LIBS_VAR).then(|| OsString::from(&libs));
    assert_eq!(
        lib_dirs_from(only_libs),
        vec![a.clone(), c.clone(), b.clone()]
    );
    assert!(lib_dirs_from(|_: &str| None).is_empty());

    // A lib dir named twice is searched once: its release is listed once.
    fs::create_dir_all(&b).unwrap();
    fs::create_dir_all(&c).unwrap();
    let installed = find_releases("atoll", &dirs);
    assert_eq!(versions(&installed), ["1.0.0"]);
    assert!(installed.warnings.is_empty(), "{:?}", installed.warnings);
}

#[test]
fn one_version_in_two_lib_dirs_is_listed_twice_and_the_first_lib_dir_wins() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    atoll(&a, "1.0.0");
    atoll(&b, "1.1.0");
    let b_copy = release(&b, "copy", "app = \"atoll\"\nversion = \"1.0.0\"\n");
    let a_copy = release(&a, "zz-copy", "app = \"atoll\"\nversion = \"1.1.0\"\n");

    // `b` before `a`: b's 1.1.0 shadows a's.
    let dirs = vec![b.clone(), a.clone()];
    let installed = find_releases("atoll", &dirs);
    assert_eq!(versions(&installed), ["1.0.0", "1.0.0", "1.1.0", "1.1.0"]);
    let picked = pick(&installed, &Which::Latest, None).unwrap();
    assert_eq!(picked.dir, b.join("atoll-1.1.0"));
    let picked = pick(&installed, &"^1.0".parse().unwrap(), None).unwrap();
    assert_eq!(picked.dir, b_copy);

    let shadowed: Vec<&Path> = installed
        .warnings
        .iter()
        .map(|w| {
            assert_eq!(w.kind, WarningKind::Duplicate);
            w.path.as_path()
        })
        .collect();
    assert_eq!(shadowed, [a.join("atoll-1.0.0"), a_copy]);
    let text = installed.warnings[1].to_string();
    assert!(text.contains("also installed at"), "{text}");
}

#[test]
fn folders_without_a_manifest_and_other_apps_are_skipped_quietly() {
    let tmp = TempDir::new().unwrap();
    let lib = tmp.path().join("lib");
    atoll(&lib, "1.0.0");
    fs::create_dir_all(lib.join("notes")).unwrap();
    fs::write(lib.join("notes/readme.txt"), "not a release").unwrap();
    fs::write(
        lib.join(MANIFEST_FILE),
        "app = \"atoll\"\nversion = \"9.0.0\"\n",
    )
    .unwrap();
    fs::write(lib.join("loose-file"), "").unwrap();
    release(
        &lib,
        "other-2.0.0",
        "app = \"other\"\nversion = \"2.0.0\"\n",
    );
    // A release nested one level too deep is not found either.
    atoll(&lib.join("nested"), "3.0.0");

    let installed = find_releases("atoll", std::slice::from_ref(&lib));
    assert_eq!(versions(&installed), ["1.0.0"]);
    assert!(installed.warnings.is_empty(), "{:?}", installed.warnings);

    let other = find_releases("other", std::slice::from_ref(&lib));
    assert_eq!(versions(&other), ["2.0.0"]);
}

#[test]
fn bad_manifests_and_missing_lib_dirs_are_reported_and_the_rest_listed() {
    let tmp = TempDir::new().unwrap();
    let lib = tmp.path().join("lib");
    let missing = tmp.path().join("missing");
    atoll(&lib, "1.0.0");
    let syntax = release(&lib, "b-syntax", "app = \"atoll\"\nversion = 1.2.0\n");
    let no_version = release(&lib, "c-no-version", "app = \"atoll\"\n");
    let bad_version = release(
        &lib,
        "d-bad-version",
        "app = \"atoll\"\nversion = \"1.1\"\n",
    );
    let wrong_type = release(&lib, "e-wrong-type", "app = \"atoll\"\nversion = 2\n");
    // A manifest that is a folder cannot be read.
    let unreadable = lib.join("f-unreadable");
    fs::create_dir_all(unreadable.join(MANIFEST_FILE)).unwrap();

    let installed = find_releases("atoll", &[lib.clone(), missing.clone()]);
    assert_eq!(versions(&installed), ["1.0.0"]);
    let got: Vec<(&Path, WarningKind)> = installed
        .warnings
        .iter()
        .map(|w| (w.path.as_path(), w.kind))
        .collect();
    let manifest = |dir: &Path| dir.join(MANIFEST_FILE);
    assert_eq!(
        got,
        [
            (manifest(&syntax).as_path(), WarningKind::BadManifest),
            (manifest(&no_version).as_path(), WarningKind::BadManifest),
            (manifest(&bad_version).as_path(), WarningKind::BadVersion),
            (manifest(&wrong_type).as_path(), WarningKind::BadManifest),
            (manifest(&unreadable).as_path(), WarningKind::Unreadable),
            (missing.as_path(), WarningKind::Unreadable),
        ]
    );
    for w in &installed.warnings {
        let text = w.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(
            text.starts_with(&format!("{}: ", w.path.display())),
            "{text}"
        );
    }
    let messages: Vec<&str> = installed
        .warnings
        .iter()
        .map(|w| w.message.as_str())
        .collect();
    assert!(messages[0].starts_with("line 2: "), "{}", messages[0]);
    assert!(messages[1] == "missing field `version`", "{}", messages[1]);
    assert!(
        messages[2].starts_with("bad version \"1.1\": "),
        "{}",
        messages[2]
    );
    assert!(messages[5].starts_with("cannot read: "), "{}", messages[5]);

    // Picking still works over what was found, and says that something was skipped.
    let e = pick(&installed, &"^2".parse().unwrap(), None).unwrap_err();
    let text = e.to_string();
    assert!(
        text.ends_with("(found 1.0.0; skipped 6 bad or unreadable entries)"),
        "{text}"
    );
}

#[test]
fn picks_latest_next_and_by_pattern() {
    let tmp = TempDir::new().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for v in ["1.0.0", "1.2.0-rc.1", "2.0.0"] {
        atoll(&a, v);
    }
    for v in ["1.1.0", "1.2.0", "1.10.0"] {
        atoll(&b, v);
    }
    let installed = find_releases("atoll", &[a.clone(), b.clone()]);
    assert_eq!(
        versions(&installed),
        ["1.0.0", "1.1.0", "1.2.0-rc.1", "1.2.0", "1.10.0", "2.0.0"]
    );
    let version = |which: &str, running: Option<&str>| {
        let running = running.map(|r| Version::parse(r).unwrap());
        let which: Which = which.parse().unwrap();
        let release = pick(&installed, &which, running.as_ref()).unwrap();
        release.version.to_string()
    };

    assert_eq!(version("latest", None), "2.0.0");
    assert_eq!(version("latest", Some("2.0.0")), "2.0.0");
    assert_eq!(version("next", Some("1.0.0")), "1.1.0");
    assert_eq!(version("next", Some("1.1.0")), "1.2.0-rc.1");
    assert_eq!(version("next", Some("1.2.0")), "1.10.0");
    // A running version that is not installed still has a next.
    assert_eq!(version("next", Some("1.5.0")), "1.10.0");
    assert_eq!(version("next", Some("0.1.0")), "1.0.0");
    // Highest by version order, not by text order.
    assert_eq!(version(r"^1\.", None), "1.10.0");
    assert_eq!(version(r"^1\.\d\.", None), "1.2.0");
    assert_eq!(version("rc", None), "1.2.0-rc.1");
    assert_eq!(version(r"^1\.0\.0$", None), "1.0.0");

    let picked = pick(&installed, &Which::Latest, None).unwrap();
    assert_eq!(picked.dir, a.join("atoll-2.0.0"));
    assert_eq!(picked.binary, a.join("atoll-2.0.0/atoll"));
}

#[test]
fn next_needs_a_running_version_and_a_later_release() {
    let (_tmp, a, b, installed) = two_lib_dirs();
    let e = pick(&installed, &Which::Next, None).unwrap_err();
    assert_eq!(e.kind(), PickErrorKind::NoRunningVersion);
    assert_eq!(
        e.to_string(),
        "cannot pick the next release of atoll: no running version to follow"
    );

    let running = Version::new(1, 1, 0);
    let e = pick(&installed, &Which::Next, Some(&running)).unwrap_err();
    assert_eq!(e.kind(), PickErrorKind::NoMatch);
    assert_eq!(
        e.to_string(),
        format!(
            "no release of atoll is above 1.1.0 in {} (found 1.0.0, 1.1.0)",
            join(&[&a, &b])
        )
    );
}

#[test]
fn no_match_names_the_pattern_the_lib_dirs_and_what_was_found() {
    let (_tmp, a, b, installed) = two_lib_dirs();
    let e = pick(&installed, &r"^2\.".parse().unwrap(), None).unwrap_err();
    assert_eq!(e.kind(), PickErrorKind::NoMatch);
    assert_eq!(e.found(), [Version::new(1, 0, 0), Version::new(1, 1, 0)]);
    assert_eq!(
        e.to_string(),
        format!(
            r"no release of atoll matches /^2\./ in {} (found 1.0.0, 1.1.0)",
            join(&[&a, &b])
        )
    );

    // Nothing installed at all.
    let tmp = TempDir::new().unwrap();
    let empty = find_releases("atoll", &[tmp.path().to_owned()]);
    let e = pick(&empty, &Which::Latest, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no release of atoll in {} (found none)",
            tmp.path().display()
        )
    );

    // No lib dir at all.
    let none = find_releases("atoll", &[]);
    let e = pick(&none, &Which::Latest, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no release of atoll: no lib dir to look in ([app] lib_dirs, ATOLL_SETUP_LIBS and \
         ATOLL_LIBS are all empty; install a release there (docs/operations.md), or upgrade \
         with --path)"
    );
}

#[test]
fn an_invalid_pattern_is_an_error_naming_it() {
    for (pattern, reason) in [
        ("1.(", "unclosed group"),
        ("[1-", "unclosed character class"),
        ("*1", "repetition operator missing expression"),
    ] {
        let e = pattern.parse::<Which>().unwrap_err();
        assert_eq!(e.kind(), PickErrorKind::InvalidPattern);
        assert_eq!(
            e.to_string(),
            format!("invalid version pattern /{pattern}/: {reason}")
        );
    }
    let e = "".parse::<Which>().unwrap_err();
    assert_eq!(e.kind(), PickErrorKind::InvalidPattern);
    assert!(e.to_string().contains("use `latest`"), "{e}");
}

#[test]
fn the_listing_marks_the_running_version_and_shows_warnings() {
    let (_tmp, a, b, mut installed) = two_lib_dirs();
    let running = Version::new(1, 1, 0);
    let text = installed.text(Some(&running));
    assert_eq!(
        text,
        format!(
            "  1.0.0  {}\n* 1.1.0  {}\n",
            a.join("atoll-1.0.0").display(),
            b.join("atoll-1.1.0").display()
        )
    );
    assert!(!installed.text(None).contains('*'));

    let json = installed.json(Some(&running));
    assert_eq!(json["app"], "atoll");
    assert_eq!(json["running"], "1.1.0");
    assert_eq!(json["lib_dirs"][1], b.display().to_string());
    assert_eq!(json["releases"][0]["version"], "1.0.0");
    assert_eq!(json["releases"][0]["running"], false);
    assert_eq!(json["releases"][1]["running"], true);
    assert_eq!(
        json["releases"][1]["binary"],
        b.join("atoll-1.1.0/atoll").display().to_string()
    );
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(0));
    assert!(installed.json(None)["running"].is_null());

    // With a bad manifest and a missing lib dir.
    release(&b, "broken", "app = \"atoll\"\nversion = \"one\"\n");
    installed.lib_dirs.push(b.join("missing"));
    let installed = find_releases("atoll", &installed.lib_dirs);
    let text = installed.text(None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let manifest = b.join("broken").join(MANIFEST_FILE);
    let warning = format!("warning: {}: bad version \"one\": ", manifest.display());
    assert!(lines[2].starts_with(&warning), "{text}");
    let warning = format!("warning: {}: cannot read: ", b.join("missing").display());
    assert!(lines[3].starts_with(&warning), "{text}");
    let json = installed.json(None);
    assert_eq!(json["warnings"][0]["kind"], "bad_version");
    assert_eq!(json["warnings"][0]["path"], manifest.display().to_string());
    assert_eq!(json["warnings"][1]["kind"], "unreadable");

    // Nothing found: one line saying where it looked.
    let none = find_releases("atoll", &[]);
    assert_eq!(
        none.text(None),
        "no release of atoll: no lib dir to look in ([app] lib_dirs, ATOLL_SETUP_LIBS and \
         ATOLL_LIBS are all empty; install a release there (docs/operations.md), or upgrade \
         with --path)\n"
    );
}

#[test]
fn the_release_of_a_binary_is_found_through_symlinks() {
    let (tmp, _a, b, installed) = two_lib_dirs();
    let binary = b.join("atoll-1.1.0/atoll");
    fs::write(&binary, "").unwrap();
    let link = tmp.path().join("current");
    std::os::unix::fs::symlink(&binary, &link).unwrap();
    let found = installed.release_of(&link).map(|r| r.version.to_string());
    assert_eq!(found.as_deref(), Some("1.1.0"));
    assert!(installed.release_of(&tmp.path().join("nowhere")).is_none());
}
