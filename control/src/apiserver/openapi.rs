//! The OpenAPI documents kubectl reads before `apply` and `create -f` with validation on: per
//! group-version-kind, a PATCH operation that accepts `fieldValidation` (then kubectl leaves
//! validation to the server). v3 as JSON (kubectl 1.29+), v2 as gnostic protobuf (1.27/1.28).

use super::protobuf::wire::field;
use super::resources::{RESOURCES, Resource};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn base_path(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    }
}

fn item_path(r: &Resource) -> String {
    if r.namespaced {
        format!(
            "{}/namespaces/{{namespace}}/{}/{{name}}",
            base_path(r),
            r.plural
        )
    } else {
        format!("{}/{}/{{name}}", base_path(r), r.plural)
    }
}

fn gv_key(r: &Resource) -> String {
    base_path(r).trim_start_matches('/').to_string()
}

const QUERY_PARAMS: &[&str] = &["fieldValidation", "fieldManager", "dryRun", "force"];

/// The v3 document of one group-version (`api/v1`, `apis/apps/v1`).
pub fn v3_group_version(key: &str) -> Option<Value> {
    let rs: Vec<&Resource> = RESOURCES.iter().filter(|r| gv_key(r) == key).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for r in rs {
        let params: Vec<Value> = QUERY_PARAMS
            .iter()
            .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string"}}))
            .collect();
        paths.insert(
            item_path(r),
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// The v3 index: one entry per group-version with a content hash kubectl caches by.
pub fn v3_index() -> Value {
    let mut keys: Vec<String> = RESOURCES.iter().map(gv_key).collect();
    keys.dedup();
    let mut paths = serde_json::Map::new();
    for key in keys {
        let doc = v3_group_version(&key).unwrap_or_default();
        let hash = hex::encode_upper(Sha256::digest(doc.to_string().as_bytes()));
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// gnostic `openapi_v2.Document` with a PATCH operation per kind (field numbers from
/// gnostic's openapiv2/OpenAPIv2.proto).
pub fn v2_protobuf() -> Vec<u8> {
    let mut paths = Vec::new();
    for r in RESOURCES {
        let mut op = Vec::new();
        field(5, format!("patch{}", r.kind).as_bytes(), &mut op);
        for p in QUERY_PARAMS {
            let mut sub = Vec::new();
            field(2, b"query", &mut sub);
            field(4, p.as_bytes(), &mut sub);
            field(6, b"string", &mut sub);
            let mut non_body = Vec::new();
            field(3, &sub, &mut non_body);
            let mut param = Vec::new();
            field(2, &non_body, &mut param);
            let mut item = Vec::new();
            field(1, &param, &mut item);
            field(8, &item, &mut op);
        }
        let yaml = format!(
            "group: {}\nkind: {}\nversion: {}\n",
            if r.group.is_empty() { "\"\"" } else { r.group },
            r.kind,
            r.version
        );
        let mut any = Vec::new();
        field(2, yaml.as_bytes(), &mut any);
        let mut named_any = Vec::new();
        field(1, b"x-kubernetes-group-version-kind", &mut named_any);
        field(2, &any, &mut named_any);
        field(13, &named_any, &mut op);
        let mut path_item = Vec::new();
        field(8, &op, &mut path_item);
        let mut named = Vec::new();
        field(1, item_path(r).as_bytes(), &mut named);
        field(2, &path_item, &mut named);
        field(2, &named, &mut paths);
    }
    let mut info = Vec::new();
    field(1, b"Kubernetes", &mut info);
    field(2, super::discovery::KUBE_VERSION.as_bytes(), &mut info);
    let mut doc = Vec::new();
    field(1, b"2.0", &mut doc);
    field(2, &info, &mut doc);
    field(8, &paths, &mut doc);
    doc
}
