//! Variables in config strings: resolving the built-in ones and the `[vars]` table
//! ([`Variables::resolve`]), then expanding them in every string of a TOML value
//! ([`Variables::expand_value`]), with errors that name the key and the variable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::env::{AppEnv, AppSettings, OsEnv, DATA_DIR_VAR, HOME_VAR, LIB_DIR_VARS, LOG_DIR_VAR};

/// The built-in variables, which `[vars]` may not redefine, with the `[app]` key that sets
/// each.
const BUILTINS: [(&str, &str); 7] = [
    ("APP", "name"),
    ("NODE", "node"),
    ("HOME", "home"),
    ("DATA_DIR", "data_dir"),
    ("LOG_DIR", "log_dir"),
    ("PRIV_DIR", "priv_dir"),
    ("LIB_DIR", "lib_dirs"),
];

// ===== impl Variables =====

/// Every variable a config file's strings may use, resolved: the built-in ones (from an
/// [`AppEnv`]), the user's (a `[vars]` table) and the OS's (`$env(NAME)`).
#[derive(Debug, Clone)]
pub struct Variables {
    env: AppEnv,
    user: BTreeMap<String, String>,
    /// Every variable with a value, built-in (but `LIB_DIR`) and user-defined.
    values: HashMap<String, String>,
    os: OsEnv,
}

impl Variables {
    /// Resolves the `[app]` settings and the user's `[vars]` (each value a string that may
    /// use variables) of a config file in `config_dir`, against the OS environment. Every
    /// variable is resolved, used or not, so a bad one is found at once; `$LIB_DIR` alone
    /// fails only when used with no lib dir.
    pub fn resolve(
        settings: &AppSettings,
        user: &BTreeMap<String, String>,
        config_dir: &Path,
        os: &OsEnv,
    ) -> Result<Variables, ExpandError> {
        for name in user.keys() {
            let key = child_key("vars", name);
            if !is_name(name) {
                return Err(ExpandError::new(key, name, Problem::BadName));
            }
            if let Some((_, setting)) = BUILTINS.iter().find(|(b, _)| b == name) {
                return Err(ExpandError::new(key, name, Problem::Builtin(setting)));
            }
        }
        let mut resolver = Resolver {
            settings,
            user,
            os,
            config_dir,
            done: HashMap::new(),
            lib_dirs: None,
            stack: Vec::new(),
        };
        let mut get = |name: &str, setting: &str| resolver.var(name, &child_key("app", setting));
        let name = get("APP", "name")?;
        let node = get("NODE", "node")?;
        let home = get("HOME", "home")?;
        let data_dir = get("DATA_DIR", "data_dir")?;
        let log_dir = get("LOG_DIR", "log_dir")?;
        let priv_dir = get("PRIV_DIR", "priv_dir")?;
        let lib_dirs = resolver.lib_dirs(&child_key("app", "lib_dirs"))?;
        for name in user.keys() {
            resolver.var(name, &child_key("vars", name))?;
        }
        let env = AppEnv {
            name,
            node,
            home: home.into(),
            data_dir: data_dir.into(),
            log_dir: log_dir.into(),
            log_max_size: settings.log_max_size_or_default(),
            log_files: settings.log_files_or_default(),
            priv_dir: priv_dir.into(),
            lib_dirs: lib_dirs.into_iter().map(PathBuf::from).collect(),
        };
        let values = resolver.done;
        let user = user
            .keys()
            .filter_map(|k| Some((k.clone(), values.get(k)?.clone())))
            .collect();
        Ok(Variables {
            env,
            user,
            values,
            os: os.clone(),
        })
    }

    /// The application environment.
    pub fn env(&self) -> &AppEnv {
        &self.env
    }

    /// The user's variables, expanded.
    pub fn user(&self) -> &BTreeMap<String, String> {
        &self.user
    }

    /// The application environment and the user's variables.
    pub fn into_parts(self) -> (AppEnv, BTreeMap<String, String>) {
        (self.env, self.user)
    }

    /// Expands the variables in `text`, the value of the config key `key` (named in errors).
    pub fn expand(&self, text: &str, key: &str) -> Result<String, ExpandError> {
        expand_text(text, key, |reference| match reference {
            Ref::Env(name) => env_var(&self.os, name, key),
            Ref::Var("LIB_DIR") => match self.env.lib_dir() {
                Some(dir) => Ok(dir.to_string_lossy().into_owned()),
                None => Err(ExpandError::new(key, "LIB_DIR", Problem::NoLibDir)),
            },
            Ref::Var(name) => match self.values.get(name) {
                Some(value) => Ok(value.clone()),
                None => Err(ExpandError::new(key, name, Problem::Unknown)),
            },
        })
    }

    /// Expands the variables in every string of `value`, at any depth of tables and arrays
    /// (keys are left alone). `key` is the path of `value` in the config file
    /// (`listener[2]`), extended in errors with the path to the string at fault
    /// (`listener[2].tls.cert`); array positions count from 1.
    pub fn expand_value(&self, value: &mut toml::Value, key: &str) -> Result<(), ExpandError> {
        let mut path = Vec::new();
        self.expand_at(value, key, &mut path)
    }

    /// Expands the variables in every string of `table`, as [`expand_value`] does.
    ///
    /// [`expand_value`]: Variables::expand_value
    pub fn expand_table(&self, table: &mut toml::Table, key: &str) -> Result<(), ExpandError> {
        let mut path = Vec::new();
        for (name, item) in table.iter_mut() {
            path.push(Step::Key(name));
            self.expand_at(item, key, &mut path)?;
            path.pop();
        }
        Ok(())
    }

    fn expand_at<'v>(
        &self,
        value: &'v mut toml::Value,
        root: &str,
        path: &mut Vec<Step<'v>>,
    ) -> Result<(), ExpandError> {
        match value {
            toml::Value::String(text) if text.contains('$') => {
                let key = path.iter().fold(root.to_owned(), |key, step| match step {
                    Step::Key(name) => child_key(&key, name),
                    Step::Index(i) => format!("{key}[{}]", i + 1),
                });
                *text = self.expand(text, &key)?;
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Step::Index(i));
                    self.expand_at(item, root, path)?;
                    path.pop();
                }
            }
            toml::Value::Table(table) => {
                for (name, item) in table.iter_mut() {
                    path.push(Step::Key(name));
                    self.expand_at(item, root, path)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// One step down a TOML value, for naming the key at fault only when there is one.
enum Step<'v> {
    Key(&'v str),
    Index(usize),
}

// ===== impl Resolver =====

/// Resolves variables on demand, each once, following references depth first; the stack of
/// variables being resolved finds loops.
struct Resolver<'a> {
    settings: &'a AppSettings,
    user: &'a BTreeMap<String, String>,
    os: &'a OsEnv,
    config_dir: &'a Path,
    done: HashMap<String, String>,
    lib_dirs: Option<Vec<String>>,
    stack: Vec<String>,
}

impl Resolver<'_> {
    /// The value of the variable `name`, referred to by the value of the key `at`.
    fn var(&mut self, name: &str, at: &str) -> Result<String, ExpandError> {
        if name == "LIB_DIR" {
            let dirs = self.lib_dirs(at)?;
            return match dirs.into_iter().next() {
                Some(dir) => Ok(dir),
                None => Err(ExpandError::new(at, name, Problem::NoLibDir)),
            };
        }
        if let Some(value) = self.done.get(name) {
            return Ok(value.clone());
        }
        if !self.user.contains_key(name) && !BUILTINS.iter().any(|(b, _)| *b == name) {
            return Err(ExpandError::new(at, name, Problem::Unknown));
        }
        self.enter(name, at)?;
        let value = self.compute(name, at);
        self.stack.pop();
        let value = value?;
        self.done.insert(name.to_owned(), value.clone());
        Ok(value)
    }

    /// Marks `name` as being resolved, or fails when it already is: a loop.
    fn enter(&mut self, name: &str, at: &str) -> Result<(), ExpandError> {
        if let Some(first) = self.stack.iter().position(|n| n == name) {
            let mut chain = self.stack[first..].to_vec();
            chain.push(name.to_owned());
            return Err(ExpandError::new(at, name, Problem::Loop(chain)));
        }
        self.stack.push(name.to_owned());
        Ok(())
    }

    fn compute(&mut self, name: &str, at: &str) -> Result<String, ExpandError> {
        let settings = self.settings;
        let os = self.os;
        let config_dir = self.config_dir;
        // A directory: its OS variable (relative to the working directory), else its
        // `[app]` key (relative to the config file's folder), else `default`.
        let dir =
            |this: &mut Self,
             var: &str,
             setting: &Option<String>,
             key: &str,
             default: &mut dyn FnMut(&mut Self) -> Result<String, ExpandError>| {
                if let Some(value) = os.non_empty(var) {
                    return Ok(join(os.cwd(), value));
                }
                match setting {
                    Some(template) => Ok(join(config_dir, &this.setting(template, "app", key)?)),
                    None => default(this),
                }
            };
        match name {
            "APP" => match &settings.name {
                Some(template) => self.setting(template, "app", "name"),
                None => Ok("atoll".to_owned()),
            },
            "NODE" => match &settings.node {
                Some(template) => self.setting(template, "app", "node"),
                None => Ok(os.host_name().unwrap_or("nonode").to_owned()),
            },
            // The config file's folder, not the working directory: a control command run
            // from anywhere with `--config FILE` finds the data dir (and the control socket)
            // of the server started with that file.
            "HOME" => dir(self, HOME_VAR, &settings.home, "home", &mut |_| {
                Ok(config_dir.to_string_lossy().into_owned())
            }),
            "DATA_DIR" => dir(
                self,
                DATA_DIR_VAR,
                &settings.data_dir,
                "data_dir",
                &mut |this| this.home_child("data", at),
            ),
            "LOG_DIR" => dir(
                self,
                LOG_DIR_VAR,
                &settings.log_dir,
                "log_dir",
                &mut |this| this.home_child("log", at),
            ),
            "PRIV_DIR" => match &settings.priv_dir {
                Some(template) => Ok(join(
                    config_dir,
                    &self.setting(template, "app", "priv_dir")?,
                )),
                None => Ok(config_dir.to_string_lossy().into_owned()),
            },
            user => {
                let template = &self.user[user];
                self.setting(template, "vars", user)
            }
        }
    }

    /// `HOME/PREFIX.NODE`, the default data and log dirs.
    fn home_child(&mut self, prefix: &str, at: &str) -> Result<String, ExpandError> {
        let home = self.var("HOME", at)?;
        let node = self.var("NODE", at)?;
        Ok(join(Path::new(&home), &format!("{prefix}.{node}")))
    }

    /// The value of the key `table.name`, expanded; it may not be empty.
    fn setting(&mut self, template: &str, table: &str, name: &str) -> Result<String, ExpandError> {
        let key = child_key(table, name);
        let value = self.template(template, &key)?;
        if value.is_empty() {
            let var = self.stack.last().cloned().unwrap_or_default();
            return Err(ExpandError::new(key, &var, Problem::Empty));
        }
        Ok(value)
    }

    fn template(&mut self, text: &str, key: &str) -> Result<String, ExpandError> {
        let os = self.os;
        expand_text(text, key, |reference| match reference {
            Ref::Env(name) => env_var(os, name, key),
            Ref::Var(name) => self.var(name, key),
        })
    }

    /// The lib dirs: the union of the OS variables when either is set, else `[app] lib_dirs`.
    fn lib_dirs(&mut self, at: &str) -> Result<Vec<String>, ExpandError> {
        if let Some(dirs) = &self.lib_dirs {
            return Ok(dirs.clone());
        }
        self.enter("LIB_DIR", at)?;
        let dirs = self.compute_lib_dirs();
        self.stack.pop();
        let dirs = dirs?;
        self.lib_dirs = Some(dirs.clone());
        Ok(dirs)
    }

    fn compute_lib_dirs(&mut self) -> Result<Vec<String>, ExpandError> {
        let mut dirs: Vec<String> = Vec::new();
        for var in LIB_DIR_VARS {
            let parts = self.os.var(var).unwrap_or("").split(':');
            for part in parts.filter(|p| !p.is_empty()) {
                let dir = join(self.os.cwd(), part);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        if !dirs.is_empty() {
            return Ok(dirs);
        }
        let settings = self.settings;
        for (i, template) in settings.lib_dirs.iter().flatten().enumerate() {
            let key = format!("app.lib_dirs[{}]", i + 1);
            let value = self.template(template, &key)?;
            if value.is_empty() {
                return Err(ExpandError::new(key, "LIB_DIR", Problem::Empty));
            }
            let dir = join(self.config_dir, &value);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Ok(dirs)
    }
}

fn env_var(os: &OsEnv, name: &str, key: &str) -> Result<String, ExpandError> {
    match os.var(name) {
        Some(value) => Ok(value.to_owned()),
        None => Err(ExpandError::new(key, name, Problem::EnvUnset)),
    }
}

/// `path` taken from `base` when relative.
fn join(base: &Path, path: &str) -> String {
    base.join(path).to_string_lossy().into_owned()
}

/// `parent.name`, with `name` quoted when it is not a bare TOML key.
fn child_key(parent: &str, name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let name = if bare {
        name.to_owned()
    } else {
        serde_json::Value::String(name.to_owned()).to_string()
    };
    if parent.is_empty() {
        name
    } else {
        format!("{parent}.{name}")
    }
}

// ===== expand_text =====

/// A variable reference in a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref<'t> {
    /// `$NAME` or `${NAME}`.
    Var(&'t str),
    /// `$env(NAME)`.
    Env(&'t str),
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_name_byte)
}

/// Replaces each reference in `text` (the value of `key`) with what `lookup` gives for it,
/// and `$$` with `$`. What replaces a reference is not scanned again.
fn expand_text(
    text: &str,
    key: &str,
    mut lookup: impl FnMut(Ref<'_>) -> Result<String, ExpandError>,
) -> Result<String, ExpandError> {
    let Some(first) = text.find('$') else {
        return Ok(text.to_owned());
    };
    let syntax = |problem| Err(ExpandError::new(key, "", Problem::Syntax(problem)));
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut rest = &text[first..];
    while !rest.is_empty() {
        // `rest` starts with a `$`.
        let after = &rest[1..];
        let len = if after.starts_with('$') {
            out.push('$');
            2
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                return syntax(Syntax::Unclosed("${"));
            };
            let name = &inner[..end];
            if !is_name(name) {
                return syntax(Syntax::BadBraced(name.to_owned()));
            }
            out += &lookup(Ref::Var(name))?;
            end + 3
        } else {
            let n = after.bytes().take_while(|&b| is_name_byte(b)).count();
            if n == 0 {
                return syntax(Syntax::Lone);
            }
            let name = &after[..n];
            match after[n..].strip_prefix('(') {
                Some(inner) if name == "env" => {
                    let Some(end) = inner.find(')') else {
                        return syntax(Syntax::Unclosed("$env("));
                    };
                    let var = &inner[..end];
                    if var.is_empty() {
                        return syntax(Syntax::BadEnv);
                    }
                    out += &lookup(Ref::Env(var))?;
                    n + end + 3
                }
                _ => {
                    out += &lookup(Ref::Var(name))?;
                    n + 1
                }
            }
        };
        rest = &rest[len..];
        let next = rest.find('$').unwrap_or(rest.len());
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    Ok(out)
}

// ===== impl ExpandError =====

/// What went wrong with a variable; see [`ExpandError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// No variable by that name: not built in, not in `[vars]`.
    Unknown,
    /// The variable's value refers, through others maybe, to itself.
    Loop,
    /// `$env(NAME)` names an OS variable that is not set.
    EnvUnset,
    /// `$LIB_DIR` is used but there is no lib dir.
    NoLibDir,
    /// A `$` that starts no reference, or a reference left open.
    Syntax,
    /// A `[vars]` name that is not made of letters, digits and `_`, or that is built in.
    BadName,
    /// A setting whose value is empty.
    Empty,
}

/// A variable in a config string could not be expanded. Its `Display` names the key and the
/// variable, on one line: ``` `listener[2].tls.cert`: unknown variable `$CERTS` (...) ```.
pub struct ExpandError {
    inner: Box<ErrorInner>,
}

struct ErrorInner {
    key: String,
    variable: String,
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    Unknown,
    Loop(Vec<String>),
    EnvUnset,
    NoLibDir,
    Syntax(Syntax),
    BadName,
    Builtin(&'static str),
    Empty,
}

#[derive(Debug)]
enum Syntax {
    Lone,
    Unclosed(&'static str),
    BadBraced(String),
    BadEnv,
}

impl ExpandError {
    fn new(key: impl Into<String>, variable: &str, problem: Problem) -> Self {
        ExpandError {
            inner: Box::new(ErrorInner {
                key: key.into(),
                variable: variable.to_owned(),
                problem,
            }),
        }
    }

    /// The config key whose value is at fault, as a path: `vars.certs`,
    /// `listener[2].tls.cert` (array positions count from 1).
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The variable at fault as it is written (`$CERTS`, `$env(CERTS)`); empty for a syntax
    /// error.
    pub fn variable(&self) -> String {
        let name = &self.inner.variable;
        match self.inner.problem {
            _ if name.is_empty() => String::new(),
            Problem::EnvUnset => format!("$env({name})"),
            Problem::BadName => name.clone(),
            _ => format!("${name}"),
        }
    }

    /// The class of failure.
    pub fn kind(&self) -> ExpandErrorKind {
        match self.inner.problem {
            Problem::Unknown => ExpandErrorKind::Unknown,
            Problem::Loop(_) => ExpandErrorKind::Loop,
            Problem::EnvUnset => ExpandErrorKind::EnvUnset,
            Problem::NoLibDir => ExpandErrorKind::NoLibDir,
            Problem::Syntax(_) => ExpandErrorKind::Syntax,
            Problem::BadName | Problem::Builtin(_) => ExpandErrorKind::BadName,
            Problem::Empty => ExpandErrorKind::Empty,
        }
    }
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let var = self.variable();
        write!(f, "`{}`: ", inner.key)?;
        match &inner.problem {
            Problem::Unknown => {
                let builtins: Vec<String> = BUILTINS.iter().map(|(b, _)| format!("${b}")).collect();
                write!(
                    f,
                    "unknown variable `{var}` (built in: {}; others are defined in [vars])",
                    builtins.join(", ")
                )
            }
            Problem::Loop(chain) => {
                let chain: Vec<String> = chain.iter().map(|n| format!("${n}")).collect();
                write!(f, "variable loop: {}", chain.join(" -> "))
            }
            Problem::EnvUnset => write!(f, "`{var}` names an OS variable that is not set"),
            Problem::NoLibDir => write!(
                f,
                "`{var}` is used but there is no lib dir: set {} or {}, or [app] lib_dirs",
                LIB_DIR_VARS[0], LIB_DIR_VARS[1]
            ),
            Problem::Syntax(syntax) => {
                match syntax {
                    Syntax::Lone => f.write_str("a `$` that starts no variable")?,
                    Syntax::Unclosed(open) => write!(f, "`{open}` is not closed")?,
                    Syntax::BadBraced(name) => write!(
                        f,
                        "`${{{name}}}`: a variable name is letters, digits and `_`"
                    )?,
                    Syntax::BadEnv => f.write_str("`$env()` names no OS variable")?,
                }
                f.write_str("; write `$NAME`, `${NAME}` or `$env(NAME)`, and `$$` for a `$`")
            }
            Problem::BadName => write!(
                f,
                "`{var}` cannot be a variable name: use letters, digits and `_`"
            ),
            Problem::Builtin(setting) => write!(
                f,
                "`{var}` is built in: set it with `{setting}` in the [app] table"
            ),
            Problem::Empty => f.write_str("empty value"),
        }
    }
}

impl fmt::Debug for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpandError")
            .field("kind", &self.kind())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for ExpandError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Result<String, String> {
        expand_text(text, "k", |r| {
            Ok(match r {
                Ref::Var(name) => format!("<{name}>"),
                Ref::Env(name) => format!("[{name}]"),
            })
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_form_of_reference() {
        assert_eq!(refs("plain").unwrap(), "plain");
        assert_eq!(refs("$A/b").unwrap(), "<A>/b");
        assert_eq!(refs("x$HOME_2.y").unwrap(), "x<HOME_2>.y");
        assert_eq!(refs("${APP}_x${B}").unwrap(), "<APP>_x<B>");
        assert_eq!(refs("$env(PATH)/$env").unwrap(), "[PATH]/<env>");
        assert_eq!(refs("$$A costs $$5$").unwrap_err(), refs("$").unwrap_err());
        assert_eq!(refs("$$A costs $$5").unwrap(), "$A costs $5");
        assert_eq!(refs("$$$A").unwrap(), "$<A>");
        assert_eq!(refs("é$Aé").unwrap(), "é<A>é");
    }

    #[test]
    fn bad_references_are_syntax_errors() {
        for text in [
            "$", "a $ b", "$-", "${A", "${A-B}", "${}", "$env(X", "$env()",
        ] {
            let e = expand_text(text, "k", |_| Ok(String::new())).unwrap_err();
            assert_eq!(e.kind(), ExpandErrorKind::Syntax, "{text}");
            let m = e.to_string();
            assert!(
                m.starts_with("`k`: ") && m.contains("`$$` for a `$`"),
                "{m}"
            );
        }
    }

    fn resolve(
        settings: AppSettings,
        user: &[(&str, &str)],
        os: &OsEnv,
    ) -> Result<Variables, ExpandError> {
        let user = user
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Variables::resolve(&settings, &user, Path::new("/etc/atoll"), os)
    }

    fn os() -> OsEnv {
        OsEnv::new("/work").with_host_name("box")
    }

    #[test]
    fn defaults_come_from_the_os() {
        let v = resolve(AppSettings::default(), &[], &os()).unwrap();
        let env = v.env();
        assert_eq!((env.name.as_str(), env.node.as_str()), ("atoll", "box"));
        // Home is the config file's folder, wherever the process runs.
        assert_eq!(env.home, Path::new("/etc/atoll"));
        assert_eq!(env.data_dir, Path::new("/etc/atoll/data.box"));
        assert_eq!(env.log_dir, Path::new("/etc/atoll/log.box"));
        assert_eq!(env.priv_dir, Path::new("/etc/atoll"));
        assert!(env.lib_dirs.is_empty());
        let env = resolve(AppSettings::default(), &[], &OsEnv::new("/w"))
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(env.node, "nonode");
        assert_eq!(env.data_dir, Path::new("/etc/atoll/data.nonode"));
    }

    #[test]
    fn settings_use_variables_and_os_variables_win() {
        let settings = AppSettings {
            name: Some("shop".into()),
            home: Some("/srv/$APP".into()),
            log_dir: Some("logs/$NODE".into()),
            lib_dirs: Some(vec!["$HOME/lib".into(), "/opt/$APP".into()]),
            ..AppSettings::default()
        };
        let env = resolve(settings.clone(), &[], &os())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(env.home, Path::new("/srv/shop"));
        assert_eq!(env.data_dir, Path::new("/srv/shop/data.box"));
        assert_eq!(env.log_dir, Path::new("/etc/atoll/logs/box"));
        assert_eq!(
            env.lib_dirs,
            [Path::new("/srv/shop/lib"), Path::new("/opt/shop")]
        );

        let os = os()
            .with_var("ATOLL_HOME", "h")
            .with_var("ATOLL_LOG_DIR", "/var/log/x")
            .with_var("ATOLL_DATA_DIR", "")
            .with_var("ATOLL_SETUP_LIBS", "/l1::/l2")
            .with_var("ATOLL_LIBS", "/l2:rel");
        let env = resolve(settings, &[], &os).unwrap().into_parts().0;
        assert_eq!(env.home, Path::new("/work/h"));
        assert_eq!(env.data_dir, Path::new("/work/h/data.box"));
        assert_eq!(env.log_dir, Path::new("/var/log/x"));
        let libs = ["/l1", "/l2", "/work/rel"].map(PathBuf::from);
        assert_eq!(env.lib_dirs, libs);
        assert_eq!(env.lib_dir(), Some(Path::new("/l1")));
    }

    #[test]
    fn user_variables_refer_to_each_other() {
        let v = resolve(
            AppSettings {
                data_dir: Some("$store/data".into()),
                ..AppSettings::default()
            },
            &[
                ("certs", "${base}/certs"),
                ("base", "$HOME/etc"),
                ("store", "/mnt/$APP"),
                ("price", "$$5 for $env(USER)"),
            ],
            &os().with_var("USER", "ann"),
        )
        .unwrap();
        assert_eq!(v.user()["certs"], "/etc/atoll/etc/certs");
        assert_eq!(v.user()["price"], "$5 for ann");
        assert_eq!(v.env().data_dir, Path::new("/mnt/atoll/data"));
        assert_eq!(
            v.expand("$certs/a.pem", "x").unwrap(),
            "/etc/atoll/etc/certs/a.pem"
        );
    }

    #[test]
    fn loops_name_the_key_and_the_chain() {
        let e = resolve(AppSettings::default(), &[("a", "$b"), ("b", "x$a")], &os()).unwrap_err();
        assert_eq!(e.kind(), ExpandErrorKind::Loop);
        assert_eq!(e.key(), "vars.b");
        assert_eq!(e.to_string(), "`vars.b`: variable loop: $a -> $b -> $a");
        let e = resolve(AppSettings::default(), &[("a", "$a")], &os()).unwrap_err();
        assert_eq!(e.to_string(), "`vars.a`: variable loop: $a -> $a");

        // Through a default: data_dir is HOME/data.NODE.
        let settings = AppSettings {
            home: Some("$DATA_DIR/..".into()),
            ..AppSettings::default()
        };
        let e = resolve(settings, &[], &os()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`app.home`: variable loop: $HOME -> $DATA_DIR -> $HOME"
        );
        let settings = AppSettings {
            lib_dirs: Some(vec!["/a".into(), "$LIB_DIR/b".into()]),
            ..AppSettings::default()
        };
        let e = resolve(settings, &[], &os()).unwrap_err();
        assert_eq!(e.key(), "app.lib_dirs[2]");
        assert_eq!(e.kind(), ExpandErrorKind::Loop);
    }

    #[test]
    fn unknown_and_unusable_variables_are_named() {
        let e = resolve(AppSettings::default(), &[("a", "$b/x"), ("b", "$c")], &os()).unwrap_err();
        assert_eq!((e.key(), e.variable().as_str()), ("vars.b", "$c"));
        assert_eq!(e.kind(), ExpandErrorKind::Unknown);
        assert!(e
            .to_string()
            .starts_with("`vars.b`: unknown variable `$c` (built in: $APP,"));

        let e = resolve(AppSettings::default(), &[("a", "$env(NOPE)")], &os()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`vars.a`: `$env(NOPE)` names an OS variable that is not set"
        );
        let e = resolve(AppSettings::default(), &[("HOME", "/x")], &os()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`vars.HOME`: `$HOME` is built in: set it with `home` in the [app] table"
        );
        let e = resolve(AppSettings::default(), &[("a-b", "/x")], &os()).unwrap_err();
        assert_eq!(e.key(), "vars.a-b");
        assert_eq!(e.kind(), ExpandErrorKind::BadName);
        let settings = AppSettings {
            node: Some("$env(EMPTY)".into()),
            ..AppSettings::default()
        };
        let e = resolve(settings, &[], &os().with_var("EMPTY", "")).unwrap_err();
        assert_eq!(e.to_string(), "`app.node`: empty value");

        // $LIB_DIR fails only where it is used.
        let v = resolve(AppSettings::default(), &[], &os()).unwrap();
        let e = v.expand("$LIB_DIR/x", "listener[1].dir").unwrap_err();
        assert_eq!(e.kind(), ExpandErrorKind::NoLibDir);
        assert!(e
            .to_string()
            .starts_with("`listener[1].dir`: `$LIB_DIR` is used but"));
    }

    #[test]
    fn expands_every_string_of_a_value() {
        let v = resolve(AppSettings::default(), &[("x", "X")], &os()).unwrap();
        let mut value: toml::Value = toml::from_str(
            "a = \"$x\"\nn = 1\nlist = [\"$APP\", [\"${x}y\"], { b = \"$$\" }]\n[t.u]\nc = \"$NODE\"\n",
        )
        .unwrap();
        v.expand_value(&mut value, "").unwrap();
        let want: toml::Value = toml::from_str(
            "a = \"X\"\nn = 1\nlist = [\"atoll\", [\"Xy\"], { b = \"$\" }]\n[t.u]\nc = \"box\"\n",
        )
        .unwrap();
        assert_eq!(value, want);

        let mut value: toml::Value =
            toml::from_str("list = [1, { \"odd key\" = [\"ok\", \"$nope\"] }]").unwrap();
        let e = v.expand_value(&mut value, "listener[3]").unwrap_err();
        assert_eq!(e.key(), "listener[3].list[2].\"odd key\"[2]");
    }
}
