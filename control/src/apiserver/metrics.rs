//! `metrics.k8s.io/v1beta1` (NodeMetrics, PodMetrics), served by the API server itself instead
//! of an aggregated metrics-server: on a request it reads each Ready node's
//! `/stats/summary?only_cpu_and_memory=true` from its agent (HTTPS, the API server's kubelet
//! client certificate, as `nodeproxy` does for logs), cached for a few seconds, and answers in
//! metrics-server's shapes: usage `cpu` in nanocores (the agent's rate over its housekeeping
//! interval) and `memory` as the working set. Lists honour `labelSelector` against the Node and
//! Pod objects; tables have metrics-server's columns (Name, CPU, Memory, Window).

use super::ApiServer;
use super::auth::{self, Attributes};
use super::error::{ApiError, ApiResult};
use super::handlers::{Reply, Request};
use super::resources::{self, Resource};
use super::selectors::LabelSelector;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long one node's summary answers requests before it is fetched again.
const CACHE_FOR: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub static NODE_METRICS: Resource = Resource {
    group: GROUP,
    version: VERSION,
    plural: "nodes",
    singular: "",
    kind: "NodeMetrics",
    namespaced: false,
    short_names: &[],
    categories: &[],
    subresources: &[],
    has_spec: false,
};

pub static POD_METRICS: Resource = Resource {
    group: GROUP,
    version: VERSION,
    plural: "pods",
    singular: "",
    kind: "PodMetrics",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    has_spec: false,
};

/// Summaries fetched from agents, by node name.
#[derive(Default)]
pub struct SummaryCache {
    entries: Mutex<HashMap<String, (Instant, Value)>>,
}

/// `/apis/metrics.k8s.io`.
pub fn api_group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    let entry = |r: &Resource| json!({"name": r.plural, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "list"]});
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [entry(&NODE_METRICS), entry(&POD_METRICS)]})
}

/// Routes `/apis/metrics.k8s.io/...`; None for every other path.
pub async fn route(api: &ApiServer, req: &Request, segs: &[&str]) -> Option<ApiResult<Reply>> {
    let rest = match segs {
        ["apis", GROUP] => return Some(discovery(req, api_group())),
        ["apis", GROUP, VERSION] => return Some(discovery(req, resource_list())),
        ["apis", GROUP, VERSION, rest @ ..] => rest,
        ["apis", GROUP, ..] => return Some(Err(ApiError::NoRoute)),
        ["metrics"] => return Some(control_plane_metrics(api, req).await),
        _ => return None,
    };
    Some(serve(api, req, rest).await)
}

/// `/metrics` of the API server (cluster admins only, like kube-apiserver's default RBAC).
async fn control_plane_metrics(api: &ApiServer, req: &Request) -> ApiResult<Reply> {
    let a = Attributes {
        verb: "get",
        resource: None,
        subresource: None,
        namespace: None,
        name: None,
        node_selector: None,
    };
    auth::authorize(api, &req.user, &a).await?;
    let body = super::metrics_apiserver::render(api).await;
    Ok(Reply::Raw(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        body.into_bytes(),
    ))
}

fn discovery(req: &Request, v: Value) -> ApiResult<Reply> {
    if req.user.is_anonymous() {
        return Err(auth::forbidden(
            &req.user,
            &Attributes {
                verb: "get",
                resource: None,
                subresource: None,
                namespace: None,
                name: None,
                node_selector: None,
            },
            None,
        ));
    }
    Ok(Reply::Json(200, v))
}

async fn serve(api: &ApiServer, req: &Request, rest: &[&str]) -> ApiResult<Reply> {
    let (r, ns, name) = match rest {
        ["nodes"] => (&NODE_METRICS, None, None),
        ["nodes", name] => (&NODE_METRICS, None, Some(*name)),
        ["pods"] => (&POD_METRICS, None, None),
        ["namespaces", ns, "pods"] => (&POD_METRICS, Some(*ns), None),
        ["namespaces", ns, "pods", name] => (&POD_METRICS, Some(*ns), Some(*name)),
        _ => return Err(ApiError::NoRoute),
    };
    if req.method != http::Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let verb = if name.is_some() { "get" } else { "list" };
    auth::authorize(
        api,
        &req.user,
        &Attributes {
            verb,
            resource: Some(r),
            subresource: None,
            namespace: ns,
            name,
            node_selector: None,
        },
    )
    .await?;
    let selector = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())?;
    let nodes = list_all(api, "", "v1", "nodes", None).await?;
    let summaries = summaries(api, &nodes).await;
    let items = if r.kind == "NodeMetrics" {
        node_metrics(&nodes, &summaries, &selector, name)
    } else {
        let pods = list_all(api, "", "v1", "pods", ns).await?;
        pod_metrics(&pods, &summaries, &selector, name)
    };
    if let Some(name) = name {
        let obj = items.into_iter().next().ok_or_else(|| ApiError::NotFound {
            resource: format!("{}.{GROUP}", r.plural),
            name: name.to_string(),
            group: GROUP.to_string(),
        })?;
        return Ok(Reply::Json(
            200,
            if req.wants_table() {
                table(&[obj])
            } else {
                obj
            },
        ));
    }
    Ok(Reply::Json(
        200,
        if req.wants_table() {
            table(&items)
        } else {
            json!({"kind": format!("{}List", r.kind), "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {}, "items": items})
        },
    ))
}

async fn list_all(
    api: &ApiServer,
    group: &str,
    version: &str,
    plural: &str,
    ns: Option<&str>,
) -> ApiResult<Vec<Value>> {
    let r = resources::find(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let page = api
        .store
        .list(&r.list_prefix(ns), None, 0)
        .await
        .map_err(ApiError::internal)?;
    page.items
        .iter()
        .map(|kv| super::objects::decode(r, kv))
        .collect()
}

fn ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `https://<InternalIP>:<kubelet port>` of a node.
pub fn endpoint(node: &Value) -> Option<String> {
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a["type"] == "InternalIP")?
        .get("address")?
        .as_str()?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(format!("https://{host}:{port}"))
}

/// The summary of every Ready node that answered (cached for `CACHE_FOR`).
async fn summaries(api: &ApiServer, nodes: &[Value]) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let mut wanted = Vec::new();
    if let Ok(cache) = api.metrics_cache.entries.lock() {
        for n in nodes.iter().filter(|n| ready(n)) {
            let name = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match cache.get(&name) {
                Some((at, v)) if at.elapsed() < CACHE_FOR => {
                    out.insert(name, v.clone());
                }
                _ => {
                    if let Some(url) = endpoint(n) {
                        wanted.push((name, url));
                    }
                }
            }
        }
    }
    let Some(client) = api.agent_client.as_ref() else {
        return out;
    };
    let fetches = wanted.into_iter().map(|(name, base)| async move {
        let url = format!("{base}/stats/summary?only_cpu_and_memory=true");
        let got = async {
            let resp = client.get(&url).timeout(FETCH_TIMEOUT).send().await;
            let body = resp
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        }
        .await;
        match got {
            Ok(v) => Some((name, v)),
            Err(e) => {
                tracing::warn!(node = %name, %url, error = %e, "could not read the node's stats summary");
                None
            }
        }
    });
    let fetched: Vec<(String, Value)> = futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect();
    if let Ok(mut cache) = api.metrics_cache.entries.lock() {
        let now = Instant::now();
        for (name, v) in fetched {
            cache.insert(name.clone(), (now, v.clone()));
            out.insert(name, v);
        }
    }
    out
}

/// Kubernetes quantities as metrics-server writes them: nanocores and KiB.
fn usage(cpu: &Value, memory: &Value) -> Option<Value> {
    let nano = cpu.get("usageNanoCores")?.as_u64()?;
    let ws = memory.get("workingSetBytes")?.as_u64()?;
    Some(json!({"cpu": format!("{nano}n"), "memory": format!("{}Ki", ws / 1024)}))
}

/// The agent's housekeeping interval (kubelet's default 10 s): the window of its CPU rate.
const WINDOW: &str = "10s";

fn meta_from(obj: &Value, time: &str) -> Value {
    let mut m = json!({
        "name": obj.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        "creationTimestamp": time,
    });
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = obj.pointer("/metadata/labels") {
        m["labels"] = l.clone();
    }
    m
}

/// NodeMetrics of every node with a summary, matching `selector` (and `name` when given).
pub fn node_metrics(
    nodes: &[Value],
    summaries: &HashMap<String, Value>,
    selector: &LabelSelector,
    name: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for n in nodes {
        let node_name = n["metadata"]["name"].as_str().unwrap_or_default();
        if name.is_some_and(|w| w != node_name) || !selector.matches(n) {
            continue;
        }
        let Some(s) = summaries.get(node_name) else {
            continue;
        };
        let Some(u) = usage(&s["node"]["cpu"], &s["node"]["memory"]) else {
            continue;
        };
        let time = s["node"]["cpu"]["time"].as_str().unwrap_or_default();
        out.push(
            json!({"kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": meta_from(n, time), "timestamp": time, "window": WINDOW, "usage": u}),
        );
    }
    out
}

/// PodMetrics of every pod in `pods` that some summary reports, matching `selector`. A pod
/// whose containers have no CPU rate yet (first sample) is left out, as metrics-server does.
/// Summaries are matched by uid: a pod deleted on one node and created again under the same
/// name on another is still in the first node's summary until that agent has removed it.
pub fn pod_metrics(
    pods: &[Value],
    summaries: &HashMap<String, Value>,
    selector: &LabelSelector,
    name: Option<&str>,
) -> Vec<Value> {
    let mut reported: HashMap<&str, (&Value, &Value)> = HashMap::new();
    for s in summaries.values() {
        for p in s["pods"].as_array().into_iter().flatten() {
            if let Some(uid) = p["podRef"]["uid"].as_str() {
                reported.insert(uid, (p, s));
            }
        }
    }
    let mut out = Vec::new();
    for pod in pods {
        let n = pod["metadata"]["name"].as_str().unwrap_or_default();
        if name.is_some_and(|w| w != n) || !selector.matches(pod) {
            continue;
        }
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let Some((p, s)) = reported.get(uid) else {
            continue;
        };
        let containers: Option<Vec<Value>> = p["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Some(json!({"name": c["name"], "usage": usage(&c["cpu"], &c["memory"])?})))
            .collect();
        let Some(containers) = containers.filter(|c| !c.is_empty()) else {
            continue;
        };
        let time = p["cpu"]["time"]
            .as_str()
            .or(s["node"]["cpu"]["time"].as_str())
            .unwrap_or_default();
        out.push(
            json!({"kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": meta_from(pod, time), "timestamp": time, "window": WINDOW,
            "containers": containers}),
        );
    }
    out
}

/// metrics-server's table: Name, CPU, Memory, Window (pods sum their containers).
pub fn table(items: &[Value]) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|m| {
            let (cpu, mem) = match m.get("usage") {
                Some(u) => (
                    u["cpu"].as_str().unwrap_or_default().to_string(),
                    u["memory"].as_str().unwrap_or_default().to_string(),
                ),
                None => {
                    let sum = |key: &str, suffix: &str| {
                        let total: u64 = m["containers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| {
                                c["usage"][key].as_str()?.strip_suffix(suffix)?.parse::<u64>().ok()
                            })
                            .sum();
                        format!("{total}{suffix}")
                    };
                    (sum("cpu", "n"), sum("memory", "Ki"))
                }
            };
            json!({"cells": [m["metadata"]["name"], cpu, mem, m["window"]],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m["metadata"]}})
        })
        .collect();
    let col = |n: &str, d: &str| json!({"name": n, "type": "string", "format": if n == "Name" { "name" } else { "" }, "description": d, "priority": 0});
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
        "columnDefinitions": [col("Name", "Name of the resource"), col("CPU", "CPU usage"),
            col("Memory", "Memory usage"), col("Window", "Metrics window")],
        "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        json!({"node": {"nodeName": "n1", "cpu": {"time": "2026-11-27T08:00:00Z", "usageNanoCores": 250000000u64, "usageCoreNanoSeconds": 1},
                "memory": {"time": "2026-11-27T08:00:00Z", "workingSetBytes": 2097152u64}},
            "pods": [
                {"podRef": {"namespace": "default", "name": "web", "uid": "u1"},
                 "cpu": {"time": "2026-11-27T08:00:00Z", "usageNanoCores": 600000000u64},
                 "containers": [
                    {"name": "a", "cpu": {"usageNanoCores": 500000000u64}, "memory": {"workingSetBytes": 209715200u64}},
                    {"name": "b", "cpu": {"usageNanoCores": 100000000u64}, "memory": {"workingSetBytes": 1048576u64}}]},
                {"podRef": {"namespace": "default", "name": "fresh", "uid": "u2"},
                 "containers": [{"name": "a", "cpu": {"usageCoreNanoSeconds": 5}, "memory": {"workingSetBytes": 1}}]}]})
    }

    fn pod(name: &str, uid: &str, app: &str) -> Value {
        json!({"metadata": {"namespace": "default", "name": name, "uid": uid, "labels": {"app": app}}})
    }

    #[test]
    fn pod_metrics_shape_selector_and_fresh_pods() {
        let sums = HashMap::from([("n1".to_string(), summary())]);
        let pods = [
            pod("web", "u1", "web"),
            pod("fresh", "u2", "web"),
            pod("other", "u3", "db"),
        ];
        let all = LabelSelector::parse("").expect("empty selector");
        let items = pod_metrics(&pods, &sums, &all, None);
        assert_eq!(items.len(), 1, "{items:#?}");
        let m = &items[0];
        assert_eq!(m["metadata"]["labels"]["app"], "web");
        assert_eq!(m["containers"][0]["usage"]["cpu"], "500000000n");
        assert_eq!(m["containers"][0]["usage"]["memory"], "204800Ki");
        assert_eq!(m["window"], "10s");
        let db = LabelSelector::parse("app=db").expect("selector");
        assert!(pod_metrics(&pods, &sums, &db, None).is_empty());
        // The same name with another uid (created again elsewhere) is not the summary's pod.
        let again = [pod("web", "u9", "web")];
        assert!(pod_metrics(&again, &sums, &all, None).is_empty());
        let t = table(&items);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "600000000n", "205824Ki", "10s"])
        );
    }

    #[test]
    fn node_metrics_need_a_summary() {
        let sums = HashMap::from([("n1".to_string(), summary())]);
        let nodes = [
            json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}}),
            json!({"metadata": {"name": "n2"}}),
        ];
        let all = LabelSelector::parse("").expect("selector");
        let items = node_metrics(&nodes, &sums, &all, None);
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0]["usage"],
            json!({"cpu": "250000000n", "memory": "2048Ki"})
        );
        assert!(node_metrics(&nodes, &sums, &all, Some("n2")).is_empty());
    }

    #[test]
    fn endpoints_from_node_status() {
        let n = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(endpoint(&n).as_deref(), Some("https://10.0.0.5:10251"));
        let v6 = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::5"}]}});
        assert_eq!(endpoint(&v6).as_deref(), Some("https://[fd00::5]:10250"));
    }
}
