//! The scheduler and controllers inside the real `keel-control serve`, driven by the real
//! kubectl (1.33). The test plays the nodes: it registers Node objects, marks pods bound to
//! them Running and Ready through `pods/status`, and finishes the graceful deletion of pods
//! bound to a node (DELETE with gracePeriodSeconds=0), as an agent would.
//!
//! Build the binary first: `cargo build -p keel-control`.

use keel_tests::control::ControlPlane;
use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
static NEXT_IP: AtomicU32 = AtomicU32::new(2);

/// Raises a stop flag when dropped, so helper threads in a scope end even when the test body
/// panics (a scope joins its threads before it re-raises the panic).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Cluster {
    cp: ControlPlane,
    k: Kubectl,
}

fn node(name: &str, cpu: &str, taints: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"taints": taints},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "keel-agent is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.10.10"}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1", "containerRuntimeVersion": "keel://0.1.0",
                         "operatingSystem": "linux", "architecture": "amd64", "machineID": "m", "systemUUID": "s", "bootID": "b", "kubeProxyVersion": ""}
        }
    })
}

impl Cluster {
    /// A control plane with a tainted control-plane node and two 2-cpu workers.
    fn start() -> Cluster {
        let cp = ControlPlane::start();
        let k = Kubectl::new("1.33", &cp.kubeconfig());
        let c = Cluster { cp, k };
        c.add_node(node(
            "control",
            "2",
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        ));
        c.add_node(node("worker01", "2", json!([])));
        c.add_node(node("worker02", "2", json!([])));
        c
    }

    fn add_node(&self, n: Value) {
        self.cp.ok("POST", "/api/v1/nodes", Some(&n));
    }

    fn list(&self, path: &str) -> Vec<Value> {
        let v = self.cp.ok("GET", path, None);
        v["items"].as_array().cloned().unwrap_or_default()
    }

    fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        self.list(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector={}",
            selector.replace('=', "%3D")
        ))
    }

    /// One pass of "the kubelets": start bound pods, finish deleting terminating ones.
    fn kubelet_pass(&self) {
        let (code, v) = self.cp.call("GET", "/api/v1/pods", None);
        if code != 200 {
            return;
        }
        for p in v["items"].as_array().into_iter().flatten() {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
            if p["spec"]["nodeName"].as_str().is_none() {
                continue;
            }
            if !p["metadata"]["deletionTimestamp"].is_null() {
                let _ = self
                    .cp
                    .call("DELETE", &format!("{path}?gracePeriodSeconds=0"), None);
                continue;
            }
            if p["status"]["phase"] == "Running" {
                continue;
            }
            let n = NEXT_IP.fetch_add(1, Ordering::SeqCst);
            let ip = format!("10.244.{}.{}", n / 250, n % 250 + 2);
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let mut obj = p.clone();
            let containers: Vec<Value> = p["spec"]["containers"].as_array().into_iter().flatten()
                .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                    "restartCount": 0, "containerID": "keel://0123", "state": {"running": {"startedAt": now}}}))
                .collect();
            obj["status"] = json!({
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.10.10", "startTime": now,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now},
                               {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                               {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                               {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": containers,
            });
            let _ = self.cp.call("PUT", &format!("{path}/status"), Some(&obj));
        }
    }

    /// Runs `f` while the kubelets run in the background.
    fn with_kubelets<T>(&self, f: impl FnOnce() -> T) -> T {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    self.kubelet_pass();
                    std::thread::sleep(Duration::from_millis(30));
                }
            });
            let _stop = StopOnDrop(&stop);
            f()
        })
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &expr]);
        self.k.ok(&args)
    }
}

fn node_of(p: &Value) -> Option<String> {
    p["spec"]["nodeName"].as_str().map(String::from)
}

fn active(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[test]
fn deployment_is_scheduled_scaled_healed_and_deleted() {
    let c = Cluster::start();
    c.k.ok(&[
        "create",
        "deploy",
        "web",
        "--image=hub.test.com/nginx",
        "--replicas=2",
    ]);
    let pods = poll("two bound web pods", WAIT, || {
        let pods = c.pods("default", "app=web");
        (pods.len() == 2 && pods.iter().all(|p| node_of(p).is_some())).then_some(pods)
    });
    let nodes: BTreeSet<String> = pods.iter().filter_map(node_of).collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["worker01".to_string(), "worker02".to_string()]),
        "two replicas land on the two workers, never on the tainted control plane"
    );
    // Names: <deploy>-<pod-template-hash>-<5 random>.
    let rs = c.list("/apis/apps/v1/namespaces/default/replicasets");
    assert_eq!(rs.len(), 1);
    let rs_name = rs[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hash = rs[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert_eq!(
        rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            name.starts_with(&format!("{rs_name}-")) && name.len() == rs_name.len() + 6,
            "{name}"
        );
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["name"],
            rs_name.as_str()
        );
    }
    let events = poll("Scheduled and SuccessfulCreate events", WAIT, || {
        let out = c.k.ok(&["get", "events"]);
        (out.contains("Successfully assigned default/web-")
            && out.contains("Created pod: web-")
            && out.contains("Scaled up replica set web-"))
        .then_some(out)
    });
    assert!(events.contains(" to worker0"), "{events}");

    c.with_kubelets(|| {
        poll("2 available replicas", WAIT, || {
            (c.jsonpath(&["deploy", "web"], "{.status.availableReplicas}") == "2").then_some(())
        });
        c.k.ok(&["scale", "deploy", "web", "--replicas=5"]);
        poll("5 ready replicas and RS status 5", WAIT, || {
            let pods = c.pods("default", "app=web");
            let rs = c.jsonpath(
                &["rs", &rs_name],
                "{.status.replicas}/{.status.readyReplicas}/{.status.availableReplicas}",
            );
            (active(&pods).len() == 5 && pods.iter().all(ready) && rs == "5/5/5").then_some(())
        });
        let victim = c.pods("default", "app=web")[0]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        c.k.ok(&["delete", "pod", &victim]);
        poll("the deleted pod replaced", WAIT, || {
            let pods = c.pods("default", "app=web");
            let names: Vec<&str> = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            (!names.contains(&victim.as_str())
                && active(&pods).len() == 5
                && pods.iter().all(ready))
            .then_some(())
        });
        let out =
            c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        let out = c.k.ok(&["get", "deploy", "web"]);
        assert!(
            out.lines().nth(1).is_some_and(|l| l.contains("5/5")),
            "{out}"
        );
        c.k.ok(&["delete", "deploy", "web"]);
        poll("replicasets and pods of the deployment gone", WAIT, || {
            (c.list("/apis/apps/v1/namespaces/default/replicasets")
                .is_empty()
                && c.pods("default", "app=web").is_empty())
            .then_some(())
        });
    });
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: IMAGE
"#;

fn apply(c: &Cluster, yaml: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("obj.yaml");
    std::fs::write(&f, yaml).expect("write manifest");
    c.k.ok(&["apply", "-f", f.to_str().unwrap_or_default()]);
}

fn images(c: &Cluster) -> BTreeSet<String> {
    active(&c.pods("default", "app=web"))
        .iter()
        .filter_map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[test]
fn rolling_update_bounds_status_history_undo_and_restart() {
    let c = Cluster::start();
    c.with_kubelets(|| {
        apply(&c, &WEB.replace("IMAGE", "hub.test.com/nginx:1.0"));
        c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert_eq!(
            images(&c),
            BTreeSet::from(["hub.test.com/nginx:1.0".to_string()])
        );

        // Watch every step of the rollover: never more than replicas+maxSurge pods, never
        // fewer than replicas-maxUnavailable ready ones.
        let stop = AtomicBool::new(false);
        let (max_total, min_ready, samples) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let (mut max_total, mut min_ready, mut samples) = (0, usize::MAX, 0);
                while !stop.load(Ordering::SeqCst) {
                    let pods = c.pods("default", "app=web");
                    let live = active(&pods);
                    max_total = max_total.max(live.len());
                    min_ready = min_ready.min(live.iter().filter(|p| ready(p)).count());
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                (max_total, min_ready, samples)
            });
            let guard = StopOnDrop(&stop);
            apply(&c, &WEB.replace("IMAGE", "hub.test.com/nginx:2.0"));
            let out =
                c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
            assert!(out.contains("successfully rolled out"), "{out}");
            drop(guard);
            watcher.join().expect("watcher")
        });
        assert!(samples > 3, "observed the rollout {samples} times");
        assert!(
            max_total <= 5,
            "saw {max_total} pods: more than replicas + maxSurge (5)"
        );
        assert!(
            min_ready >= 3,
            "saw {min_ready} ready pods: fewer than replicas - maxUnavailable (3)"
        );
        poll("only new pods left", WAIT, || {
            (images(&c) == BTreeSet::from(["hub.test.com/nginx:2.0".to_string()])).then_some(())
        });
        let d = c.cp.ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            None,
        );
        assert_eq!(
            d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
        let conds = d["status"]["conditions"].to_string();
        assert!(
            conds.contains("NewReplicaSetAvailable") && conds.contains("MinimumReplicasAvailable"),
            "{conds}"
        );

        let out = c.k.ok(&["rollout", "history", "deployment/web"]);
        let revs: Vec<&str> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revs, ["1", "2"], "{out}");

        c.k.ok(&["rollout", "undo", "deployment/web"]);
        c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        poll("undo back to 1.0", WAIT, || {
            (images(&c) == BTreeSet::from(["hub.test.com/nginx:1.0".to_string()])).then_some(())
        });
        assert_eq!(
            c.jsonpath(
                &["deploy", "web"],
                "{.spec.template.spec.containers[0].image}"
            ),
            "hub.test.com/nginx:1.0"
        );
        poll("revision 3 on the deployment", WAIT, || {
            (c.jsonpath(
                &["deploy", "web"],
                "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
            ) == "3")
                .then_some(())
        });
        assert_eq!(
            c.list("/apis/apps/v1/namespaces/default/replicasets").len(),
            2,
            "undo reuses the old ReplicaSet"
        );

        c.k.ok(&["rollout", "restart", "deployment/web"]);
        let out =
            c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        assert_eq!(
            c.list("/apis/apps/v1/namespaces/default/replicasets").len(),
            3
        );
    });
}

#[test]
fn scheduling_constraints_and_the_unschedulable_message() {
    let c = Cluster::start();
    // Node IPAM: every node got its own /24.
    let cidrs = poll("podCIDRs on all nodes", WAIT, || {
        let cidrs: BTreeSet<String> = c
            .list("/api/v1/nodes")
            .iter()
            .filter_map(|n| n["spec"]["podCIDR"].as_str().map(String::from))
            .collect();
        (cidrs.len() == 3).then_some(cidrs)
    });
    assert!(cidrs.iter().all(|c| c.ends_with("/24")), "{cidrs:?}");

    // An impossible request gets the scheduler's message, then fits once a big node joins.
    c.k.ok(&["run", "big", "--image=hub.test.com/nginx", "--overrides", r#"{"spec":{"containers":[{"name":"big","image":"hub.test.com/nginx","resources":{"requests":{"cpu":"3"}}}]}}"#]);
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.";
    let out = poll("the FailedScheduling message in describe", WAIT, || {
        let out = c.k.ok(&["describe", "pod", "big"]);
        (out.contains(want) && out.contains("FailedScheduling")).then_some(out)
    });
    assert!(
        out.contains("PodScheduled      False")
            || out.contains("PodScheduled   False")
            || out.contains("PodScheduled False"),
        "{out}"
    );
    c.add_node(node("worker03", "4", json!([])));
    poll("big bound to worker03", WAIT, || {
        (c.jsonpath(&["pod", "big"], "{.spec.nodeName}") == "worker03").then_some(())
    });
    c.k.ok(&["delete", "pod", "big", "--wait=false"]);

    // Cordon keeps new pods off a node.
    c.k.ok(&["cordon", "worker02"]);
    c.k.ok(&["cordon", "worker03"]);
    c.k.ok(&[
        "create",
        "deploy",
        "c",
        "--image=hub.test.com/nginx",
        "--replicas=3",
    ]);
    let pods = poll("three bound pods", WAIT, || {
        let pods = c.pods("default", "app=c");
        (pods.len() == 3 && pods.iter().all(|p| node_of(p).is_some())).then_some(pods)
    });
    assert!(
        pods.iter()
            .all(|p| node_of(p).as_deref() == Some("worker01")),
        "cordoned nodes got pods"
    );
    c.k.ok(&["uncordon", "worker02"]);

    // Taints and tolerations.
    c.k.ok(&["taint", "nodes", "worker01", "dedicated=gpu:NoSchedule"]);
    c.k.ok(&["run", "plain", "--image=hub.test.com/nginx"]);
    poll("plain on worker02", WAIT, || {
        (c.jsonpath(&["pod", "plain"], "{.spec.nodeName}") == "worker02").then_some(())
    });
    c.k.ok(&[
        "run",
        "picky",
        "--image=hub.test.com/nginx",
        "--overrides",
        r#"{"spec":{"nodeSelector":{"kubernetes.io/hostname":"worker01"}}}"#,
    ]);
    // control: its taint; worker01: the new taint; worker02: the selector; worker03: cordoned.
    let msg = "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable.";
    poll("picky unschedulable", WAIT, || {
        c.k.ok(&["describe", "pod", "picky"])
            .contains(msg)
            .then_some(())
    });
    c.k.ok(&["run", "tolerant", "--image=hub.test.com/nginx", "--overrides",
        r#"{"spec":{"nodeSelector":{"kubernetes.io/hostname":"worker01"},"tolerations":[{"key":"dedicated","operator":"Equal","value":"gpu","effect":"NoSchedule"}]}}"#]);
    poll("tolerant on worker01", WAIT, || {
        (c.jsonpath(&["pod", "tolerant"], "{.spec.nodeName}") == "worker01").then_some(())
    });
}

#[test]
fn deleting_a_namespace_deletes_its_contents_first() {
    let c = Cluster::start();
    c.k.ok(&["create", "namespace", "team"]);
    c.k.ok(&[
        "-n",
        "team",
        "create",
        "deploy",
        "api",
        "--image=hub.test.com/nginx",
        "--replicas=2",
    ]);
    c.k.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
    ]);
    c.with_kubelets(|| {
        poll("team pods running", WAIT, || {
            let pods = c.pods("team", "app=api");
            (pods.len() == 2 && pods.iter().all(ready)).then_some(())
        });
        c.k.ok(&["delete", "namespace", "team", "--wait=false"]);
        // While its contents go, the namespace stays, Terminating.
        let (code, ns) = c.cp.call("GET", "/api/v1/namespaces/team", None);
        assert_eq!(
            code, 200,
            "the namespace must stay, Terminating, until its contents are gone and the namespace controller finalizes it; the API server answered: {ns}"
        );
        assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
        poll("namespace team gone", WAIT, || {
            let (code, _) = c.cp.call("GET", "/api/v1/namespaces/team", None);
            (code == 404).then_some(())
        });
    });
    for path in [
        "/api/v1/namespaces/team/pods",
        "/api/v1/namespaces/team/configmaps",
        "/apis/apps/v1/namespaces/team/deployments",
        "/apis/apps/v1/namespaces/team/replicasets",
    ] {
        assert!(c.list(path).is_empty(), "{path} left behind");
    }
}

#[test]
fn garbage_collection_background_foreground_and_orphan() {
    let c = Cluster::start();
    let rs_of = |deploy: &str| {
        c.list("/apis/apps/v1/namespaces/default/replicasets")
            .into_iter()
            .filter(|r| r["metadata"]["ownerReferences"][0]["name"] == deploy)
            .collect::<Vec<_>>()
    };
    for d in ["fg", "orph"] {
        c.k.ok(&[
            "create",
            "deploy",
            d,
            "--image=hub.test.com/nginx",
            "--replicas=2",
        ]);
    }
    c.with_kubelets(|| {
        for d in ["fg", "orph"] {
            poll("pods running", WAIT, || {
                let pods = c.pods("default", &format!("app={d}"));
                (pods.len() == 2 && pods.iter().all(ready)).then_some(())
            });
        }
        // Foreground: the deployment stays (with the finalizer) until its pods and
        // ReplicaSet are gone; kubectl waits for all of it.
        c.k.ok(&[
            "delete",
            "deploy",
            "fg",
            "--cascade=foreground",
            "--timeout=60s",
        ]);
        assert!(rs_of("fg").is_empty());
        assert!(c.pods("default", "app=fg").is_empty());
        let (code, _) = c.cp.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/fg",
            None,
        );
        assert_eq!(code, 404);

        // Orphan: the ReplicaSet and pods stay, without the ownerReference.
        let rs_name = rs_of("orph")[0]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        c.k.ok(&[
            "delete",
            "deploy",
            "orph",
            "--cascade=orphan",
            "--timeout=60s",
        ]);
        let rs = c.cp.ok(
            "GET",
            &format!("/apis/apps/v1/namespaces/default/replicasets/{rs_name}"),
            None,
        );
        assert!(
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|o| o.is_empty()),
            "{rs}"
        );
        assert_eq!(c.pods("default", "app=orph").len(), 2);

        // Background: deleting the (now orphaned) ReplicaSet takes its pods with it.
        c.k.ok(&["delete", "rs", &rs_name]);
        poll("orphaned pods collected", WAIT, || {
            c.pods("default", "app=orph").is_empty().then_some(())
        });
    });
}

const DAEMON: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: IMAGE
"#;

#[test]
fn daemonset_runs_one_pod_per_eligible_node_and_rolls() {
    let c = Cluster::start();
    c.with_kubelets(|| {
        apply(&c, &DAEMON.replace("IMAGE", "hub.test.com/agent:1"));
        let out = c.k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        let nodes: BTreeSet<String> = active(&c.pods("default", "app=agent")).iter().filter_map(|p| node_of(p)).collect();
        assert_eq!(nodes, BTreeSet::from(["worker01".to_string(), "worker02".to_string()]), "not on the tainted control plane");
        c.add_node(node("worker03", "2", json!([])));
        poll("a pod on the new node", WAIT, || {
            active(&c.pods("default", "app=agent")).iter().any(|p| node_of(p).as_deref() == Some("worker03")).then_some(())
        });
        apply(&c, &DAEMON.replace("IMAGE", "hub.test.com/agent:2"));
        let out = c.k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        poll("every daemon pod updated", WAIT, || {
            let pods = c.pods("default", "app=agent");
            let live = active(&pods);
            (live.len() == 3 && live.iter().all(|p| p["spec"]["containers"][0]["image"] == "hub.test.com/agent:2")).then_some(())
        });
        let st = c.jsonpath(&["ds", "agent"], "{.status.desiredNumberScheduled}/{.status.updatedNumberScheduled}/{.status.numberReady}");
        assert_eq!(st, "3/3/3");
    });
}

#[test]
fn recreate_and_paused_deployments() {
    let c = Cluster::start();
    let yaml = WEB
        .replace(
            "type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}",
            "type: Recreate",
        )
        .replace("replicas: 4", "replicas: 2");
    c.with_kubelets(|| {
        apply(&c, &yaml.replace("IMAGE", "hub.test.com/nginx:1.0"));
        c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        // Recreate: no new pod exists while an old one is still there.
        let stop = AtomicBool::new(false);
        let mixed = std::thread::scope(|s| {
            let w = s.spawn(|| {
                let mut mixed = false;
                while !stop.load(Ordering::SeqCst) {
                    let imgs: BTreeSet<String> = c
                        .pods("default", "app=web")
                        .iter()
                        .filter_map(|p| {
                            p["spec"]["containers"][0]["image"]
                                .as_str()
                                .map(String::from)
                        })
                        .collect();
                    mixed |= imgs.len() > 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                mixed
            });
            let guard = StopOnDrop(&stop);
            apply(&c, &yaml.replace("IMAGE", "hub.test.com/nginx:2.0"));
            c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
            drop(guard);
            w.join().expect("watcher")
        });
        assert!(!mixed, "old and new pods existed together under Recreate");
        assert_eq!(
            images(&c),
            BTreeSet::from(["hub.test.com/nginx:2.0".to_string()])
        );

        // Paused: a template change makes no new ReplicaSet until resumed.
        c.k.ok(&["rollout", "pause", "deployment/web"]);
        c.k.ok(&[
            "set",
            "image",
            "deployment/web",
            "nginx=hub.test.com/nginx:3.0",
        ]);
        poll("paused condition", WAIT, || {
            c.jsonpath(
                &["deploy", "web"],
                "{.status.conditions[?(@.type==\"Progressing\")].reason}",
            )
            .contains("DeploymentPaused")
            .then_some(())
        });
        assert_eq!(
            c.list("/apis/apps/v1/namespaces/default/replicasets").len(),
            2
        );
        c.k.ok(&["rollout", "resume", "deployment/web"]);
        c.k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        poll("3.0 rolled out", WAIT, || {
            (images(&c) == BTreeSet::from(["hub.test.com/nginx:3.0".to_string()])).then_some(())
        });
    });
}

#[test]
fn expired_bootstrap_tokens_are_deleted() {
    let c = Cluster::start();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let token = |id: &str, exp: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "data": {"token-id": b64(id), "token-secret": b64("0123456789abcdef"), "expiration": b64(exp),
                     "usage-bootstrap-authentication": b64("true")}
        })
    };
    let past = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (id, exp) in [("aaaaaa", &past), ("bbbbbb", &soon), ("cccccc", &later)] {
        c.cp.ok(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            Some(&token(id, exp)),
        );
    }
    let gone = |id: &str| {
        c.cp.call(
            "GET",
            &format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"),
            None,
        )
        .0 == 404
    };
    poll("the expired token deleted", WAIT, || {
        gone("aaaaaa").then_some(())
    });
    poll("the token expiring in 3 s deleted", WAIT, || {
        gone("bbbbbb").then_some(())
    });
    assert!(!gone("cccccc"), "a valid token was deleted");
}
