//! The bootstrap token cleaner (pkg/controller/bootstrap/tokencleaner.go): deletes
//! `bootstrap-token-*` Secrets of type `bootstrap.kubernetes.io/token` in kube-system once
//! their `expiration` (RFC 3339 in `.data`, base64 on the wire) has passed, and otherwise looks
//! at them again when they expire.

use crate::informer::{self, Informer};
use crate::queue::{self, Queue};
use crate::{Result, api_err};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::DeleteParams;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Seconds until the token secret expires (<= 0: expired); None if it never does or is not a
/// bootstrap token.
pub fn expires_in(s: &Secret, now: Timestamp) -> Option<i64> {
    if !s
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .starts_with("bootstrap-token-")
        || s.type_.as_deref() != Some(TOKEN_TYPE)
    {
        return None;
    }
    let raw = s.data.as_ref()?.get("expiration")?;
    let text = std::str::from_utf8(&raw.0).ok()?;
    let at: Timestamp = text.trim().parse().ok()?;
    Some(at.as_second() - now.as_second())
}

/// Subscribes at once; the returned future runs the cleaner.
pub fn run(
    client: Client,
    secrets: Arc<Informer<Secret>>,
) -> impl std::future::Future<Output = ()> + Send {
    let queue = Queue::new();
    let mut rx = secrets.subscribe();
    let q = Arc::clone(&queue);
    let watch = Arc::clone(&secrets);
    async move {
        tokio::spawn(watch.run());
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if let informer::Change::Applied(s) = c
                    && expires_in(&s, Timestamp::now()).is_some()
                {
                    q.add(informer::key_of(s.as_ref()));
                }
            }
        });
        secrets.synced().await;
        queue::run_workers("tokencleaner", queue, 1, move |key| {
            let client = client.clone();
            let secrets = Arc::clone(&secrets);
            async move { sync(client, &secrets, &key).await }
        })
        .await;
    }
}

async fn sync(client: Client, secrets: &Informer<Secret>, key: &str) -> Result<Option<Duration>> {
    let Some(s) = informer::get(secrets.store(), key) else {
        return Ok(None);
    };
    let Some(left) = expires_in(&s, Timestamp::now()) else {
        return Ok(None);
    };
    if left > 0 {
        return Ok(Some(Duration::from_secs(left as u64)));
    }
    let (ns, name) = informer::split_key(key);
    let api: Api<Secret> = Api::namespaced(client, ns.unwrap_or("kube-system"));
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(secret = key, "deleted expired bootstrap token");
            Ok(None)
        }
        Err(e) if crate::is_not_found(&e) => Ok(None),
        Err(e) => Err(api_err("delete expired bootstrap token", key)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str, type_: &str, exp: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: exp.map(|e| {
                [("expiration".to_string(), ByteString(e.as_bytes().to_vec()))]
                    .into_iter()
                    .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expiry() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let cases = [
            (
                secret(
                    "bootstrap-token-abcdef",
                    TOKEN_TYPE,
                    Some("2025-12-31T23:59:00Z"),
                ),
                Some(-60),
            ),
            (
                secret(
                    "bootstrap-token-abcdef",
                    TOKEN_TYPE,
                    Some("2026-01-01T01:00:00Z"),
                ),
                Some(3600),
            ),
            (secret("bootstrap-token-abcdef", TOKEN_TYPE, None), None),
            (
                secret("bootstrap-token-abcdef", TOKEN_TYPE, Some("not a time")),
                None,
            ),
            (
                secret("other", TOKEN_TYPE, Some("2025-12-31T23:59:00Z")),
                None,
            ),
            (
                secret(
                    "bootstrap-token-abcdef",
                    "Opaque",
                    Some("2025-12-31T23:59:00Z"),
                ),
                None,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(expires_in(&s, now), want, "{:?}", s.metadata.name);
        }
    }
}
