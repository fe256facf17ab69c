//! Objects as stored and served: JSON with `metadata.resourceVersion` taken from the store's
//! revision (never stored inside the value), plus the metadata rules every kind shares.

use super::error::{ApiError, ApiResult};
use super::resources::Resource;
use crate::store::KeyValue;
use rand::Rng;
use serde_json::{Value, json};

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The stored value as served: `kind`, `apiVersion` and `resourceVersion` filled in.
pub fn decode(r: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_rev.to_string()));
    }
    Ok(obj)
}

/// The bytes to store: without `resourceVersion` and `managedFields`.
pub fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let mut obj = obj.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("selfLink");
    }
    serde_json::to_vec(&obj).map_err(ApiError::internal)
}

pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn resource_version(obj: &Value) -> Option<i64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

/// `generateName` + five characters from the same alphabet as apimachinery's rand.String.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let max = 63 - 5;
    let prefix = if prefix.len() > max {
        &prefix[..max]
    } else {
        prefix
    };
    format!("{prefix}{suffix}")
}

/// Checks the body's kind/apiVersion against the URL's resource and fills them in.
pub fn check_type(r: &Resource, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(r.kind);
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| r.api_version());
    if kind != r.kind || av != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({}) or kind {kind} is not {}",
            r.api_version(),
            r.kind
        )));
    }
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if obj.get("metadata").is_none_or(Value::is_null) {
        obj["metadata"] = json!({});
    }
    if !obj["metadata"].is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Prepares a new object's metadata: namespace, name (or generated name), uid, timestamps.
pub fn prepare_create(r: &Resource, obj: &mut Value, namespace: Option<&str>) -> ApiResult<()> {
    let meta = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if r.namespaced {
        let ns = namespace.unwrap_or("default");
        match meta
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(given) if given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
    {
        let n = generated_name(prefix);
        meta.insert("name".into(), json!(n));
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    if r.has_spec {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    Ok(())
}

/// Carries over what clients may not change on update (uid, creation time and, unless this
/// write is the deletion itself, the deletion state) and bumps `generation` on spec changes.
pub fn carry_over(r: &Resource, new: &mut Value, old: &Value, deleting: bool) {
    let fields: &[&str] = if deleting {
        &["uid", "creationTimestamp", "namespace", "name"]
    } else {
        &[
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ]
    };
    for f in fields {
        match old.pointer(&format!("/metadata/{f}")) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(*f);
                }
            }
        }
    }
    if r.has_spec {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let changed = new.get("spec") != old.get("spec");
        new["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
    } else if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("generation");
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// True when an object marked for deletion has nothing left holding it (metadata finalizers,
/// a namespace's `spec.finalizers`, a graceful pod's grace period).
pub fn deletion_complete(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(obj).is_empty()
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}
