//! The reference walkthrough as a test (root): a namespace lab with a control-plane machine
//! (`keel-control serve` plus an agent joined with `--control-plane`), two workers, and Debian's
//! docker-registry holding images built from busybox-static, mirrored as `docker.io` and
//! `hub.test.com`. Every step uses the real kubectl, one after another, as a user would type
//! them; on a failure the cluster prints nodes, pods, events and the agents' logs.

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::images::{CRASH_LINE, MEMHOG_LINE};
use keel_tests::kubectl::{Kubectl, cells};
use keel_tests::poll;
use serde_json::Value;
use std::time::Duration;

/// Image pulls, sandbox and first start: generous, the machine is shared.
const START: Duration = Duration::from_secs(120);

fn step(what: &str) {
    eprintln!("\n==== {what}");
}

/// `kubectl <args>`, printed like a terminal session, asserting success.
fn show(k: &Kubectl, args: &[&str]) -> String {
    let out = k.ok(args);
    eprintln!("$ kubectl {}\n{out}", args.join(" "));
    out
}

fn pod(k: &Kubectl, name: &str) -> Option<Value> {
    let out = k.run(&["get", "pod", name, "-o", "json"]);
    out.ok
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten()
}

/// Pods matching label `selector` that are not being deleted.
fn live_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    let out = k.ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("pod list json");
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn running_with_ip(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
}

fn name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ip_of(p: &Value) -> String {
    p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The first container's status.
fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

/// Waits until pod `name` is Running with an IP and its container ready; returns it.
fn wait_running(k: &Kubectl, name: &str) -> Value {
    poll(
        &format!("pod {name} to be Running and ready"),
        START,
        || pod(k, name).filter(|p| running_with_ip(p) && container(p)["ready"] == true),
    )
}

/// Waits until exactly `n` live pods with `selector` run (all on node `on`, if given).
fn wait_replicas(k: &Kubectl, selector: &str, n: usize, on: Option<&str>) -> Vec<Value> {
    poll(
        &format!("{n} Running pods with {selector} (on {on:?})"),
        START,
        || {
            let pods = live_pods(k, selector);
            let ok = pods.len() == n
                && pods.iter().all(running_with_ip)
                && on.is_none_or(|node| pods.iter().all(|p| node_of(p) == node));
            ok.then_some(pods)
        },
    )
}

/// A pod of the busybox image pinned to `node` running `script` to its end; returns its exit
/// code (the script's own checks decide; its output is for `kubectl logs`).
fn run_on(k: &Kubectl, pod_name: &str, node: &str, script: &str) -> i64 {
    let overrides = format!(r#"{{"apiVersion":"v1","spec":{{"nodeName":"{node}"}}}}"#);
    show(
        k,
        &[
            "run",
            pod_name,
            "--image=busybox",
            "--restart=Never",
            &format!("--overrides={overrides}"),
            "--command",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let done = poll(&format!("pod {pod_name} to finish"), START, || {
        pod(k, pod_name)
            .filter(|p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed")
    });
    eprintln!("{pod_name} ended: {}", container(&done)["state"]);
    container(&done)["state"]["terminated"]["exitCode"]
        .as_i64()
        .unwrap_or_else(|| panic!("{pod_name} ended without an exit code: {done}"))
}

/// Polls `kubectl <args>` (a `top` table) until it has a row for each of `names` with a CPU
/// cell (`<n>m`) and a memory cell (`<n>Mi`, column `mem`), both above 0 when `busy` (a
/// busybox pod's few hundred KiB show as 0Mi); the first figures need two housekeeping passes
/// of the agent. On timeout shows the last output.
fn top_shows(k: &Kubectl, args: &[&str], names: &[&str], mem: usize, busy: bool) {
    let deadline = std::time::Instant::now() + keel_tests::scaled(START);
    loop {
        let out = k.run(args);
        let rows: Vec<Vec<String>> = out.stdout.lines().map(cells).collect();
        let number = |cell: Option<&String>, unit: &str| {
            cell.and_then(|c| c.strip_suffix(unit)?.parse::<u64>().ok())
        };
        let header_ok = rows.first().is_some_and(|h| {
            h.first().map(String::as_str) == Some("NAME")
                && h.get(1).is_some_and(|c| c.starts_with("CPU"))
                && h.get(mem).is_some_and(|m| m.starts_with("MEMORY"))
        });
        let rows_ok = names.iter().all(|n| {
            rows.iter().any(|r| {
                r.first().map(String::as_str) == Some(*n)
                    && number(r.get(1), "m").is_some_and(|c| c > 0 || !busy)
                    && number(r.get(mem), "Mi").is_some_and(|m| m > 0 || !busy)
            })
        });
        if out.ok && header_ok && rows_ok {
            eprintln!("$ kubectl {}\n{}", args.join(" "), out.stdout);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`kubectl {}` did not show {names:?} with usage; last output:\n{}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Checks that don't block later steps (logs go through the API server to the agent's HTTPS
/// endpoint, a path of its own): failures are collected and reported together at the end.
#[derive(Default)]
struct Soft(Vec<String>);

impl Soft {
    /// Polls `kubectl logs <args>` (up to 20 s) until its output contains `want`.
    fn logs(&mut self, k: &Kubectl, args: &[&str], want: &str) {
        let mut cmd = vec!["logs"];
        cmd.extend(args);
        let deadline = std::time::Instant::now() + keel_tests::scaled(Duration::from_secs(20));
        loop {
            let out = k.run(&cmd);
            if out.ok && out.stdout.contains(want) {
                eprintln!("$ kubectl {}\n{}", cmd.join(" "), out.stdout);
                return;
            }
            if std::time::Instant::now() > deadline {
                let msg = format!(
                    "`kubectl {}` did not print {want:?} within 20 s; last output:\n{}{}",
                    cmd.join(" "),
                    out.stdout,
                    out.stderr
                );
                eprintln!("FAILED (reported at the end): {msg}");
                self.0.push(msg);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn reference_walkthrough() {
    let mut c = Cluster::start("walk", ClusterSpec::default());
    let k = c.kubectl();

    step("kubectl get nodes -o wide: three Ready nodes with their lab addresses");
    let wide = show(&k, &["get", "nodes", "-o", "wide"]);
    for (node, ip) in [
        ("master", "192.168.56.10"),
        ("worker01", "192.168.56.11"),
        ("worker02", "192.168.56.12"),
    ] {
        assert!(
            wide.lines()
                .map(cells)
                .any(|r| r.first().map(String::as_str) == Some(node)
                    && r.get(1).map(String::as_str) == Some("Ready")
                    && r.get(5).map(String::as_str) == Some(ip)),
            "{node} Ready at {ip}:\n{wide}"
        );
    }

    step("kubectl run web --image=nginx:1.14 --port 80");
    let created = show(&k, &["run", "web", "--image=nginx:1.14", "--port", "80"]);
    assert_eq!(created.trim(), "pod/web created");
    let web = wait_running(&k, "web");
    let (web_ip, web_node) = (ip_of(&web), node_of(&web));
    assert!(
        web_node.starts_with("worker"),
        "web runs on a worker, not {web_node}"
    );
    assert_eq!(container(&web)["ready"], true, "{web}");
    assert!(
        container(&web)["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("keel://")),
        "{web}"
    );

    step("kubectl get pods -o wide: web Running with its IP and node");
    let table = show(&k, &["get", "pods", "-o", "wide"]);
    let row = table
        .lines()
        .map(cells)
        .find(|r| r.first().map(String::as_str) == Some("web"))
        .unwrap_or_else(|| panic!("no web row:\n{table}"));
    assert_eq!(row.get(1).map(String::as_str), Some("1/1"), "{table}");
    assert_eq!(row.get(2).map(String::as_str), Some("Running"), "{table}");
    assert_eq!(row.get(5), Some(&web_ip), "{table}");
    assert_eq!(row.get(6), Some(&web_node), "{table}");

    step(&format!(
        "curl http://{web_ip}/ from the control-plane machine"
    ));
    let url = format!("http://{web_ip}/");
    let page = poll(
        "the page from the control plane host",
        Duration::from_secs(30),
        || {
            let out = c.run_in(MASTER, "curl", &["-s", "-m", "5", &url]);
            out.stdout
                .contains("Welcome to nginx!")
                .then_some(out.stdout)
        },
    );
    eprintln!("$ curl {url}\n{page}");

    step("kubectl top nodes, kubectl top pods: usage from the agents' stats");
    top_shows(
        &k,
        &["top", "nodes"],
        &["master", "worker01", "worker02"],
        3,
        true,
    );
    top_shows(&k, &["top", "pods"], &["web"], 2, false);
    let raw = show(
        &k,
        &[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
        ],
    );
    let m: Value = serde_json::from_str(&raw).expect("PodMetrics json");
    let kib = m["containers"][0]["usage"]["memory"]
        .as_str()
        .and_then(|v| v.strip_suffix("Ki")?.parse::<u64>().ok());
    assert!(kib.is_some_and(|k| k > 0), "web's memory in KiB: {m}");

    step("kubectl create deploy web2 --image=hub.test.com/nginx --replicas=2");
    let created = show(
        &k,
        &[
            "create",
            "deploy",
            "web2",
            "--image=hub.test.com/nginx",
            "--replicas=2",
        ],
    );
    assert_eq!(created.trim(), "deployment.apps/web2 created");
    let pods = wait_replicas(&k, "app=web2", 2, None);
    show(&k, &["get", "pods", "-o", "wide"]);
    let (a, b) = (&pods[0], &pods[1]);
    assert_ne!(node_of(a), node_of(b), "the two replicas share a node");
    assert!(node_of(a).starts_with("worker") && node_of(b).starts_with("worker"));

    step("pod to pod across workers: ping and wget from the other worker");
    // wget must fetch the page (exit 3, 4 otherwise); ping runs first and only reports (exit 2),
    // so an ICMP problem does not hide the steps after this one. Debian's busybox 1.35
    // segfaults on `wget -T`, hence `timeout`.
    let script = format!(
        "ping -c 1 -W 5 {ip}; p=$?; timeout 15 wget -q -O /tmp/page http://{ip}/ || exit 3; cat /tmp/page; grep -q 'Welcome to nginx!' /tmp/page || exit 4; [ $p = 0 ] || exit 2",
        ip = ip_of(a)
    );
    let mut soft = Soft::default();
    match run_on(&k, "client", &node_of(b), &script) {
        0 => {}
        2 => soft.0.push(format!(
            "pod-to-pod: `ping {}` from {} failed while wget worked (CAP_NET_RAW in the container?)",
            ip_of(a),
            node_of(b)
        )),
        code => panic!(
            "pod-to-pod: the client on {} could not fetch http://{}/ (exit {code}: 3 wget failed, 4 not the page)",
            node_of(b),
            ip_of(a)
        ),
    }

    step("kubectl delete pod: the deployment replaces it");
    let victim = name(a);
    show(
        &k,
        &["delete", "pod", &victim, "--wait=true", "--timeout=120s"],
    );
    let replaced = wait_replicas(&k, "app=web2", 2, None);
    assert!(
        replaced.iter().all(|p| name(p) != victim),
        "{victim} is still listed"
    );
    assert!(pod(&k, &victim).is_none(), "{victim} was not removed");
    show(&k, &["get", "pods", "-o", "wide"]);

    step("kubectl logs: httpd's request line, the client's fetched page");
    soft.logs(&k, &["web"], "response:200");
    soft.logs(&k, &["client"], "Welcome to nginx!");

    step("a crashing container: CrashLoopBackOff with growing restarts");
    show(&k, &["run", "crash", "--image=crashloop:1"]);
    let first = poll("crash in CrashLoopBackOff", START, || {
        let p = pod(&k, "crash")?;
        let reason = container(&p)["state"]["waiting"]["reason"]
            .as_str()?
            .to_string();
        let restarts = container(&p)["restartCount"].as_u64()?;
        (reason == "CrashLoopBackOff" && restarts >= 1).then_some(restarts)
    });
    let status = show(&k, &["get", "pod", "crash"]);
    assert!(status.contains("CrashLoopBackOff"), "{status}");
    // The back-off doubles from 10 s: the next restart comes within ~20 s.
    poll(
        "crash's restart count to grow",
        Duration::from_secs(90),
        || {
            let p = pod(&k, "crash")?;
            (container(&p)["restartCount"].as_u64()? > first).then_some(())
        },
    );
    show(&k, &["get", "pod", "crash"]);
    soft.logs(&k, &["crash", "--previous"], CRASH_LINE);

    step("a container over its memory limit: OOMKilled");
    let manifest = c.lab.path("memhog.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "memhog"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "memhog", "image": "memhog:1",
                "resources": {"limits": {"memory": "32Mi"}}
            }]}
        })
        .to_string(),
    )
    .expect("memhog manifest");
    show(&k, &["apply", "-f", &manifest.to_string_lossy()]);
    let oom = poll("memhog to be OOMKilled", START, || {
        pod(&k, "memhog").filter(|p| container(p)["state"]["terminated"]["reason"] == "OOMKilled")
    });
    assert_eq!(
        container(&oom)["state"]["terminated"]["exitCode"],
        137,
        "{oom}"
    );
    let status = show(&k, &["get", "pod", "memhog"]);
    assert!(status.contains("OOMKilled"), "{status}");
    soft.logs(&k, &["memhog"], MEMHOG_LINE);

    step("a worker cut off: NotReady, and the deployment's pods come back on the other one");
    let pods = live_pods(&k, "app=web2");
    let lost = node_of(&pods[0]);
    let other = if lost == "worker01" {
        "worker02"
    } else {
        "worker01"
    };
    c.cut_off(&lost);
    poll(
        &format!("{lost} to turn NotReady"),
        Duration::from_secs(90),
        || (c.node_ready(&lost).as_deref() != Some("True")).then_some(()),
    );
    show(&k, &["get", "nodes"]);
    assert_eq!(
        c.node_ready(other).as_deref(),
        Some("True"),
        "{other} stays Ready"
    );
    // Grace period (20 s) + toleration (10 s) + a start: the replacements run on `other`.
    wait_replicas(&k, "app=web2", 2, Some(other));
    show(&k, &["get", "pods", "-o", "wide"]);

    assert!(
        soft.0.is_empty(),
        "the walkthrough ran to the end, but these checks failed:\n{}",
        soft.0.join("\n")
    );
}
