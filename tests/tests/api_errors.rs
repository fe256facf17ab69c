//! What bad requests get from `keel-control serve`: the right code and a `Status` that names
//! the problem, never a panic (the server keeps answering after each of them).

use keel_tests::control::ControlPlane;
use keel_tests::kubectl::Kubectl;
use serde_json::{Value, json};
use std::process::Command;

fn status_of(resp: reqwest::blocking::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    (code, resp.json().unwrap_or(Value::Null))
}

fn assert_status(code: u16, body: &Value, want: u16, reason: &str) {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], want, "{body}");
}

#[test]
fn anonymous_callers_reach_only_public_paths() {
    let cp = ControlPlane::start_api_only();
    let anon = cp.anonymous_http();
    for path in ["/version", "/healthz", "/livez", "/readyz"] {
        let resp = anon.get(cp.url(path)).send().expect(path);
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let (code, body) = status_of(
        anon.get(cp.url("/api/v1/namespaces/kube-public/configmaps/cluster-info"))
            .send()
            .expect("cluster-info"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["data"]["kubeconfig"]
            .as_str()
            .is_some_and(|k| k.contains("certificate-authority-data"))
    );
    assert!(
        body["data"]
            .as_object()
            .is_some_and(|d| d.keys().any(|k| k.starts_with("jws-kubeconfig-"))),
        "{body}"
    );
    let (code, body) = status_of(
        anon.get(cp.url("/api/v1/namespaces/default/pods"))
            .send()
            .expect("pods"),
    );
    assert_status(code, &body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"system:anonymous\" cannot list resource \"pods\"")),
        "{body}"
    );
    let (code, body) = status_of(
        anon.get(cp.url("/api/v1/namespaces/kube-system/secrets"))
            .send()
            .expect("secrets"),
    );
    assert_status(code, &body, 403, "Forbidden");
}

#[test]
fn bootstrap_tokens_authenticate_until_they_expire() {
    let cp = ControlPlane::start_api_only();
    let token = cp
        .join_command
        .split_whitespace()
        .skip_while(|w| *w != "--token")
        .nth(1)
        .expect("token in join line")
        .to_string();
    let anon = cp.anonymous_http();
    // A bootstrapper may create and read CSRs, nothing else.
    let (code, body) = status_of(
        anon.get(cp.url("/apis/certificates.k8s.io/v1/certificatesigningrequests"))
            .bearer_auth(&token)
            .send()
            .expect("list csr"),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = status_of(
        anon.get(cp.url("/api/v1/nodes"))
            .bearer_auth(&token)
            .send()
            .expect("nodes"),
    );
    assert_status(code, &body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("system:bootstrap:{}", &token[..6]))),
        "{body}"
    );
    // Unknown and malformed tokens are 401, never 500.
    for bad in [
        "abcdef.0123456789abcdef",
        "garbage",
        &format!("{}.0000000000000000", &token[..6]),
    ] {
        let (code, body) = status_of(
            anon.get(cp.url("/api/v1/nodes"))
                .bearer_auth(bad)
                .send()
                .expect("bad token"),
        );
        assert_status(code, &body, 401, "Unauthorized");
    }
    // An expired token: rewrite its expiration into the past through the API.
    let name = format!("bootstrap-token-{}", &token[..6]);
    use base64::Engine;
    let past = base64::engine::general_purpose::STANDARD.encode("2020-01-01T00:00:00Z");
    cp.ok(
        "PATCH",
        &format!("/api/v1/namespaces/kube-system/secrets/{name}"),
        Some(&json!({"data": {"expiration": past}})),
    );
    let (code, body) = status_of(
        anon.get(cp.url("/apis/certificates.k8s.io/v1/certificatesigningrequests"))
            .bearer_auth(&token)
            .send()
            .expect("expired"),
    );
    assert_status(code, &body, 401, "Unauthorized");
    // ... and it no longer signs cluster-info.
    let info = cp.ok(
        "GET",
        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        None,
    );
    assert!(
        info["data"]
            .get(format!("jws-kubeconfig-{}", &token[..6]))
            .is_none(),
        "{info}"
    );
}

#[test]
fn a_client_with_another_ca_is_refused() {
    let cp = ControlPlane::start_api_only();
    let other = ControlPlane::start_api_only();
    // The other cluster's kubeconfig pointed at this server: kubectl must refuse the server cert.
    let kc = std::fs::read_to_string(other.kubeconfig())
        .expect("kubeconfig")
        .replace(
            &format!("127.0.0.1:{}", other.port),
            &format!("127.0.0.1:{}", cp.port),
        );
    let path = cp.dir.path().join("wrong-ca.kubeconfig");
    std::fs::write(&path, kc).expect("write");
    let err = Kubectl::new("1.33", &path).fails(&["get", "pods"]);
    assert!(
        err.contains("certificate signed by unknown authority") || err.contains("x509"),
        "{err}"
    );
}

#[test]
fn invalid_objects_get_422_with_causes() {
    let cp = ControlPlane::start_api_only();
    let (code, body) = cp.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}})),
    );
    assert_status(code, &body, 422, "Invalid");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.containers[0].image",
            "spec.containers[0].ports[0].containerPort"
        ],
        "{body}"
    );
    // kubectl prints the server's message.
    let file = cp.dir.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: other}}\n    spec: {containers: [{name: web, image: nginx}]}\n").expect("write");
    let err = Kubectl::new("1.33", &cp.kubeconfig()).fails(&[
        "create",
        "-f",
        file.to_str().expect("path"),
    ]);
    assert!(
        err.contains("The Deployment \"web\" is invalid")
            && err.contains("spec.template.metadata.labels")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    let (code, body) = cp.call(
        "POST",
        "/api/v1/namespaces/nosuch/configmaps",
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
    );
    assert_status(code, &body, 404, "NotFound");
    assert_eq!(body["message"], "namespaces \"nosuch\" not found");
}

#[test]
fn malformed_and_oversized_bodies() {
    let cp = ControlPlane::start_api_only();
    let post = |ct: &str, body: Vec<u8>| {
        status_of(
            cp.http()
                .post(cp.url("/api/v1/namespaces/default/configmaps"))
                .header("Content-Type", ct)
                .body(body)
                .send()
                .expect("post"),
        )
    };
    let (code, body) = post("application/json", b"{\"kind\": ".to_vec());
    assert_status(code, &body, 400, "BadRequest");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON")),
        "{body}"
    );
    let (code, body) = post("application/yaml", b"kind: [unclosed".to_vec());
    assert_status(code, &body, 400, "BadRequest");
    let (code, body) = post(
        "application/vnd.kubernetes.protobuf",
        b"k8s\x00\x0a\xff\xff".to_vec(),
    );
    assert_status(code, &body, 400, "BadRequest");
    let (code, body) = post(
        "application/vnd.kubernetes.protobuf",
        b"not protobuf".to_vec(),
    );
    assert_status(code, &body, 400, "BadRequest");
    let (code, body) = post("text/csv", b"a,b".to_vec());
    assert_status(code, &body, 415, "UnsupportedMediaType");
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(3 * 1024 * 1024)}});
    let (code, body) = post("application/json", big.to_string().into_bytes());
    assert_status(code, &body, 413, "RequestEntityTooLarge");
    let (code, body) = status_of(
        cp.http()
            .patch(cp.url("/api/v1/namespaces/default/services/kubernetes"))
            .header("Content-Type", "application/json-patch+json")
            .body("[{\"op\": \"explode\"}]")
            .send()
            .expect("patch"),
    );
    assert_status(code, &body, 400, "BadRequest");
    // The server is still serving.
    assert_eq!(
        cp.http()
            .get(cp.url("/readyz"))
            .send()
            .expect("readyz")
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn conflicting_updates_get_409() {
    let cp = ControlPlane::start_api_only();
    let cm = cp.ok("POST", "/api/v1/namespaces/default/configmaps", Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"v": "1"}})));
    let mut first = cm.clone();
    first["data"]["v"] = json!("2");
    cp.ok(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        Some(&first),
    );
    let mut stale = cm.clone();
    stale["data"]["v"] = json!("3");
    let (code, body) = cp.call(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        Some(&stale),
    );
    assert_status(code, &body, 409, "Conflict");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("the object has been modified")),
        "{body}"
    );
    assert_eq!(
        cp.ok("GET", "/api/v1/namespaces/default/configmaps/c", None)["data"]["v"],
        "2"
    );
    // A stale delete precondition is refused the same way.
    let (code, body) = cp.call(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/c",
        Some(&json!({"preconditions": {"resourceVersion": "1"}})),
    );
    assert_status(code, &body, 409, "Conflict");
    let (code, body) = cp.call("DELETE", "/api/v1/namespaces/default", None);
    assert_status(code, &body, 403, "Forbidden");
}

#[test]
fn watch_from_a_compacted_revision_is_gone() {
    let cp = ControlPlane::start_with(
        |cfg| {
            cfg["compactKeep"] = json!(5);
            cfg["compactIntervalSeconds"] = json!(1);
        },
        &["--no-controllers"],
    );
    let mut cm = cp.ok(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
    );
    let first: i64 = cm["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    for i in 0..30 {
        cm["data"] = json!({"i": i.to_string()});
        cm = cp.ok("PUT", "/api/v1/namespaces/default/configmaps/c", Some(&cm));
    }
    // Informers re-list when a watch answers an ERROR event with a 410 Status.
    let line = keel_tests::poll(
        "compaction to drop the old revisions",
        std::time::Duration::from_secs(20),
        || {
            let url = cp.url(&format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first}&timeoutSeconds=1"));
            let mut resp = cp.http().get(url).send().ok()?;
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while std::io::Read::read(&mut resp, &mut byte).ok()? == 1 && byte[0] != b'\n' {
                buf.push(byte[0]);
            }
            let ev: Value = serde_json::from_slice(&buf).ok()?;
            (ev["type"] == "ERROR").then_some(ev)
        },
    );
    assert_eq!(line["object"]["code"], 410, "{line}");
    assert_eq!(line["object"]["reason"], "Expired", "{line}");
    // The live object survived compaction.
    assert_eq!(
        cp.ok("GET", "/api/v1/namespaces/default/configmaps/c", None)["data"]["i"],
        "29"
    );
}

#[test]
fn backup_and_restore_round_trip() {
    let mut cp = ControlPlane::start_api_only();
    cp.ok("POST", "/api/v1/namespaces/default/configmaps", Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}})));
    let bin = keel_tests::workspace_bin("keel-control");
    // `keel-control <verb> --data-dir <dir> <file>`
    let data = cp.data_dir();
    let control = |verb: &str, file: &std::path::Path| {
        Command::new(&bin)
            .args([verb, "--data-dir"])
            .arg(&data)
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("keel-control {verb}: {e}"))
    };
    let backup = cp.dir.path().join("backup.db");
    let out = control("backup", &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.ok("DELETE", "/api/v1/namespaces/default/configmaps/keep", None);
    // Restore refuses while the server runs.
    let out = control("restore", &backup);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it before restoring"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        cp.stop().is_some_and(|s| s.success()),
        "serve exits cleanly on SIGTERM"
    );
    let out = control("restore", &backup);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = control("restore", &cp.dir.path().join("control.log"));
    assert!(
        !out.status.success(),
        "a file that is not a backup is refused"
    );
    let out = Command::new(&bin)
        .args(["init", "--data-dir"])
        .arg(cp.data_dir())
        .output()
        .expect("init again");
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
