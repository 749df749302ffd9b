//! Host patterns: which values of a request's host a set of routes answers.
//!
//! The syntax is cowboy's. `_` matches any host, a missing one included. Any other pattern is
//! a list of labels separated by `.`:
//!
//! - a literal label (`example`) matches the same label, ignoring ASCII case;
//! - `:name` matches any one label and binds it, lower-cased, to `name`;
//! - `[...]`, only as the leftmost label, matches zero or more leading labels, so
//!   `[...].example.com` matches `example.com` and `a.b.example.com`.
//!
//! A bracketed IPv6 literal (`[::1]`) is one label. Before matching, the request's host loses
//! its port and one trailing dot; a host with a malformed port matches only `_`.

use std::sync::Arc;

use super::path::Bindings;

/// The leftmost label that matches any number of leading labels.
const WILDCARD: &str = "[...]";

/// A parsed host pattern.
#[derive(Debug, Clone)]
pub(crate) struct HostPattern {
    /// The pattern as written; exact patterns are matched against it directly.
    text: Box<str>,
    /// How to match.
    kind: Kind,
}

/// The shapes of host pattern, each with its own matching path.
#[derive(Debug, Clone)]
enum Kind {
    /// `_`: every host.
    Any,
    /// Literal labels only: one case-insensitive comparison with the pattern text.
    Exact,
    /// Anything with a binding or a wildcard.
    Labels {
        /// The pattern starts with `[...]`.
        leading_wildcard: bool,
        /// The labels after `[...]`, left to right.
        labels: Box<[Label]>,
    },
}

/// One label of a pattern, other than `[...]`.
#[derive(Debug, Clone)]
enum Label {
    /// Matches this label, ignoring ASCII case.
    Literal(Box<str>),
    /// Matches any non-empty label and binds it to this name.
    Bind(Arc<str>),
}

impl HostPattern {
    /// Parses a host pattern. The error names the pattern and what is wrong with it.
    pub(crate) fn parse(pattern: &str) -> Result<HostPattern, String> {
        let kind = if pattern == "_" {
            Kind::Any
        } else if pattern.starts_with('[') && !pattern.starts_with(WILDCARD) {
            check_ipv6(pattern)?;
            Kind::Exact
        } else {
            parse_labels(pattern)?
        };
        Ok(HostPattern {
            text: pattern.into(),
            kind,
        })
    }

    /// True when `host` (a `Host` header or URI authority host, port allowed) matches. On a
    /// match, pushes the bindings in the pattern's left-to-right order; otherwise leaves
    /// `bindings` as it was.
    pub(crate) fn matches(&self, host: &str, bindings: &mut Bindings) -> bool {
        let (leading_wildcard, labels) = match &self.kind {
            Kind::Any => return true,
            Kind::Exact => {
                return normalise(host).is_some_and(|host| host.eq_ignore_ascii_case(&self.text))
            }
            Kind::Labels {
                leading_wildcard,
                labels,
            } => (*leading_wildcard, labels),
        };
        let Some(host) = normalise(host) else {
            return false;
        };
        let Some((rest, tail)) = split_rightmost(host, labels.len()) else {
            return false;
        };
        match rest {
            None => {}
            Some(_) if !leading_wildcard => return false,
            // `[...]` takes whole labels only: `.example.com` is not a subdomain.
            Some(rest) if rest.split('.').any(str::is_empty) => return false,
            Some(_) => {}
        }
        // `splitn` keeps an IPv6 literal whole, since `tail` holds exactly as many labels.
        let pairs = || labels.iter().zip(tail.splitn(labels.len(), '.'));
        // Check everything before binding anything, so a late mismatch allocates nothing.
        if !pairs().all(|(label, host)| label.accepts(host)) {
            return false;
        }
        for (label, host) in pairs() {
            if let Label::Bind(name) = label {
                bindings.push(name.clone(), host.to_ascii_lowercase());
            }
        }
        true
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// True for `_`, which matches every host.
    pub(crate) fn is_any(&self) -> bool {
        matches!(self.kind, Kind::Any)
    }
}

impl Label {
    /// True when this pattern label matches the host label `host`.
    fn accepts(&self, host: &str) -> bool {
        match self {
            Label::Literal(text) => host.eq_ignore_ascii_case(text),
            Label::Bind(_) => !host.is_empty(),
        }
    }
}

/// Checks a pattern written as a bracketed IPv6 literal, such as `[::1]`.
fn check_ipv6(pattern: &str) -> Result<(), String> {
    let inner = pattern
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or("");
    if inner.is_empty()
        || !inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return Err(format!(
            "host pattern `{pattern}` is neither an IPv6 literal like `[::1]` nor starts with \
             the label `[...]`"
        ));
    }
    Ok(())
}

/// Parses a pattern made of labels separated by `.`.
fn parse_labels(pattern: &str) -> Result<Kind, String> {
    if pattern.is_empty() {
        return Err("empty host pattern: use `_` to match any host".to_string());
    }
    if pattern == WILDCARD {
        return Ok(Kind::Labels {
            leading_wildcard: true,
            labels: Box::default(),
        });
    }
    // `[...]` holds dots of its own, so it is taken off before splitting into labels.
    let (leading_wildcard, rest) = match pattern.strip_prefix(WILDCARD) {
        Some(rest) => (true, rest.strip_prefix('.').unwrap_or(rest)),
        None => (false, pattern),
    };
    if rest.contains(WILDCARD) || (leading_wildcard && !pattern.starts_with("[...].")) {
        return Err(format!(
            "`[...]` must be the leftmost label in host pattern `{pattern}`"
        ));
    }
    let mut labels = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for label in rest.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in host pattern `{pattern}`"));
        }
        if let Some(name) = label.strip_prefix(':') {
            if name.is_empty() {
                return Err(format!(
                    "empty binding name `:` in host pattern `{pattern}`"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "binding `:{name}` appears twice in host pattern `{pattern}`"
                ));
            }
            names.push(name);
            labels.push(Label::Bind(name.into()));
        } else if label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            labels.push(Label::Literal(label.into()));
        } else {
            // Anything else could never match a host: ports are cut off before matching,
            // and international names arrive in their `xn--` form.
            return Err(format!(
                "label `{label}` in host pattern `{pattern}` may only hold ASCII letters, \
                 digits, `-` and `_` (no port; use `[...]` for any subdomain and the `xn--` \
                 form for international names)"
            ));
        }
    }
    if !leading_wildcard
        && labels
            .iter()
            .all(|label| matches!(label, Label::Literal(_)))
    {
        return Ok(Kind::Exact);
    }
    Ok(Kind::Labels {
        leading_wildcard,
        labels: labels.into(),
    })
}

/// The host without its port and one trailing dot; `None` when the port is not a number or
/// an IPv6 literal is not closed.
fn normalise(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        host.split_at(host.find(']')? + 1)
    } else {
        let (name, port) = host.split_at(host.find(':').unwrap_or(host.len()));
        (name.strip_suffix('.').unwrap_or(name), port)
    };
    // RFC 3986 allows an empty port after the colon.
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    port_ok.then_some(name)
}

/// Splits `host` into the labels left of its `count` rightmost ones (`None` when there are
/// none left) and those rightmost labels; `None` when the host has fewer than `count` labels.
/// The empty host has no labels, and an IPv6 literal is a single label.
fn split_rightmost(host: &str, count: usize) -> Option<(Option<&str>, &str)> {
    if host.is_empty() {
        return (count == 0).then_some((None, ""));
    }
    if host.starts_with('[') {
        return match count {
            0 => Some((Some(host), "")),
            1 => Some((None, host)),
            _ => None,
        };
    }
    // `rest_end` is where the labels not yet taken end; `None` once all are taken.
    let mut rest_end = Some(host.len());
    let mut start = host.len();
    for _ in 0..count {
        let end = rest_end?;
        match host[..end].rfind('.') {
            Some(dot) => {
                start = dot + 1;
                rest_end = Some(dot);
            }
            None => {
                start = 0;
                rest_end = None;
            }
        }
    }
    Some((rest_end.map(|end| &host[..end]), &host[start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        HostPattern::parse(text).expect("valid pattern")
    }

    /// True when `text` matches `host`, checking that a failure binds nothing.
    fn hit(text: &str, host: &str) -> bool {
        let mut bindings = Bindings::default();
        bindings.push("before".into(), "x".into());
        let matched = pattern(text).matches(host, &mut bindings);
        if !matched {
            assert_eq!(bindings.len(), 1, "{text} vs {host} bound on failure");
        }
        matched
    }

    /// The bindings of a match, or `None`.
    fn bound(text: &str, host: &str) -> Option<Vec<(String, String)>> {
        let mut bindings = Bindings::default();
        pattern(text).matches(host, &mut bindings).then(|| {
            bindings
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn underscore_matches_anything() {
        let any = pattern("_");
        assert!(any.is_any());
        assert_eq!(any.as_str(), "_");
        for host in ["", "example.com", "a.b.c:99", "[::1]:80", "bad:port", "."] {
            assert!(hit("_", host), "{host}");
        }
        assert!(!pattern("example.com").is_any());
    }

    #[test]
    fn exact_ignores_case_port_and_one_trailing_dot() {
        assert!(matches!(pattern("Example.com").kind, Kind::Exact));
        for host in [
            "example.com",
            "EXAMPLE.com",
            "example.com:8080",
            "example.com.",
            "Example.Com.:443",
            "example.com:",
        ] {
            assert!(hit("example.com", host), "{host}");
        }
        for host in [
            "example.org",
            "www.example.com",
            "com",
            "example.com..",
            "example.com:http",
            "example.com:80:80",
            "",
        ] {
            assert!(!hit("example.com", host), "{host}");
        }
        assert_eq!(pattern("Example.com").as_str(), "Example.com");
    }

    #[test]
    fn binding_takes_one_label_lower_cased() {
        assert_eq!(
            bound(":sub.example.com", "API.example.com:8080"),
            Some(pairs(&[("sub", "api")]))
        );
        assert_eq!(bound(":sub.example.com", "example.com"), None);
        assert_eq!(bound(":sub.example.com", "a.b.example.com"), None);
        assert_eq!(bound(":sub.example.com", ".example.com"), None);
        assert_eq!(bound(":sub.example.com", "api.example.org"), None);
    }

    #[test]
    fn bindings_come_left_to_right_after_existing_ones() {
        let mut bindings = Bindings::default();
        bindings.push("first".into(), "0".into());
        assert!(pattern(":a.:b.example.com").matches("x.y.example.com", &mut bindings));
        let all: Vec<_> = bindings.iter().collect();
        assert_eq!(all, [("first", "0"), ("a", "x"), ("b", "y")]);
    }

    #[test]
    fn failed_match_binds_nothing() {
        // The binding label matches before the literal on its right fails.
        assert!(!hit(":a.example.com", "x.example.org"));
        assert!(!hit(":a.:b.com", "x.y.org"));
        assert!(!hit("[...].:a.com", "[::1]:80"));
    }

    #[test]
    fn wildcard_takes_zero_or_more_leading_labels() {
        let p = "[...].example.com";
        assert!(hit(p, "example.com"));
        assert!(hit(p, "a.example.com"));
        assert!(hit(p, "a.b.example.com:8080"));
        assert!(hit(p, "A.Example.COM."));
        assert!(!hit(p, "example.org"));
        assert!(!hit(p, "com"));
        assert!(!hit(p, "aexample.com"));
        assert!(!hit(p, ".example.com"));
        assert!(!hit(p, "a..example.com"));
        assert_eq!(
            bound("[...].:domain.com", "a.b.shop.com"),
            Some(pairs(&[("domain", "shop")]))
        );
        // Alone, it matches every well-formed host.
        assert!(hit("[...]", ""));
        assert!(hit("[...]", "a.b"));
        assert!(!hit("[...]", "a.b:x"));
    }

    #[test]
    fn label_count_must_match_without_wildcard() {
        assert!(hit(":a.:b", "x.y"));
        assert!(!hit(":a.:b", "y"));
        assert!(!hit(":a.:b", "x.y.z"));
        assert!(!hit(":a", ""));
        assert!(!hit("localhost", "local.host"));
    }

    #[test]
    fn ipv6_literal_is_one_label() {
        assert!(hit("[::1]", "[::1]:8080"));
        assert!(hit("[::1]", "[::1]"));
        assert!(hit("[fe80::A]", "[FE80::a]"));
        assert!(!hit("[::1]", "[::2]"));
        assert!(!hit("[::1]", "[::1"));
        assert!(!hit("[::1]", "[::1]x"));
        assert_eq!(
            bound(":ip", "[::FFFF:1.2.3.4]:80"),
            Some(pairs(&[("ip", "[::ffff:1.2.3.4]")]))
        );
        assert!(hit("[...]", "[::ffff:1.2.3.4]"));
        assert_eq!(
            bound("[...].:ip", "[::1]:80"),
            Some(pairs(&[("ip", "[::1]")]))
        );
        assert!(!hit(":a.:b", "[::ffff:1.2.3.4]"));
        assert!(!hit("[...].example.com", "[::1]"));
    }

    #[test]
    fn ipv4_literal_is_four_labels() {
        assert!(hit("127.0.0.1", "127.0.0.1:3000"));
        assert_eq!(
            bound("10.0.0.:host", "10.0.0.7"),
            Some(pairs(&[("host", "7")]))
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        for (bad, why) in [
            (
                "a.[...].com",
                "`[...]` must be the leftmost label in host pattern `a.[...].com`",
            ),
            ("example..com", "empty label in host pattern `example..com`"),
            ("example.com.", "empty label"),
            ("[...].", "empty label"),
            ("[...]..com", "empty label"),
            ("[...].[...].com", "must be the leftmost label"),
            ("a.[...]", "must be the leftmost label"),
            (".example.com", "empty label"),
            (":.example.com", "empty binding name"),
            (":a.:a.com", "appears twice"),
            ("example.com:8080", "no port"),
            ("*.example.com", "use `[...]`"),
            ("bücher.de", "`xn--`"),
            ("[::1", "IPv6 literal"),
            ("[]", "IPv6 literal"),
            ("[::g]", "IPv6 literal"),
            ("[...]x.com", "must be the leftmost label"),
        ] {
            let error = HostPattern::parse(bad).expect_err(bad);
            assert!(error.contains(&format!("`{bad}`")), "{error}");
            assert!(error.contains(why), "{error}");
        }
        let empty = HostPattern::parse("").expect_err("empty");
        assert!(empty.contains("empty host pattern"), "{empty}");
    }
}
