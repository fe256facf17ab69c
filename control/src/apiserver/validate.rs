//! Defaulting and validation of the built-in kinds, as kube-apiserver's registry strategies and
//! `pkg/apis/*/validation` do for the fields Keel's users touch. Invalid objects produce a list
//! of field causes, which the handler turns into a 422 `Status`.

use super::error::Cause;
use super::selectors::LabelSelector;
use serde_json::{Map, Value, json};

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(is_dns1123_subdomain)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A Kubernetes resource quantity (`500m`, `128Mi`, `1e3`, `2`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || ((suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix[1..]
            .strip_prefix(['+', '-'])
            .unwrap_or(&suffix[1..])
            .parse::<u32>()
            .is_ok())
}

/// Validates `metadata` (name format per kind, labels, annotations).
pub fn metadata(obj: &Value, name_is_label: bool, causes: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if name_is_label && !is_dns1123_label(name) {
        causes.push(Cause::invalid("metadata.name", name, LABEL_MSG));
    } else if !name_is_label && !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", name, SUBDOMAIN_MSG));
    }
    for (k, v) in obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !is_qualified_name(k) {
            causes.push(Cause::invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => causes.push(Cause::invalid(
                format!("metadata.labels: Invalid value: \"{}\"", v.as_str().unwrap_or_default()),
                v,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )),
        }
    }
    for (k, v) in obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !is_qualified_name(&k.to_lowercase()) {
            causes.push(Cause::invalid(
                "metadata.annotations",
                k,
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        if !v.is_string() {
            causes.push(Cause::invalid(
                format!("metadata.annotations[{k}]"),
                v,
                "must be a string",
            ));
        }
    }
}

fn set_default(obj: &mut Map<String, Value>, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), v);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(p: &mut Value) {
    if let Some(p) = p.as_object_mut() {
        set_default(p, "timeoutSeconds", json!(1));
        set_default(p, "periodSeconds", json!(10));
        set_default(p, "successThreshold", json!(1));
        set_default(p, "failureThreshold", json!(3));
    }
}

fn default_container(c: &mut Value) {
    let Some(c) = c.as_object_mut() else { return };
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            default_probe(p);
        }
    }
}

/// Pod spec defaults (pkg/apis/core/v1/defaults.go).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "schedulerName", json!("default-scheduler"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
}

/// Pod-only defaults: the service account and the DefaultTolerationSeconds admission plugin's
/// not-ready/unreachable tolerations.
pub fn default_pod(pod: &mut Value, toleration_seconds: i64) {
    if let Some(spec) = pod.get_mut("spec") {
        default_pod_spec(spec);
        if let Some(s) = spec.as_object_mut() {
            let sa = s
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            s.insert("serviceAccountName".into(), json!(sa));
            s.insert("serviceAccount".into(), json!(sa));
            set_default(s, "priority", json!(0));
            let tolerations = s.entry("tolerations").or_insert_with(|| json!([]));
            if let Some(t) = tolerations.as_array_mut() {
                for key in [
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                ] {
                    if !t
                        .iter()
                        .any(|x| x.get("key").and_then(Value::as_str) == Some(key))
                    {
                        t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": toleration_seconds}));
                    }
                }
            }
        }
    }
}

fn resources_qos(containers: &[Value]) -> &'static str {
    let (mut any, mut guaranteed) = (false, true);
    for c in containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status a newly created pod starts with.
pub fn initial_pod_status(pod: &Value) -> Value {
    let containers: Vec<Value> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .flat_map(|p| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    json!({"phase": "Pending", "qosClass": resources_qos(&containers)})
}

fn validate_container(c: &Value, path: &str, names: &mut Vec<String>, causes: &mut Vec<Cause>) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required(format!("{path}.name")));
    } else if !is_dns1123_label(name) {
        causes.push(Cause::invalid(format!("{path}.name"), name, LABEL_MSG));
    } else if names.iter().any(|n| n == name) {
        causes.push(Cause::duplicate(format!("{path}.name"), name));
    } else {
        names.push(name.to_string());
    }
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        causes.push(Cause::required(format!("{path}.image")));
    }
    for (i, p) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("{path}.ports[{i}].containerPort"),
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str)
            && !["TCP", "UDP", "SCTP"].contains(&proto)
        {
            causes.push(Cause::unsupported(
                format!("{path}.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    for kind in ["limits", "requests"] {
        for (r, q) in c
            .pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let ok = q.as_str().is_some_and(is_quantity) || q.is_number();
            if !ok {
                causes.push(Cause::invalid(format!("{path}.resources.{kind}[{r}]"), q, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
            }
        }
    }
    for (i, e) in c
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if e.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(format!("{path}.env[{i}].name")));
        }
    }
}

pub fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(path));
        return;
    };
    let mut names = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                validate_container(c, &format!("{path}.containers[{i}]"), &mut names, causes);
            }
        }
        _ => causes.push(Cause::required(format!("{path}.containers"))),
    }
    for (i, c) in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        validate_container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &mut names,
            causes,
        );
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&rp)
    {
        causes.push(Cause::unsupported(
            format!("{path}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(dp) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&dp) {
            causes.push(Cause::unsupported(format!("{path}.dnsPolicy"), dp, &ok));
        }
    }
    let mut vols = Vec::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if !is_dns1123_label(name) {
            causes.push(Cause::invalid(
                format!("{path}.volumes[{i}].name"),
                name,
                LABEL_MSG,
            ));
        } else if vols.contains(&name) {
            causes.push(Cause::duplicate(format!("{path}.volumes[{i}].name"), name));
        }
        vols.push(name);
    }
}

fn validate_selector_template(obj: &Value, causes: &mut Vec<Cause>, selector_required: bool) {
    let sel = obj.pointer("/spec/selector");
    let empty = sel.is_none_or(|s| LabelSelector::from_object(s).is_empty());
    if empty {
        if selector_required {
            causes.push(Cause::required("spec.selector"));
        }
    } else if let Some(s) = sel {
        let tmpl_labels = obj
            .pointer("/spec/template/metadata/labels")
            .and_then(Value::as_object);
        if !LabelSelector::from_object(s).matches_labels(tmpl_labels) {
            let shown: Vec<String> = tmpl_labels
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                .collect();
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                format!("map[{}]", shown.join(" ")),
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
    if let Some(rp) = obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        && rp != "Always"
    {
        causes.push(Cause::unsupported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if let Some(r) = obj.pointer("/spec/replicas")
        && r.as_i64().is_none_or(|r| r < 0)
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
}

/// Applies the kind's defaults, then validates. `toleration_seconds` feeds the pod defaults.
pub fn default_and_validate(kind: &str, obj: &mut Value, toleration_seconds: i64) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name_is_label = matches!(kind, "Namespace" | "Service");
    metadata(obj, name_is_label, &mut causes);
    match kind {
        "Pod" => {
            default_pod(obj, toleration_seconds);
            validate_pod_spec(obj.get("spec"), "spec", &mut causes);
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                if kind != "DaemonSet" {
                    set_default(spec, "replicas", json!(1));
                }
                set_default(spec, "revisionHistoryLimit", json!(10));
                if kind == "Deployment" {
                    set_default(spec, "progressDeadlineSeconds", json!(600));
                    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                    if let Some(st) = strategy.as_object_mut() {
                        set_default(st, "type", json!("RollingUpdate"));
                        if st.get("type") == Some(&json!("RollingUpdate")) {
                            let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                            if let Some(ru) = ru.as_object_mut() {
                                set_default(ru, "maxUnavailable", json!("25%"));
                                set_default(ru, "maxSurge", json!("25%"));
                            }
                        }
                    }
                }
                if kind == "DaemonSet" {
                    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
                    if let Some(st) = strategy.as_object_mut() {
                        set_default(st, "type", json!("RollingUpdate"));
                        if st.get("type") == Some(&json!("RollingUpdate")) {
                            set_default(
                                st,
                                "rollingUpdate",
                                json!({"maxUnavailable": 1, "maxSurge": 0}),
                            );
                        }
                    }
                }
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    default_pod_spec(ps);
                }
            }
            validate_selector_template(obj, &mut causes, true);
        }
        "Service" => default_and_validate_service(obj, &mut causes),
        "Namespace" => {
            if let Some(o) = obj.as_object_mut() {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if let Some(s) = spec.as_object_mut() {
                    set_default(s, "finalizers", json!(["kubernetes"]));
                }
                let status = o.entry("status").or_insert_with(|| json!({}));
                if let Some(s) = status.as_object_mut() {
                    set_default(s, "phase", json!("Active"));
                }
            }
        }
        "Secret" => {
            if let Some(o) = obj.as_object_mut() {
                set_default(o, "type", json!("Opaque"));
                if let Some(Value::Object(sd)) = o.remove("stringData") {
                    use base64::Engine;
                    let data = o.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in sd {
                            let enc = base64::engine::general_purpose::STANDARD
                                .encode(v.as_str().unwrap_or_default());
                            d.insert(k, json!(enc));
                        }
                    }
                }
            }
            validate_data_keys(obj, "data", &mut causes);
        }
        "ConfigMap" => {
            validate_data_keys(obj, "data", &mut causes);
            validate_data_keys(obj, "binaryData", &mut causes);
        }
        _ => {}
    }
    causes
}

fn validate_data_keys(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    for k in obj
        .get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            causes.push(Cause::invalid(
                format!("{field}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
}

fn default_and_validate_service(obj: &mut Value, causes: &mut Vec<Cause>) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        causes.push(Cause::required("spec"));
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        causes.push(Cause::unsupported(
            "spec.type",
            &ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        if ty != "ExternalName" && !headless {
            causes.push(Cause::required("spec.ports"));
        }
        return;
    };
    let multi = ports.len() > 1;
    let mut names = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let Some(p) = p.as_object_mut() else { continue };
        set_default(p, "protocol", json!("TCP"));
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        set_default(p, "targetPort", json!(port));
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if multi && name.is_empty() {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        } else if names.contains(&name) && !name.is_empty() {
            causes.push(Cause::duplicate(format!("spec.ports[{i}].name"), &name));
        }
        names.push(name);
        if let Some(np) = p
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if ty == "ClusterIP" {
                causes.push(Cause::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(30000..=32767).contains(&np) {
                causes.push(Cause::invalid(format!("spec.ports[{i}].nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for q in ["1", "500m", "128Mi", "1.5Gi", "1e3", "2E-2", "0.1"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "abc", "1..2", "12Qi", "m"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn pod_defaults_and_errors() {
        let mut pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx:1.14", "ports": [{"containerPort": 80}]}]}});
        assert!(default_and_validate("Pod", &mut pod, 300).is_empty());
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        let mut latest = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "hub.test.com/nginx"}]}});
        default_and_validate("Pod", &mut latest, 300);
        assert_eq!(latest["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let mut bad = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]}});
        let fields: Vec<String> = default_and_validate("Pod", &mut bad, 300)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].ports[0].containerPort"
            ]
        );
    }

    #[test]
    fn deployment_selector_must_match() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "n", "image": "nginx"}]}}}});
        let causes = default_and_validate("Deployment", &mut d, 300);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["replicas"], 1);
    }
}
