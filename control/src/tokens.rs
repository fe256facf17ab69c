//! kubeadm-style bootstrap tokens (`[a-z0-9]{6}.[a-z0-9]{16}`, stored as Secrets
//! `bootstrap-token-<id>` in kube-system) and the bootstrap signer: the `cluster-info`
//! ConfigMap in kube-public carries the discovery kubeconfig and, per signing token, a detached
//! HS256 JWS keyed by the whole token, which a joining node checks before trusting the CA.

use crate::apiserver::Settings;
use crate::store::{Backend, StoreError};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

pub fn is_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// Parses `24h`, `90m`, `30s`, `2h30m`, or `0` (never expires).
pub fn parse_ttl(s: &str) -> Option<chrono::Duration> {
    if s == "0" {
        return Some(chrono::Duration::zero());
    }
    let (mut total, mut num) = (0i64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: i64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
        }
    }
    (num.is_empty() && total > 0).then(|| chrono::Duration::seconds(total))
}

/// The Secret that stores `token`, expiring after `ttl` (zero: never).
pub fn secret(token: &str, ttl: chrono::Duration, description: &str) -> Value {
    let (id, secret) = token.split_once('.').unwrap_or_default();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = json!({
        "token-id": b64(id),
        "token-secret": b64(secret),
        "usage-bootstrap-authentication": b64("true"),
        "usage-bootstrap-signing": b64("true"),
        "auth-extra-groups": b64("system:bootstrappers:keel:default-node-token"),
        "description": b64(description),
    });
    if ttl > chrono::Duration::zero() {
        let exp = (chrono::Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        data["expiration"] = json!(b64(&exp));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": data,
    })
}

/// Detached JWS (`header..signature`) of `payload`, HS256 keyed by the whole token.
pub fn jws(token: &str, payload: &str) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let id = token.split('.').next().unwrap_or_default();
    let header = enc(json!({"alg": "HS256", "kid": id}).to_string().as_bytes());
    let signing_input = format!("{header}.{}", enc(payload.as_bytes()));
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(token.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(signing_input.as_bytes());
    format!("{header}..{}", enc(&mac.finalize().into_bytes()))
}

pub fn server_url(s: &Settings) -> String {
    format!(
        "https://{}",
        std::net::SocketAddr::new(s.advertise_address, s.port)
    )
}

fn decoded(obj: &Value, k: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(obj.pointer(&format!("/data/{k}"))?.as_str()?)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Rewrites `cluster-info` with one signature per valid signing token.
pub async fn sign_cluster_info(
    store: &dyn Backend,
    ca_pem: &str,
    server: &str,
) -> Result<(), StoreError> {
    let kubeconfig = crate::pki::discovery_kubeconfig(server, ca_pem);
    let mut data = json!({"kubeconfig": kubeconfig});
    let secrets = store
        .list(
            "/registry/core/secrets/kube-system/bootstrap-token-",
            None,
            0,
        )
        .await?;
    let now = chrono::Utc::now();
    for kv in secrets.items {
        let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let (Some(id), Some(secret)) = (decoded(&obj, "token-id"), decoded(&obj, "token-secret"))
        else {
            continue;
        };
        let expired = decoded(&obj, "expiration")
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(&e).ok())
            .is_some_and(|e| e < now);
        if expired || decoded(&obj, "usage-bootstrap-signing").as_deref() != Some("true") {
            continue;
        }
        data[format!("jws-kubeconfig-{id}")] = json!(jws(&format!("{id}.{secret}"), &kubeconfig));
    }
    let key = "/registry/core/configmaps/kube-public/cluster-info";
    for _ in 0..5 {
        let current = store.get(key).await?;
        let mut obj = match &current {
            Some(kv) => serde_json::from_slice::<Value>(&kv.value).unwrap_or_else(|_| json!({})),
            None => json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public", "uid": uuid::Uuid::new_v4().to_string(),
                             "creationTimestamp": crate::apiserver::objects::now()},
            }),
        };
        obj["data"] = data.clone();
        let bytes = serde_json::to_vec(&obj).unwrap_or_default();
        let result = match &current {
            Some(kv) => store.update(key, kv.mod_rev, bytes).await,
            None => store.create(key, bytes).await,
        };
        match result {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_ttls() {
        let t = generate();
        assert!(is_token(&t), "{t}");
        assert!(!is_token("abc.def"));
        assert_eq!(parse_ttl("24h"), Some(chrono::Duration::hours(24)));
        assert_eq!(parse_ttl("1h30m"), Some(chrono::Duration::minutes(90)));
        assert_eq!(parse_ttl("0"), Some(chrono::Duration::zero()));
        assert_eq!(parse_ttl("5x"), None);
        assert_eq!(parse_ttl("12"), None);
    }

    #[test]
    fn jws_is_detached_hs256() {
        let sig = jws("abcdef.0123456789abcdef", "payload");
        let parts: Vec<&str> = sig.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[1].is_empty(), "the payload is detached");
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .expect("header");
        assert_eq!(
            serde_json::from_slice::<Value>(&header).expect("json")["alg"],
            "HS256"
        );
        assert_ne!(sig, jws("abcdef.0123456789abcdeg", "payload"));
    }
}
