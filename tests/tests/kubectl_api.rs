//! The real kubectl (1.27, 1.33 and the version-picking dispatcher) against `keel-control serve`
//! running the API server alone (`--no-controllers`): the test plays the nodes and the
//! controllers, registering Node objects and posting status through the API, so every figure
//! it compares is one it set. The controllers have their own suite in control/controllers.

use keel_tests::control::ControlPlane;
use keel_tests::kubectl::{Kubectl, assert_table};
use keel_tests::poll;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

/// kubectl colours cluster-info; compare the text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const VERSIONS: &[&str] = &["1.27", "1.33", ""];

fn for_each_version(f: impl Fn(&ControlPlane, &Kubectl)) {
    for v in VERSIONS {
        let cp = ControlPlane::start_api_only();
        let k = Kubectl::new(v, &cp.kubeconfig());
        f(&cp, &k);
    }
}

#[test]
fn version_cluster_info_and_api_resources() {
    for_each_version(|cp, k| {
        let out = k.ok(&["version"]);
        assert!(out.contains("v1.33.0-keel.1"), "{out}");
        let out = strip_ansi(&k.ok(&["cluster-info"]));
        assert!(
            out.contains(&format!("is running at https://127.0.0.1:{}", cp.port)),
            "{out}"
        );
        let out = k.ok(&["api-resources"]);
        for line in [
            "pods                         po           v1                       true         Pod",
            "deployments                  deploy       apps/v1                  true         Deployment",
            "certificatesigningrequests   csr          certificates.k8s.io/v1   false        CertificateSigningRequest",
        ] {
            let want: Vec<String> = keel_tests::kubectl::cells(line);
            assert!(
                out.lines().any(|l| keel_tests::kubectl::cells(l) == want),
                "api-resources lacks {line}:\n{out}"
            );
        }
    });
}

#[test]
fn get_nodes_shows_the_walkthrough_columns() {
    for_each_version(|cp, k| {
        cp.register_node(
            "master",
            "192.168.10.100",
            json!({"node-role.kubernetes.io/control-plane": ""}),
        );
        cp.register_node("worker01", "192.168.10.10", json!({}));
        assert_table(
            &k.ok(&["get", "nodes"]),
            &[
                &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
                &["master", "Ready", "control-plane", "*", "v1.28.14"],
                &["worker01", "Ready", "<none>", "*", "v1.28.14"],
            ],
        );
        assert_table(
            &k.ok(&["get", "nodes", "-o", "wide"]),
            &[
                &[
                    "NAME",
                    "STATUS",
                    "ROLES",
                    "AGE",
                    "VERSION",
                    "INTERNAL-IP",
                    "EXTERNAL-IP",
                    "OS-IMAGE",
                    "KERNEL-VERSION",
                    "CONTAINER-RUNTIME",
                ],
                &[
                    "master",
                    "Ready",
                    "control-plane",
                    "*",
                    "v1.28.14",
                    "192.168.10.100",
                    "<none>",
                    "Ubuntu 20.04 LTS",
                    "5.4.0-26-generic",
                    "keel://0.1.0",
                ],
                &[
                    "worker01",
                    "Ready",
                    "<none>",
                    "*",
                    "v1.28.14",
                    "192.168.10.10",
                    "<none>",
                    "Ubuntu 20.04 LTS",
                    "5.4.0-26-generic",
                    "keel://0.1.0",
                ],
            ],
        );
        k.ok(&["cordon", "worker01"]);
        let out = k.ok(&["get", "node", "worker01"]);
        assert!(out.contains("Ready,SchedulingDisabled"), "{out}");
    });
}

#[test]
fn run_and_get_pods_in_every_form() {
    for_each_version(|cp, k| {
        assert_eq!(
            k.ok(&["run", "web", "--image=nginx:1.14", "--port", "80"])
                .trim(),
            "pod/web created"
        );
        let out = k.fails(&["run", "web", "--image=nginx:1.14"]);
        assert!(
            out.contains("Error from server (AlreadyExists): pods \"web\" already exists"),
            "{out}"
        );
        assert_table(
            &k.ok(&["get", "pods"]),
            &[
                &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                &["web", "0/1", "Pending", "0", "*"],
            ],
        );
        // Play the scheduler and the node: bind, then report Running.
        cp.ok("POST", "/api/v1/namespaces/default/pods/web/binding", Some(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "worker01"}})));
        let (code, conflict) = cp.call("POST", "/api/v1/namespaces/default/pods/web/binding", Some(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "other"}})));
        assert_eq!(code, 409, "{conflict}");
        cp.mark_running("default", "web", "10.44.0.2");
        assert_table(
            &k.ok(&["get", "pods", "-o", "wide"]),
            &[
                &[
                    "NAME",
                    "READY",
                    "STATUS",
                    "RESTARTS",
                    "AGE",
                    "IP",
                    "NODE",
                    "NOMINATED NODE",
                    "READINESS GATES",
                ],
                &[
                    "web",
                    "1/1",
                    "Running",
                    "0",
                    "*",
                    "10.44.0.2",
                    "worker01",
                    "<none>",
                    "<none>",
                ],
            ],
        );
        let yaml = k.ok(&["get", "pod", "web", "-o", "yaml"]);
        for want in [
            "kind: Pod",
            "restartPolicy: Always",
            "dnsPolicy: ClusterFirst",
            "terminationGracePeriodSeconds: 30",
            "imagePullPolicy: IfNotPresent",
            "nodeName: worker01",
            "run: web",
        ] {
            assert!(yaml.contains(want), "yaml lacks {want}:\n{yaml}");
        }
        let pod: Value =
            serde_json::from_str(&k.ok(&["get", "pod", "web", "-o", "json"])).expect("json");
        assert_eq!(pod["status"]["phase"], "Running");
        assert!(
            pod["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
        k.ok(&["run", "other", "--image=busybox", "--labels=app=other"]);
        assert_table(
            &k.ok(&["get", "pods", "-l", "run=web", "-o", "name"]),
            &[&["pod/web"]],
        );
        assert_table(
            &k.ok(&["get", "pods", "-l", "app in (other)", "-o", "name"]),
            &[&["pod/other"]],
        );
        assert_table(
            &k.ok(&[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Running",
                "-o",
                "name",
            ]),
            &[&["pod/web"]],
        );
        assert_table(
            &k.ok(&[
                "get",
                "pods",
                "--field-selector",
                "spec.nodeName!=worker01",
                "-o",
                "name",
            ]),
            &[&["pod/other"]],
        );
        let all = k.ok(&["get", "pods", "-A"]);
        assert!(
            all.lines().any(
                |l| keel_tests::kubectl::cells(l).first().map(String::as_str) == Some("default")
                    && l.contains("web")
            ),
            "{all}"
        );
        let labels = k.ok(&["get", "pods", "--show-labels"]);
        assert!(
            labels
                .lines()
                .any(|l| l.starts_with("web") && l.trim_end().ends_with("run=web")),
            "{labels}"
        );
        let all = k.ok(&["get", "all"]);
        assert!(
            all.contains("pod/web") && all.contains("service/kubernetes"),
            "{all}"
        );
        let none = k.run(&["get", "pods", "-n", "kube-system"]);
        assert!(
            none.stderr
                .contains("No resources found in kube-system namespace."),
            "{}",
            none.stderr
        );
    });
}

#[test]
fn get_watch_prints_changes_as_table_rows() {
    for_each_version(|_cp, k| {
        k.ok(&["run", "web", "--image=nginx:1.14"]);
        let mut child = k
            .command(&["get", "pods", "-w", "--request-timeout=20s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let drain = |seen: &mut String| {
            while let Ok(s) = rx.recv_timeout(Duration::from_millis(50)) {
                seen.push_str(&s);
            }
        };
        poll("the initial watch rows", Duration::from_secs(15), || {
            drain(&mut seen);
            seen.contains("web").then_some(())
        });
        k.ok(&["label", "pod", "web", "changed=yes"]);
        k.ok(&["delete", "pod", "web", "--wait=false"]);
        poll(
            "the watch to show the change",
            Duration::from_secs(15),
            || {
                drain(&mut seen);
                (seen.lines().filter(|l| l.starts_with("web")).count() >= 2).then_some(())
            },
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            seen.lines().filter(|l| l.starts_with("NAME")).count(),
            1,
            "one header only:\n{seen}"
        );
        for l in seen.lines().filter(|l| l.starts_with("web")) {
            assert_eq!(
                keel_tests::kubectl::cells(l).len(),
                5,
                "a full table row: {l}"
            );
        }
    });
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
      - name: nginx
        image: nginx:1.14
        ports:
        - containerPort: 80
";

#[test]
fn deployments_apply_scale_label_describe_expose_delete() {
    for_each_version(|cp, k| {
        assert_eq!(
            k.ok(&[
                "create",
                "deploy",
                "web",
                "--image=hub.test.com/nginx",
                "--replicas=2"
            ])
            .trim(),
            "deployment.apps/web created"
        );
        let d = cp.ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            None,
        );
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["name"],
            "nginx"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(
            k.ok(&["scale", "deploy", "web", "--replicas=3"]).trim(),
            "deployment.apps/web scaled"
        );
        assert_eq!(
            cp.ok(
                "GET",
                "/apis/apps/v1/namespaces/default/deployments/web",
                None
            )["spec"]["replicas"],
            3
        );
        assert_table(
            &k.ok(&["get", "deploy", "-o", "wide"]),
            &[
                &[
                    "NAME",
                    "READY",
                    "UP-TO-DATE",
                    "AVAILABLE",
                    "AGE",
                    "CONTAINERS",
                    "IMAGES",
                    "SELECTOR",
                ],
                &[
                    "web",
                    "0/3",
                    "0",
                    "0",
                    "*",
                    "nginx",
                    "hub.test.com/nginx",
                    "app=web",
                ],
            ],
        );
        let file = cp.dir.path().join("app.yaml");
        std::fs::write(&file, DEPLOYMENT).expect("manifest");
        let f = file.to_str().expect("path");
        assert_eq!(
            k.ok(&["apply", "-f", f]).trim(),
            "deployment.apps/app created"
        );
        std::fs::write(
            &file,
            DEPLOYMENT
                .replace("nginx:1.14", "nginx:1.16")
                .replace("replicas: 2", "replicas: 3"),
        )
        .expect("manifest");
        assert_eq!(
            k.ok(&["apply", "-f", f]).trim(),
            "deployment.apps/app configured"
        );
        let app = cp.ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/app",
            None,
        );
        assert_eq!(app["spec"]["replicas"], 3);
        assert_eq!(
            app["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.16"
        );
        assert_eq!(
            app["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(app["metadata"]["generation"], 2);
        assert_eq!(
            k.ok(&["apply", "-f", f]).trim(),
            "deployment.apps/app unchanged"
        );
        assert_eq!(
            k.ok(&["label", "deploy", "app", "tier=web"]).trim(),
            "deployment.apps/app labeled"
        );
        // kubectl 1.27 prints "annotate", later versions "annotated".
        assert!(
            k.ok(&["annotate", "deploy", "app", "owner=ops"])
                .trim()
                .starts_with("deployment.apps/app annotate")
        );
        let app = cp.ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/app",
            None,
        );
        assert_eq!(app["metadata"]["labels"]["tier"], "web");
        assert_eq!(app["metadata"]["annotations"]["owner"], "ops");
        // Events, as a controller would record them, show up in describe and get events.
        let uid = app["metadata"]["uid"].as_str().expect("uid").to_string();
        cp.ok("POST", "/api/v1/namespaces/default/events", Some(&json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "app.1"},
            "involvedObject": {"kind": "Deployment", "namespace": "default", "name": "app", "uid": uid, "apiVersion": "apps/v1"},
            "reason": "ScalingReplicaSet", "message": "Scaled up replica set app-5d4f to 3", "type": "Normal",
            "source": {"component": "deployment-controller"}, "count": 1,
            "firstTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "lastTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})));
        // Column padding differs between kubectl versions: compare with spaces folded.
        let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let desc = fold(&k.ok(&["describe", "deploy", "app"]));
        for want in [
            "Name: app",
            "Replicas: 3 desired",
            "StrategyType: RollingUpdate",
            "Image: nginx:1.16",
            "Normal ScalingReplicaSet",
            "deployment-controller Scaled up replica set app-5d4f to 3",
        ] {
            assert!(desc.contains(want), "describe lacks {want:?}:\n{desc}");
        }
        let events = k.ok(&["get", "events"]);
        assert!(
            events.lines().any(|l| l.contains("Normal")
                && l.contains("ScalingReplicaSet")
                && l.contains("deployment/app")),
            "{events}"
        );
        k.ok(&["create", "namespace", "team"]);
        k.ok(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "-n",
            "team",
        ]);
        k.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=user=admin",
            "-n",
            "team",
        ]);
        assert_table(
            &k.ok(&["get", "cm", "-n", "team"]),
            &[&["NAME", "DATA", "AGE"], &["cfg", "1", "*"]],
        );
        assert_table(
            &k.ok(&["get", "secret", "-n", "team"]),
            &[
                &["NAME", "TYPE", "DATA", "AGE"],
                &["creds", "Opaque", "1", "*"],
            ],
        );
        assert_eq!(
            k.ok(&["expose", "deploy", "web", "--port", "80"]).trim(),
            "service/web exposed"
        );
        let svc = k.ok(&["get", "svc", "web"]);
        let row = svc
            .lines()
            .nth(1)
            .map(keel_tests::kubectl::cells)
            .expect("a row");
        assert_eq!(row[0], "web");
        assert_eq!(row[1], "ClusterIP");
        assert!(
            row[2].starts_with("10."),
            "cluster IP from the service CIDR: {row:?}"
        );
        assert_eq!(row[3..5], ["<none>".to_string(), "80/TCP".to_string()]);
        k.ok(&["create", "service", "nodeport", "np", "--tcp=8080:80"]);
        let np = cp.ok("GET", "/api/v1/namespaces/default/services/np", None);
        let port = np["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .expect("node port");
        assert!((30000..=32767).contains(&port), "{port}");
        // Foreground cascade: the object stays, marked, until the garbage collector finishes.
        k.ok(&[
            "delete",
            "deploy",
            "app",
            "--cascade=foreground",
            "--wait=false",
        ]);
        let app = cp.ok(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/app",
            None,
        );
        assert!(app["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(app["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert_eq!(
            k.ok(&["delete", "deploy", "web"]).trim(),
            "deployment.apps \"web\" deleted"
        );
        let out = k.fails(&["get", "deploy", "web"]);
        assert!(
            out.contains("Error from server (NotFound): deployments.apps \"web\" not found"),
            "{out}"
        );
    });
}
