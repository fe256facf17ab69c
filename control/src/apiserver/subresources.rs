//! Subresources (`status`, `scale`, `binding`, `approval`, `finalize`), the Service IP and
//! NodePort allocators, and the update rules on immutable fields.

use super::ApiServer;
use super::error::{ApiError, ApiResult, Cause};
use super::handlers::{Mode, Reply, Request, Target, get, guaranteed_update};
use super::objects;
use super::patch;
use super::resources;
use super::selectors::LabelSelector;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

pub async fn handle(
    api: &ApiServer,
    req: &Request,
    t: &Target,
    sub: &str,
    verb: &str,
) -> ApiResult<Reply> {
    let r = t.resource;
    if !r.subresources.contains(&sub) {
        return Err(ApiError::NoRoute);
    }
    let ns = t.namespace.as_deref();
    let name = t.name.clone().unwrap_or_default();
    match (sub, verb) {
        ("status" | "approval", "get") => Ok(Reply::Json(200, get(api, r, ns, &name).await?)),
        ("status" | "approval" | "finalize", "update" | "patch") => {
            let body = req.json_body()?;
            let ty = if verb == "patch" {
                Some(req.patch_type()?)
            } else {
                None
            };
            let wanted = objects::resource_version(&body).filter(|_| ty.is_none());
            let mode = if ty.is_none() { Mode::Put } else { Mode::Retry };
            let out = guaranteed_update(api, r, ns, &name, mode, false, |cur| {
                if wanted.is_some_and(|w| Some(w) != objects::resource_version(cur)) {
                    return Err(ApiError::from_store(
                        crate::store::StoreError::Conflict {
                            key: String::new(),
                            expected: 0,
                            actual: 0,
                        },
                        r.plural,
                        r.group,
                        &name,
                    ));
                }
                let proposed = match ty {
                    Some(ty) => patch::apply(true, ty, cur, &body)?,
                    None => body.clone(),
                };
                let mut new = cur.clone();
                match sub {
                    "finalize" => {
                        new["spec"]["finalizers"] = proposed
                            .pointer("/spec/finalizers")
                            .cloned()
                            .unwrap_or(json!([]))
                    }
                    "approval" => {
                        new["status"]["conditions"] = proposed
                            .pointer("/status/conditions")
                            .cloned()
                            .unwrap_or(json!([]))
                    }
                    // The status strategy: only status changes; metadata and spec stay as stored.
                    _ => new["status"] = proposed.get("status").cloned().unwrap_or(json!({})),
                }
                Ok(new)
            })
            .await?;
            if sub == "finalize" && namespace_finished(&out) {
                let _ = api
                    .store
                    .delete(&r.key(None, &name), objects::resource_version(&out))
                    .await;
            }
            Ok(Reply::Json(200, out))
        }
        ("scale", "get") => Ok(Reply::Json(200, scale_of(&get(api, r, ns, &name).await?))),
        ("scale", "update" | "patch") => {
            let body = req.json_body()?;
            let ty = if verb == "patch" {
                Some(req.patch_type()?)
            } else {
                None
            };
            let out = guaranteed_update(
                api,
                r,
                ns,
                &name,
                Mode::Retry,
                req.param("dryRun") == Some("All"),
                |cur| {
                    let scale = scale_of(cur);
                    let proposed = match ty {
                        Some(ty) => patch::apply(true, ty, &scale, &body)?,
                        None => body.clone(),
                    };
                    let replicas = proposed
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if replicas < 0 {
                        return Err(ApiError::Invalid {
                            kind: "Scale".into(),
                            name: name.clone(),
                            group: "autoscaling".into(),
                            causes: vec![Cause::invalid(
                                "spec.replicas",
                                replicas,
                                "must be greater than or equal to 0",
                            )],
                        });
                    }
                    let mut new = cur.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    Ok(new)
                },
            )
            .await?;
            Ok(Reply::Json(200, scale_of(&out)))
        }
        ("binding", "create") => {
            let body = req.json_body()?;
            let node = body
                .pointer("/target/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if node.is_empty() {
                return Err(ApiError::Invalid {
                    kind: "Binding".into(),
                    name: name.clone(),
                    group: String::new(),
                    causes: vec![Cause::required("target.name")],
                });
            }
            guaranteed_update(api, r, ns, &name, Mode::Retry, false, |cur| {
                if let Some(existing) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    return Err(ApiError::Conflict {
                        resource: "pods/binding".into(),
                        name: name.clone(),
                        group: String::new(),
                        message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""),
                    });
                }
                if cur.pointer("/metadata/deletionTimestamp").is_some() {
                    return Err(ApiError::Conflict {
                        resource: "pods/binding".into(),
                        name: name.clone(),
                        group: String::new(),
                        message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
                    });
                }
                let mut new = cur.clone();
                new["spec"]["nodeName"] = json!(node);
                set_condition(&mut new, "PodScheduled", "True", None, None);
                Ok(new)
            })
            .await?;
            Ok(Reply::Json(
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("log", "get") => super::nodeproxy::logs(api, req, &get(api, r, ns, &name).await?).await,
        ("exec" | "portforward", _) => {
            let pod = get(api, r, ns, &name).await?;
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Err(ApiError::bad_request(if node.is_empty() {
                format!("pod {name} is not scheduled to a node yet, so it has no {sub}")
            } else {
                format!(
                    "{sub} for pod {name} is served by the agent on node {node}, which this control plane cannot reach yet"
                )
            }))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn namespace_finished(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp").is_some()
        && ns
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && objects::finalizers(ns).is_empty()
}

/// Sets (or replaces) a condition in `status.conditions`.
pub fn set_condition(
    obj: &mut Value,
    ty: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = objects::now();
    let mut cond =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conds {
        match list
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        {
            Some(c) => {
                if c.get("status").and_then(Value::as_str) == Some(status) {
                    cond["lastTransitionTime"] =
                        c.get("lastTransitionTime").cloned().unwrap_or(json!(now));
                }
                *c = cond;
            }
            None => list.push(cond),
        }
    }
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": obj.pointer("/spec/selector").map(LabelSelector::to_string_form).unwrap_or_default(),
        },
    })
}

/// Fields an update may not change (pod spec beyond images and tolerations, selectors, ...).
pub fn immutable_fields(kind: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Pod" => {
            let strip = |pod: &Value| {
                let mut spec = pod.get("spec").cloned().unwrap_or(json!({}));
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs {
                            c["image"] = json!("");
                        }
                    }
                }
                if let Some(s) = spec.as_object_mut() {
                    s.remove("activeDeadlineSeconds");
                    s.remove("tolerations");
                    // Binding sets nodeName once; an update may carry it unchanged or set it.
                    if old.pointer("/spec/nodeName").is_none() {
                        s.remove("nodeName");
                    }
                }
                spec
            };
            if strip(new) != strip(old) {
                causes.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        "Deployment" | "ReplicaSet" | "DaemonSet"
            if new.pointer("/spec/selector") != old.pointer("/spec/selector") =>
        {
            let shown = new
                .pointer("/spec/selector")
                .map(LabelSelector::to_string_form)
                .unwrap_or_default();
            causes.push(Cause::invalid("spec.selector", shown, "field is immutable"));
        }
        "Service" => {
            let old_ip = old.pointer("/spec/clusterIP");
            if old_ip.is_some()
                && new
                    .pointer("/spec/clusterIP")
                    .is_some_and(|ip| Some(ip) != old_ip && !ip.as_str().is_some_and(str::is_empty))
            {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    new.pointer("/spec/clusterIP").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        _ => {}
    }
    causes
}

/// Allocates `clusterIP(s)` and node ports for a new Service (callers hold `alloc_lock`).
pub async fn allocate_service(api: &ApiServer, svc: &mut Value) -> Result<(), Vec<Cause>> {
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let services = resources::find("", "v1", "services").expect("services are served");
    let all = api
        .store
        .list(&services.prefix(), None, 0)
        .await
        .map_err(|e| vec![Cause::invalid("spec.clusterIP", "", e.to_string())])?;
    let mut used_ips = std::collections::HashSet::new();
    let mut used_ports = std::collections::HashSet::new();
    for kv in &all.items {
        let Ok(o) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if let Some(ip) = o.pointer("/spec/clusterIP").and_then(Value::as_str) {
            used_ips.insert(ip.to_string());
        }
        for p in o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                used_ports.insert(np);
            }
        }
    }
    let cidr = api.settings.service_cidr;
    let requested = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ip = match requested.as_str() {
        "None" => "None".to_string(),
        "" => pick_ip(cidr, &used_ips).ok_or_else(|| {
            vec![Cause::invalid(
                "spec.clusterIP",
                "",
                format!("the service CIDR {cidr} has no free address left"),
            )]
        })?,
        given => {
            let parsed: Ipv4Addr = given.parse().map_err(|_| {
                vec![Cause::invalid(
                    "spec.clusterIP",
                    given,
                    "must be a valid IP address",
                )]
            })?;
            if !cidr.contains(&parsed) {
                return Err(vec![Cause::invalid(
                    "spec.clusterIP",
                    given,
                    format!(
                        "provided IP is not in the valid range. The range of valid IPs is {cidr}"
                    ),
                )]);
            }
            if used_ips.contains(given) {
                return Err(vec![Cause::invalid(
                    "spec.clusterIP",
                    given,
                    "provided IP is already allocated",
                )]);
            }
            given.to_string()
        }
    };
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
    if ty == "NodePort" || ty == "LoadBalancer" {
        let mut next = 30000 + (rand::random::<u16>() % 2768) as i64;
        if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                match p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    Some(np) if used_ports.contains(&np) => {
                        return Err(vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            np,
                            "provided port is already allocated",
                        )]);
                    }
                    Some(np) => {
                        used_ports.insert(np);
                    }
                    None => {
                        let mut tries = 0;
                        while used_ports.contains(&next) {
                            next = if next >= 32767 { 30000 } else { next + 1 };
                            tries += 1;
                            if tries > 2768 {
                                return Err(vec![Cause::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    "",
                                    "the node port range 30000-32767 is full",
                                )]);
                            }
                        }
                        p["nodePort"] = json!(next);
                        used_ports.insert(next);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A random free address of `cidr`, skipping the network address, the first address (the
/// `kubernetes` Service takes it explicitly) and the broadcast address.
fn pick_ip(cidr: ipnet::Ipv4Net, used: &std::collections::HashSet<String>) -> Option<String> {
    let base = u32::from(cidr.network());
    let size = 1u64 << (32 - cidr.prefix_len());
    if size < 4 {
        return None;
    }
    let span = (size - 3) as u32;
    let start = rand::random::<u32>() % span;
    (0..span)
        .map(|i| base + 2 + (start + i) % span)
        .map(|n| Ipv4Addr::from(n).to_string())
        .find(|ip| !used.contains(ip))
}

pub fn first_service_ip(cidr: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_free_addresses_inside_the_range() {
        let cidr: ipnet::Ipv4Net = "10.96.0.0/29".parse().expect("cidr");
        let mut used = std::collections::HashSet::new();
        for _ in 0..5 {
            let ip = pick_ip(cidr, &used).expect("free address");
            let parsed: Ipv4Addr = ip.parse().expect("ip");
            assert!(cidr.contains(&parsed));
            assert_ne!(parsed, first_service_ip(cidr));
            assert!(used.insert(ip));
        }
        assert_eq!(pick_ip(cidr, &used), None);
    }

    #[test]
    fn pod_spec_is_immutable_but_images() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}], "nodeName": "n"}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        assert!(immutable_fields("Pod", &new, &old).is_empty());
        new["spec"]["containers"][0]["name"] = json!("b");
        assert_eq!(immutable_fields("Pod", &new, &old).len(), 1);
    }
}
