//! The built-in demo service: a key-value store shared by every connection of a daemon, with
//! `get`, `put`, `delete` and `list`, and a push to every other connected client when a key
//! changes. The config file's `rpc` kind runs it, and `atoll rpc` calls it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::protocol::Protocol;
use super::service::{Ctx, Reply, Service};
use crate::error::BoxError;

/// The key-value protocol: identifier `atoll.kv`, version 1.0.0.
#[derive(Debug)]
pub struct Kv;

impl Protocol for Kv {
    const IDENTIFIER: &'static str = "atoll.kv";
    const VERSION: &'static str = "1.0.0";
    type Request = KvRequest;
    type Reply = KvReply;
    type Push = KvChange;
}

/// A request to the store. On the wire (MessagePack, shown as JSON):
/// `{"get": {"key": "a"}}`, `{"put": {"key": "a", "value": 1}}`, `{"delete": {"key": "a"}}`,
/// `"list"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvRequest {
    /// The value of `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Sets `key` to `value` (any MessagePack value).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Value,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Every key, in order.
    List,
}

impl KvRequest {
    /// The request `atoll rpc ADDR METHOD [ARGS]` means: `get KEY`, `put KEY VALUE`,
    /// `delete KEY` or `list`. A VALUE that reads as JSON is that JSON value (`42`, `true`,
    /// `{"a":1}`, `"quoted"`); any other text is a string.
    pub fn from_args(method: &str, args: &[String]) -> Result<KvRequest, String> {
        let arity = |n: usize, usage: &str| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "`{method}` takes {usage}, got {} argument{}",
                    args.len(),
                    if args.len() == 1 { "" } else { "s" }
                ))
            }
        };
        match method {
            "get" => arity(1, "KEY").map(|()| KvRequest::Get {
                key: args[0].clone(),
            }),
            "put" => arity(2, "KEY VALUE").map(|()| KvRequest::Put {
                key: args[0].clone(),
                value: serde_json::from_str(&args[1])
                    .unwrap_or_else(|_| Value::String(args[1].clone())),
            }),
            "delete" => arity(1, "KEY").map(|()| KvRequest::Delete {
                key: args[0].clone(),
            }),
            "list" => arity(0, "no arguments").map(|()| KvRequest::List),
            other => Err(format!(
                "unknown method `{other}` (the kv service has get, put, delete, list)"
            )),
        }
    }
}

/// The store's answer: `{"value": 1}` (or `{"value": null}` for a missing key),
/// `{"stored": {"previous": ...}}`, `{"deleted": {"existed": true}}`, `{"keys": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvReply {
    /// The value of the key asked for, if it is set.
    Value(Option<Value>),
    /// The key is set; this was its value before.
    Stored {
        /// The replaced value, if any.
        previous: Option<Value>,
    },
    /// The key is gone.
    Deleted {
        /// Whether it was set.
        existed: bool,
    },
    /// Every key, in order.
    Keys(Vec<String>),
}

/// Pushed to every other connected client when a key changes: its new value, or none when
/// it was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvChange {
    /// The key that changed.
    pub key: String,
    /// Its new value; `None` when it was deleted.
    pub value: Option<Value>,
}

/// The default of [`KvStore::max_value_size`]: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// The default of [`KvStore::max_store_size`]: 64 MiB.
pub const DEFAULT_MAX_STORE_SIZE: usize = 64 * 1024 * 1024;
/// What an entry is counted for besides its key and value: the map's node and the key's own
/// header, roughly.
const ENTRY_OVERHEAD: usize = 64;

/// The data every connection's instance shares: the map itself, and its bounds.
///
/// Sizes are counted as the store holds them in memory, estimated: every value (each element
/// of an array or a map counts as one) takes the size of a [`Value`], plus its text for
/// strings and map keys; an entry adds its key and a fixed overhead. A value of 1 MB of
/// MessagePack may take many times that once decoded (an array of small numbers does), and
/// the bounds count the latter.
#[derive(Debug)]
pub struct KvStore {
    map: Mutex<Entries>,
    max_value_size: usize,
    max_store_size: usize,
}

/// The map and the bytes it holds, counted as [`KvStore`] says.
#[derive(Debug, Default)]
struct Entries {
    map: BTreeMap<String, Value>,
    size: usize,
}

impl Default for KvStore {
    fn default() -> KvStore {
        KvStore {
            map: Mutex::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_store_size: DEFAULT_MAX_STORE_SIZE,
        }
    }
}

/// Why a put was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused(String);

impl KvStore {
    /// An empty store with the default bounds.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The largest value a `put` may store, in bytes as the store counts them (see
    /// [`KvStore`]). A larger one is refused with a `bad request` error answer naming the
    /// key and this option; the connection goes on. Config key `max_value_size`. Default is
    /// 1 MiB ([`DEFAULT_MAX_VALUE_SIZE`]).
    pub fn max_value_size(mut self, bytes: usize) -> KvStore {
        self.max_value_size = bytes;
        self
    }

    /// The most bytes the whole store may hold, keys, values and a fixed overhead per entry
    /// (see [`KvStore`]). A `put` that would take it past this is refused with a `bad
    /// request` error answer naming this option; the connection goes on, and deletes make
    /// room again. Config key `max_store_size`. Default is 64 MiB
    /// ([`DEFAULT_MAX_STORE_SIZE`]).
    pub fn max_store_size(mut self, bytes: usize) -> KvStore {
        self.max_store_size = bytes;
        self
    }

    /// The bytes the store holds now, counted as [`KvStore`] says.
    pub fn size(&self) -> usize {
        self.lock().size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another instance panicked mid-call; the map itself
        // is always whole, since every change is one insert or remove with its size.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `request`, and returns the reply and the change to announce, if any; or why a
    /// put is refused.
    fn apply(&self, request: KvRequest) -> Result<(KvReply, Option<KvChange>), Refused> {
        let mut entries = self.lock();
        Ok(match request {
            KvRequest::Get { key } => (KvReply::Value(entries.map.get(&key).cloned()), None),
            KvRequest::Put { key, value } => {
                let size_of_value = value_size(&value);
                if size_of_value > self.max_value_size {
                    return Err(Refused(format!(
                        "put refused: the value of `{}` takes {size_of_value} bytes, over \
                         max_value_size ({})",
                        shorten(&key),
                        self.max_value_size
                    )));
                }
                let entry = ENTRY_OVERHEAD + key.len() + size_of_value;
                let freed = entries
                    .map
                    .get(&key)
                    .map_or(0, |old| ENTRY_OVERHEAD + key.len() + value_size(old));
                let size = entries.size - freed + entry;
                if size > self.max_store_size {
                    return Err(Refused(format!(
                        "put refused: the store would hold {size} bytes, over max_store_size \
                         ({})",
                        self.max_store_size
                    )));
                }
                entries.size = size;
                let previous = entries.map.insert(key.clone(), value.clone());
                let change = KvChange {
                    key,
                    value: Some(value),
                };
                (KvReply::Stored { previous }, Some(change))
            }
            KvRequest::Delete { key } => {
                let removed = entries.map.remove(&key);
                if let Some(old) = &removed {
                    entries.size -= ENTRY_OVERHEAD + key.len() + value_size(old);
                }
                let existed = removed.is_some();
                let change = existed.then_some(KvChange { key, value: None });
                (KvReply::Deleted { existed }, change)
            }
            KvRequest::List => (KvReply::Keys(entries.map.keys().cloned().collect()), None),
        })
    }
}

/// The size of a value as the store counts it, without recursion (a value nests as deep as
/// its payload did).
fn value_size(value: &Value) -> usize {
    let mut size = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        size += std::mem::size_of::<Value>();
        match v {
            Value::String(s) => size += s.len(),
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => {
                for (k, v) in m {
                    size += std::mem::size_of::<String>() + k.len();
                    stack.push(v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    size
}

/// A key short enough for an error message.
fn shorten(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// One connection's instance of the key-value service.
#[derive(Debug)]
pub struct KvService {
    store: Arc<KvStore>,
}

impl Service for KvService {
    type Protocol = Kv;
    type Init = KvStore;

    async fn init(init: &Arc<KvStore>, _ctx: &mut Ctx<Self>) -> Result<Self, BoxError> {
        Ok(KvService {
            store: init.clone(),
        })
    }

    async fn call(
        &mut self,
        request: KvRequest,
        ctx: &mut Ctx<Self>,
    ) -> Result<Reply<KvReply>, BoxError> {
        match self.store.apply(request) {
            Ok((reply, change)) => {
                if let Some(change) = change {
                    ctx.broadcast(&change);
                }
                Ok(Reply::Now(reply))
            }
            // A put over a bound is the client's fault: it is told why, and goes on.
            Err(Refused(why)) => {
                ctx.defer().refuse(why);
                Ok(Reply::Later)
            }
        }
    }

    async fn cast(&mut self, request: KvRequest, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
        match self.store.apply(request) {
            Ok((_, Some(change))) => ctx.broadcast(&change),
            Ok((_, None)) => {}
            // A cast has no one to answer.
            Err(Refused(why)) => tracing::debug!(
                target: "atoll::rpc",
                listener = %ctx.listener(),
                connection = ctx.id(),
                "kv cast dropped: {why}"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_answers_and_announces_changes() {
        let store = KvStore::new();
        let put = |k: &str, v: Value| KvRequest::Put {
            key: k.into(),
            value: v,
        };
        let (reply, change) = store.apply(put("a", 1.into())).unwrap();
        assert_eq!(reply, KvReply::Stored { previous: None });
        assert_eq!(change.unwrap().value, Some(1.into()));
        let (reply, _) = store.apply(put("a", 2.into())).unwrap();
        assert_eq!(
            reply,
            KvReply::Stored {
                previous: Some(1.into())
            }
        );
        store.apply(put("b", "x".into())).unwrap();
        assert_eq!(
            store.apply(KvRequest::List).unwrap().0,
            KvReply::Keys(vec!["a".into(), "b".into()])
        );
        let (reply, change) = store.apply(KvRequest::Delete { key: "a".into() }).unwrap();
        assert_eq!(reply, KvReply::Deleted { existed: true });
        assert_eq!(change.unwrap().value, None);
        let (reply, change) = store.apply(KvRequest::Delete { key: "a".into() }).unwrap();
        assert_eq!(reply, KvReply::Deleted { existed: false });
        assert!(change.is_none(), "nothing changed, nothing to announce");
        assert_eq!(
            store.apply(KvRequest::Get { key: "a".into() }).unwrap().0,
            KvReply::Value(None)
        );
    }

    #[test]
    fn puts_over_the_bounds_are_refused_and_deletes_make_room() {
        let store = KvStore::new().max_value_size(1000).max_store_size(3000);
        let put = |k: &str, v: &str| KvRequest::Put {
            key: k.into(),
            value: v.into(),
        };
        let big = "x".repeat(1000);
        let err = store.apply(put("big", &big)).unwrap_err();
        assert!(
            err.0.contains("`big`") && err.0.contains("max_value_size (1000)"),
            "{err:?}"
        );
        assert_eq!(store.size(), 0);
        let fits = "x".repeat(800);
        for k in ["a", "b", "c"] {
            store.apply(put(k, &fits)).unwrap();
        }
        let err = store.apply(put("d", &fits)).unwrap_err();
        assert!(err.0.contains("max_store_size (3000)"), "{err:?}");
        // Replacing a value counts only the difference.
        store.apply(put("a", &"y".repeat(810))).unwrap();
        store.apply(KvRequest::Delete { key: "b".into() }).unwrap();
        store.apply(put("d", &fits)).unwrap();
        store.apply(KvRequest::Delete { key: "a".into() }).unwrap();
        store.apply(KvRequest::Delete { key: "c".into() }).unwrap();
        store.apply(KvRequest::Delete { key: "d".into() }).unwrap();
        assert_eq!(store.size(), 0, "every byte counted in is counted out");
    }

    #[test]
    fn a_value_counts_as_it_is_held_not_as_it_was_sent() {
        // A thousand small numbers: a few bytes each in MessagePack, a Value each here.
        let numbers = Value::Array((0..1000).map(Value::from).collect());
        assert!(value_size(&numbers) >= 1000 * std::mem::size_of::<Value>());
        let nested = serde_json::json!({"k": ["ab", {"c": null}]});
        assert!(value_size(&nested) > 5 * std::mem::size_of::<Value>());
    }

    #[test]
    fn requests_and_replies_read_as_the_docs_show() {
        let json = |v: &dyn erased::Json| v.json();
        assert_eq!(
            json(&KvRequest::Get { key: "a".into() }),
            r#"{"get":{"key":"a"}}"#
        );
        assert_eq!(json(&KvRequest::List), r#""list""#);
        assert_eq!(json(&KvReply::Value(None)), r#"{"value":null}"#);
        assert_eq!(
            json(&KvReply::Deleted { existed: true }),
            r#"{"deleted":{"existed":true}}"#
        );
    }

    #[test]
    fn command_line_arguments_make_requests() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            KvRequest::from_args("put", &args(&["n", "42"])).unwrap(),
            KvRequest::Put {
                key: "n".into(),
                value: 42.into()
            }
        );
        assert_eq!(
            KvRequest::from_args("put", &args(&["s", "blue sky"])).unwrap(),
            KvRequest::Put {
                key: "s".into(),
                value: "blue sky".into()
            }
        );
        assert_eq!(KvRequest::from_args("list", &[]).unwrap(), KvRequest::List);
        let err = KvRequest::from_args("get", &[]).unwrap_err();
        assert_eq!(err, "`get` takes KEY, got 0 arguments");
        let err = KvRequest::from_args("incr", &args(&["a"])).unwrap_err();
        assert!(err.contains("unknown method `incr`"), "{err}");
    }

    mod erased {
        pub(super) trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
