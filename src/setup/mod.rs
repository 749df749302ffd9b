//! The application environment and variables in config strings, as Erlang's `setup` gives
//! them: the app's name, node name and directories ([`AppEnv`]), checked at start
//! ([`AppEnv::verify_directories`]), and `$HOME`-style variables expanded in every string of
//! the config file ([`Variables`]). `atoll env` prints the result ([`describe`], with the
//! `[app]` values [`Config`](crate::Config) reads itself: [`Config::describe`](crate::Config::describe)).
//!
//! # In the config file
//!
//! ```toml
//! [app]                          # every key optional; values may use variables
//! name = "shop"                  # $APP: default "atoll"
//! node = "n1"                    # $NODE: default the host name, else "nonode"
//! home = "/srv/$APP"             # $HOME: default the config file's folder
//! data_dir = "$HOME/data"        # $DATA_DIR: default HOME/data.NODE
//! log_dir = "/var/log/$APP"      # $LOG_DIR: default HOME/log.NODE
//! priv_dir = "priv"              # $PRIV_DIR: default the config file's folder
//! lib_dirs = ["/opt/$APP/lib"]   # the first is $LIB_DIR: default none
//!
//! [vars]                         # your own variables: strings that may use variables
//! certs = "$PRIV_DIR/certs"
//! domain = "$env(DOMAIN)"
//!
//! [[listener]]
//! name = "web"
//! kind = "https"
//! [listener.tls]
//! cert = "$certs/${domain}.pem"
//! key = "$certs/${domain}-key.pem"
//! ```
//!
//! Relative paths in `[app]` are taken from the config file's folder, like every path in it.
//!
//! # OS variables win
//!
//! `ATOLL_HOME`, `ATOLL_DATA_DIR` and `ATOLL_LOG_DIR` override `home`, `data_dir` and
//! `log_dir` whatever the config file says (relative values are taken from the working
//! directory; an empty one is no override). The lib dirs are the union of `ATOLL_SETUP_LIBS`
//! and `ATOLL_LIBS` (colon-separated lists, in that order, without repeats) when either is
//! set, else `[app] lib_dirs`. The defaults follow the overrides: with only `ATOLL_HOME` set,
//! `data_dir` is `$ATOLL_HOME/data.NODE`.
//!
//! # Variables
//!
//! Every string value anywhere in the config file (top-level keys, `[[listener]]` tables,
//! nested tables and arrays; not the keys) may use:
//!
//! - `$NAME`, where the name runs to the first character that is not a letter, a digit or
//!   `_`, or `${NAME}` to end it sooner (`${APP}_1`);
//! - the built-in `$APP`, `$NODE`, `$HOME`, `$DATA_DIR`, `$LOG_DIR`, `$PRIV_DIR` and
//!   `$LIB_DIR` (an error where used when there is no lib dir);
//! - the variables of the `[vars]` table, which may use variables in turn;
//! - `$env(NAME)`, the OS variable `NAME` (an error when it is not set);
//! - `$$` for a `$`. Any other `$` is an error.
//!
//! Values are expanded recursively; what an OS variable or a `$$` gives is not expanded
//! again. A loop (`a = "$b"`, `b = "$a"`), an unknown variable, an unset OS variable or a
//! stray `$` is an [`ExpandError`] naming the key (`listener[2].tls.cert`, counting from 1
//! as `listener #2` does) and the variable. Expansion gives strings: a number or a boolean
//! cannot come from a variable.

mod env;
mod expand;
pub mod versions;

pub(crate) use env::{app_entries, describe_entries, describe_entries_json};
pub use env::{
    describe, describe_json, verify_dir, AppEnv, AppSettings, DirError, DirProblem, OsEnv,
    DATA_DIR_VAR, HOME_VAR, LIB_DIR_VARS, LOG_DIR_VAR,
};
pub use expand::{ExpandError, ExpandErrorKind, Variables};
