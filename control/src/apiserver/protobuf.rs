//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl 1.32+ sends
//! for `kubectl create <generator>`: the `k8s\0` magic, a `runtime.Unknown` envelope, and the
//! object in the field numbering of k8s.io/api's generated.proto. Decoded by a field table into
//! the same JSON the JSON path receives. A non-empty field this table does not know is refused
//! with a message naming it, never silently dropped.

use super::error::{ApiError, ApiResult};
use base64::Engine;
use serde_json::{Map, Value, json};

/// Protobuf wire encoding, for the documents this server writes (OpenAPI v2) and for tests.
pub mod wire {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// A length-delimited field.
    pub fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint((num << 3) | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// A varint field.
    pub fn int(num: u64, v: u64, out: &mut Vec<u8>) {
        varint(num << 3, out);
        varint(v, out);
    }
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Bytes,
    Msg(&'static str),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrString,
    Quantity,
}

use Ty::*;

/// (field number, JSON name, type, repeated).
type Fields = &'static [(u64, &'static str, Ty, bool)];

fn schema(msg: &str) -> Option<Fields> {
    Some(match msg {
        "Unknown" => &[
            (1, "typeMeta", Msg("TypeMeta"), false),
            (2, "raw", Bytes, false),
            (3, "contentEncoding", Str, false),
            (4, "contentType", Str, false),
        ],
        "TypeMeta" => &[(1, "apiVersion", Str, false), (2, "kind", Str, false)],
        "ObjectMeta" => &[
            (1, "name", Str, false),
            (2, "generateName", Str, false),
            (3, "namespace", Str, false),
            (4, "selfLink", Str, false),
            (5, "uid", Str, false),
            (6, "resourceVersion", Str, false),
            (7, "generation", Int, false),
            (8, "creationTimestamp", Time, false),
            (9, "deletionTimestamp", Time, false),
            (10, "deletionGracePeriodSeconds", Int, false),
            (11, "labels", MapStr, false),
            (12, "annotations", MapStr, false),
            (13, "ownerReferences", Msg("OwnerReference"), true),
            (14, "finalizers", Str, true),
        ],
        "OwnerReference" => &[
            (1, "kind", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
            (6, "controller", Bool, false),
            (7, "blockOwnerDeletion", Bool, false),
        ],
        "LabelSelector" => &[
            (1, "matchLabels", MapStr, false),
            (2, "matchExpressions", Msg("LabelSelectorRequirement"), true),
        ],
        "LabelSelectorRequirement" => &[
            (1, "key", Str, false),
            (2, "operator", Str, false),
            (3, "values", Str, true),
        ],
        "Deployment" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("DeploymentSpec"), false),
            (3, "status", Msg("Empty"), false),
        ],
        "DeploymentSpec" => &[
            (1, "replicas", Int, false),
            (2, "selector", Msg("LabelSelector"), false),
            (3, "template", Msg("PodTemplateSpec"), false),
            (4, "strategy", Msg("DeploymentStrategy"), false),
            (5, "minReadySeconds", Int, false),
            (6, "revisionHistoryLimit", Int, false),
            (7, "paused", Bool, false),
            (9, "progressDeadlineSeconds", Int, false),
        ],
        "DeploymentStrategy" => &[
            (1, "type", Str, false),
            (2, "rollingUpdate", Msg("RollingUpdateDeployment"), false),
        ],
        "RollingUpdateDeployment" => &[
            (1, "maxUnavailable", IntOrString, false),
            (2, "maxSurge", IntOrString, false),
        ],
        "PodTemplateSpec" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("PodSpec"), false),
        ],
        "PodSpec" => &[
            (2, "containers", Msg("Container"), true),
            (3, "restartPolicy", Str, false),
            (4, "terminationGracePeriodSeconds", Int, false),
            (5, "activeDeadlineSeconds", Int, false),
            (6, "dnsPolicy", Str, false),
            (7, "nodeSelector", MapStr, false),
            (8, "serviceAccountName", Str, false),
            (9, "serviceAccount", Str, false),
            (10, "nodeName", Str, false),
            (11, "hostNetwork", Bool, false),
            (12, "hostPID", Bool, false),
            (13, "hostIPC", Bool, false),
            (15, "imagePullSecrets", Msg("LocalObjectReference"), true),
            (16, "hostname", Str, false),
            (17, "subdomain", Str, false),
            (19, "schedulerName", Str, false),
            (20, "initContainers", Msg("Container"), true),
            (24, "priorityClassName", Str, false),
            (27, "shareProcessNamespace", Bool, false),
        ],
        "Container" => &[
            (1, "name", Str, false),
            (2, "image", Str, false),
            (3, "command", Str, true),
            (4, "args", Str, true),
            (5, "workingDir", Str, false),
            (6, "ports", Msg("ContainerPort"), true),
            (7, "env", Msg("EnvVar"), true),
            (8, "resources", Msg("ResourceRequirements"), false),
            (9, "volumeMounts", Msg("VolumeMount"), true),
            (13, "terminationMessagePath", Str, false),
            (14, "imagePullPolicy", Str, false),
            (16, "stdin", Bool, false),
            (17, "stdinOnce", Bool, false),
            (18, "tty", Bool, false),
            (20, "terminationMessagePolicy", Str, false),
        ],
        "ContainerPort" => &[
            (1, "name", Str, false),
            (2, "hostPort", Int, false),
            (3, "containerPort", Int, false),
            (4, "protocol", Str, false),
            (5, "hostIP", Str, false),
        ],
        "EnvVar" => &[(1, "name", Str, false), (2, "value", Str, false)],
        "ResourceRequirements" => &[
            (1, "limits", MapQuantity, false),
            (2, "requests", MapQuantity, false),
        ],
        "VolumeMount" => &[
            (1, "name", Str, false),
            (2, "readOnly", Bool, false),
            (3, "mountPath", Str, false),
            (4, "subPath", Str, false),
        ],
        "Namespace" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("NamespaceSpec"), false),
            (3, "status", Msg("Empty"), false),
        ],
        "NamespaceSpec" => &[(1, "finalizers", Str, true)],
        "ConfigMap" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapStr, false),
            (3, "binaryData", MapBytes, false),
            (4, "immutable", Bool, false),
        ],
        "Secret" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "data", MapBytes, false),
            (3, "type", Str, false),
            (4, "stringData", MapStr, false),
            (5, "immutable", Bool, false),
        ],
        "Service" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "spec", Msg("ServiceSpec"), false),
            (3, "status", Msg("Empty"), false),
        ],
        "ServiceSpec" => &[
            (1, "ports", Msg("ServicePort"), true),
            (2, "selector", MapStr, false),
            (3, "clusterIP", Str, false),
            (4, "type", Str, false),
            (5, "externalIPs", Str, true),
            (7, "sessionAffinity", Str, false),
            (10, "externalName", Str, false),
            (11, "externalTrafficPolicy", Str, false),
            (13, "publishNotReadyAddresses", Bool, false),
            (18, "clusterIPs", Str, true),
            (22, "internalTrafficPolicy", Str, false),
        ],
        "ServicePort" => &[
            (1, "name", Str, false),
            (2, "protocol", Str, false),
            (3, "port", Int, false),
            (4, "targetPort", IntOrString, false),
            (5, "nodePort", Int, false),
            (6, "appProtocol", Str, false),
        ],
        "ServiceAccount" => &[
            (1, "metadata", Msg("ObjectMeta"), false),
            (2, "secrets", Msg("ObjectReference"), true),
            (3, "imagePullSecrets", Msg("LocalObjectReference"), true),
            (4, "automountServiceAccountToken", Bool, false),
        ],
        "ObjectReference" => &[
            (1, "kind", Str, false),
            (2, "namespace", Str, false),
            (3, "name", Str, false),
            (4, "uid", Str, false),
            (5, "apiVersion", Str, false),
            (6, "resourceVersion", Str, false),
            (7, "fieldPath", Str, false),
        ],
        "LocalObjectReference" => &[(1, "name", Str, false)],
        // Status messages of created objects are ignored by the server; accept them empty.
        "Empty" => &[],
        _ => return None,
    })
}

/// Fields whose zero value is meaningful (pointer fields in the Go types).
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "port",
    "containerPort",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
];

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> ApiResult<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(truncated)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ApiError::bad_request("protobuf body: varint too long"))
    }

    fn bytes(&mut self) -> ApiResult<&'a [u8]> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(truncated)?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u64) -> ApiResult<bool> {
        // Returns whether the skipped value was non-empty.
        match wire {
            0 => Ok(self.varint()? != 0),
            1 => {
                self.pos += 8;
                Ok(true)
            }
            2 => Ok(!self.bytes()?.is_empty()),
            5 => {
                self.pos += 4;
                Ok(true)
            }
            _ => Err(ApiError::bad_request(format!(
                "protobuf body: unsupported wire type {wire}"
            ))),
        }
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("protobuf body is truncated")
}

fn utf8(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ApiError::bad_request("protobuf body: a string field is not UTF-8"))
}

fn map_entry(b: &[u8], value_ty: Ty) -> ApiResult<(String, Value)> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => key = utf8(r.bytes()?)?,
            (2, 2) => {
                let raw = r.bytes()?;
                value = match value_ty {
                    MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                    MapQuantity => decode_message(raw, "Quantity")?,
                    _ => json!(utf8(raw)?),
                };
            }
            (_, wire) => {
                r.skip(wire)?;
            }
        }
    }
    Ok((key, value))
}

fn decode_special(b: &[u8], ty: Ty) -> ApiResult<Value> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut n1, mut n2, mut s) = (0u64, 0u64, String::new());
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 0) => n1 = r.varint()?,
            (1, 2) => s = utf8(r.bytes()?)?,
            (2, 0) => n2 = r.varint()?,
            (3, 2) => s = utf8(r.bytes()?)?,
            (_, wire) => {
                r.skip(wire)?;
            }
        }
    }
    Ok(match ty {
        Time => {
            if n1 == 0 {
                Value::Null
            } else {
                let t = chrono::DateTime::from_timestamp(n1 as i64, 0).unwrap_or_default();
                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }
        }
        IntOrString => {
            if n1 == 1 {
                json!(s)
            } else {
                json!(n2 as i64 as i32)
            }
        }
        _ => json!(s),
    })
}

fn decode_message(b: &[u8], msg: &str) -> ApiResult<Value> {
    if msg == "Quantity" {
        return decode_special(b, Quantity);
    }
    let fields = schema(msg).ok_or_else(|| ApiError::UnsupportedMediaType {
        accepted: format!(
            "application/json (protobuf message {msg} is not supported by this server)"
        ),
    })?;
    let mut out = Map::new();
    let mut r = Reader { buf: b, pos: 0 };
    while r.pos < b.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(&(_, name, ty, repeated)) = fields.iter().find(|f| f.0 == num) else {
            if r.skip(wire)? {
                return Err(ApiError::UnsupportedMediaType {
                    accepted: format!(
                        "application/json (protobuf field {num} of {msg} is not supported by this server; send the object as JSON)"
                    ),
                });
            }
            continue;
        };
        let value = match (ty, wire) {
            (Int, 0) => {
                let v = r.varint()? as i64;
                json!(if v > i64::from(i32::MAX) && v <= i64::from(u32::MAX) {
                    v as i32 as i64
                } else {
                    v
                })
            }
            (Bool, 0) => json!(r.varint()? != 0),
            (Str, 2) => json!(utf8(r.bytes()?)?),
            // Byte fields (the envelope's payload) travel as base64, as in JSON.
            (Bytes, 2) => json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
            (Msg(m), 2) => decode_message(r.bytes()?, m)?,
            (MapStr | MapBytes | MapQuantity, 2) => {
                let (k, v) = map_entry(r.bytes()?, ty)?;
                let entry = out.entry(name.to_string()).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (Time | IntOrString | Quantity, 2) => decode_special(r.bytes()?, ty)?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "protobuf body: field {name} of {msg} has the wrong wire type"
                )));
            }
        };
        if repeated {
            let entry = out.entry(name.to_string()).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(name.to_string(), value);
        }
    }
    // proto2 carries explicit zero values for Go's non-pointer fields: drop them like omitempty.
    out.retain(|k, v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() != Some(0) || KEEP_ZERO.contains(&k.as_str()),
        Value::Object(_) | Value::Array(_) => true,
    });
    Ok(Value::Object(out))
}

/// Decodes a whole request body into a JSON object with `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let rest = body.strip_prefix(b"k8s\x00").ok_or_else(|| {
        ApiError::bad_request("protobuf body does not start with the k8s\\x00 magic")
    })?;
    let envelope = decode_message(rest, "Unknown")?;
    let kind = envelope
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = envelope
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() {
        return Err(ApiError::bad_request(
            "protobuf body: the envelope has no kind",
        ));
    }
    let raw = envelope
        .get("raw")
        .and_then(Value::as_str)
        .map(|r| base64::engine::general_purpose::STANDARD.decode(r))
        .transpose()
        .map_err(|_| ApiError::bad_request("protobuf body: bad payload"))?
        .unwrap_or_default();
    let mut obj = decode_message(&raw, &kind)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::wire::{field, int};
    use super::*;

    #[test]
    fn decodes_a_deployment_like_kubectl_132() {
        let mut label = Vec::new();
        field(1, b"app", &mut label);
        field(2, b"web", &mut label);
        let mut meta = Vec::new();
        field(1, b"web", &mut meta);
        field(2, b"", &mut meta);
        field(8, b"", &mut meta);
        field(11, &label, &mut meta);
        let mut container = Vec::new();
        field(1, b"nginx", &mut container);
        field(2, b"hub.test.com/nginx", &mut container);
        field(8, b"", &mut container);
        int(16, 0, &mut container);
        let mut podspec = Vec::new();
        field(2, &container, &mut podspec);
        let mut tmpl_meta = Vec::new();
        field(11, &label, &mut tmpl_meta);
        let mut tmpl = Vec::new();
        field(1, &tmpl_meta, &mut tmpl);
        field(2, &podspec, &mut tmpl);
        let mut sel = Vec::new();
        field(1, &label, &mut sel);
        let mut spec = Vec::new();
        int(1, 2, &mut spec);
        field(2, &sel, &mut spec);
        field(3, &tmpl, &mut spec);
        field(4, b"", &mut spec);
        let mut dep = Vec::new();
        field(1, &meta, &mut dep);
        field(2, &spec, &mut dep);
        field(3, b"", &mut dep);
        let mut tm = Vec::new();
        field(1, b"apps/v1", &mut tm);
        field(2, b"Deployment", &mut tm);
        let mut unknown = Vec::new();
        field(1, &tm, &mut unknown);
        field(2, &dep, &mut unknown);
        let mut body = b"k8s\x00".to_vec();
        body.extend_from_slice(&unknown);
        let obj = decode(&body).expect("decode");
        assert_eq!(obj["kind"], "Deployment");
        assert_eq!(obj["apiVersion"], "apps/v1");
        assert_eq!(
            obj["metadata"],
            json!({"name": "web", "labels": {"app": "web"}})
        );
        assert_eq!(obj["spec"]["replicas"], 2);
        assert_eq!(
            obj["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}})
        );
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "nginx", "image": "hub.test.com/nginx", "resources": {}}])
        );
    }

    #[test]
    fn refuses_unknown_and_malformed() {
        assert!(decode(b"not protobuf").is_err());
        assert!(decode(b"k8s\x00\x0a\xff").is_err());
        let mut tm = Vec::new();
        field(1, b"v1", &mut tm);
        field(2, b"ConfigMap", &mut tm);
        let mut cm = Vec::new();
        field(99, b"surprise", &mut cm);
        let mut unknown = Vec::new();
        field(1, &tm, &mut unknown);
        field(2, &cm, &mut unknown);
        let mut body = b"k8s\x00".to_vec();
        body.extend_from_slice(&unknown);
        let err = decode(&body).expect_err("unknown field");
        assert!(err.to_string().contains("field 99 of ConfigMap"), "{err}");
    }
}
