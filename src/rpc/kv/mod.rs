//! The built-in demo service: a key-value store shared by every connection of a daemon, with
//! `get`, `put`, `delete` and `list`, and a push to every other connected client when a key
//! changes. The config file's `rpc` kind runs it, and `atoll rpc` calls it.
//!
//! The data is a [`KvStore`]: a redb file whose acknowledged changes are on disk (see its
//! Durability section), shared by every process and listener that opens it.
//!
//! - `store`: [`KvStore`], its bounds, reads, and the requests applied.
//! - `writer`: the writer thread: group commit of every change waiting.
//! - `files`: the store files this process has open, so a second open shares the first.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::protocol::Protocol;
use super::service::{Ctx, Reply, Service};
use crate::error::BoxError;

mod files;
mod store;
mod writer;
use store::Failure;
pub use store::{KvStore, DEFAULT_MAX_STORE_SIZE, DEFAULT_MAX_VALUE_SIZE};

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
        match self.store.apply(request).await {
            Ok((reply, change)) => {
                if let Some(change) = change {
                    ctx.broadcast(&change);
                }
                Ok(Reply::Now(reply))
            }
            // A put over a bound is the client's fault: it is told why, and goes on.
            Err(Failure::Refused(why)) => {
                ctx.defer().refuse(why);
                Ok(Reply::Later)
            }
            // The store's, which the client is told; its connection goes on.
            Err(Failure::Failed(why)) => {
                ctx.defer().fail(why);
                Ok(Reply::Later)
            }
        }
    }

    async fn cast(&mut self, request: KvRequest, ctx: &mut Ctx<Self>) -> Result<(), BoxError> {
        match self.store.apply(request).await {
            Ok((_, Some(change))) => ctx.broadcast(&change),
            Ok((_, None)) => {}
            // A cast has no one to answer.
            Err(Failure::Refused(why) | Failure::Failed(why)) => tracing::debug!(
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

    fn put(k: &str, v: Value) -> KvRequest {
        KvRequest::Put {
            key: k.into(),
            value: v,
        }
    }

    fn refused(outcome: Result<(KvReply, Option<KvChange>), Failure>) -> String {
        match outcome {
            Err(Failure::Refused(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_store_answers_and_announces_changes() {
        let store = KvStore::new();
        let (reply, change) = store.apply(put("a", 1.into())).await.unwrap();
        assert_eq!(reply, KvReply::Stored { previous: None });
        assert_eq!(change.unwrap().value, Some(1.into()));
        let (reply, _) = store.apply(put("a", 2.into())).await.unwrap();
        assert_eq!(
            reply,
            KvReply::Stored {
                previous: Some(1.into())
            }
        );
        store.apply(put("b", "x".into())).await.unwrap();
        assert_eq!(
            store.apply(KvRequest::List).await.unwrap().0,
            KvReply::Keys(vec!["a".into(), "b".into()])
        );
        let delete = || KvRequest::Delete { key: "a".into() };
        let (reply, change) = store.apply(delete()).await.unwrap();
        assert_eq!(reply, KvReply::Deleted { existed: true });
        assert_eq!(change.unwrap().value, None);
        let (reply, change) = store.apply(delete()).await.unwrap();
        assert_eq!(reply, KvReply::Deleted { existed: false });
        assert!(change.is_none(), "nothing changed, nothing to announce");
        assert_eq!(
            store
                .apply(KvRequest::Get { key: "a".into() })
                .await
                .unwrap()
                .0,
            KvReply::Value(None)
        );
    }

    #[tokio::test]
    async fn puts_over_the_bounds_are_refused_and_deletes_make_room() {
        let store = KvStore::new().max_value_size(1000).max_store_size(3000);
        let text = |n: usize| Value::String("x".repeat(n));
        let why = refused(store.apply(put("big", text(1000))).await);
        assert!(
            why.contains("`big`") && why.contains("max_value_size (1000)"),
            "{why}"
        );
        assert_eq!(store.size().unwrap(), 0);
        for k in ["a", "b", "c"] {
            store.apply(put(k, text(800))).await.unwrap();
        }
        assert_eq!(store.size().unwrap(), 3 * store::counted("a", &text(800)));
        let why = refused(store.apply(put("d", text(800))).await);
        assert!(why.contains("max_store_size (3000)"), "{why}");
        // Replacing a value counts only the difference.
        store.apply(put("a", text(810))).await.unwrap();
        store
            .apply(KvRequest::Delete { key: "b".into() })
            .await
            .unwrap();
        store.apply(put("d", text(800))).await.unwrap();
        for k in ["a", "c", "d"] {
            store
                .apply(KvRequest::Delete { key: k.into() })
                .await
                .unwrap();
        }
        assert_eq!(
            store.size().unwrap(),
            0,
            "every byte counted in is counted out"
        );
    }

    #[tokio::test]
    async fn a_file_keeps_what_it_acknowledged_and_a_second_open_shares_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv").join("kv.redb");
        let first = KvStore::open(&path).unwrap();
        assert_eq!(first.path(), Some(path.as_path()));
        first
            .apply(put("a", serde_json::json!({"n": [1, 2]})))
            .await
            .unwrap();
        // Open again while the first is open: the same database, so the same data.
        let second = KvStore::open(&path).unwrap();
        let get = KvRequest::Get { key: "a".into() };
        assert_eq!(
            second.apply(get.clone()).await.unwrap().0,
            KvReply::Value(Some(serde_json::json!({"n": [1, 2]})))
        );
        second.apply(put("b", true.into())).await.unwrap();
        let size = first.size().unwrap();
        drop((first, second));
        // Closed, then opened afresh: everything is still there, and its size.
        let again = KvStore::open(&path).unwrap();
        assert_eq!(
            again.apply(KvRequest::List).await.unwrap().0,
            KvReply::Keys(vec!["a".into(), "b".into()])
        );
        assert_eq!(again.size().unwrap(), size);
        assert!(size > 0);
    }

    #[test]
    fn a_store_that_cannot_be_opened_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"not a folder").unwrap();
        let below = file.join("kv.redb");
        let e = KvStore::open(&below).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Store);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("store {}: ", below.display())),
            "{text}"
        );
        // Not a redb file.
        let e = KvStore::open(&file).unwrap_err().to_string();
        assert!(e.starts_with(&format!("store {}: ", file.display())), "{e}");
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
