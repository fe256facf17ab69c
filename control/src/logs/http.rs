//! The log routes, served by the API server's HTTPS transport before its Kubernetes dispatch:
//!
//! - `POST /apis/logs.keel.dev/v1/push`: nodes only (`system:node:<name>` in `system:nodes`),
//!   and only with `"node": "<their own name>"`;
//! - `GET /apis/logs.keel.dev/v1/query?...`: `system:masters` only.
//!
//! Errors are Kubernetes `Status` objects (kubectl and the kube client print their message).

use super::query;
use super::store::LogStore;
use super::wire::{LogLineList, PushRequest};
use crate::apiserver::auth::User;
use crate::apiserver::error::ApiError;
use serde_json::Value;
use std::sync::Arc;

/// The path prefix of every log route.
pub const PREFIX: &str = "/apis/logs.keel.dev/v1";

fn forbidden(user: &User, what: &str, why: &str) -> ApiError {
    ApiError::Forbidden {
        message: format!(
            "{what} is forbidden: User \"{}\" cannot {what}: {why}",
            user.name
        ),
        kind: "logs".into(),
        name: String::new(),
    }
}

fn is_admin(user: &User) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
}

/// Serves a log route; None when `path` is not one (the caller dispatches it as usual).
pub async fn route(
    logs: &Arc<LogStore>,
    user: &User,
    method: &http::Method,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
) -> Option<Result<Value, ApiError>> {
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    Some(match (method.as_str(), rest) {
        ("POST", "/push") => push(logs, user, body).await,
        ("GET", "/query") => run_query(logs, user, query).await,
        ("GET", "") if !user.is_anonymous() => Ok(resource_list()),
        (_, "/push" | "/query") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NoRoute),
    })
}

fn resource_list() -> Value {
    serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", super::GROUP, super::VERSION),
        "resources": [],
    })
}

async fn push(logs: &Arc<LogStore>, user: &User, body: &[u8]) -> Result<Value, ApiError> {
    let Some(node) = user.node_name() else {
        return Err(forbidden(
            user,
            "push logs",
            "only nodes (system:node:<name> in group system:nodes) ship logs",
        ));
    };
    let req: PushRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the push body is not a log push: {e}")))?;
    if req.node != node {
        return Err(forbidden(
            user,
            "push logs",
            &format!(
                "node \"{node}\" may only push logs for itself, not for \"{}\"",
                req.node
            ),
        ));
    }
    if let Some(s) = req.streams.iter().find(|s| s.source.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "stream of container {:?} has an empty \"source\"",
            s.container
        )));
    }
    let store = logs.clone();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let out = tokio::task::spawn_blocking(move || store.push(&req, now))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    serde_json::to_value(out).map_err(ApiError::internal)
}

async fn run_query(
    logs: &Arc<LogStore>,
    user: &User,
    pairs: &[(String, String)],
) -> Result<Value, ApiError> {
    if !is_admin(user) {
        return Err(forbidden(
            user,
            "query logs",
            "the log query is for cluster administrators (group system:masters)",
        ));
    }
    let q = query::parse(pairs, chrono::Utc::now()).map_err(ApiError::bad_request)?;
    let store = logs.clone();
    let (items, token) = tokio::task::spawn_blocking(move || store.query(&q))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let list = LogLineList {
        kind: "LogLineList".into(),
        api_version: format!("{}/{}", super::GROUP, super::VERSION),
        items,
        r#continue: token,
    };
    serde_json::to_value(list).map_err(ApiError::internal)
}

/// Runs the retention passes every `retention.interval` until `stop` says so.
pub async fn retention_loop(logs: Arc<LogStore>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(logs.retention().interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = logs.clone();
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        match tokio::task::spawn_blocking(move || store.sweep(now)).await {
            Ok(Ok(s)) if s.by_age + s.by_size > 0 => {
                tracing::info!(
                    by_age = s.by_age,
                    by_size = s.by_size,
                    "log retention deleted lines"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed"),
            Err(e) => tracing::warn!(error = %e, "log retention task failed"),
        }
    }
}
