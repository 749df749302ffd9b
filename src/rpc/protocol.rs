//! [`Protocol`]: the types a service and its clients exchange, its identifier and version,
//! and the check both sides make of each other's hello.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::{codes, ErrorBody, Hello};

/// What a service and its clients agree on: the message types, sent as MessagePack, and
/// the identifier and version each side names in its hello. Share one implementation between
/// the server and the client code.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterRequest { Add(u64), Get }
///
/// struct Counter;
///
/// impl atoll::rpc::Protocol for Counter {
///     const IDENTIFIER: &'static str = "example.counter";
///     const VERSION: &'static str = "1.0.0";
///     type Request = CounterRequest;
///     type Reply = u64;
///     type Push = u64;
/// }
/// ```
pub trait Protocol: Send + Sync + 'static {
    /// The service identifier. A peer that names another one is refused with
    /// `wrong identifier`. The daemon's and client's `identifier` option overrides it.
    const IDENTIFIER: &'static str;
    /// This side's version of the protocol, `MAJOR.MINOR.PATCH`. Overridable the same way.
    const VERSION: &'static str;
    /// What a client sends, in calls and casts.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What the server answers a call with.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// What the server pushes to its client unasked.
    type Push: Serialize + DeserializeOwned + Send + 'static;
}

/// Which versions of the peer one side accepts: a semver requirement such as `^1.2` or
/// `>=1.0, <3`. By default, the versions with the same major number as this side's own
/// (the same minor, for `0.x`), which is what semver promises to stay compatible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    req: semver::VersionReq,
    text: String,
}

impl Versions {
    /// Parses a requirement; the error names what is wrong with it.
    pub fn parse(text: &str) -> Result<Versions, String> {
        let req = semver::VersionReq::parse(text)
            .map_err(|e| format!("accepted versions `{text}`: {e}"))?;
        Ok(Versions {
            req,
            text: text.to_owned(),
        })
    }

    /// The versions compatible with `own` (same major; same minor for `0.x`).
    pub fn compatible_with(own: &str) -> Result<Versions, String> {
        let v = parse_version(own)?;
        let text = if v.major > 0 {
            format!("^{}", v.major)
        } else {
            format!("^0.{}", v.minor)
        };
        Versions::parse(&text)
    }

    /// Whether `version` is accepted. A version that is not `MAJOR.MINOR.PATCH` never is.
    pub fn accepts(&self, version: &str) -> bool {
        semver::Version::parse(version).is_ok_and(|v| self.req.matches(&v))
    }

    /// The requirement as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Checks that `version` is `MAJOR.MINOR.PATCH`.
pub(crate) fn parse_version(version: &str) -> Result<semver::Version, String> {
    semver::Version::parse(version).map_err(|e| format!("version `{version}`: {e}"))
}

/// One side's identity and what it accepts of the other.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) identifier: String,
    pub(crate) version: String,
    pub(crate) accepts: Versions,
}

impl Identity {
    /// The identity from a protocol's defaults and the options that override them.
    pub(crate) fn new(
        identifier: Option<&str>,
        version: Option<&str>,
        accept: Option<&str>,
        defaults: (&str, &str),
    ) -> Result<Identity, String> {
        let identifier = identifier.unwrap_or(defaults.0).to_owned();
        let version = version.unwrap_or(defaults.1).to_owned();
        parse_version(&version)?;
        let accepts = match accept {
            Some(req) => Versions::parse(req)?,
            None => Versions::compatible_with(&version)?,
        };
        Ok(Identity {
            identifier,
            version,
            accepts,
        })
    }

    /// This side's hello.
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            identifier: self.identifier.clone(),
            version: self.version.clone(),
            features: Vec::new(),
        }
    }

    /// Checks the peer's hello: `wrong identifier` or `incompatible version`, named.
    pub(crate) fn check(&self, peer: &Hello) -> Result<(), ErrorBody> {
        if peer.identifier != self.identifier {
            return Err(ErrorBody::new(
                codes::WRONG_IDENTIFIER,
                format!(
                    "wrong identifier: expected `{}`, got `{}`",
                    self.identifier, peer.identifier
                ),
            ));
        }
        if !self.accepts.accepts(&peer.version) {
            return Err(ErrorBody::new(
                codes::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible version: {} is not in `{}` (this side is {})",
                    peer.version,
                    self.accepts.as_str(),
                    self.version
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(identifier: &str, version: &str) -> Hello {
        Hello {
            identifier: identifier.into(),
            version: version.into(),
            features: Vec::new(),
        }
    }

    #[test]
    fn the_default_accepts_the_same_major() {
        let me = Identity::new(None, None, None, ("kv", "1.4.0")).unwrap();
        assert!(me.check(&hello("kv", "1.0.0")).is_ok());
        assert!(me.check(&hello("kv", "1.9.3")).is_ok());
        let err = me.check(&hello("kv", "2.0.0")).unwrap_err();
        assert_eq!(err.code, codes::INCOMPATIBLE_VERSION);
        assert!(
            err.message.contains("2.0.0 is not in `^1`"),
            "{}",
            err.message
        );
        assert!(me.check(&hello("kv", "one")).is_err());
    }

    #[test]
    fn zero_versions_need_the_same_minor() {
        let me = Identity::new(None, Some("0.3.1"), None, ("kv", "1.0.0")).unwrap();
        assert!(me.check(&hello("kv", "0.3.0")).is_ok());
        assert!(me.check(&hello("kv", "0.4.0")).is_err());
    }

    #[test]
    fn another_identifier_is_named() {
        let me = Identity::new(None, None, Some(">=1, <3"), ("kv", "1.0.0")).unwrap();
        let err = me.check(&hello("counter", "1.0.0")).unwrap_err();
        assert_eq!(err.code, codes::WRONG_IDENTIFIER);
        assert!(err.message.contains("expected `kv`, got `counter`"));
        assert!(me.check(&hello("kv", "2.5.0")).is_ok());
    }

    #[test]
    fn bad_versions_are_config_errors() {
        assert!(Identity::new(None, Some("1.0"), None, ("kv", "1.0.0"))
            .unwrap_err()
            .contains("version `1.0`"));
        assert!(Identity::new(None, None, Some("nope"), ("kv", "1.0.0"))
            .unwrap_err()
            .contains("accepted versions `nope`"));
    }
}
