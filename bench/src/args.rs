//! Command-line flags: `--name value` (or `--name=value`) pairs and bare words. The bench has a
//! handful of flat flags, so a small parser keeps its build light.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// The flags and words after a subcommand.
pub(crate) struct Flags {
    named: HashMap<String, String>,
    words: Vec<String>,
}

impl Flags {
    /// Splits `args` into flags and words; a flag not in `known` (written without `--`) is an
    /// error, so a typo never silently runs the default.
    pub(crate) fn parse(
        mut args: impl Iterator<Item = String>,
        known: &[&str],
    ) -> Result<Self, String> {
        let mut named = HashMap::new();
        let mut words = Vec::new();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                words.push(arg);
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("`--{flag}` needs a value"))?;
                    (flag.to_owned(), value)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown flag `--{name}` (known: --{})",
                    known.join(", --")
                ));
            }
            named.insert(name, value);
        }
        Ok(Flags { named, words })
    }

    /// The flag's value, or `default` when it is absent.
    pub(crate) fn get<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.named.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("`--{name} {v}`: {e}")),
        }
    }

    /// The flag's value; its absence is an error.
    pub(crate) fn required<T>(&self, name: &str) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        let v = self
            .named
            .get(name)
            .ok_or_else(|| format!("`--{name}` is required"))?;
        v.parse().map_err(|e| format!("`--{name} {v}`: {e}"))
    }

    /// The arguments that are not flags, in order.
    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }
}
