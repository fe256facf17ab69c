//! The endpoints controller inside the real `keel-control serve`, checked with the real kubectl
//! (1.33): the test plays the node (a registered Node with a zone label, pods bound to it and
//! marked Running/Ready through `pods/status`) and watches `kubectl get endpoints` /
//! `endpointslices` follow readiness flips, graceful deletion, headless services with
//! `publishNotReadyAddresses`, and the Service's deletion.
//!
//! Build the binary first: `cargo build -p keel-control`.

use keel_tests::control::ControlPlane;
use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn bound_pod(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "worker01", "containers": [{"name": "c", "image": "nginx",
            "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

fn set_ready(cp: &ControlPlane, pod: &str, ready: bool) {
    let path = format!("/api/v1/namespaces/default/pods/{pod}");
    let mut obj = cp.ok("GET", &path, None);
    let st = if ready { "True" } else { "False" };
    obj["status"]["conditions"] = json!([{"type": "Ready", "status": st},
        {"type": "ContainersReady", "status": st}, {"type": "Initialized", "status": "True"},
        {"type": "PodScheduled", "status": "True"}]);
    cp.ok("PUT", &format!("{path}/status"), Some(&obj));
}

fn slices(cp: &ControlPlane, svc: &str) -> Vec<Value> {
    let v = cp.ok(
        "GET",
        &format!(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{svc}"
        ),
        None,
    );
    v["items"].as_array().cloned().unwrap_or_default()
}

/// (address, ready, serving, terminating) of every endpoint in the service's slices, sorted.
fn slice_endpoints(cp: &ControlPlane, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = slices(cp, svc)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let c = &e["conditions"];
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

fn endpoints_cell(k: &Kubectl, svc: &str) -> String {
    let out = k.ok(&["get", "endpoints", svc, "--no-headers"]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn endpoints_and_slices_follow_pods() {
    let cp = ControlPlane::start();
    let k = Kubectl::new("1.33", &cp.kubeconfig());
    let mut node = json!({});
    node["topology.kubernetes.io/zone"] = json!("zone-a");
    cp.register_node("worker01", "192.168.10.10", node);

    // The API server's own service has its slice from the start.
    let ks = cp.ok(
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        None,
    );
    assert_eq!(ks["endpoints"][0]["addresses"][0], "127.0.0.1", "{ks}");
    assert_eq!(
        ks["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );

    cp.ok("POST", "/api/v1/namespaces/default/services", Some(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})));
    // A service whose selector matches nothing gets an empty Endpoints object.
    poll("empty endpoints for web", WAIT, || {
        (endpoints_cell(&k, "web") == "<none>").then_some(())
    });
    for (name, ip) in [("web-a", "10.244.1.2"), ("web-b", "10.244.1.3")] {
        cp.ok(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&bound_pod(name, "web")),
        );
        cp.mark_running("default", name, ip);
    }
    poll("both pods in kubectl get endpoints", WAIT, || {
        (endpoints_cell(&k, "web") == "10.244.1.2:8080,10.244.1.3:8080").then_some(())
    });
    let sl = poll("one slice with two endpoints", WAIT, || {
        let s = slices(&cp, "web");
        (s.len() == 1 && s[0]["endpoints"].as_array().map(Vec::len) == Some(2)).then_some(s)
    });
    let s = &sl[0];
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(
        s["metadata"]["labels"]["tier"], "front",
        "service labels are copied"
    );
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(
        s["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    let e0 = &s["endpoints"][0];
    assert_eq!(e0["nodeName"], "worker01");
    assert_eq!(e0["zone"], "zone-a");
    assert_eq!(e0["targetRef"]["kind"], "Pod");
    let table = k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    assert!(
        table.contains("IPv4") && table.contains("8080") && table.contains("10.244.1.2,10.244.1.3"),
        "{table}"
    );

    // Readiness flips move the address to notReadyAddresses and back.
    set_ready(&cp, "web-b", false);
    poll("web-b not ready", WAIT, || {
        (endpoints_cell(&k, "web") == "10.244.1.2:8080").then_some(())
    });
    let ep = cp.ok("GET", "/api/v1/namespaces/default/endpoints/web", None);
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.244.1.3",
        "{ep}"
    );
    assert_eq!(
        ep["subsets"][0]["addresses"][0]["targetRef"]["name"],
        "web-a"
    );
    assert_eq!(
        slice_endpoints(&cp, "web"),
        vec![
            ("10.244.1.2".into(), true, true, false),
            ("10.244.1.3".into(), false, false, false)
        ]
    );
    set_ready(&cp, "web-b", true);
    poll("web-b ready again", WAIT, || {
        (endpoints_cell(&k, "web") == "10.244.1.2:8080,10.244.1.3:8080").then_some(())
    });

    // A graceful deletion: the pod leaves the Endpoints, the slice keeps it as terminating.
    cp.ok("DELETE", "/api/v1/namespaces/default/pods/web-a", None);
    poll("web-a terminating in the slice", WAIT, || {
        (slice_endpoints(&cp, "web")
            == vec![
                ("10.244.1.2".into(), false, true, true),
                ("10.244.1.3".into(), true, true, false),
            ])
        .then_some(())
    });
    assert_eq!(endpoints_cell(&k, "web"), "10.244.1.3:8080");

    // Headless with publishNotReadyAddresses: not-ready pods are published as ready.
    cp.ok(
        "POST",
        "/api/v1/namespaces/default/services",
        Some(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"app": "db"},
                 "ports": [{"port": 5432}]}})),
    );
    cp.ok(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&bound_pod("db-0", "db")),
    );
    cp.mark_running("default", "db-0", "10.244.1.9");
    set_ready(&cp, "db-0", false);
    poll("db-0 published while not ready", WAIT, || {
        (slice_endpoints(&cp, "db") == vec![("10.244.1.9".into(), true, false, false)])
            .then_some(())
    });
    assert_eq!(endpoints_cell(&k, "db"), "10.244.1.9:5432");
    let s = &slices(&cp, "db")[0];
    assert_eq!(
        s["metadata"]["labels"]["service.kubernetes.io/headless"],
        ""
    );

    // The service goes: its Endpoints and slices go with it.
    k.ok(&["delete", "service", "web"]);
    poll("web endpoints and slices removed", WAIT, || {
        let (code, _) = cp.call("GET", "/api/v1/namespaces/default/endpoints/web", None);
        (code == 404 && slices(&cp, "web").is_empty()).then_some(())
    });
    // A namespace with a service and its endpoints can still be deleted (the controller does
    // not keep re-creating what the namespace controller removes).
    k.ok(&["create", "namespace", "tmp"]);
    cp.ok(
        "POST",
        "/api/v1/namespaces/tmp/services",
        Some(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"selector": {"app": "s"}, "ports": [{"port": 80}]}})),
    );
    poll("endpoints in tmp", WAIT, || {
        (cp.call("GET", "/api/v1/namespaces/tmp/endpoints/s", None).0 == 200).then_some(())
    });
    k.ok(&["delete", "namespace", "tmp", "--wait=false"]);
    poll("namespace tmp gone", Duration::from_secs(60), || {
        (cp.call("GET", "/api/v1/namespaces/tmp", None).0 == 404).then_some(())
    });
    // Discovery lists the resource kubectl needs for `get endpointslices`.
    let res = k.ok(&["api-resources", "--api-group=discovery.k8s.io"]);
    assert!(res.contains("endpointslices"), "{res}");
}
