//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes strategic
//! merge patch for built-in kinds (lists merged by their patch merge key, `$patch`,
//! `$setElementOrder/`, `$retainKeys`, `$deleteFromPrimitiveList/`).

use super::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

pub fn apply(kind_has_smp: bool, ty: PatchType, target: &Value, patch: &Value) -> ApiResult<Value> {
    match ty {
        PatchType::Json => json_patch(target, patch),
        PatchType::Merge => Ok(merge_patch(target, patch)),
        PatchType::Strategic if !kind_has_smp => Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json".into(),
        }),
        PatchType::Strategic | PatchType::Apply => strategic(target, patch),
    }
}

/// RFC 7386.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = target.as_object().cloned().unwrap_or_default();
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let cur = out.get(k).cloned().unwrap_or(Value::Null);
                    out.insert(k.clone(), merge_patch(&cur, v));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> ApiResult<Vec<String>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path.strip_prefix('/').ok_or_else(|| {
        ApiError::bad_request(format!("json patch path \"{path}\" must start with /"))
    })?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String], path: &str) -> ApiResult<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::bad_request(format!("json patch path \"{path}\" does not exist"))
        })?;
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> ApiResult<Value> {
    let tokens = split_pointer(path)?;
    let (last, parents) = tokens
        .split_last()
        .ok_or_else(|| ApiError::bad_request("json patch cannot remove the root"))?;
    let parent = parent_mut(doc, parents, path)?;
    let missing =
        || ApiError::bad_request(format!("json patch remove: path \"{path}\" does not exist"));
    match parent {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> ApiResult<()> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, parents, path)?;
    match parent {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(ApiError::bad_request(format!(
                    "json patch replace: path \"{path}\" does not exist"
                )));
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
            } else {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| if replace { *i < a.len() } else { *i <= a.len() })
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "json patch: index in \"{path}\" is out of range"
                        ))
                    })?;
                if replace {
                    a[i] = value;
                } else {
                    a.insert(i, value);
                }
            }
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "json patch path \"{path}\" does not name a container"
            )));
        }
    }
    Ok(())
}

/// RFC 6902.
pub fn json_patch(target: &Value, patch: &Value) -> ApiResult<Value> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |f: &str| op.get(f).and_then(Value::as_str);
        let path = field("path")
            .ok_or_else(|| ApiError::bad_request("json patch operation without \"path\""))?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "json patch operation on \"{path}\" needs \"value\""
                ))
            })
        };
        match field("op") {
            Some("add") => add_at(&mut doc, path, value()?, false)?,
            Some("replace") => add_at(&mut doc, path, value()?, true)?,
            Some("remove") => {
                remove_at(&mut doc, path)?;
            }
            Some("move") => {
                let from = field("from")
                    .ok_or_else(|| ApiError::bad_request("json patch move needs \"from\""))?;
                let v = remove_at(&mut doc, from)?;
                add_at(&mut doc, path, v, false)?;
            }
            Some("copy") => {
                let from = field("from")
                    .ok_or_else(|| ApiError::bad_request("json patch copy needs \"from\""))?;
                let v = doc.pointer(from).cloned().ok_or_else(|| {
                    ApiError::bad_request(format!("json patch copy: \"{from}\" does not exist"))
                })?;
                add_at(&mut doc, path, v, false)?;
            }
            Some("test") => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(ApiError::bad_request(format!(
                        "json patch test failed at \"{path}\""
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "json patch operation {other:?} is not one of add, remove, replace, move, copy, test"
                )));
            }
        }
    }
    Ok(doc)
}

/// The patch merge key of a list field of the built-in kinds (from the `patchMergeKey` tags in
/// k8s.io/api), or None for lists that are replaced whole. Primitive lists with strategy merge
/// (finalizers) are marked with "".
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "readinessGates"
        | "schedulingGates"
        | "resourceClaims" => {
            if field == "readinessGates" {
                "conditionType"
            } else {
                "name"
            }
        }
        "ports" => {
            // Container ports merge on containerPort, service ports on port.
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "finalizers" => "",
        "addresses" => "type",
        _ => return None,
    })
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

/// Strategic merge of `patch` into `target`.
pub fn strategic(target: &Value, patch: &Value) -> ApiResult<Value> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => Ok(Value::Object(strategic_map(t, p)?)),
        (_, Value::Object(p)) => Ok(Value::Object(strategic_map(&Map::new(), p)?)),
        (_, other) => Ok(other.clone()),
    }
}

fn strategic_map(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut out = patch.clone();
        out.remove("$patch");
        return Ok(out);
    }
    let mut out = target.clone();
    if let Some(keys) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(cur)) = out.get_mut(list) {
                cur.retain(|x| !drop.contains(&x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let cur = out.get(k).cloned();
        let merged = match (cur, v) {
            (Some(Value::Object(c)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(k);
                    continue;
                }
                Value::Object(strategic_map(&c, p)?)
            }
            (None, Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    continue;
                }
                Value::Object(strategic_map(&Map::new(), p)?)
            }
            (cur, Value::Array(p)) => {
                let cur = match cur {
                    Some(Value::Array(c)) => c,
                    _ => Vec::new(),
                };
                let order = patch
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                Value::Array(merge_list(k, &cur, p, order)?)
            }
            (_, other) => other.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(out)
}

fn merge_list(
    field: &str,
    cur: &[Value],
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> ApiResult<Vec<Value>> {
    let all: Vec<Value> = cur.iter().chain(patch.iter()).cloned().collect();
    let Some(key) = merge_key(field, &all) else {
        // Atomic list: replaced whole, except a `$patch: replace` marker is dropped.
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    };
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect());
    }
    let mut out: Vec<Value> = cur.to_vec();
    if key.is_empty() {
        // Primitive list with merge strategy: union, patch items appended.
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
    } else {
        for p in patch {
            let Some(pk) = key_of(p, key) else {
                return Err(ApiError::bad_request(format!(
                    "strategic merge patch: an item of \"{field}\" has no merge key \"{key}\""
                )));
            };
            let pos = out.iter().position(|c| key_of(c, key) == Some(pk));
            let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
            match (pos, delete) {
                (Some(i), true) => {
                    out.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => out[i] = strategic(&out[i], p)?,
                (None, false) => out.push(strategic(&Value::Object(Map::new()), p)?),
            }
        }
    }
    if let Some(order) = order {
        // Items named in $setElementOrder come first in that order; others keep their place after.
        let rank = |item: &Value| -> usize {
            let id = if key.is_empty() {
                Some(item)
            } else {
                key_of(item, key)
            };
            order
                .iter()
                .position(|o| {
                    if key.is_empty() {
                        Some(o) == id
                    } else {
                        key_of(o, key) == id
                    }
                })
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(rank);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_apply_second_patch() {
        let live = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.14", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}}}});
        let patch = json!({"spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "nginx"}],
            "containers": [{"image": "nginx:1.16", "name": "nginx"}]}}}});
        let out = strategic(&live, &patch).expect("patch");
        assert_eq!(out["spec"]["replicas"], 3);
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["name"], "side");
        assert_eq!(cs[1]["image"], "nginx:1.16");
        assert_eq!(
            cs[1]["ports"][0]["containerPort"], 80,
            "fields not in the patch are kept"
        );
    }

    #[test]
    fn strategic_directives() {
        let live = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a", "env": [{"name": "E", "value": "1"}]}, {"name": "b"}],
                     "tolerations": [{"key": "k"}]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"], "labels": {"x": null}},
            "spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "env": [{"name": "F", "value": "2"}]}],
                     "tolerations": [{"key": "new"}]}});
        let out = strategic(&live, &patch).expect("patch");
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]}])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "new"}]),
            "lists without a merge key are replaced"
        );
        let replaced = strategic(
            &live,
            &json!({"spec": {"$patch": "replace", "containers": []}}),
        )
        .expect("replace");
        assert_eq!(replaced["spec"], json!({"containers": []}));
    }

    #[test]
    fn json_and_merge_patches() {
        let doc = json!({"a": {"b": [1, 2]}, "c": 1});
        let out = json_patch(
            &doc,
            &json!([{"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c", "value": 2}, {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/c", "value": 2}]),
        )
        .expect("patch");
        assert_eq!(out, json!({"a": {"b": [2, 3]}, "c": 2}));
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/zzz"}])).is_err());
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
        assert_eq!(
            merge_patch(&doc, &json!({"a": null, "d": {"e": 1}})),
            json!({"c": 1, "d": {"e": 1}})
        );
    }
}
