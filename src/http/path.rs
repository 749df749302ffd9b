//! Path patterns, and the trie that picks the route for a request path.
//!
//! A pattern is `/` followed by segments separated by `/`:
//!
//! - a literal segment (`items`) matches a request segment equal to it once percent-decoded,
//!   case-sensitively;
//! - `:name` matches any one segment and binds its percent-decoded value to `name`;
//! - `[...]`, only as the last segment, matches zero or more remaining segments, which
//!   [`PathRouter::find`] hands back still encoded.
//!
//! The pattern `_` matches any path; it is the same route as `/[...]`.
//!
//! Empty segments mean nothing, in patterns and in request paths alike, so `/items/`,
//! `//items` and `/items` are one path. When several routes could match, a literal segment
//! beats a binding and a binding beats a wildcard, at every level: if the preferred branch
//! fails further down, the search backs up and tries the next one.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

/// The pattern segment that matches any number of trailing segments.
const WILDCARD: &str = "[...]";

/// Values bound by `:name` segments of a host or path pattern, in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bindings {
    /// Name and value pairs. A `Vec` because an empty one does not allocate, and a route binds
    /// so few values that a linear scan beats hashing.
    entries: Vec<(Arc<str>, String)>,
}

impl Bindings {
    /// The value bound to `name`; the first one if several patterns (host and path) bound it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(bound, _)| **bound == *name)
            .map(|(_, value)| value.as_str())
    }

    /// Appends a value bound to `name`.
    pub(crate) fn push(&mut self, name: Arc<str>, value: String) {
        self.entries.push((name, value));
    }

    /// Every name and value, in the order they were bound.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(name, value)| (&**name, value.as_str()))
    }

    /// How many values are bound.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is bound.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every value bound after the first `len`, to undo a match that failed later on.
    #[cfg(test)]
    pub(crate) fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    /// Reverses the values bound since `from`: the trie binds while unwinding a successful
    /// search, deepest segment first.
    fn reverse_from(&mut self, from: usize) {
        if let Some(tail) = self.entries.get_mut(from..) {
            tail.reverse();
        }
    }
}

/// The routes of one host, found by request path.
pub(crate) struct PathRouter<T> {
    /// The node for the path `/`.
    root: Node<T>,
    /// How many routes were added.
    len: usize,
}

/// A route as added: its value, and what is needed to name its bindings and report it.
struct Route<T> {
    /// The pattern as written, for diagnostics and error messages.
    pattern: Box<str>,
    /// The names of the pattern's bindings, in pattern order. They live here rather than in
    /// the trie because `/a/:x/c` and `/a/:y/d` share the binding node but name it differently.
    names: Box<[Arc<str>]>,
    /// What the caller routes to.
    value: T,
}

/// One level of the trie: the routes that end here and the branches to the next segment.
struct Node<T> {
    /// Children reached by a literal segment. A `Vec` because a level seldom has more than a
    /// handful, and comparing a few short strings is faster than hashing one.
    literals: Vec<(Box<str>, Node<T>)>,
    /// The child reached by a `:name` segment, whatever the name.
    binding: Option<Box<Node<T>>>,
    /// The route whose pattern ends with `[...]` here.
    wildcard: Option<Route<T>>,
    /// The route whose pattern ends here.
    end: Option<Route<T>>,
}

/// One segment of a parsed pattern.
enum Segment<'a> {
    /// Matches the segment with this text.
    Literal(&'a str),
    /// Matches any segment and binds it to this name.
    Bind(&'a str),
    /// Matches every remaining segment.
    Wildcard,
}

// ===== impl PathRouter =====

impl<T> PathRouter<T> {
    /// A router with no routes.
    pub(crate) fn new() -> Self {
        PathRouter {
            root: Node::default(),
            len: 0,
        }
    }

    /// Adds a route. Errors (text names the pattern): not starting with `/`, `[...]` not last,
    /// empty binding name, duplicate binding name in one pattern, a route equal to one already
    /// added (same shape: `/a/:x` and `/a/:y` are the same route, and `_` is `/[...]`).
    pub(crate) fn insert(&mut self, pattern: &str, value: T) -> Result<(), String> {
        let segments = parse(pattern)?;
        let mut names = Vec::new();
        let mut node = &mut self.root;
        let mut wildcard = false;
        for segment in segments {
            match segment {
                Segment::Literal(text) => {
                    let index = match node.literals.iter().position(|(l, _)| **l == *text) {
                        Some(index) => index,
                        None => {
                            node.literals.push((text.into(), Node::default()));
                            node.literals.len() - 1
                        }
                    };
                    node = &mut node.literals[index].1;
                }
                Segment::Bind(name) => {
                    names.push(Arc::from(name));
                    node = node.binding.get_or_insert_with(Box::default);
                }
                // `parse` only lets it through as the last segment.
                Segment::Wildcard => wildcard = true,
            }
        }
        // A duplicate only reaches nodes that already existed, so failing here leaves the
        // trie as it was.
        let slot = if wildcard {
            &mut node.wildcard
        } else {
            &mut node.end
        };
        if let Some(existing) = slot {
            return Err(format!(
                "route `{pattern}` is the same as route `{}` added before",
                existing.pattern
            ));
        }
        *slot = Some(Route {
            pattern: pattern.into(),
            names: names.into(),
            value,
        });
        self.len += 1;
        Ok(())
    }

    /// Finds the route for a request path (raw, percent-encoded, no query string). On a
    /// match, pushes the path bindings into `bindings` and returns the value and the wildcard
    /// remainder: the raw, still-encoded segments matched by `[...]`, without a leading or
    /// trailing slash (empty segments inside it are kept as sent), or empty when there is no
    /// wildcard or nothing left. On no match, `bindings` is left as it was.
    pub(crate) fn find<'p>(&self, path: &'p str, bindings: &mut Bindings) -> Option<(&T, &'p str)> {
        let from = bindings.len();
        let (route, rest) = self.root.find(path, 0, bindings)?;
        bindings.reverse_from(from);
        Some((&route.value, rest))
    }

    /// Every pattern added, sorted, for diagnostics.
    pub(crate) fn patterns(&self) -> Vec<String> {
        let mut patterns = Vec::with_capacity(self.len);
        self.root.collect_patterns(&mut patterns);
        patterns.sort();
        patterns
    }

    /// True when no route was added.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> Default for PathRouter<T> {
    fn default() -> Self {
        PathRouter::new()
    }
}

// Written by hand so that routing to values without `Debug` (handlers) still prints.
impl<T> fmt::Debug for PathRouter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathRouter")
            .field("patterns", &self.patterns())
            .finish()
    }
}

/// Splits a pattern into segments, checking everything that does not depend on other routes.
fn parse(pattern: &str) -> Result<Vec<Segment<'_>>, String> {
    if pattern == "_" {
        return Ok(vec![Segment::Wildcard]);
    }
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(format!(
            "path pattern `{pattern}` must start with `/` (or be `_` to match any path)"
        ));
    };
    let mut segments = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut parts = rest.split('/').filter(|part| !part.is_empty()).peekable();
    while let Some(part) = parts.next() {
        if part == WILDCARD {
            if parts.peek().is_some() {
                return Err(format!(
                    "`[...]` must be the last segment in path pattern `{pattern}`"
                ));
            }
            segments.push(Segment::Wildcard);
        } else if let Some(name) = part.strip_prefix(':') {
            if name.is_empty() {
                return Err(format!(
                    "empty binding name `:` in path pattern `{pattern}`"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "binding `:{name}` appears twice in path pattern `{pattern}`"
                ));
            }
            names.push(name);
            segments.push(Segment::Bind(name));
        } else {
            segments.push(Segment::Literal(part));
        }
    }
    Ok(segments)
}

/// A request segment as patterns see it: percent-decoded, without allocating when there is
/// nothing to decode. Bytes that are not UTF-8 once decoded become U+FFFD.
fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('%') {
        percent_decode_str(raw).decode_utf8_lossy()
    } else {
        Cow::Borrowed(raw)
    }
}

// ===== impl Node =====

// By hand: deriving would demand `T: Default`.
impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literals: Vec::new(),
            binding: None,
            wildcard: None,
            end: None,
        }
    }
}

impl<T> Node<T> {
    /// Finds the route for `path`, the part of the request path below this node. `bound` is
    /// how many bindings the pattern has above this node.
    ///
    /// Bindings are pushed only while unwinding a success, so a failed branch leaves nothing
    /// to undo and allocates nothing; the caller reverses them into pattern order. Each node
    /// is reached from one parent only, so a search visits every node at most once.
    fn find<'s, 'p>(
        &'s self,
        path: &'p str,
        bound: usize,
        bindings: &mut Bindings,
    ) -> Option<(&'s Route<T>, &'p str)> {
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            return self
                .end
                .as_ref()
                .or(self.wildcard.as_ref())
                .map(|route| (route, ""));
        }
        let (raw, tail) = path.split_once('/').unwrap_or((path, ""));
        let segment = decode(raw);
        if let Some((_, child)) = self.literals.iter().find(|(l, _)| **l == *segment) {
            if let Some(found) = child.find(tail, bound, bindings) {
                return Some(found);
            }
        }
        if let Some(child) = &self.binding {
            if let Some(found) = child.find(tail, bound + 1, bindings) {
                // The route came through this node, so `insert` gave it a name for this
                // segment; indexing cannot fail short of a bug in this file.
                bindings.push(found.0.names[bound].clone(), segment.into_owned());
                return Some(found);
            }
        }
        self.wildcard
            .as_ref()
            .map(|route| (route, path.trim_end_matches('/')))
    }

    /// Appends the pattern of every route at or below this node.
    fn collect_patterns(&self, patterns: &mut Vec<String>) {
        for route in self.end.iter().chain(&self.wildcard) {
            patterns.push(route.pattern.to_string());
        }
        for (_, child) in &self.literals {
            child.collect_patterns(patterns);
        }
        if let Some(child) = &self.binding {
            child.collect_patterns(patterns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router with one route per pattern, whose value is the pattern itself.
    fn router(patterns: &[&'static str]) -> PathRouter<&'static str> {
        let mut router = PathRouter::new();
        for pattern in patterns {
            router.insert(pattern, *pattern).expect("valid pattern");
        }
        router
    }

    /// What a search found: the route's pattern, the remainder and the bindings.
    type Found = (&'static str, String, Vec<(String, String)>);

    /// What `path` finds, or `None`.
    fn find(router: &PathRouter<&'static str>, path: &str) -> Option<Found> {
        let mut bindings = Bindings::default();
        let (value, rest) = router.find(path, &mut bindings)?;
        let bound = bindings
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Some((value, rest.to_string(), bound))
    }

    /// Just the pattern that `path` finds.
    fn pattern(router: &PathRouter<&'static str>, path: &str) -> Option<&'static str> {
        find(router, path).map(|(pattern, _, _)| pattern)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bindings_get_iter_truncate() {
        let mut bindings = Bindings::default();
        assert!(bindings.is_empty());
        assert_eq!(
            bindings.entries.capacity(),
            0,
            "empty bindings must not allocate"
        );
        bindings.push("a".into(), "1".into());
        bindings.push("b".into(), "2".into());
        bindings.push("a".into(), "3".into());
        assert_eq!(bindings.len(), 3);
        assert_eq!(bindings.get("a"), Some("1"));
        assert_eq!(bindings.get("b"), Some("2"));
        assert_eq!(bindings.get("c"), None);
        let all: Vec<_> = bindings.iter().collect();
        assert_eq!(all, [("a", "1"), ("b", "2"), ("a", "3")]);
        bindings.truncate(1);
        assert_eq!(bindings.iter().collect::<Vec<_>>(), [("a", "1")]);
    }

    #[test]
    fn literal_beats_binding_beats_wildcard() {
        let r = router(&["/items/new", "/items/:id", "/items/[...]", "/[...]"]);
        assert_eq!(
            find(&r, "/items/new"),
            Some(("/items/new", String::new(), vec![]))
        );
        assert_eq!(
            find(&r, "/items/42"),
            Some(("/items/:id", String::new(), pairs(&[("id", "42")])))
        );
        assert_eq!(
            find(&r, "/items/42/x"),
            Some(("/items/[...]", "42/x".into(), vec![]))
        );
        assert_eq!(
            find(&r, "/other/z"),
            Some(("/[...]", "other/z".into(), vec![]))
        );
        // `/items` itself: no route ends there, the wildcard below takes zero segments.
        assert_eq!(
            find(&r, "/items"),
            Some(("/items/[...]", String::new(), vec![]))
        );
    }

    #[test]
    fn precedence_does_not_depend_on_insertion_order() {
        let r = router(&["/[...]", "/items/[...]", "/items/:id", "/items/new"]);
        assert_eq!(pattern(&r, "/items/new"), Some("/items/new"));
        assert_eq!(pattern(&r, "/items/42"), Some("/items/:id"));
        assert_eq!(pattern(&r, "/items/42/x"), Some("/items/[...]"));
        assert_eq!(pattern(&r, "/other"), Some("/[...]"));
    }

    #[test]
    fn literal_branch_is_tried_first_even_into_a_wildcard() {
        let r = router(&["/a/:x/c", "/a/b/[...]"]);
        assert_eq!(find(&r, "/a/b/c"), Some(("/a/b/[...]", "c".into(), vec![])));
        assert_eq!(
            find(&r, "/a/z/c"),
            Some(("/a/:x/c", String::new(), pairs(&[("x", "z")])))
        );
    }

    #[test]
    fn backtracks_from_literal_to_binding() {
        let r = router(&["/a/b/d", "/a/:x/c"]);
        assert_eq!(
            find(&r, "/a/b/c"),
            Some(("/a/:x/c", String::new(), pairs(&[("x", "b")])))
        );
        assert_eq!(pattern(&r, "/a/b/d"), Some("/a/b/d"));
        assert_eq!(pattern(&r, "/a/b/e"), None);
    }

    #[test]
    fn backtracks_from_binding_to_wildcard() {
        let r = router(&["/f/:x/end", "/f/[...]"]);
        assert_eq!(
            find(&r, "/f/q/other"),
            Some(("/f/[...]", "q/other".into(), vec![]))
        );
        assert_eq!(pattern(&r, "/f/q/end"), Some("/f/:x/end"));
    }

    #[test]
    fn backtracks_several_levels_and_drops_bindings_of_failed_branches() {
        let r = router(&["/:a/:b/x", "/:a/lit/y", "/[...]"]);
        assert_eq!(
            find(&r, "/p/lit/x"),
            Some((
                "/:a/:b/x",
                String::new(),
                pairs(&[("a", "p"), ("b", "lit")])
            ))
        );
        let mut bindings = Bindings::default();
        bindings.push("host".into(), "h".into());
        let (value, rest) = r.find("/p/q/z", &mut bindings).expect("wildcard matches");
        assert_eq!((*value, rest), ("/[...]", "p/q/z"));
        assert_eq!(bindings.iter().collect::<Vec<_>>(), [("host", "h")]);
    }

    #[test]
    fn bindings_are_named_by_the_route_that_matched() {
        let r = router(&["/a/:x/c", "/a/:y/d"]);
        assert_eq!(find(&r, "/a/1/c").map(|f| f.2), Some(pairs(&[("x", "1")])));
        assert_eq!(find(&r, "/a/1/d").map(|f| f.2), Some(pairs(&[("y", "1")])));
    }

    #[test]
    fn bindings_come_in_pattern_order_after_existing_ones() {
        let r = router(&["/u/:user/p/:post/:part"]);
        let mut bindings = Bindings::default();
        bindings.push("sub".into(), "api".into());
        assert!(r.find("/u/ann/p/7/intro", &mut bindings).is_some());
        let all: Vec<_> = bindings.iter().collect();
        assert_eq!(
            all,
            [
                ("sub", "api"),
                ("user", "ann"),
                ("post", "7"),
                ("part", "intro")
            ]
        );
    }

    #[test]
    fn failed_find_leaves_bindings_alone() {
        let r = router(&["/a/:x/c"]);
        let mut bindings = Bindings::default();
        bindings.push("keep".into(), "me".into());
        assert!(r.find("/a/1/d", &mut bindings).is_none());
        assert_eq!(bindings.iter().collect::<Vec<_>>(), [("keep", "me")]);
    }

    #[test]
    fn empty_segments_are_ignored() {
        let r = router(&["/items", "/"]);
        assert_eq!(pattern(&r, "/items/"), Some("/items"));
        assert_eq!(pattern(&r, "//items"), Some("/items"));
        assert_eq!(pattern(&r, "/items//"), Some("/items"));
        assert_eq!(pattern(&r, "/"), Some("/"));
        assert_eq!(pattern(&r, ""), Some("/"));
        assert_eq!(pattern(&r, "///"), Some("/"));
        assert_eq!(pattern(&r, "/items/x"), None);
    }

    #[test]
    fn literal_lookup_binds_nothing_and_keeps_bindings_unallocated() {
        let r = router(&["/", "/a/b", "/a/:x"]);
        let mut bindings = Bindings::default();
        assert_eq!(r.find("/a/b", &mut bindings).map(|f| *f.0), Some("/a/b"));
        assert_eq!(r.find("/", &mut bindings).map(|f| *f.0), Some("/"));
        assert_eq!(bindings.entries.capacity(), 0);
    }

    #[test]
    fn root_pattern_matches_only_root() {
        let r = router(&["/"]);
        assert_eq!(pattern(&r, "/"), Some("/"));
        assert_eq!(pattern(&r, "/x"), None);
    }

    #[test]
    fn literals_are_case_sensitive() {
        let r = router(&["/items"]);
        assert_eq!(pattern(&r, "/Items"), None);
    }

    #[test]
    fn encoded_segments_are_decoded_once_each() {
        let r = router(&["/items", "/items/:id", "/files/[...]"]);
        assert_eq!(pattern(&r, "/it%65ms"), Some("/items"));
        // Decoded once: `%2565` is `%65`, not `e`.
        assert_eq!(pattern(&r, "/it%2565ms"), None);
        assert_eq!(
            find(&r, "/items/%2541").map(|f| f.2),
            Some(pairs(&[("id", "%41")]))
        );
        // A decoded `/` stays inside its segment.
        assert_eq!(
            find(&r, "/items/a%2Fb"),
            Some(("/items/:id", String::new(), pairs(&[("id", "a/b")])))
        );
        assert_eq!(
            find(&r, "/items/caf%C3%A9").map(|f| f.2),
            Some(pairs(&[("id", "café")]))
        );
        assert_eq!(
            find(&r, "/items/%FF").map(|f| f.2),
            Some(pairs(&[("id", "\u{FFFD}")]))
        );
        // The remainder is handed back as sent.
        assert_eq!(
            find(&r, "/files/a%2Fb/c%20d"),
            Some(("/files/[...]", "a%2Fb/c%20d".into(), vec![]))
        );
    }

    #[test]
    fn encoded_slash_does_not_split_a_literal() {
        let r = router(&["/a/b"]);
        assert_eq!(pattern(&r, "/a%2Fb"), None);
        assert_eq!(pattern(&r, "/a/b"), Some("/a/b"));
    }

    #[test]
    fn wildcard_remainder() {
        let r = router(&["/static/[...]"]);
        assert_eq!(
            find(&r, "/static/css/site.css"),
            Some(("/static/[...]", "css/site.css".into(), vec![]))
        );
        assert_eq!(
            find(&r, "/static"),
            Some(("/static/[...]", String::new(), vec![]))
        );
        assert_eq!(
            find(&r, "/static/"),
            Some(("/static/[...]", String::new(), vec![]))
        );
        assert_eq!(
            find(&r, "/static//a/b/"),
            Some(("/static/[...]", "a/b".into(), vec![]))
        );
        assert_eq!(pattern(&r, "/other"), None);
    }

    #[test]
    fn end_beats_wildcard_on_the_same_node() {
        let r = router(&["/items/[...]", "/items"]);
        assert_eq!(pattern(&r, "/items"), Some("/items"));
        assert_eq!(pattern(&r, "/items/"), Some("/items"));
        assert_eq!(pattern(&r, "/items/x"), Some("/items/[...]"));
    }

    #[test]
    fn underscore_is_the_lowest_catch_all() {
        let r = router(&["_", "/items/:id"]);
        assert_eq!(pattern(&r, "/items/1"), Some("/items/:id"));
        assert_eq!(find(&r, "/items"), Some(("_", "items".into(), vec![])));
        assert_eq!(find(&r, "/"), Some(("_", String::new(), vec![])));
        assert_eq!(find(&r, "/a/b"), Some(("_", "a/b".into(), vec![])));
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let mut r = router(&["/a/:x", "/b/[...]", "/c", "_"]);
        for (again, first) in [
            ("/a/:y", "/a/:x"),
            ("/a/:x", "/a/:x"),
            ("/b/[...]", "/b/[...]"),
            ("/c/", "/c"),
            ("//c", "/c"),
            ("/[...]", "_"),
        ] {
            let error = r.insert(again, "dup").expect_err(again);
            assert!(error.contains(again) && error.contains(first), "{error}");
        }
        // The first routes are untouched.
        assert_eq!(pattern(&r, "/a/1"), Some("/a/:x"));
        assert_eq!(pattern(&r, "/zzz"), Some("_"));
        // Same prefix, different shape: accepted.
        assert!(r.insert("/a/:x/more", "ok").is_ok());
        assert!(r.insert("/a", "ok").is_ok());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_pattern_named() {
        let mut r = PathRouter::new();
        for (bad, why) in [
            ("items", "must start with `/`"),
            ("", "must start with `/`"),
            ("/a/[...]/b", "must be the last segment"),
            ("/[...]/[...]", "must be the last segment"),
            ("/a/:", "empty binding name"),
            ("/:x/:x", "appears twice"),
        ] {
            let error = r.insert(bad, ()).expect_err(bad);
            assert!(error.contains(&format!("`{bad}`")), "{error}");
            assert!(error.contains(why), "{error}");
        }
        assert!(r.is_empty());
    }

    #[test]
    fn patterns_are_listed_sorted() {
        let r = router(&["/b", "_", "/a/:x", "/", "/a/[...]"]);
        assert_eq!(r.patterns(), ["/", "/a/:x", "/a/[...]", "/b", "_"]);
        assert!(!r.is_empty());
        assert!(PathRouter::<()>::new().is_empty());
        assert!(format!("{r:?}").contains("/a/:x"));
    }

    #[test]
    fn no_route_no_match() {
        let r = router(&["/a"]);
        assert_eq!(pattern(&r, "/b"), None);
        assert_eq!(pattern(&r, "/a/b"), None);
        assert_eq!(pattern(&PathRouter::new(), "/"), None);
    }
}
