//! Server-side printing: the `meta.k8s.io/v1` Table kubectl renders for `get`, with the real
//! kube-apiserver's column sets (pkg/printers/internalversion) and cell rules.

use super::selectors::LabelSelector;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// (name, priority, format) of each column of a kind.
fn columns(kind: &str) -> &'static [(&'static str, u8, &'static str)] {
    match kind {
        "Pod" => &[
            ("Name", 0, "name"),
            ("Ready", 0, ""),
            ("Status", 0, ""),
            ("Restarts", 0, ""),
            ("Age", 0, ""),
            ("IP", 1, ""),
            ("Node", 1, ""),
            ("Nominated Node", 1, ""),
            ("Readiness Gates", 1, ""),
        ],
        "Node" => &[
            ("Name", 0, "name"),
            ("Status", 0, ""),
            ("Roles", 0, ""),
            ("Age", 0, ""),
            ("Version", 0, ""),
            ("Internal-IP", 1, ""),
            ("External-IP", 1, ""),
            ("OS-Image", 1, ""),
            ("Kernel-Version", 1, ""),
            ("Container-Runtime", 1, ""),
        ],
        "Deployment" => &[
            ("Name", 0, "name"),
            ("Ready", 0, ""),
            ("Up-to-date", 0, ""),
            ("Available", 0, ""),
            ("Age", 0, ""),
            ("Containers", 1, ""),
            ("Images", 1, ""),
            ("Selector", 1, ""),
        ],
        "ReplicaSet" => &[
            ("Name", 0, "name"),
            ("Desired", 0, ""),
            ("Current", 0, ""),
            ("Ready", 0, ""),
            ("Age", 0, ""),
            ("Containers", 1, ""),
            ("Images", 1, ""),
            ("Selector", 1, ""),
        ],
        "DaemonSet" => &[
            ("Name", 0, "name"),
            ("Desired", 0, ""),
            ("Current", 0, ""),
            ("Ready", 0, ""),
            ("Up-to-date", 0, ""),
            ("Available", 0, ""),
            ("Node Selector", 0, ""),
            ("Age", 0, ""),
            ("Containers", 1, ""),
            ("Images", 1, ""),
            ("Selector", 1, ""),
        ],
        "Service" => &[
            ("Name", 0, "name"),
            ("Type", 0, ""),
            ("Cluster-IP", 0, ""),
            ("External-IP", 0, ""),
            ("Port(s)", 0, ""),
            ("Age", 0, ""),
            ("Selector", 1, ""),
        ],
        "Endpoints" => &[("Name", 0, "name"), ("Endpoints", 0, ""), ("Age", 0, "")],
        "EndpointSlice" => &[
            ("Name", 0, "name"),
            ("AddressType", 0, ""),
            ("Ports", 0, ""),
            ("Endpoints", 0, ""),
            ("Age", 0, ""),
        ],
        "Namespace" => &[("Name", 0, "name"), ("Status", 0, ""), ("Age", 0, "")],
        "Event" => &[
            ("Last Seen", 0, ""),
            ("Type", 0, ""),
            ("Reason", 0, ""),
            ("Object", 0, ""),
            ("Subobject", 1, ""),
            ("Source", 1, ""),
            ("Message", 0, ""),
            ("First Seen", 1, ""),
            ("Count", 1, ""),
            ("Name", 1, "name"),
        ],
        "ConfigMap" => &[("Name", 0, "name"), ("Data", 0, ""), ("Age", 0, "")],
        "Secret" => &[
            ("Name", 0, "name"),
            ("Type", 0, ""),
            ("Data", 0, ""),
            ("Age", 0, ""),
        ],
        "ServiceAccount" => &[("Name", 0, "name"), ("Secrets", 0, ""), ("Age", 0, "")],
        "Lease" => &[("Name", 0, "name"), ("Holder", 0, ""), ("Age", 0, "")],
        "CertificateSigningRequest" => &[
            ("Name", 0, "name"),
            ("Age", 0, ""),
            ("SignerName", 0, ""),
            ("Requestor", 0, ""),
            ("RequestedDuration", 0, ""),
            ("Condition", 0, ""),
        ],
        _ => &[("Name", 0, "name"), ("Created At", 0, "date")],
    }
}

pub fn column_definitions(kind: &str) -> Value {
    Value::Array(
        columns(kind)
            .iter()
            .map(|(name, priority, format)| {
                let ty = if *format == "date" { "date" } else { "string" };
                json!({"name": name, "type": ty, "format": format, "description": name.to_string(), "priority": priority})
            })
            .collect(),
    )
}

/// kubectl's `duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration).
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        if secs % 60 == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{}s", secs % 60)
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        if minutes % 60 == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", minutes % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        if hours % 24 == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, hours % 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let days = hours / 24;
        if days % 365 == 0 {
            format!("{}y", days / 365)
        } else {
            format!("{}y{}d", days / 365, days % 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn age(v: Option<&Value>, now: DateTime<Utc>) -> String {
    parse_time(v)
        .map(|t| human_duration(now - t))
        .unwrap_or_else(|| "<unknown>".into())
}

fn s<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn containers_and_images(obj: &Value, spec: &str) -> (String, String) {
    let cs = arr(obj, &format!("{spec}/containers"));
    let names: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .collect();
    (names.join(","), images.join(","))
}

fn selector(obj: &Value) -> String {
    or_none(
        obj.pointer("/spec/selector")
            .map(LabelSelector::to_string_form),
    )
}

/// printPod: the Status column's reason, as `kubectl get pods` shows it.
fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/reason")
        .or(s(pod, "/status/phase"))
        .unwrap_or("Pending")
        .to_string();
    let init_total = arr(pod, "/spec/initContainers").len();
    let mut initializing = false;
    for (n, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        if let Some(t) = c.pointer("/state/terminated") {
            if t.get("exitCode").and_then(Value::as_i64) == Some(0) {
                continue;
            }
            reason = match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => format!("Init:{r}"),
                None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            };
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{n}/{init_total}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            if let Some(r) = c
                .pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => r.to_string(),
                    None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = arr(pod, "/status/conditions").iter().any(|c| {
                c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True"))
            });
            reason = if ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(pod, "/status/reason") == Some("NodeLost") {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let total = arr(pod, "/spec/containers").len();
    let statuses = arr(pod, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| {
            c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
        })
        .count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
        .sum();
    let last_restart = statuses
        .iter()
        .filter_map(|c| parse_time(c.pointer("/lastState/terminated/finishedAt")))
        .max();
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let ip = arr(pod, "/status/podIPs")
        .first()
        .and_then(|p| p.get("ip"))
        .and_then(Value::as_str)
        .or(s(pod, "/status/podIP"))
        .map(str::to_string);
    let gates = arr(pod, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(pod, "/status/conditions");
        let ok = gates
            .iter()
            .filter(|g| {
                conds.iter().any(|c| {
                    c.get("type") == g.get("conditionType")
                        && c.get("status") == Some(&json!("True"))
                })
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod)),
        json!(restarts),
        json!(age(pod.pointer("/metadata/creationTimestamp"), now)),
        json!(or_none(ip)),
        json!(or_none(s(pod, "/spec/nodeName").map(str::to_string))),
        json!(or_none(
            s(pod, "/status/nominatedNodeName").map(str::to_string)
        )),
        json!(gates),
    ]
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = arr(node, "/status/conditions")
        .iter()
        .find(|c| c.get("type") == Some(&json!("Ready")));
    // printNode: Ready only when the Ready condition is True, NotReady for False or Unknown,
    // Unknown when the node reports no Ready condition at all.
    let mut status = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role"
            && let Some(r) = v.as_str().filter(|r| !r.is_empty())
        {
            roles.push(r.to_string());
        }
    }
    roles.sort();
    roles.dedup();
    let address = |ty: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|a| a.get("address"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let info = |f: &str| {
        s(node, &format!("/status/nodeInfo/{f}"))
            .unwrap_or("<unknown>")
            .to_string()
    };
    vec![
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age(node.pointer("/metadata/creationTimestamp"), now)),
        json!(s(node, "/status/nodeInfo/kubeletVersion").unwrap_or("")),
        json!(or_none(address("InternalIP"))),
        json!(or_none(address("ExternalIP"))),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    or_none(Some(ports.join(",")))
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ty = s(svc, "/spec/type").unwrap_or("ClusterIP");
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or(s(svc, "/spec/clusterIP"))
        .map(str::to_string);
    let mut external: Vec<String> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external = match ty {
        "ExternalName" => s(svc, "/spec/externalName").unwrap_or("<none>").to_string(),
        "LoadBalancer" => {
            for ing in arr(svc, "/status/loadBalancer/ingress") {
                if let Some(a) = ing
                    .get("ip")
                    .or(ing.get("hostname"))
                    .and_then(Value::as_str)
                {
                    external.push(a.to_string());
                }
            }
            if external.is_empty() {
                "<pending>".into()
            } else {
                external.join(",")
            }
        }
        _ => or_none(Some(external.join(","))),
    };
    let sel: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    vec![
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external),
        json!(service_ports(svc)),
        json!(age(svc.pointer("/metadata/creationTimestamp"), now)),
        json!(or_none(Some(sel.join(",")))),
    ]
}

fn endpoints_cell(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in arr(ep, "/subsets") {
        let ports: Vec<i64> = arr(subset, "/ports")
            .iter()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for a in arr(subset, "/addresses") {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or_default();
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    let more = all.len().saturating_sub(3);
    let shown = all.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = ev
        .pointer("/firstTimestamp")
        .filter(|v| !v.is_null())
        .or(ev.pointer("/eventTime"));
    let last = ev
        .pointer("/lastTimestamp")
        .filter(|v| !v.is_null())
        .or(first);
    let kind = s(ev, "/involvedObject/kind")
        .unwrap_or_default()
        .to_lowercase();
    let name = s(ev, "/involvedObject/name").unwrap_or_default();
    let mut source = s(ev, "/source/component")
        .or(s(ev, "/reportingComponent"))
        .unwrap_or_default()
        .to_string();
    if let Some(host) = s(ev, "/source/host") {
        source = format!("{source}, {host}");
    }
    vec![
        json!(age(last, now)),
        json!(s(ev, "/type").unwrap_or_default()),
        json!(s(ev, "/reason").unwrap_or_default()),
        json!(format!("{kind}/{name}")),
        json!(s(ev, "/involvedObject/fieldPath").unwrap_or_default()),
        json!(source),
        json!(s(ev, "/message").unwrap_or_default().trim()),
        json!(age(first, now)),
        json!(ev.get("count").and_then(Value::as_i64).unwrap_or(1)),
        json!(s(ev, "/metadata/name").unwrap_or_default()),
    ]
}

fn csr_condition(csr: &Value) -> String {
    let conds: Vec<&str> = arr(csr, "/status/conditions")
        .iter()
        .filter_map(|c| c.get("type").and_then(Value::as_str))
        .collect();
    let mut out: Vec<&str> = conds.clone();
    if out.is_empty() {
        out.push("Pending");
    }
    if out.contains(&"Approved") && csr.pointer("/status/certificate").is_some() {
        out.push("Issued");
    }
    out.join(",")
}

/// The cells after the name column for `obj` of `kind` (the Name cell is added by `row`).
fn cells(kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let created = || json!(age(obj.pointer("/metadata/creationTimestamp"), now));
    match kind {
        "Pod" => pod_cells(obj, now),
        "Node" => node_cells(obj, now),
        "Deployment" => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                json!(format!(
                    "{}/{}",
                    i(obj, "/status/readyReplicas"),
                    i(obj, "/spec/replicas")
                )),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                created(),
                json!(c),
                json!(im),
                json!(selector(obj)),
            ]
        }
        "ReplicaSet" => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                json!(i(obj, "/spec/replicas")),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                created(),
                json!(c),
                json!(im),
                json!(selector(obj)),
            ]
        }
        "DaemonSet" => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            let ns: Vec<String> = obj
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            vec![
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(or_none(Some(ns.join(",")))),
                created(),
                json!(c),
                json!(im),
                json!(selector(obj)),
            ]
        }
        "Service" => service_cells(obj, now),
        "Endpoints" => vec![json!(endpoints_cell(obj)), created()],
        "EndpointSlice" => {
            let ports: Vec<String> = arr(obj, "/ports")
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_i64))
                .map(|p| p.to_string())
                .collect();
            let addrs: Vec<String> = arr(obj, "/endpoints")
                .iter()
                .flat_map(|e| {
                    arr(e, "/addresses")
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            let more = addrs.len().saturating_sub(3);
            let mut shown = addrs.into_iter().take(3).collect::<Vec<_>>().join(",");
            if more > 0 {
                shown = format!("{shown} + {more} more...");
            }
            vec![
                json!(s(obj, "/addressType").unwrap_or_default()),
                json!(or_none(Some(ports.join(",")))),
                json!(or_none(Some(shown))),
                created(),
            ]
        }
        "Namespace" => vec![
            json!(s(obj, "/status/phase").unwrap_or("Active")),
            created(),
        ],
        "Event" => event_cells(obj, now),
        "ConfigMap" => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![json!(n), created()]
        }
        "Secret" => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![
                json!(s(obj, "/type").unwrap_or("Opaque")),
                json!(n),
                created(),
            ]
        }
        "ServiceAccount" => vec![json!(arr(obj, "/secrets").len()), created()],
        "Lease" => vec![
            json!(s(obj, "/spec/holderIdentity").unwrap_or("")),
            created(),
        ],
        "CertificateSigningRequest" => {
            let dur = obj
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(|s| human_duration(chrono::Duration::seconds(s)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                created(),
                json!(s(obj, "/spec/signerName").unwrap_or("<none>")),
                json!(s(obj, "/spec/username").unwrap_or("")),
                json!(dur),
                json!(csr_condition(obj)),
            ]
        }
        _ => vec![json!(s(obj, "/metadata/creationTimestamp").unwrap_or(""))],
    }
}

/// The object a row carries: PartialObjectMetadata by default, the full object when asked
/// (`includeObject=Object`), nothing for `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    Metadata,
    Object,
    None,
}

pub fn row(kind: &str, obj: &Value, include: IncludeObject, now: DateTime<Utc>) -> Value {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let mut cells = cells(kind, obj, now);
    if kind != "Event" {
        cells.insert(0, name);
    }
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
        IncludeObject::Object => row["object"] = obj.clone(),
        IncludeObject::None => {}
    }
    row
}

pub fn table(
    kind: &str,
    objs: &[Value],
    meta: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = Utc::now();
    let rows: Vec<Value> = objs.iter().map(|o| row(kind, o, include, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": if with_columns { column_definitions(kind) } else { Value::Null },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (secs, want) in [
            (0, "0s"),
            (29, "29s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (175 * 86400, "175d"),
            (3 * 86400 + 3600, "3d1h"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(
                human_duration(chrono::Duration::seconds(secs)),
                want,
                "{secs}"
            );
        }
    }

    #[test]
    fn pod_status_reasons() {
        let now = Utc::now();
        let base = json!({"metadata": {"name": "web", "creationTimestamp": now.to_rfc3339()},
            "spec": {"containers": [{"name": "web"}]}, "status": {"phase": "Pending"}});
        assert_eq!(pod_cells(&base, now)[1], json!("Pending"));
        let mut creating = base.clone();
        creating["status"]["containerStatuses"] = json!([{"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]);
        assert_eq!(pod_cells(&creating, now)[1], json!("ContainerCreating"));
        let mut running = base.clone();
        running["status"] = json!({"phase": "Running", "podIPs": [{"ip": "10.44.0.2"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
        running["spec"]["nodeName"] = json!("worker01");
        let cells = pod_cells(&running, now);
        assert_eq!(cells[..3], [json!("1/1"), json!("Running"), json!("0")]);
        assert_eq!(cells[4], json!("10.44.0.2"));
        assert_eq!(cells[5], json!("worker01"));
        let mut terminating = running.clone();
        terminating["metadata"]["deletionTimestamp"] = json!(now.to_rfc3339());
        assert_eq!(pod_cells(&terminating, now)[1], json!("Terminating"));
    }
}
