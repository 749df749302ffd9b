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

/// The data every connection's instance shares: the map itself.
#[derive(Debug, Default)]
pub struct KvStore {
    map: Mutex<BTreeMap<String, Value>>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Applies `request`, and returns the reply and the change to announce, if any.
    fn apply(&self, request: KvRequest) -> (KvReply, Option<KvChange>) {
        // A poisoned lock only means another instance panicked mid-call; the map itself
        // is always whole, since every change is one insert or remove.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match request {
            KvRequest::Get { key } => (KvReply::Value(map.get(&key).cloned()), None),
            KvRequest::Put { key, value } => {
                let previous = map.insert(key.clone(), value.clone());
                let change = KvChange {
                    key,
                    value: Some(value),
                };
                (KvReply::Stored { previous }, Some(change))
            }
            KvRequest::Delete { key } => {
                let existed = map.remove(&key).is_some();
                let change = existed.then_some(KvChange { key, value: None });
                (KvReply::Deleted { existed }, change)
            }
            KvRequest::List => (KvReply::Keys(map.keys().cloned().collect()), None),
        }
    }
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
        let (reply, change) = self.store.apply(request);
        if let Some(change) = change {
            ctx.broadcast(&change);
        }
        Ok(Reply::Now(reply))
    }

    async fn cast(&mut self, request: KvRequest, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
        if let (_, Some(change)) = self.store.apply(request) {
            ctx.broadcast(&change);
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
        let (reply, change) = store.apply(put("a", 1.into()));
        assert_eq!(reply, KvReply::Stored { previous: None });
        assert_eq!(change.unwrap().value, Some(1.into()));
        let (reply, _) = store.apply(put("a", 2.into()));
        assert_eq!(
            reply,
            KvReply::Stored {
                previous: Some(1.into())
            }
        );
        store.apply(put("b", "x".into()));
        assert_eq!(
            store.apply(KvRequest::List).0,
            KvReply::Keys(vec!["a".into(), "b".into()])
        );
        let (reply, change) = store.apply(KvRequest::Delete { key: "a".into() });
        assert_eq!(reply, KvReply::Deleted { existed: true });
        assert_eq!(change.unwrap().value, None);
        let (reply, change) = store.apply(KvRequest::Delete { key: "a".into() });
        assert_eq!(reply, KvReply::Deleted { existed: false });
        assert!(change.is_none(), "nothing changed, nothing to announce");
        assert_eq!(
            store.apply(KvRequest::Get { key: "a".into() }).0,
            KvReply::Value(None)
        );
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
