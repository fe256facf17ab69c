//! Watch: one JSON event per line on a chunked response. From `resourceVersion` (or, without
//! one, synthetic ADDED events for the current objects first), filtered by selectors with the
//! ADDED/DELETED transitions a real server sends when an object enters or leaves the selection,
//! as Tables when asked (column definitions in the first event), with bookmarks and
//! `timeoutSeconds`; a compacted start revision answers an ERROR event with a 410 Status.

use super::ApiServer;
use super::error::{ApiError, ApiResult};
use super::handlers::{Reply, Request, Selection, list_objects};
use super::objects;
use super::resources::Resource;
use super::table::{self, IncludeObject};
use crate::store::{Event, EventKind, StoreError};
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

struct Encoder {
    kind: &'static str,
    table: Option<IncludeObject>,
    columns_sent: bool,
}

impl Encoder {
    fn line(&mut self, ty: &str, obj: &Value) -> Bytes {
        let object = match self.table {
            Some(include) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                let t = table::table(
                    self.kind,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": rv}),
                    include,
                    !self.columns_sent,
                );
                self.columns_sent = true;
                t
            }
            None => obj.clone(),
        };
        let mut line =
            serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn bookmark(r: &Resource, rev: i64) -> Bytes {
    let obj = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": rev.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
    let mut line =
        serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// What a store event means for a watcher with this selection.
fn classify(r: &Resource, sel: &Selection, ev: &Event) -> ApiResult<Option<(&'static str, Value)>> {
    let obj = objects::decode(r, &ev.kv)?;
    let now_matches = sel.matches(r.kind, &obj);
    let before = match &ev.prev {
        Some(p) => Some(sel.matches(r.kind, &objects::decode(r, p)?)),
        None => None,
    };
    Ok(match (ev.kind, before, now_matches) {
        (EventKind::Delete, Some(true) | None, true) => Some(("DELETED", obj)),
        (EventKind::Delete, _, _) => None,
        (EventKind::Put, None | Some(false), true) => Some(("ADDED", obj)),
        (EventKind::Put, Some(true), true) => Some(("MODIFIED", obj)),
        (EventKind::Put, Some(true), false) => Some(("DELETED", obj)),
        (EventKind::Put, _, false) => None,
    })
}

pub async fn watch(
    api: &ApiServer,
    req: &Request,
    r: &'static Resource,
    ns: Option<&str>,
) -> ApiResult<Reply> {
    let sel = Selection::from_request(req, r)?;
    let prefix = sel.prefix(r, ns);
    let mut enc = Encoder {
        kind: r.kind,
        table: req.wants_table().then(|| req.include_object()),
        columns_sent: false,
    };
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let start: i64 = match req
        .param("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion \"{v}\" is not a valid revision"))
        })?,
        None => -1,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial = Vec::new();
    let after = if start < 0 {
        let (objs, rev) = list_objects(api, r, &prefix, &sel).await?;
        for o in &objs {
            initial.push(enc.line("ADDED", o));
        }
        rev
    } else {
        start
    };
    let mut events = match api.store.watch(&prefix, after).await {
        Ok(rx) => rx,
        Err(StoreError::Compacted { .. }) => {
            let status = ApiError::Gone {
                message: format!("too old resource version: {after}"),
            }
            .status();
            let mut line =
                serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
            line.push(b'\n');
            let _ = tx.send(Bytes::from(line)).await;
            return Ok(Reply::Stream("application/json", rx));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_rev = after;
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        tick.tick().await;
        loop {
            let sleep_until = deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    last_rev = ev.kv.mod_rev;
                    match classify(r, &sel, &ev) {
                        Ok(Some((ty, obj))) => {
                            if tx.send(enc.line(ty, &obj)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "watch: skipping an undecodable object");
                        }
                    }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(r, last_rev)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Reply::Stream("application/json", rx))
}
