//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) in the legacy shapes, which
//! kubectl 1.27-1.33 all accept, and `/version`.

use super::resources::{self, RESOURCES, Resource};
use serde_json::{Value, json};

/// The version this server reports (kubectl's dispatcher picks its client from the minor).
pub const KUBE_VERSION: &str = "v1.33.0-keel.1";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-11-01T00:00:00Z",
        "goVersion": format!("keel {}", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "platform": format!("linux/{}", if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

pub fn api_group_list(extra: &[(&str, &str)]) -> Value {
    let mut groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|g| group_entry(g, "v1"))
        .collect();
    for (g, v) in extra {
        groups.push(group_entry(g, v));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn api_group(group: &str) -> Option<Value> {
    resources::groups().contains(&group).then(|| {
        let mut g = group_entry(group, "v1");
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn entry(r: &Resource) -> Value {
    json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
    })
}

fn sub_entry(r: &Resource, sub: &str) -> Value {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match sub {
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "log" => ("", "", "Pod", &["get"]),
        "exec" => ("", "", "PodExecOptions", &["create", "get"]),
        "portforward" => ("", "", "PodPortForwardOptions", &["create", "get"]),
        "finalize" => ("", "", r.kind, &["update"]),
        "approval" => ("", "", r.kind, &["get", "patch", "update"]),
        _ => ("", "", r.kind, &["get", "patch", "update"]),
    };
    let mut e = json!({
        "name": format!("{}/{sub}", r.plural),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if !group.is_empty() {
        e["group"] = json!(group);
        e["version"] = json!(version);
    }
    e
}

/// `APIResourceList` for one group-version, or None if this server does not serve it.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let list: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if list.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in list {
        out.push(entry(r));
        for sub in r.subresources {
            out.push(sub_entry(r, sub));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}
